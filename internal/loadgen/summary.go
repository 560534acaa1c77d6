package loadgen

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// Summary is what a run did.
type Summary struct {
	// Workload describes the arrivals ("poisson 5 rps", a schedule, a trace and its scale).
	Workload string
	// Seed is the seed of the random arrivals (Poisson and schedule runs).
	Seed uint64
	// Sending is how long arrivals were sent: from the start to --duration, to the end of the
	// trace, or to an interrupt.
	Sending time.Duration
	// Elapsed is the whole run, the wait for the last responses included.
	Elapsed time.Duration
	// Arrivals counts the requests the workload produced while sending: Sent + Dropped.
	Arrivals int
	// Sent counts the requests tried: OK plus all errors.
	Sent int
	// OK counts the requests answered in full.
	OK int
	// Errors counts failed requests by kind (the Kind constants, or "http NNN").
	Errors map[string]int
	// Dropped counts arrivals not sent because MaxInFlight requests were already in flight.
	Dropped int
	// TargetRPS is the workload's mean offered rate over Sending.
	TargetRPS float64
	// AchievedRPS is Sent / Sending.
	AchievedRPS float64
	// TTFT is the time from sending a request to its first token, over OK requests.
	TTFT Latency
	// E2E is the time from sending a request to the end of its stream, over OK requests.
	E2E Latency
	// OutputTokens counts the tokens of OK requests.
	OutputTokens int64
	// OutputTokensPerSec is OutputTokens / Elapsed.
	OutputTokensPerSec float64
	// ByTarget counts the requests sent to each target.
	ByTarget map[string]int
	// MaxLag is the most a request was sent after its arrival time: near zero unless the
	// generator itself could not keep up.
	MaxLag time.Duration
}

// ErrorCount is the number of failed requests of all kinds.
func (s Summary) ErrorCount() int {
	n := 0
	for _, c := range s.Errors {
		n += c
	}
	return n
}

// Latency summarises recorded durations; percentiles are exact (nearest rank over the sorted
// values).
type Latency struct {
	// Count is the number of values.
	Count int
	// Mean is their mean.
	Mean time.Duration
	// P50 is the median.
	P50 time.Duration
	// P95 is the 95th percentile.
	P95 time.Duration
	// P99 is the 99th percentile.
	P99 time.Duration
	// Max is the largest.
	Max time.Duration
}

// latencyOf summarises vs, sorting it in place.
func latencyOf(vs []time.Duration) Latency {
	if len(vs) == 0 {
		return Latency{}
	}
	slices.Sort(vs)
	var sum time.Duration
	for _, v := range vs {
		sum += v
	}
	return Latency{
		Count: len(vs), Mean: sum / time.Duration(len(vs)),
		P50: percentile(vs, 0.50), P95: percentile(vs, 0.95), P99: percentile(vs, 0.99), Max: vs[len(vs)-1],
	}
}

// percentile is the nearest-rank percentile of sorted values: the smallest value with at
// least a share q of the values at or below it.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(q*float64(len(sorted)) + 0.999999999)
	return sorted[min(max(rank, 1), len(sorted))-1]
}

// WriteText prints the summary for people.
func (s Summary) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "llmscaler load summary: %s\n", s.Workload)
	fmt.Fprintf(tw, "  duration\t%s sending, %s in all\n", s.Sending.Round(time.Millisecond), s.Elapsed.Round(time.Millisecond))
	fmt.Fprintf(tw, "  rate\ttarget %.2f rps, achieved %.2f rps\n", s.TargetRPS, s.AchievedRPS)
	fmt.Fprintf(tw, "  sent\t%d\n", s.Sent)
	fmt.Fprintf(tw, "  ok\t%d\n", s.OK)
	fmt.Fprintf(tw, "  errors\t%d%s\n", s.ErrorCount(), byKind(s.Errors))
	fmt.Fprintf(tw, "  dropped\t%d (over max in flight)\n", s.Dropped)
	fmt.Fprintf(tw, "  ttft\t%s\n", s.TTFT.text())
	fmt.Fprintf(tw, "  e2e\t%s\n", s.E2E.text())
	fmt.Fprintf(tw, "  output\t%d tokens, %.1f tokens/s\n", s.OutputTokens, s.OutputTokensPerSec)
	if len(s.ByTarget) > 1 {
		for _, t := range slices.Sorted(maps.Keys(s.ByTarget)) {
			fmt.Fprintf(tw, "  target\t%s: %d sent\n", t, s.ByTarget[t])
		}
	}
	if s.MaxLag > 100*time.Millisecond {
		fmt.Fprintf(tw, "  warning\tthe generator fell up to %s behind its arrival times\n", s.MaxLag.Round(time.Millisecond))
	}
	return tw.Flush()
}

