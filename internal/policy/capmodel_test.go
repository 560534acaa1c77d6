package policy

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/llmscaler/llmscaler/internal/window"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// costModel is a replica that spends its time as capmodel.go says a continuous-batching
// server does: alpha per iteration, beta per output token, gamma per prompt token.
type costModel struct {
	alpha, beta, gamma float64
	out, prompt        float64 // tokens per request
	kvPerSeq           float64 // share of the KV cache one sequence holds
}

// window is a panic (or stable) window of n ready replicas serving x requests/s each, at
// the batch the cost model gives for x, with every rate off by up to noise (relative).
func (c costModel) window(span time.Duration, n int, x float64, rng *rand.Rand, noise float64) window.Values {
	jit := func(v float64) float64 { return v * (1 + noise*(2*rng.Float64()-1)) }
	delta := c.beta*c.out + c.gamma*c.prompt
	b := c.alpha * c.out * x / (1 - delta*x)
	k := float64(n)
	return window.Values{
		Span: span, Covered: span, Ready: n,
		ArrivalRate: x * k, FinishedPerSec: x * k, Running: jit(b * k),
		GenerationTPS: jit(x * c.out * k), PromptTPS: jit(x * c.prompt * k),
		KVCache: b * c.kvPerSeq, E2EMean: b / x, TTFTP50: 0.2, TTFTP95: 0.4, E2EP50: b / x, E2EP95: 2 * b / x,
		Requests: uint64(x * k * span.Seconds()),
	}
}

// The simulator's Llama-3-8B on an A100, roughly: 10 ms a step, 150 us per sequence, about
// 95 us per prompt token with the prefill iterations' own cost spread over their tokens.
var a100Costs = costModel{alpha: 0.010, beta: 150e-6, gamma: 95e-6, out: 210, prompt: 1000, kvPerSeq: 1.0 / 330}

func TestBatchModelRecoversCosts(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var m batchModel
	now := epoch
	// The load walks between 2 and 6.5 requests/s per replica, as a probe's would, with 2 %
	// noise on every rate; the request mix changes halfway, which is what lets the fit tell
	// output from prompt tokens.
	for i := range 3600 {
		c := a100Costs
		if i >= 1800 {
			c.out, c.prompt = 150, 1600
		}
		x := 2 + 4.5*float64(i%600)/600
		p := c.window(6*time.Second, 4, x, rng, 0.02)
		m.observe(now, time.Second, &p)
		now = now.Add(time.Second)
	}
	got, ok := m.costs()
	if !ok {
		t.Fatal("no fit after an hour of samples")
	}
	want := [3]float64{a100Costs.alpha, a100Costs.beta, a100Costs.gamma}
	for i := range 3 {
		if math.Abs(got[i]-want[i]) > 0.1*want[i] {
			t.Errorf("cost %d = %.3g, want %.3g within 10 %%", i, got[i], want[i])
		}
	}
	// The bound for the mix of the stable window: modelRho of m = 1/delta, or the rate at
	// which the batch reaches modelKVShare of the KV cache's, whichever is lower.
	c := a100Costs
	st := c.window(time.Minute, 4, 4, rng, 0)
	ceil, ok := m.ceiling(&st)
	delta := c.beta*c.out + c.gamma*c.prompt
	kv := modelKVShare / c.kvPerSeq
	want0 := min(modelRho/delta, kv/(c.alpha*c.out+delta*kv))
	if !ok || math.Abs(ceil-want0) > 0.03*want0 {
		t.Errorf("ceiling = %.3f (ok %v), want %.3f within 3 %%", ceil, ok, want0)
	}
	// A KV cache four times as full per sequence makes the KV bound the lower one.
	c.kvPerSeq *= 4
	st = c.window(time.Minute, 4, 4, rng, 0)
	kvCeil, _ := m.ceiling(&st)
	kv = modelKVShare / c.kvPerSeq
	if want := kv / (c.alpha*c.out + delta*kv); math.Abs(kvCeil-want) > 0.03*want || kvCeil >= ceil {
		t.Errorf("ceiling with a small KV cache = %.3f, want %.3f (below %.3f)", kvCeil, want, ceil)
	}
}

func TestBatchModelIgnoresQueuesAndWantsTime(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var m batchModel
	now := epoch
	for i := range 1200 {
		p := a100Costs.window(6*time.Second, 4, 2+3*float64(i%300)/300, rng, 0.02)
		// A queue says the batch is the server's limit, not the demand's: not a sample.
		p.Waiting = 4
		m.observe(now, time.Second, &p)
		now = now.Add(time.Second)
	}
	if _, ok := m.costs(); ok {
		t.Fatal("fitted from windows with a queue")
	}
	for i := range int(modelMinWeight/time.Second) - 10 {
		p := a100Costs.window(6*time.Second, 4, 2+3*float64(i%300)/300, rng, 0.02)
		m.observe(now, time.Second, &p)
		now = now.Add(time.Second)
	}
	if _, ok := m.costs(); ok {
		t.Fatalf("fitted from less than %s of samples", modelMinWeight)
	}
	// Windows without token counts (a server that exports none) are never samples.
	for range 1200 {
		p := a100Costs.window(6*time.Second, 4, 3, rng, 0.02)
		p.GenerationTPS = 0
		m.observe(now, time.Second, &p)
		now = now.Add(time.Second)
	}
	if m.w >= modelMinWeight.Seconds() {
		t.Fatalf("weight %.0f s from windows without token counts", m.w)
	}
}

