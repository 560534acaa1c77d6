package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/llmscaler/llmscaler/internal/loadgen"
	"github.com/llmscaler/llmscaler/internal/sim"
)

// nodeSample is one node's share of the demo deployment at one sample.
type nodeSample struct {
	Starting, Ready, Draining int
	// GPUUtil is each GPU's utilization, 0-100, by index.
	GPUUtil []float64
}

// decisionSample is the deployment's latest scaling decision.
type decisionSample struct {
	At       time.Duration // since the workload's start
	From, To int
	Reason   string
}

// demoSample is what the demo saw of its fleet at one moment.
type demoSample struct {
	Time       time.Time
	At         time.Duration // since the workload's start
	Phase      string
	OfferedRPS float64
	// Waiting are requests held in the router; InFlight those sent to replicas.
	Waiting, InFlight int
	Nodes             map[string]*nodeSample
	// ReadyGPUUtil is the mean utilization of the GPUs that READY replicas hold; NaN with none.
	ReadyGPUUtil float64
	Desired      int
	Decision     *decisionSample
}

// replicas counts the deployment's replicas by phase over all nodes.
func (s demoSample) replicas() (starting, ready, draining int) {
	for _, n := range s.Nodes {
		starting += n.Starting
		ready += n.Ready
		draining += n.Draining
	}
	return
}

// demoView is one frame of the live view.
type demoView struct {
	S      demoSample
	Length time.Duration
	SLO    time.Duration
	// AnsweredRPS: requests answered in full per second over the last 5 s.
	AnsweredRPS float64
	// TTFTP95 over the requests whose first token came in the last 10 s (TTFTCount of them).
	TTFTP95   time.Duration
	TTFTCount int
	// Done and Attained: requests ended so far, and the share of them within the SLO.
	Done     int
	Attained float64
	Failed   int
	Commands []string
}

// buildView derives a frame from a sample and the requests that have ended.
func buildView(s demoSample, results []loadgen.Result, length, slo time.Duration) demoView {
	v := demoView{S: s, Length: length, SLO: slo, Done: len(results)}
	var recent []time.Duration
	answered, within := 0, 0
	for _, r := range results {
		if r.Kind != "" {
			v.Failed++
			continue
		}
		if r.TTFT <= slo {
			within++
		}
		if end := r.Sent.Add(r.E2E); s.Time.Sub(end) <= 5*time.Second {
			answered++
		}
		if first := r.Sent.Add(r.TTFT); s.Time.Sub(first) <= 10*time.Second {
			recent = append(recent, r.TTFT)
		}
	}
	v.AnsweredRPS = float64(answered) / 5
	if v.Done > 0 {
		v.Attained = float64(within) / float64(v.Done)
	}
	v.TTFTCount = len(recent)
	if len(recent) > 0 {
		slices.Sort(recent)
		v.TTFTP95 = recent[min(len(recent)-1, len(recent)*95/100)]
	}
	return v
}

// render draws the frame for a terminal: a screenful, redrawn every second.
func (v demoView) render(w io.Writer) {
	s := v.S
	starting, ready, draining := s.replicas()
	fmt.Fprintf(w, "llmscaler demo  %s / %s   workload: %s (seed notebook: low, ramp, high, decline; 10x faster)\n\n",
		fmtClock(s.At), fmtClock(v.Length), s.Phase)
	fmt.Fprintf(w, "load      %5.1f req/s offered   %5.1f req/s answered   router: %d waiting, %d in flight\n",
		s.OfferedRPS, v.AnsweredRPS, s.Waiting, s.InFlight)
	ttft := "-"
	if v.TTFTCount > 0 {
		ttft = fmt.Sprintf("%.2f s", v.TTFTP95.Seconds())
	}
	fmt.Fprintf(w, "TTFT p95  %s over the last 10 s (SLO: p95 <= %v)   within the SLO so far: %.1f %% of %d requests, %d failed\n",
		ttft, v.SLO, 100*v.Attained, v.Done, v.Failed)
	fmt.Fprintf(w, "replicas  desired %d: %d ready, %d starting, %d draining\n\n", s.Desired, ready, starting, draining)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  NODE\tREADY\tSTARTING\tDRAINING\tGPU UTILIZATION")
	for _, id := range sortedKeys(s.Nodes) {
		n := s.Nodes[id]
		util := make([]string, len(n.GPUUtil))
		for i, u := range n.GPUUtil {
			util[i] = fmt.Sprintf("%3.0f%%", u)
		}
		fmt.Fprintf(tw, "  %s\t%d\t%d\t%d\t%s\n", id, n.Ready, n.Starting, n.Draining, strings.Join(util, " "))
	}
	tw.Flush()
	fmt.Fprintln(w)
	if d := s.Decision; d != nil {
		fmt.Fprintf(w, "decision  at %s: %d -> %d replicas\n          %s\n", fmtClock(d.At), d.From, d.To, d.Reason)
	} else {
		fmt.Fprintln(w, "decision  none yet")
	}
	if len(v.Commands) > 0 {
		fmt.Fprintln(w, "\ninspect the live system:")
		for _, c := range v.Commands {
			fmt.Fprintln(w, "  "+c)
		}
	}
	fmt.Fprintln(w, "\nCtrl-C stops everything.")
}

