package sim

import (
	"math"
	"slices"
	"testing"
	"time"

	"github.com/llmscaler/llmscaler/internal/trace"
)

// evenTrace is one request a second for d, lengths numbered by arrival.
func evenTrace(d time.Duration) []trace.Request {
	var out []trace.Request
	for i := range int(d / time.Second) {
		out = append(out, trace.Request{At: time.Duration(i) * time.Second, PromptTokens: 100 + i, OutputTokens: 10})
	}
	return out
}

func TestOverlay(t *testing.T) {
	reqs := evenTrace(10 * time.Minute)
	w, err := Overlay("even", reqs, 2.5, 7)
	if err != nil {
		t.Fatal(err)
	}
	// Every copy covers [1 min, 10 min): 9 minutes at 2.5 req/s, the half copy thinned at
	// random, so within a few standard deviations of 1350.
	span := reqs[len(reqs)-1].At - OverlayMaxShift
	if got, want := float64(len(w.Requests)), 2.5*span.Seconds(); math.Abs(got-want) > 4*math.Sqrt(0.25*span.Seconds()) {
		t.Errorf("%v requests, want about %v", got, want)
	}
	if !slices.IsSortedFunc(w.Requests, func(a, b trace.Request) int { return cmpDur(a.At, b.At) }) {
		t.Error("requests not sorted by arrival")
	}
	if w.Requests[0].At < 0 || w.Duration() > span {
		t.Errorf("arrivals span [%v, %v], want within [0, %v]", w.Requests[0].At, w.Duration(), span)
	}
	// The rate keeps the trace's pace: each minute has about 2.5 x 60 arrivals.
	perMin := make([]int, int(span/time.Minute)+1)
	for _, r := range w.Requests {
		perMin[int(r.At/time.Minute)]++
	}
	for m, n := range perMin[:len(perMin)-1] {
		if n < 120 || n > 180 {
			t.Errorf("minute %d has %d arrivals, want about 150", m, n)
		}
	}
	again, err := Overlay("even", reqs, 2.5, 7)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(w.Requests, again.Requests) {
		t.Error("two overlays with one seed differ")
	}
	other, err := Overlay("even", reqs, 2.5, 8)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Equal(w.Requests, other.Requests) {
		t.Error("overlays with different seeds are the same")
	}
	for _, bad := range []float64{0, -1, math.NaN(), math.Inf(1), 1001} {
		if _, err := Overlay("even", reqs, bad, 1); err == nil {
			t.Errorf("rate scale %v accepted", bad)
		}
	}
}

func TestIdleTTFTAndAttainable(t *testing.T) {
	p := tiny(t) // 512-token prefill chunks, 2 ms + 10 us a token
	// 4096 tokens: 8 chunks of 2 ms plus 4096 x 10 us.
	if got, want := IdleTTFT(p, 4096), 8*2*time.Millisecond+4096*10*time.Microsecond; got != want {
		t.Errorf("IdleTTFT(4096) = %v, want %v", got, want)
	}
	if got, want := IdleTTFT(p, 1), 2*time.Millisecond+10*time.Microsecond; got != want {
		t.Errorf("IdleTTFT(1) = %v, want %v", got, want)
	}
	w := &Workload{Requests: []trace.Request{
		{PromptTokens: 100, OutputTokens: 10},   // 3 ms
		{PromptTokens: 4096, OutputTokens: 10},  // 57 ms
		{PromptTokens: 8000, OutputTokens: 500}, // larger than the 8192-token KV cache
		{PromptTokens: 7000, OutputTokens: 10},  // 84 ms
	}}
	if got := Attainable(p, w, 60*time.Millisecond); got != 0.5 {
		t.Errorf("attainable within 60 ms: %v, want 0.5", got)
	}
}

func TestTuneClairvoyantFindsTheLeastHeadroom(t *testing.T) {
	p := tiny(t)
	w, err := Seed(0.2, FixedLengths(64, 32), 3)
	if err != nil {
		t.Fatal(err)
	}
	w.Truncate(10 * time.Minute)
	env := Env{Params: p, Workload: w, Capacity: ReplicaCapacity(p, 64, 32)}
	cfg := Config{Params: p, Workload: w, InitialReplicas: WarmReplicas(env), MaxReplicas: 32}
	c, res, err := TuneClairvoyant(cfg, env, 0.99)
	if err != nil {
		t.Fatal(err)
	}
	if res.SLOAttainment < 0.99 {
		t.Fatalf("tuned clairvoyant reaches %.4f, want at least 0.99", res.SLOAttainment)
	}
	// 0.02 less headroom must fall short (or be the range's floor) and cost no more.
	if h := c.Headroom(); h > -0.29 {
		less := NewClairvoyant(env)
		less.headroom = h - 0.02
		lres, err := Run(cfg, less)
		if err != nil {
			t.Fatal(err)
		}
		if lres.SLOAttainment >= 0.99 && lres.GPUHours < res.GPUHours {
			t.Errorf("headroom %.2f reaches %.4f with %.3f GPU-hours, fewer than the tuned %.2f's %.3f", h-0.02, lres.SLOAttainment, lres.GPUHours, h, res.GPUHours)
		}
	}
}
