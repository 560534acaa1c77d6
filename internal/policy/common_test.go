package policy

import (
	"strings"
	"testing"
	"time"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// allPolicies are the three policies with settings under which each scales down on an idle
// fleet in these tests.
func allPolicies() map[string]func() *llmscalerv1.Policy {
	return map[string]func() *llmscalerv1.Policy{
		NameThreshold: func() *llmscalerv1.Policy {
			return thresholdPolicy(func(p *llmscalerv1.ThresholdPolicy) {
				p.ResponseTimeDown = dur(3 * time.Second)
				p.Cooldown = dur(30 * time.Second)
			})
		},
		NameTarget: func() *llmscalerv1.Policy { return targetPolicy(nil) },
		NameSLO:    func() *llmscalerv1.Policy { return sloPolicy(nil) },
	}
}

func TestMissingDataNeverScalesDown(t *testing.T) {
	const min = time.Minute
	tests := []struct {
		name string
		// spoil makes data go missing after the fleet has run a while at low load.
		spoil func(f *fleet)
		// heal brings it back, if the test then checks a scale-down does happen.
		heal func(f *fleet)
	}{
		{"one replica stale", func(f *fleet) { f.reps[0].frozen = true }, func(f *fleet) { f.reps[0].frozen = false }},
		{"every replica stale", func(f *fleet) {
			for _, r := range f.reps {
				r.frozen = true
			}
		}, nil},
		{"a replica that never reported", func(f *fleet) {
			r := f.addReplica(true)
			r.frozen = true
		}, nil},
	}
	for name, policy := range allPolicies() {
		for _, tc := range tests {
			t.Run(name+"/"+tc.name, func(t *testing.T) {
				f := newFleet(t, policy(), flat(2), withReplicas(4))
				f.run(10 * time.Second)
				tc.spoil(f)
				n := f.count()
				f.run(15 * min)
				if f.count() != n {
					t.Fatalf("went from %d to %d replicas with data missing\n%s", n, f.count(), f.journal())
				}
				if f.clamped(ClampStaleData) == 0 {
					t.Error("no stale_data clamp journaled")
				}
				if tc.heal != nil {
					tc.heal(f)
					f.run(15 * min)
					if f.count() >= n {
						t.Errorf("still %d replicas 15 minutes after the data came back", f.count())
					}
				}
			})
		}
	}
}

func TestBoundsAndSteps(t *testing.T) {
	const min = time.Minute
	tests := []struct {
		name   string
		policy *llmscalerv1.Policy
		opts   []fleetOpt
		rate   func(time.Duration) float64
		run    time.Duration
		check  func(t *testing.T, f *fleet)
	}{
		{
			name: "slo: max_replicas caps a panic", policy: sloPolicy(nil),
			opts: []fleetOpt{withReplicas(2), withBounds(1, 5)}, rate: stepAt(min, 10, 80), run: 3 * min,
			check: func(t *testing.T, f *fleet) {
				if f.peak(0, 3*min) != 5 || f.clamped(ClampBounds) == 0 {
					t.Errorf("peak %d with %d bounds clamps, want 5 and some", f.peak(0, 3*min), f.clamped(ClampBounds))
				}
			},
		},
		{
			name: "target: max_replicas", policy: targetPolicy(nil),
			opts: []fleetOpt{withReplicas(2), withBounds(1, 4)}, rate: flat(80), run: 2 * min,
			check: func(t *testing.T, f *fleet) {
				if f.count() != 4 || f.clamped(ClampBounds) == 0 {
					t.Errorf("ended at %d, want max 4 with a bounds clamp", f.count())
				}
			},
		},
		{
			name: "min_replicas holds an idle deployment without journaling", policy: sloPolicy(nil),
			opts: []fleetOpt{withReplicas(2), withBounds(2, 10)}, rate: flat(0), run: 10 * min,
			check: func(t *testing.T, f *fleet) {
				if f.count() != 2 || len(f.decisions) != 0 {
					t.Errorf("ended at %d with %d journal-worthy decisions, want 2 and none", f.count(), len(f.decisions))
				}
			},
		},
		{
			name: "below min_replicas: raised at once", policy: thresholdPolicy(nil),
			opts: []fleetOpt{withReplicas(1), withBounds(3, 10)}, rate: flat(5), run: 5 * time.Second,
			check: func(t *testing.T, f *fleet) {
				if f.count() != 3 {
					t.Errorf("ended at %d, want min 3", f.count())
				}
			},
		},
		{
			name: "above max_replicas: lowered even with stale data", policy: sloPolicy(nil),
			opts: []fleetOpt{withReplicas(6), withBounds(1, 4), func(f *fleet) { f.reps[0].frozen = true }}, rate: flat(30), run: 5 * time.Second,
			check: func(t *testing.T, f *fleet) {
				if f.count() != 4 {
					t.Errorf("ended at %d, want max 4", f.count())
				}
			},
		},
		{
			name: "target: max_step 1", policy: func() *llmscalerv1.Policy {
				p := targetPolicy(nil)
				p.MaxStep = ptr(uint32(1))
				return p
			}(),
			opts: []fleetOpt{withReplicas(2)}, rate: flat(80), run: min,
			check: func(t *testing.T, f *fleet) {
				for _, d := range f.decisions {
					if d.Change && d.Desired-d.Current > 1 {
						t.Fatalf("stepped by %d: %s", d.Desired-d.Current, d.Reason)
					}
				}
				if f.clamped(ClampMaxStep) == 0 {
					t.Error("no max_step clamp")
				}
			},
		},
		{
			name: "slo: panic_max_step bounds a panic decision",
			policy: sloPolicy(func(s *llmscalerv1.SloPolicy) {
				s.PanicMaxStep = ptr(uint32(2))
			}),
			opts: []fleetOpt{withReplicas(2)}, rate: stepAt(min, 10, 100), run: 2 * min,
			check: func(t *testing.T, f *fleet) {
				for _, d := range f.decisions {
					if d.Change && d.Desired-d.Current > 2 {
						t.Fatalf("stepped by %d: %s", d.Desired-d.Current, d.Reason)
					}
				}
				if f.clamped(ClampMaxStep) == 0 {
					t.Error("no max_step clamp")
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFleet(t, tc.policy, tc.rate, tc.opts...)
			f.run(tc.run)
			tc.check(t, f)
		})
	}
}

func TestDryRun(t *testing.T) {
	for name, policy := range allPolicies() {
		t.Run(name, func(t *testing.T) {
			p := policy()
			p.DryRun = true
			f := newFleet(t, p, stepAt(time.Minute, 20, 60), withReplicas(3))
			f.run(5 * time.Minute)
			if f.count() != 3 {
				t.Fatalf("dry run changed the count to %d", f.count())
			}
			if len(f.decisions) == 0 {
				t.Fatal("a dry run journaled nothing under a threefold step")
			}
			d := f.decisions[len(f.decisions)-1]
			if !d.DryRun || d.Change || d.Desired != 3 || d.Recommended <= 3 || f.clamped(ClampDryRun) == 0 {
				t.Errorf("last decision %+v", d)
			}
			if !strings.HasPrefix(d.Reason, "dry run, would scale 3 -> ") {
				t.Errorf("reason %q", d.Reason)
			}
			if pb := ToProto(d, "chat", 7); pb.GetActed() {
				t.Error("a dry run journaled as acted")
			}
		})
	}
}

func TestPaused(t *testing.T) {
	for name, policy := range allPolicies() {
		t.Run(name, func(t *testing.T) {
			f := newFleet(t, policy(), stepAt(time.Minute, 20, 60), withReplicas(3))
			f.paused = true
			f.run(3 * time.Minute)
			if f.count() != 3 || len(f.decisions) != 0 {
				t.Fatalf("paused: count %d, %d journal-worthy decisions", f.count(), len(f.decisions))
			}
			d := f.step()
			if len(d.Clamps) != 1 || d.Clamps[0].Kind != ClampPaused || d.Reason != "hold at 3: autoscaling paused" {
				t.Errorf("paused decision %+v", d)
			}
			f.paused = false
			f.run(time.Minute)
			if f.count() <= 3 {
				t.Errorf("still %d replicas a minute after resuming", f.count())
			}
		})
	}
}

func TestSLOStepOutsidePanic(t *testing.T) {
	a, err := NewAutoscaler(sloPolicy(nil))
	if err != nil {
		t.Fatal(err)
	}
	// The last minute averaged 60 req/s, the last 6 s are calm: sizing wants 7 (6 replicas'
	// worth, with 15 % headroom or one spare), a non-panic decision adds at most 4.
	d := a.Evaluate(Input{
		Now: epoch, Ready: 2, Min: 1, Max: 50, ReportInterval: time.Second,
		Stable: valuesFor(time.Minute, 2, 60, 0), Panic: valuesFor(6*time.Second, 2, 15, 0),
	})
	if d.Recommended != 7 || d.Desired != 6 || len(d.Clamps) != 1 || d.Clamps[0].Kind != ClampMaxStep {
		t.Errorf("recommended %d desired %d clamps %+v, want 7 limited to 6 by max_step", d.Recommended, d.Desired, d.Clamps)
	}
}
