package policy

import (
	"testing"
	"time"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// gapsAtLeast reports whether consecutive times are at least d apart.
func gapsAtLeast(ts []time.Duration, d time.Duration) bool {
	for i := 1; i < len(ts); i++ {
		if ts[i]-ts[i-1] < d {
			return false
		}
	}
	return true
}

func TestThreshold(t *testing.T) {
	const min = time.Minute
	tests := []fleetCase{
		{
			name: "step: one replica per 300 s cooldown, as the seed does",
			rate: stepAt(5*min, 20, 60), opts: []fleetOpt{withReplicas(3)}, run: 30 * min,
			check: func(t *testing.T, f *fleet) {
				ups := f.changeTimes(true)
				if len(ups) != 5 || ups[0] > 5*min+2*time.Second || !gapsAtLeast(ups, 300*time.Second) {
					t.Errorf("scale-ups at %v, want 5 from the step on, 300 s apart", ups)
				}
				for _, d := range f.decisions {
					if d.Change && d.Desired != d.Current+1 {
						t.Errorf("changed by %d: %s", d.Desired-d.Current, d.Reason)
					}
				}
				if f.clamped(ClampCooldown) == 0 {
					t.Error("no decision was held by the cooldown")
				}
			},
		},
		{
			name: "down by one only when everything is low",
			// The fake's mean response time is about 2.3 s at any load, so the seed's 1 s
			// would never let it scale down; 3 s does once queue and GPU are low too.
			policy: thresholdPolicy(func(p *llmscalerv1.ThresholdPolicy) { p.ResponseTimeDown = dur(3 * time.Second) }),
			rate:   stepAt(2*min, 60, 5), opts: []fleetOpt{withReplicas(8)}, run: 20 * min,
			check: func(t *testing.T, f *fleet) {
				downs := f.changeTimes(false)
				if len(downs) != 4 || downs[0] < 2*min || !gapsAtLeast(downs, 300*time.Second) {
					t.Errorf("scale-downs at %v, want 4 from the 2m0s drop on, 300 s apart", downs)
				}
			},
		},
		{
			name: "the seed's 1 s response time blocks scale-down",
			rate: stepAt(2*min, 60, 5), opts: []fleetOpt{withReplicas(8)}, run: 10 * min,
			check: func(t *testing.T, f *fleet) {
				if _, downs := f.changes(0, 10*min); downs != 0 {
					t.Errorf("%d scale-downs with a 2.3 s mean response time", downs)
				}
			},
		},
		{
			name: "noisy flat load between the thresholds holds",
			rate: flat(30), opts: []fleetOpt{withReplicas(5), withNoise(3)}, run: 30 * min,
			check: func(t *testing.T, f *fleet) {
				if ups, downs := f.changes(0, 30*min); ups+downs != 0 {
					t.Errorf("%d changes at 60 %% GPU utilization\n%s", ups+downs, f.journal())
				}
			},
		},
		{
			name: "ramp: only ups, never closer than the cooldown",
			rate: ramp(min, 11*min, 10, 60), opts: []fleetOpt{withReplicas(2)}, run: 20 * min,
			check: func(t *testing.T, f *fleet) {
				ups := f.changeTimes(true)
				if _, downs := f.changes(0, 20*min); downs != 0 || len(ups) == 0 || !gapsAtLeast(ups, 300*time.Second) {
					t.Errorf("ups at %v and %d downs on a rising load", ups, downs)
				}
			},
		},
		{
			name: "burst: one step, then the cooldown",
			rate: burst(5*min, 30*time.Second, 20, 100), opts: []fleetOpt{withReplicas(3)}, run: 9 * min,
			check: func(t *testing.T, f *fleet) {
				if ups, _ := f.changes(5*min, 9*min); ups != 1 {
					t.Errorf("%d scale-ups for a 30 s burst within one cooldown", ups)
				}
			},
		},
		{
			name: "thresholds are configurable",
			policy: thresholdPolicy(func(p *llmscalerv1.ThresholdPolicy) {
				p.GpuUtilizationUpPercent = ptr(50.0)
				p.Cooldown = dur(30 * time.Second)
			}),
			// 34 req/s: 68 % on 5 replicas, 57 % on 6, 49 % on 7.
			rate: flat(34), opts: []fleetOpt{withReplicas(5), withColdStart(0)}, run: 5 * min,
			check: func(t *testing.T, f *fleet) {
				ups := f.changeTimes(true)
				if len(ups) != 2 || ups[1]-ups[0] != 30*time.Second || f.count() != 7 {
					t.Errorf("ups at %v ending at %d, want 5 -> 6 -> 7, 30 s apart", ups, f.count())
				}
			},
		},
	}
	runFleetCases(t, tests, thresholdPolicy(nil))
}
