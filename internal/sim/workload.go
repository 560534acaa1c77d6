package sim

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/llmscaler/llmscaler/internal/trace"
)

// Workload is the arrivals a simulation replays: requests sorted by arrival time, offsets from
// the start of the simulation.
type Workload struct {
	// Name says what the workload is and how it was scaled, for the table's header.
	Name string
	// Requests are sorted by At.
	Requests []trace.Request
}

// Duration is the arrival time of the last request.
func (w *Workload) Duration() time.Duration {
	if len(w.Requests) == 0 {
		return 0
	}
	return w.Requests[len(w.Requests)-1].At
}

// MeanLengths returns the mean prompt and output tokens of the workload's requests.
func (w *Workload) MeanLengths() (prompt, output float64) {
	if len(w.Requests) == 0 {
		return 0, 0
	}
	for _, r := range w.Requests {
		prompt += float64(r.PromptTokens)
		output += float64(r.OutputTokens)
	}
	n := float64(len(w.Requests))
	return prompt / n, output / n
}

// Truncate drops requests that arrive at or after d; d <= 0 keeps them all.
func (w *Workload) Truncate(d time.Duration) {
	if d <= 0 {
		return
	}
	i, _ := slices.BinarySearchFunc(w.Requests, d, func(r trace.Request, d time.Duration) int {
		return cmpDur(r.At, d)
	})
	w.Requests = w.Requests[:i]
}

func cmpDur(a, b time.Duration) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// FromRequests replays a request trace compressed in time by scale: every arrival offset is
// divided by scale, so the arrival rate is scale times the trace's and its shape is kept
// (scale 2 plays an hour of trace in 30 minutes). Lengths are the trace's.
func FromRequests(name string, reqs []trace.Request, scale float64) (*Workload, error) {
	if !(scale > 0) || math.IsInf(scale, 0) {
		return nil, fmt.Errorf("rate scale %v: want a positive number", scale)
	}
	out := make([]trace.Request, len(reqs))
	for i, r := range reqs {
		r.At = time.Duration(float64(r.At) / scale)
		out[i] = r
	}
	slices.SortStableFunc(out, func(a, b trace.Request) int { return cmpDur(a.At, b.At) })
	return &Workload{Name: fmt.Sprintf("%s, time compressed x%g", name, scale), Requests: out}, nil
}

// OverlayMaxShift bounds the random shift of each copy Overlay adds: short enough that the
// trace's shape at the scale autoscaling sees (minutes) is kept, long enough that the copies'
// arrivals interleave rather than land together.
const OverlayMaxShift = time.Minute

// Overlay scales a request trace's rate by scale without changing its time scale: the result
// is floor(scale) copies of the trace, plus one copy that keeps each request with probability
// scale - floor(scale). Every copy is shifted later by a random offset below OverlayMaxShift,
// every copy but the first takes each request's lengths from a request of the trace drawn at
// random (other users send other requests),
// and only the stretch that every copy covers is kept: from OverlayMaxShift to the trace's
// end, rebased to start at zero (so the replay is OverlayMaxShift shorter than the trace, and
// a trace shorter than that yields no requests). Unlike time compression, a burst lasts as
// long as it did, so cold starts and windows meet the trace's real pace. seed draws the
// shifts and the thinning.
func Overlay(name string, reqs []trace.Request, scale float64, seed uint64) (*Workload, error) {
	if !(scale > 0) || math.IsInf(scale, 0) || scale > 1000 {
		return nil, fmt.Errorf("rate scale %v: want a positive number up to 1000", scale)
	}
	if len(reqs) == 0 {
		return &Workload{Name: name}, nil
	}
	end := reqs[len(reqs)-1].At
	rng := rand.New(rand.NewPCG(seed, seed^0x5851f42d4c957f2d))
	out := make([]trace.Request, 0, int(math.Ceil(scale))*len(reqs))
	for c := 0; float64(c) < scale; c++ {
		keep := min(scale-float64(c), 1)
		shift := time.Duration(rng.Int64N(int64(OverlayMaxShift)))
		for _, r := range reqs {
			if keep < 1 && rng.Float64() >= keep {
				continue
			}
			r.At += shift
			if r.At < OverlayMaxShift || r.At > end {
				continue
			}
			r.At -= OverlayMaxShift
			if c > 0 {
				// Another user's request: the trace's lengths, drawn independently, so a
				// long request is not repeated K times within a minute.
				l := reqs[rng.IntN(len(reqs))]
				r.PromptTokens, r.OutputTokens = l.PromptTokens, l.OutputTokens
			}
			out = append(out, r)
		}
	}
	slices.SortStableFunc(out, func(a, b trace.Request) int { return cmpDur(a.At, b.At) })
	return &Workload{Name: fmt.Sprintf("%s, %g overlaid copies shifted up to %s", name, scale, OverlayMaxShift), Requests: out}, nil
}