// probeRun feeds a an slo autoscaler's view of a fixed fleet of 4 replicas at x requests/s
// each, at the given TTFT p95, for d from now, and returns the time it ends at.
func probeRun(a *Autoscaler, now time.Time, d time.Duration, x, ttftP95 float64) time.Time {
	rng := rand.New(rand.NewPCG(5, 6))
	for end := now.Add(d); now.Before(end); now = now.Add(time.Second) {
		p := a100Costs.window(6*time.Second, 4, x*(0.8+0.4*rng.Float64()), rng, 0.02)
		st := a100Costs.window(time.Minute, 4, x, rng, 0.01)
		p.TTFTP95, st.TTFTP95 = ttftP95, ttftP95
		a.Evaluate(Input{Now: now, Ready: 4, ColdStart: 80 * time.Second, Stable: st, Panic: p, Long: st,
			Min: 4, Max: 4, ReportInterval: time.Second})
	}
	return now
}

func newProbed(t *testing.T, prior *float64) *Autoscaler {
	t.Helper()
	a, err := NewAutoscaler(sloPolicy(func(s *llmscalerv1.SloPolicy) { s.PriorRequestsPerSecond = prior }))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestProbeRaisesDefaultPrior(t *testing.T) {
	// 1.9 requests/s per replica served at a p95 TTFT of 0.4 s against 2 s: the default prior
	// (2) is probed upwards, never past the model's bound.
	a := newProbed(t, nil)
	now := probeRun(a, epoch, 40*time.Minute, 1.9, 0.4)
	got := a.slo.capacity
	if got <= 2.2 || got > a.slo.ceiling+1e-9 {
		t.Fatalf("capacity after probing = %.3f, want above 2.2 and at most the model's %.3f", got, a.slo.ceiling)
	}
	// Once the load the replicas carry is under probeLoad of the estimate, the estimate has
	// run ahead of what was seen served: no more probes until the fleet follows it.
	if got < 1.9*(1+defaultHeadroom)/probeLoad {
		t.Fatalf("capacity %.3f: the test wants it past the load gate %.3f", got, 1.9*(1+defaultHeadroom)/probeLoad)
	}
	probeRun(a, now, 20*time.Minute, 1.9, 0.4)
	if a.slo.capacity != got {
		t.Errorf("capacity moved from %.3f to %.3f with the load under the probe's gate", got, a.slo.capacity)
	}
	// A TTFT past probeLatency of the target stops the probe.
	a = newProbed(t, nil)
	if probeRun(a, epoch, 40*time.Minute, 1.9, 0.7*2); a.slo.capacity != defaultPrior {
		t.Errorf("capacity with p95 TTFT at 0.7 of the target = %.3f, want the prior %v", a.slo.capacity, float64(defaultPrior))
	}
	// A configured prior is a benchmark: it is not probed.
	a = newProbed(t, ptr(2.0))
	if probeRun(a, epoch, 40*time.Minute, 1.9, 0.4); a.slo.capacity != 2 {
		t.Errorf("capacity with a configured prior = %.3f, want 2", a.slo.capacity)
	}
}

func TestProbeGuessesWhileTheModelHasNoSamples(t *testing.T) {
	// Short requests (512 prompt, 128 output tokens) at 1.5 requests/s per replica: each
	// replica holds about 2.1 sequences, under modelMinBatch, so the model never gets a
	// sample. The probe still raises the default prior, on its guess of where the batch is
	// probeBatch, a probeStep at a time.
	short := a100Costs
	short.out, short.prompt = 128, 512
	run := func(a *Autoscaler, d time.Duration, ttftP95 float64) {
		rng := rand.New(rand.NewPCG(7, 8))
		now := epoch
		for end := now.Add(d); now.Before(end); now = now.Add(time.Second) {
			p := short.window(6*time.Second, 4, 1.5*(0.9+0.2*rng.Float64()), rng, 0.02)
			st := short.window(time.Minute, 4, 1.5, rng, 0.01)
			p.TTFTP95, st.TTFTP95 = ttftP95, ttftP95
			a.Evaluate(Input{Now: now, Ready: 4, ColdStart: 80 * time.Second, Stable: st, Panic: p, Long: st,
				Min: 4, Max: 4, ReportInterval: time.Second})
		}
	}
	a := newProbed(t, nil)
	run(a, 5*time.Second, 0.4)
	if want := defaultPrior * (1 + probeStep); math.Abs(a.slo.capacity-want) > 1e-9 {
		t.Fatalf("capacity after the first probe = %.4f, want one probeStep up, %.4f (a guess is not a bound to jump halfway to)", a.slo.capacity, want)
	}
	a = newProbed(t, nil)
	run(a, 40*time.Minute, 0.4)
	if a.slo.ceiling != 0 {
		t.Fatalf("the model has a bound (%.3f): the test wants batches too small for its samples", a.slo.ceiling)
	}
	// The probe stops at its load gate: the estimate, with headroom, at most 1/probeLoad
	// of the load carried.
	if got, gate := a.slo.capacity, 1.5*(1+defaultHeadroom)/probeLoad; got < 2.5 || got > gate*(1+probeStep) {
		t.Errorf("capacity after 40 minutes = %.3f, want above 2.5 and within a step of the load gate %.3f", got, gate)
	}
	a = newProbed(t, nil)
	if run(a, 40*time.Minute, 0.7*2); a.slo.capacity != defaultPrior {
		t.Errorf("capacity with p95 TTFT at 0.7 of the target = %.3f, want the prior %v", a.slo.capacity, float64(defaultPrior))
	}
}