func byKind(errs map[string]int) string {
	if len(errs) == 0 {
		return ""
	}
	parts := make([]string, 0, len(errs))
	for _, k := range slices.Sorted(maps.Keys(errs)) {
		parts = append(parts, fmt.Sprintf("%s: %d", k, errs[k]))
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

func (l Latency) text() string {
	if l.Count == 0 {
		return "-"
	}
	return fmt.Sprintf("p50 %s  p95 %s  p99 %s  (mean %s, max %s, %d requests)",
		fmtDur(l.P50), fmtDur(l.P95), fmtDur(l.P99), fmtDur(l.Mean), fmtDur(l.Max), l.Count)
}

// fmtDur shows a latency with three significant digits or so.
func fmtDur(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return d.Round(100 * time.Millisecond).String()
	case d >= time.Second:
		return d.Round(10 * time.Millisecond).String()
	case d >= 10*time.Millisecond:
		return d.Round(100 * time.Microsecond).String()
	default:
		return d.Round(10 * time.Microsecond).String()
	}
}

// jsonLatency is a Latency in seconds.
type jsonLatency struct {
	Count int     `json:"count"`
	Mean  float64 `json:"mean_s"`
	P50   float64 `json:"p50_s"`
	P95   float64 `json:"p95_s"`
	P99   float64 `json:"p99_s"`
	Max   float64 `json:"max_s"`
}

func (l Latency) json() jsonLatency {
	return jsonLatency{Count: l.Count, Mean: l.Mean.Seconds(), P50: l.P50.Seconds(), P95: l.P95.Seconds(), P99: l.P99.Seconds(), Max: l.Max.Seconds()}
}

// MarshalJSON writes the summary with snake_case keys and durations in seconds.
func (s Summary) MarshalJSON() ([]byte, error) {
	errs := s.Errors
	if errs == nil {
		errs = map[string]int{}
	}
	return json.Marshal(struct {
		Workload           string         `json:"workload"`
		Seed               uint64         `json:"seed"`
		Sending            float64        `json:"sending_s"`
		Elapsed            float64        `json:"elapsed_s"`
		Arrivals           int            `json:"arrivals"`
		Sent               int            `json:"sent"`
		OK                 int            `json:"ok"`
		ErrorCount         int            `json:"errors"`
		Errors             map[string]int `json:"errors_by_kind"`
		Dropped            int            `json:"dropped"`
		TargetRPS          float64        `json:"target_rps"`
		AchievedRPS        float64        `json:"achieved_rps"`
		TTFT               jsonLatency    `json:"ttft"`
		E2E                jsonLatency    `json:"e2e"`
		OutputTokens       int64          `json:"output_tokens"`
		OutputTokensPerSec float64        `json:"output_tokens_per_s"`
		ByTarget           map[string]int `json:"by_target"`
		MaxLag             float64        `json:"max_lag_s"`
	}{
		s.Workload, s.Seed, s.Sending.Seconds(), s.Elapsed.Seconds(), s.Arrivals, s.Sent, s.OK, s.ErrorCount(), errs,
		s.Dropped, s.TargetRPS, s.AchievedRPS, s.TTFT.json(), s.E2E.json(), s.OutputTokens, s.OutputTokensPerSec,
		s.ByTarget, s.MaxLag.Seconds(),
	})
}

// recorder keeps the counts and latencies of a run; every method is safe for concurrent use.
type recorder struct {
	mu           sync.Mutex
	arrivals     int
	ok           int
	errors       map[string]int
	dropped      int
	inFlight     int
	ttfts, e2es  []time.Duration
	intervalTTFT []time.Duration // since the last progress line
	outputTokens int64
	maxLag       time.Duration
}

func newRecorder() *recorder { return &recorder{errors: map[string]int{}} }

// admit counts an arrival and reports whether it may be sent: false, and counted as dropped,
// when limit requests are already in flight.
func (r *recorder) admit(limit int, lag time.Duration) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.arrivals++
	r.maxLag = max(r.maxLag, lag)
	if r.inFlight >= limit {
		r.dropped++
		return false
	}
	r.inFlight++
	return true
}

// finish records an admitted request's outcome; it reports whether this was the first error
// of its kind.
func (r *recorder) finish(o outcome) (firstOfKind bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.inFlight--
	if o.kind != "" {
		r.errors[o.kind]++
		return r.errors[o.kind] == 1
	}
	r.ok++
	r.ttfts = append(r.ttfts, o.ttft)
	r.e2es = append(r.e2es, o.e2e)
	r.intervalTTFT = append(r.intervalTTFT, o.ttft)
	r.outputTokens += int64(o.tokens)
	return false
}

// progress is a snapshot for a progress line.
type progress struct {
	sent, ok, errors, dropped, inFlight int
	ttft                                Latency // over the interval
}

// interval takes a snapshot and starts a new interval.
func (r *recorder) interval() progress {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := progress{ok: r.ok, dropped: r.dropped, inFlight: r.inFlight}
	for _, n := range r.errors {
		p.errors += n
	}
	p.sent = r.arrivals - r.dropped
	p.ttft = latencyOf(r.intervalTTFT)
	r.intervalTTFT = r.intervalTTFT[:0]
	return p
}
