package policy

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/llmscaler/llmscaler/internal/window"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func TestNewAutoscalerDefaults(t *testing.T) {
	a, err := NewAutoscaler(nil)
	if err != nil {
		t.Fatal(err)
	}
	want := window.Config{Stable: 60 * time.Second, Panic: 6 * time.Second, History: 120 * time.Second}
	if a.Policy() != NameSLO || a.Config() != want || a.slo.capacity != 2 {
		t.Errorf("nil policy: %s %+v capacity %v, want slo with 60 s/6 s windows, 120 s of history and the prior 2", a.Policy(), a.Config(), a.slo.capacity)
	}
}

func TestSetPolicy(t *testing.T) {
	a, err := NewAutoscaler(thresholdPolicy(nil))
	if err != nil {
		t.Fatal(err)
	}
	in := Input{Now: epoch, Ready: 2, Min: 1, Max: 10, ReportInterval: time.Second,
		Stable: valuesFor(time.Minute, 2, 20, 50), Panic: valuesFor(6*time.Second, 2, 20, 50)}
	if d := a.Evaluate(in); !d.Change {
		t.Fatalf("no scale-up with a queue of 50: %s", d.Reason)
	}
	// New thresholds with a longer cooldown: the cooldown still counts from the last change.
	p := thresholdPolicy(func(p *llmscalerv1.ThresholdPolicy) { p.Cooldown = dur(10 * time.Minute) })
	p.StableWindow, p.PanicWindow = dur(2*time.Minute), dur(10*time.Second)
	if err := a.SetPolicy(p); err != nil {
		t.Fatal(err)
	}
	if got := a.Config(); got.Stable != 2*time.Minute || got.Panic != 10*time.Second {
		t.Errorf("windows %+v after SetPolicy", got)
	}
	in.Now, in.Ready = epoch.Add(6*time.Minute), 3
	if d := a.Evaluate(in); d.Change || len(d.Clamps) != 1 || d.Clamps[0].Kind != ClampCooldown {
		t.Errorf("6 min into a 10 min cooldown: %+v", d)
	}
	if err := a.SetPolicy(&llmscalerv1.Policy{MaxStep: ptr(uint32(0))}); err == nil || a.Policy() != NameThreshold {
		t.Errorf("an invalid policy replaced the old one: %v", err)
	}
	// Switching to slo keeps a measured capacity; an unmeasured one follows the prior.
	if err := a.SetPolicy(sloPolicy(func(s *llmscalerv1.SloPolicy) { s.PriorRequestsPerSecond = ptr(7.0) })); err != nil {
		t.Fatal(err)
	}
	if a.Policy() != NameSLO || a.slo.capacity != 7 {
		t.Errorf("policy %s capacity %v after switching to slo with prior 7", a.Policy(), a.slo.capacity)
	}
}

func TestToProto(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	d := Decision{
		Time: now, Policy: NameSLO, Current: 2, Recommended: 12, Desired: 4, Change: true,
		Clamps: []Clamp{{Kind: ClampMaxStep, From: 12, To: 4, Reason: "max_step: at most 2"}},
		Reason: "scale 2 -> 4: p95 TTFT 3.1 s > 2 s target in 6 s panic window",
		Stable: window.Values{Span: time.Minute, ArrivalRate: 5, Ready: 2, Starting: 0, Stale: 1, TTFTP95: 1.5},
		Panic:  window.Values{Span: 6 * time.Second, ArrivalRate: 9, Waiting: 30, TTFTP95: 3.1, GPUUtil: 97},
	}
	want := &llmscalerv1.Decision{
		Time: timestamppb.New(now), Deployment: "chat", Reason: d.Reason, FromReplicas: 2, ToReplicas: 4,
		Policy: "slo", Recommended: 12, Acted: true, Epoch: 3,
		Clamps: []*llmscalerv1.Clamp{{Kind: "max_step", From: 12, To: 4, Reason: "max_step: at most 2"}},
		Stable: &llmscalerv1.WindowValues{Window: durationpb.New(time.Minute), ArrivalRate: 5, Ready: 2, Stale: 1, TtftP95Seconds: 1.5},
		Panic:  &llmscalerv1.WindowValues{Window: durationpb.New(6 * time.Second), ArrivalRate: 9, Waiting: 30, TtftP95Seconds: 3.1, GpuUtilizationPercent: 97},
	}
	if diff := cmp.Diff(want, ToProto(d, "chat", 3), protocmp.Transform()); diff != "" {
		t.Errorf("ToProto (-want +got):\n%s", diff)
	}
	d.DryRun = true
	if ToProto(d, "chat", 3).GetActed() {
		t.Error("dry run journaled as acted")
	}
}

// TestSteadyStateAllocatesNothing runs each policy on a settled fleet: windows and
// Evaluate together must not allocate per tick.
func TestSteadyStateAllocatesNothing(t *testing.T) {
	for name, policy := range allPolicies() {
		t.Run(name, func(t *testing.T) {
			f := newFleet(t, policy(), flat(17), withReplicas(3))
			f.run(10 * time.Minute)
			cfg := f.as.Config()
			ids := []string{f.reps[0].id, f.reps[1].id, f.reps[2].id}
			s := window.Sample{Running: 16, FinishedPerSec: 5.6, GPUUtil: 60, HasGPUUtil: true, KVCache: 0.5, HasKVCache: true,
				TTFT: window.Summary{P50: 0.1, P95: 0.25, Count: 8}, E2E: window.Summary{P50: 2, P95: 4, Count: 8}}
			var d Decision
			allocs := testing.AllocsPerRun(200, func() {
				f.now = f.now.Add(time.Second)
				s.Time = f.now
				for _, id := range ids {
					f.dep.Observe(id, window.Ready, s)
				}
				f.dep.Tick(f.now)
				d = f.as.Evaluate(Input{Now: f.now, Ready: 3, Min: 1, Max: 10, ReportInterval: time.Second,
					Stable: f.dep.Values(f.now, cfg.Stable), Panic: f.dep.Values(f.now, cfg.Panic)})
			})
			if allocs != 0 || d.Change {
				t.Errorf("%v allocations per tick (last decision %q)", allocs, d.Reason)
			}
		})
	}
}