// line is the frame as one line, for output that is not a terminal.
func (v demoView) line(w io.Writer) {
	s := v.S
	starting, ready, draining := s.replicas()
	fmt.Fprintf(w, "%s %-9s offered %5.1f req/s, answered %5.1f, router waiting %d | TTFT p95 %.2f s | replicas desired %d: %d ready, %d starting, %d draining",
		fmtClock(s.At), s.Phase, s.OfferedRPS, v.AnsweredRPS, s.Waiting, v.TTFTP95.Seconds(), s.Desired, ready, starting, draining)
	if d := s.Decision; d != nil {
		fmt.Fprintf(w, " | last decision %s %d->%d: %s", fmtClock(d.At), d.From, d.To, d.Reason)
	}
	fmt.Fprintln(w)
}

// demoReport is the demo's summary.
type demoReport struct {
	Duration    time.Duration `json:"-"`
	Seconds     float64       `json:"seconds"`
	Interrupted bool          `json:"interrupted"`
	Requests    int           `json:"requests"`
	OK          int           `json:"ok"`
	Failed      int           `json:"failed"`
	// Attainment is the share of requests with a first token within the SLO; failed
	// requests count as missed.
	Attainment float64 `json:"slo_attainment"`
	TTFTP50    float64 `json:"ttft_p50_s"`
	TTFTP95    float64 `json:"ttft_p95_s"`
	TTFTP99    float64 `json:"ttft_p99_s"`
	// GPUMinutes: GPUs held by the deployment's replicas (starting, ready, draining) over
	// the run. FixedGPUMinutes: a fixed pool of PeakReplicas for as long.
	GPUMinutes      float64 `json:"gpu_minutes"`
	PeakReplicas    int     `json:"peak_replicas"`
	FixedGPUMinutes float64 `json:"fixed_pool_gpu_minutes"`
	ScaleUps        int     `json:"scale_ups"`
	ScaleDowns      int     `json:"scale_downs"`
	SLO             float64 `json:"slo_ttft_s"`
}

// decisionRecord is the part of a journaled decision the summary counts.
type decisionRecord struct {
	Time     time.Time
	From, To int
	Acted    bool
}

// summarise computes the report from the samples, the requests and the decisions.
func summarise(start time.Time, samples []demoSample, results []loadgen.Result, decisions []decisionRecord, slo time.Duration) demoReport {
	rep := demoReport{Requests: len(results), SLO: slo.Seconds()}
	var ttfts []time.Duration
	within := 0
	for _, r := range results {
		if r.Kind != "" {
			rep.Failed++
			continue
		}
		rep.OK++
		ttfts = append(ttfts, r.TTFT)
		if r.TTFT <= slo {
			within++
		}
	}
	if rep.Requests > 0 {
		rep.Attainment = float64(within) / float64(rep.Requests)
	}
	slices.Sort(ttfts)
	q := func(p float64) float64 {
		if len(ttfts) == 0 {
			return math.NaN()
		}
		return ttfts[min(len(ttfts)-1, int(p*float64(len(ttfts))))].Seconds()
	}
	rep.TTFTP50, rep.TTFTP95, rep.TTFTP99 = q(0.50), q(0.95), q(0.99)
	prev := start
	for _, s := range samples {
		starting, ready, draining := s.replicas()
		held := starting + ready + draining
		rep.GPUMinutes += float64(held) * s.Time.Sub(prev).Minutes()
		rep.PeakReplicas = max(rep.PeakReplicas, held)
		prev = s.Time
	}
	if len(samples) > 0 {
		rep.Duration = samples[len(samples)-1].Time.Sub(start)
	}
	rep.Seconds = rep.Duration.Seconds()
	rep.FixedGPUMinutes = float64(rep.PeakReplicas) * rep.Duration.Minutes()
	for _, d := range decisions {
		if !d.Acted || d.Time.Before(start) || d.Time.After(start.Add(rep.Duration)) {
			continue
		}
		switch {
		case d.To > d.From:
			rep.ScaleUps++
		case d.To < d.From:
			rep.ScaleDowns++
		}
	}
	return rep
}

