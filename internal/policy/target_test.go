package policy

import (
	"testing"
	"time"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// In the fake a request stays in flight 2 s, so n replicas at r req/s hold 2r/n each; the
// default target here is 16 in flight per replica.
func TestTarget(t *testing.T) {
	const min = time.Minute
	tests := []fleetCase{
		{
			name: "within tolerance: no change",
			// 34 req/s on 4 replicas: 17 in flight each, 6 % over target.
			rate: flat(34), opts: []fleetOpt{withReplicas(4)}, run: 10 * min,
			check: func(t *testing.T, f *fleet) {
				if len(f.decisions) != 0 {
					t.Errorf("%d journal-worthy decisions within tolerance: %s", len(f.decisions), f.decisions[0].Reason)
				}
			},
		},
		{
			name: "beyond tolerance: ceil(ready x ratio)",
			// 40 req/s on 4 replicas: 20 each, ratio 1.25, desired ceil(5) = 5.
			rate: flat(40), opts: []fleetOpt{withReplicas(4), withColdStart(0)}, run: min,
			check: func(t *testing.T, f *fleet) {
				if ups := f.changeTimes(true); len(ups) != 1 || f.count() != 5 {
					t.Errorf("ups at %v ending at %d, want one step to 5", ups, f.count())
				}
			},
		},
		{
			name: "step: rate limited up, settles after the down stabilization",
			rate: stepAt(5*min, 20, 60), opts: []fleetOpt{withReplicas(3)}, run: 15 * min,
			check: func(t *testing.T, f *fleet) {
				if up := f.firstChange(5*min, true); up < 0 || up > 5*min+5*time.Second {
					t.Errorf("first scale-up at %v", up)
				}
				if f.clamped(ClampRateLimit) == 0 {
					t.Error("no rate limit applied to a fourfold jump")
				}
				if f.count() != 8 {
					t.Errorf("ended with %d replicas, want 8 (7.5 in flight each)", f.count())
				}
			},
		},
		{
			name: "scale-down stabilization holds for 300 s after the drop",
			rate: stepAt(2*min, 60, 20), opts: []fleetOpt{withReplicas(8)}, run: 10 * min,
			check: func(t *testing.T, f *fleet) {
				if down := f.firstChange(0, false); down < 2*min+300*time.Second-10*time.Second {
					t.Errorf("first scale-down at %v, want about 300 s after the 2m0s drop", down)
				}
				if f.clamped(ClampStabilization) == 0 {
					t.Error("no stabilization clamp recorded")
				}
				if f.count() != 3 {
					t.Errorf("ended with %d replicas, want 3", f.count())
				}
			},
		},
		{
			name: "scale-up stabilization delays an up by its window",
			policy: targetPolicy(func(p *llmscalerv1.TargetPolicy) {
				p.ScaleUpStabilization = dur(30 * time.Second)
			}),
			rate: stepAt(2*min, 20, 40), opts: []fleetOpt{withReplicas(3)}, run: 4 * min,
			check: func(t *testing.T, f *fleet) {
				if up := f.firstChange(0, true); up < 2*min+30*time.Second {
					t.Errorf("first scale-up at %v, want 30 s after the 2m0s step", up)
				}
			},
		},
		{
			name: "rate limit: at most max(4, 100 %) per 15 s",
			rate: flat(200), opts: []fleetOpt{withReplicas(2)}, run: 20 * time.Second,
			check: func(t *testing.T, f *fleet) {
				if p := f.peak(0, 15*time.Second); p != 6 {
					t.Errorf("peak %d in the first 15 s from 2, want 2+4 = 6", p)
				}
			},
		},
		{
			name: "noisy flat load does not flap",
			rate: flat(37), opts: []fleetOpt{withReplicas(5), withNoise(2)}, run: 30 * min,
			check: func(t *testing.T, f *fleet) {
				if ups, downs := f.changes(0, 30*min); ups+downs > 2 {
					t.Errorf("%d changes in 30 minutes\n%s", ups+downs, f.journal())
				}
			},
		},
		{
			name: "ramp: follows up, never down",
			rate: ramp(min, 11*min, 10, 80), opts: []fleetOpt{withReplicas(2)}, run: 12 * min,
			check: func(t *testing.T, f *fleet) {
				if _, downs := f.changes(0, 12*min); downs != 0 || f.count() < 10 {
					t.Errorf("%d downs, ended at %d on a ramp to 80 req/s", downs, f.count())
				}
			},
		},
		{
			name: "burst: up at once, down after the stabilization",
			rate: burst(2*min, 30*time.Second, 20, 100), opts: []fleetOpt{withReplicas(3)}, run: 12 * min,
			check: func(t *testing.T, f *fleet) {
				if up := f.firstChange(2*min, true); up < 0 || up > 2*min+5*time.Second {
					t.Errorf("first scale-up at %v", up)
				}
				if down := f.firstChange(2*min, false); down < 2*min+300*time.Second {
					t.Errorf("first scale-down at %v", down)
				}
				if f.count() != 3 {
					t.Errorf("ended at %d, want 3", f.count())
				}
			},
		},
		{
			name: "GPU utilization metric",
			policy: targetPolicy(func(p *llmscalerv1.TargetPolicy) {
				p.Metric = llmscalerv1.TargetMetric_TARGET_METRIC_GPU_UTILIZATION
				p.Target = 50
			}),
			rate: flat(30), opts: []fleetOpt{withReplicas(3), withColdStart(0)}, run: 2 * min,
			check: func(t *testing.T, f *fleet) {
				if f.count() != 6 {
					t.Errorf("ended at %d, want 6 (30 req/s at 50 %% of 10 each)", f.count())
				}
			},
		},
		{
			name: "KV-cache metric",
			policy: targetPolicy(func(p *llmscalerv1.TargetPolicy) {
				p.Metric = llmscalerv1.TargetMetric_TARGET_METRIC_KV_CACHE
				p.Target = 0.4
			}),
			// Full replicas hold 0.8 of their KV cache in the fake.
			rate: flat(30), opts: []fleetOpt{withReplicas(3), withColdStart(0)}, run: 2 * min,
			check: func(t *testing.T, f *fleet) {
				if f.count() != 6 {
					t.Errorf("ended at %d, want 6", f.count())
				}
			},
		},
		{
			name: "waiting metric",
			policy: targetPolicy(func(p *llmscalerv1.TargetPolicy) {
				p.Metric = llmscalerv1.TargetMetric_TARGET_METRIC_WAITING
				p.Target = 1
			}),
			// A waiting target recommends min_replicas while nothing waits; min 3 keeps
			// the fleet at the base load's size until the step.
			rate: stepAt(min, 20, 60), opts: []fleetOpt{withReplicas(3), withBounds(3, 50)}, run: 3 * min,
			check: func(t *testing.T, f *fleet) {
				if up := f.firstChange(min, true); up < 0 || up > min+5*time.Second {
					t.Errorf("first scale-up at %v, want soon after the queue forms", up)
				}
			},
		},
	}
	runFleetCases(t, tests, targetPolicy(nil))
}
