package sim

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
)

// WriteTable prints one row per result.
func WriteTable(w io.Writer, results []*Result) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "policy\trequests\tslo_attain\tgpu_hours\tttft_p50_s\tttft_p95_s\tttft_p99_s\tqwait_p99_s\tscale_events\tpeak_replicas\t")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%d\t%.4f\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t%d\t%d\t\n",
			r.Policy, r.Requests, r.SLOAttainment, r.GPUHours, r.TTFTP50, r.TTFTP95, r.TTFTP99,
			r.QueueWaitP99, r.ScaleEvents, r.PeakReplicas)
	}
	return tw.Flush()
}

// WriteFiles writes dir/summary.json (the results) and dir/timeline.csv (every result's
// timeline: policy,second,arrivals,queue,starting,ready,draining,desired,change,gpu_util,
// ttft_mean_s,e2e_mean_s,reason; the means are empty in an interval with no request, the
// reason, quoted, is the policy's for a change of the count), making dir.
func WriteFiles(dir string, results []*Result) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(results, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "summary.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, "timeline.csv"))
	if err != nil {
		return err
	}
	if err := writeTimeline(f, results); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func writeTimeline(w io.Writer, results []*Result) error {
	var buf []byte
	buf = append(buf, "policy,second,arrivals,queue,starting,ready,draining,desired,change,gpu_util,ttft_mean_s,e2e_mean_s,reason\n"...)
	for _, r := range results {
		for _, p := range r.Timeline {
			buf = append(buf, r.Policy...)
			buf = append(buf, ',')
			buf = strconv.AppendFloat(buf, p.Second, 'f', -1, 64)
			for _, n := range [...]int{p.Arrivals, p.Queue, p.Starting, p.Ready, p.Draining, p.Desired, p.Change} {
				buf = append(buf, ',')
				buf = strconv.AppendInt(buf, int64(n), 10)
			}
			for _, x := range [...]float64{p.GPUUtil, p.TTFTMean, p.E2EMean} {
				buf = append(buf, ',')
				if !math.IsNaN(x) {
					buf = strconv.AppendFloat(buf, x, 'f', 4, 64)
				}
			}
			buf = append(buf, ',')
			if p.Reason != "" {
				buf = append(buf, '"')
				buf = append(buf, strings.ReplaceAll(p.Reason, `"`, `""`)...)
				buf = append(buf, '"')
			}
			buf = append(buf, '\n')
			if len(buf) > 1<<16 {
				if _, err := w.Write(buf); err != nil {
					return err
				}
				buf = buf[:0]
			}
		}
	}
	_, err := w.Write(buf)
	return err
}