// write prints the summary.
func (rep demoReport) write(w io.Writer, sum loadgen.Summary) {
	how := "the whole workload"
	if rep.Interrupted {
		how = "interrupted"
	}
	fmt.Fprintf(w, "\nSummary (%s, %s):\n", how, fmtClock(rep.Duration))
	fmt.Fprintf(w, "  requests        %d sent through the router: %d answered in full, %d failed\n", rep.Requests, rep.OK, rep.Failed)
	fmt.Fprintf(w, "  SLO attainment  %.1f %% with their first token within %v (TTFT p50 %.2f s, p95 %.2f s, p99 %.2f s)\n",
		100*rep.Attainment, time.Duration(rep.SLO*float64(time.Second)), rep.TTFTP50, rep.TTFTP95, rep.TTFTP99)
	ratio := math.NaN()
	if rep.FixedGPUMinutes > 0 {
		ratio = rep.GPUMinutes / rep.FixedGPUMinutes
	}
	fmt.Fprintf(w, "  GPU-minutes     %.1f autoscaled, against %.1f for a fixed pool of %d replicas (the peak) all along: %.0f %% of it\n",
		rep.GPUMinutes, rep.FixedGPUMinutes, rep.PeakReplicas, 100*ratio)
	fmt.Fprintf(w, "  scale events    %d up, %d down\n", rep.ScaleUps, rep.ScaleDowns)
	fmt.Fprintf(w, "  load generator  %s\n", strings.ReplaceAll(strings.TrimSpace(textOf(sum)), "\n", "\n                  "))
}

func textOf(sum loadgen.Summary) string {
	var b strings.Builder
	_ = sum.WriteText(&b)
	return b.String()
}

func (rep demoReport) writeJSON(path string) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// simResult turns the run into the simulator's result, one timeline point per sample, so
// that the simulator's four-panel figure draws it.
func (rep demoReport) simResult(samples []demoSample, results []loadgen.Result, start time.Time) *sim.Result {
	r := &sim.Result{
		Policy: "demo-slo", Requests: rep.Requests, SLOAttainment: rep.Attainment,
		GPUHours: rep.GPUMinutes / 60, TTFTP50: rep.TTFTP50, TTFTP95: rep.TTFTP95, TTFTP99: rep.TTFTP99,
		ScaleEvents: rep.ScaleUps + rep.ScaleDowns, PeakReplicas: rep.PeakReplicas, SimulatedSeconds: rep.Seconds,
	}
	prev, prevDesired := start, 0
	for i, s := range samples {
		starting, ready, draining := s.replicas()
		p := sim.TimelinePoint{
			Second: s.At.Seconds(), Queue: s.Waiting,
			Starting: starting, Ready: ready, Draining: draining,
			Desired: s.Desired, GPUUtil: s.ReadyGPUUtil,
		}
		if i > 0 {
			p.Change = s.Desired - prevDesired
		}
		if d := s.Decision; p.Change != 0 && d != nil {
			p.Reason = d.Reason
		}
		var ttft, e2e, nt, ne float64
		for _, res := range results {
			if res.Sent.After(prev) && !res.Sent.After(s.Time) {
				p.Arrivals++
			}
			if res.Kind != "" {
				continue
			}
			if f := res.Sent.Add(res.TTFT); f.After(prev) && !f.After(s.Time) {
				ttft += res.TTFT.Seconds()
				nt++
			}
			if e := res.Sent.Add(res.E2E); e.After(prev) && !e.After(s.Time) {
				e2e += res.E2E.Seconds()
				ne++
			}
		}
		p.TTFTMean, p.E2EMean = ttft/nt, e2e/ne // NaN for an interval without one
		r.Timeline = append(r.Timeline, p)
		prev, prevDesired = s.Time, s.Desired
	}
	return r
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// fmtClock prints a duration as m:ss.
func fmtClock(d time.Duration) string {
	d = d.Round(time.Second)
	if d < 0 {
		d = 0
	}
	return fmt.Sprintf("%d:%02d", int(d.Minutes()), int(d.Seconds())%60)
}
