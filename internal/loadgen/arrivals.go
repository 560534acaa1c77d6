package loadgen

import (
	"math/rand/v2"
	"sort"
	"time"

	"github.com/llmscaler/llmscaler/internal/trace"
)

// Arrival is one request of a run: when it is sent and how long its prompt and its answer are.
type Arrival struct {
	// At is the offset from the start of the run at which the request is sent.
	At time.Duration
	// PromptTokens is the prompt length in tokens.
	PromptTokens int
	// OutputTokens is the answer length in tokens (max_tokens).
	OutputTokens int
}

// TraceArrivals turns a trace into the arrivals of a replay: the requests from start on, their
// offsets from start divided by scale. Dividing the gaps by scale compresses time, so the
// arrival rate is multiplied by scale and the trace's shape (bursts, the daily curve) is kept,
// only faster: scale 2 replays a 60-minute trace in 30 minutes at twice the rate. Lengths are
// kept, raised to at least 1 token, which servers require.
func TraceArrivals(reqs []trace.Request, scale float64, start time.Duration) []Arrival {
	i := sort.Search(len(reqs), func(i int) bool { return reqs[i].At >= start })
	out := make([]Arrival, 0, len(reqs)-i)
	for _, r := range reqs[i:] {
		out = append(out, Arrival{
			At:           time.Duration(float64(r.At-start) / scale),
			PromptTokens: max(1, r.PromptTokens),
			OutputTokens: max(1, r.OutputTokens),
		})
	}
	return out
}

// source yields a run's arrivals in order. next is called from one goroutine; meanRate may be
// called from another at the same time.
type source interface {
	// next returns the next arrival, or false when there are no more.
	next() (Arrival, bool)
	// meanRate is the offered arrival rate over [from, to), in requests per second.
	meanRate(from, to time.Duration) float64
}

// poissonSource draws Poisson arrivals whose rate follows a schedule.
type poissonSource struct {
	sched          Schedule
	rng            *rand.Rand
	t              float64 // seconds: the last arrival
	prompt, output int
}

func newPoissonSource(s Schedule, seed uint64, prompt, output int) *poissonSource {
	return &poissonSource{sched: s, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), prompt: prompt, output: output}
}

func (p *poissonSource) next() (Arrival, bool) {
	t, ok := p.sched.after(p.t, p.rng.ExpFloat64())
	if !ok || t*float64(time.Second) > float64(maxOffset) {
		return Arrival{}, false
	}
	p.t = t
	return Arrival{At: time.Duration(t * float64(time.Second)), PromptTokens: p.prompt, OutputTokens: p.output}, true
}

// maxOffset keeps offsets well inside what a time.Duration holds.
const maxOffset = 100 * 365 * 24 * time.Hour

func (p *poissonSource) meanRate(from, to time.Duration) float64 { return p.sched.meanRate(from, to) }

// replaySource replays fixed arrivals.
type replaySource struct {
	arrivals []Arrival
	i        int
}

func (r *replaySource) next() (Arrival, bool) {
	if r.i >= len(r.arrivals) {
		return Arrival{}, false
	}
	r.i++
	return r.arrivals[r.i-1], true
}

func (r *replaySource) meanRate(from, to time.Duration) float64 {
	if to <= from {
		return 0
	}
	at := func(d time.Duration) int {
		return sort.Search(len(r.arrivals), func(i int) bool { return r.arrivals[i].At >= d })
	}
	return float64(at(to)-at(from)) / (to - from).Seconds()
}