// Lengths draws prompt and output lengths for generated arrivals.
type Lengths struct {
	from         []trace.Request
	prompt, outp int
}

// LengthsFrom samples (prompt, output) pairs uniformly from the requests of a trace, keeping
// each pair together.
func LengthsFrom(reqs []trace.Request) (Lengths, error) {
	if len(reqs) == 0 {
		return Lengths{}, errors.New("length trace has no requests")
	}
	return Lengths{from: reqs}, nil
}

// FixedLengths gives every request the same prompt and output lengths.
func FixedLengths(prompt, output int) Lengths { return Lengths{prompt: prompt, outp: output} }

func (l Lengths) draw(rng *rand.Rand) (int, int) {
	if len(l.from) == 0 {
		return l.prompt, l.outp
	}
	r := l.from[rng.IntN(len(l.from))]
	return r.PromptTokens, r.OutputTokens
}

// FromRates draws Poisson arrivals from a rate series with every rate multiplied by scale
// (window lengths are kept), taking lengths from l. The last window lasts as long as the one
// before it (60 s if there is only one).
func FromRates(name string, rates []trace.RatePoint, scale float64, l Lengths, seed uint64) (*Workload, error) {
	if !(scale > 0) || math.IsInf(scale, 0) {
		return nil, fmt.Errorf("rate scale %v: want a positive number", scale)
	}
	if len(rates) == 0 {
		return nil, errors.New("rate series has no windows")
	}
	segs := make([]segment, len(rates))
	for i, p := range rates {
		end := p.Start + time.Minute
		switch {
		case i+1 < len(rates):
			end = rates[i+1].Start
		case i > 0:
			end = p.Start + (p.Start - rates[i-1].Start)
		}
		segs[i] = segment{start: p.Start, end: end, from: p.RPS * scale, to: p.RPS * scale}
	}
	return &Workload{
		Name:     fmt.Sprintf("%s, rates x%g, Poisson", name, scale),
		Requests: poisson(segs, l, seed),
	}, nil
}

// Seed workload rates, in requests/s before --rate-scale: the seed notebook's shape with rates
// chosen so that the default hardware profile (a100-80gb-llama3-8b) with the default 512/128
// token requests needs about 2 replicas at the low load and about 9 at the high one.
const (
	SeedLowRPS  = 15.0
	SeedHighRPS = 100.0
)

// Seed is the seed notebook's pattern: SeedLowRPS for 5 minutes, a linear ramp to SeedHighRPS
// at minute 15, SeedHighRPS to minute 20, then a linear decline back to SeedLowRPS at minute
// 30, where it ends. Rates are multiplied by scale; arrivals are Poisson.
func Seed(scale float64, l Lengths, seed uint64) (*Workload, error) {
	if !(scale > 0) || math.IsInf(scale, 0) {
		return nil, fmt.Errorf("rate scale %v: want a positive number", scale)
	}
	lo, hi := SeedLowRPS*scale, SeedHighRPS*scale
	segs := []segment{
		{0, 5 * time.Minute, lo, lo},
		{5 * time.Minute, 15 * time.Minute, lo, hi},
		{15 * time.Minute, 20 * time.Minute, hi, hi},
		{20 * time.Minute, 30 * time.Minute, hi, lo},
	}
	return &Workload{
		Name:     fmt.Sprintf("seed (%g rps, ramp to %g rps, decline), Poisson", lo, hi),
		Requests: poisson(segs, l, seed),
	}, nil
}

// segment is a stretch of time whose rate goes linearly from `from` to `to`.
type segment struct {
	start, end time.Duration
	from, to   float64
}

// poisson draws arrivals second by second: each second of a segment is a homogeneous Poisson
// process at the segment's rate at the middle of that second.
func poisson(segs []segment, l Lengths, seed uint64) []trace.Request {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	var out []trace.Request
	for _, s := range segs {
		for t0 := s.start; t0 < s.end; t0 += time.Second {
			t1 := min(t0+time.Second, s.end)
			mid := (t0 + t1) / 2
			frac := 0.0
			if s.end > s.start {
				frac = float64(mid-s.start) / float64(s.end-s.start)
			}
			rate := s.from + (s.to-s.from)*frac
			if rate <= 0 {
				continue
			}
			t := float64(t0)
			for {
				t += rng.ExpFloat64() / rate * float64(time.Second)
				if t >= float64(t1) {
					break
				}
				p, o := l.draw(rng)
				out = append(out, trace.Request{At: time.Duration(t), PromptTokens: p, OutputTokens: o})
			}
		}
	}
	return out
}

// Slice returns the requests arriving in [from, to), rebased to start at zero.
func (w *Workload) Slice(from, to time.Duration) *Workload {
	out := &Workload{Name: fmt.Sprintf("%s, %s to %s", w.Name, from, to)}
	for _, r := range w.Requests {
		if r.At >= from && r.At < to {
			r.At -= from
			out.Requests = append(out.Requests, r)
		}
	}
	return out
}
