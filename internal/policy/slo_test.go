package policy

import (
	"math"
	"strings"
	"testing"
	"time"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// In these tests a replica serves 10 requests/s and the policy's prior says so, unless a
// test is about learning it; with the default 20 % headroom, 60 requests/s need 8 replicas
// and 20 need 3.
func TestSLO(t *testing.T) {
	const min = time.Minute
	tests := []fleetCase{
		{
			name: "step: panic scales up at once, then settles at the sized count",
			rate: stepAt(5*min, 20, 60), opts: []fleetOpt{withReplicas(3)}, run: 12 * min,
			check: func(t *testing.T, f *fleet) {
				if up := f.firstChange(5*min, true); up < 0 || up > 5*min+10*time.Second {
					t.Errorf("first scale-up at %v, want within 10 s of the 5m0s step", up)
				}
				if _, downs := f.changes(5*min, 8*min); downs != 0 {
					t.Errorf("%d scale-downs while the backlog drained", downs)
				}
				if f.count() != 8 || f.queue() >= 1 {
					t.Errorf("ended with %d replicas and a queue of %.0f, want 8 and none", f.count(), f.queue())
				}
				if p95 := f.decisions[len(f.decisions)-1].Stable.TTFTP95; p95 > 2 {
					t.Errorf("p95 TTFT %.2f s at the end, want back under the 2 s target", p95)
				}
			},
		},
		{
			name: "ramp: tracks the load up without ever scaling down",
			rate: ramp(min, 11*min, 10, 80), run: 14 * min,
			check: func(t *testing.T, f *fleet) {
				if _, downs := f.changes(0, 14*min); downs != 0 {
					t.Errorf("%d scale-downs on a rising load", downs)
				}
				if f.count() != 10 {
					t.Errorf("ended with %d replicas, want 10 for 80 req/s", f.count())
				}
				if q := f.maxQueue(2*min, 14*min); q > 10 {
					t.Errorf("queue reached %.0f during the ramp", q)
				}
			},
		},
		{
			name: "burst: up within seconds, back to the base count after the delay",
			rate: burst(5*min, 30*time.Second, 20, 100), opts: []fleetOpt{withReplicas(3)}, run: 15 * min,
			check: func(t *testing.T, f *fleet) {
				if up := f.firstChange(5*min, true); up < 0 || up > 5*min+5*time.Second {
					t.Errorf("first scale-up at %v, want within 5 s of the burst", up)
				}
				if ups, _ := f.changes(5*min+10*time.Second, 15*min); ups != 0 {
					t.Errorf("%d scale-ups after the first panic window of the burst\n%s", ups, f.journal())
				}
				if down := f.firstChange(5*min+30*time.Second, false); down < 5*min+30*time.Second+2*min {
					t.Errorf("first scale-down at %v, before the 120 s delay after the burst", down)
				}
				if f.count() != 3 {
					t.Errorf("ended with %d replicas, want the base load's 3", f.count())
				}
			},
		},
		{
			name: "noisy flat load on a sizing boundary does not flap",
			// 41.7 req/s x 1.2 = 50: the demand sits exactly between 5 and 6 replicas.
			rate: flat(41.7), opts: []fleetOpt{withReplicas(5), withNoise(1)}, run: 30 * min,
			check: func(t *testing.T, f *fleet) {
				ups, downs := f.changes(0, 30*min)
				if ups+downs > 1 {
					t.Errorf("%d changes in 30 minutes of flat load\n%s", ups+downs, f.journal())
				}
			},
		},
		{
			name: "slow cold start: adds in the first panic window, then waits",
			rate: stepAt(5*min, 20, 60), opts: []fleetOpt{withReplicas(3), withColdStart(time.Minute)}, run: 15 * min,
			check: func(t *testing.T, f *fleet) {
				first := f.firstChange(5*min, true)
				if first < 0 {
					t.Fatal("never scaled up")
				}
				// The panic window fills with the new rate over its 6 s; after that the
				// starting replicas are counted and nothing is added while they load.
				if ups, _ := f.changes(first+6*time.Second, 15*min); ups != 0 {
					t.Errorf("%d scale-ups while the first replicas loaded\n%s", ups, f.journal())
				}
				// 8 replicas serve 60 req/s with headroom; 3 more drain, over one cold start,
				// the queue that builds while they load: (60-30) req/s x 60 s.
				if p := f.peak(5*min, 15*min); p > 11 {
					t.Errorf("peaked at %d replicas, want at most 11\n%s", p, f.journal())
				}
				if f.count() != 8 {
					t.Errorf("ended with %d replicas, want 8", f.count())
				}
			},
		},
		{
			name:   "capacity learned while saturated replaces a wrong prior",
			policy: sloPolicy(func(s *llmscalerv1.SloPolicy) { s.PriorRequestsPerSecond = ptr(20.0) }),
			rate:   stepAt(2*min, 20, 60), opts: []fleetOpt{withReplicas(2)}, run: 10 * min,
			check: func(t *testing.T, f *fleet) {
				if c := f.as.slo.capacity; math.Abs(c-10) > 1 {
					t.Errorf("capacity estimate %.2f req/s, want about the true 10", c)
				}
				if f.count() != 8 {
					t.Errorf("ended with %d replicas, want 8", f.count())
				}
			},
		},
		{
			name: "scale-down waits out the delay and goes one replica at a time",
			rate: stepAt(2*min, 60, 20), opts: []fleetOpt{withReplicas(8)}, run: 10 * min,
			check: func(t *testing.T, f *fleet) {
				downs := f.changeTimes(false)
				if len(downs) == 0 || downs[0] < 2*min+2*min {
					t.Errorf("scale-downs at %v, want the first one 120 s after the stable window shows the drop", downs)
				}
				for _, d := range f.decisions {
					if d.Change && d.Desired < d.Current-1 {
						t.Errorf("scaled down by %d at once: %s", d.Current-d.Desired, d.Reason)
					}
				}
				if f.count() != 3 {
					t.Errorf("ended with %d replicas, want 3", f.count())
				}
			},
		},
		{
			name: "E2E latency SLO",
			policy: sloPolicy(func(s *llmscalerv1.SloPolicy) {
				s.Metric = llmscalerv1.SloMetric_SLO_METRIC_E2E
				s.Target = dur(8 * time.Second)
				s.Percentile = ptr(99.0)
			}),
			rate: stepAt(3*min, 20, 60), opts: []fleetOpt{withReplicas(3)}, run: 10 * min,
			check: func(t *testing.T, f *fleet) {
				if up := f.firstChange(3*min, true); up < 0 || up > 3*min+10*time.Second {
					t.Errorf("first scale-up at %v", up)
				}
				if f.count() != 8 {
					t.Errorf("ended with %d replicas, want 8", f.count())
				}
			},
		},
		{
			name: "a latency target no replica count meets does not run away",
			// The fake's p99 E2E is about 7 s even with no queue.
			policy: sloPolicy(func(s *llmscalerv1.SloPolicy) {
				s.Metric = llmscalerv1.SloMetric_SLO_METRIC_E2E
				s.Target = dur(6 * time.Second)
				s.Percentile = ptr(99.0)
			}),
			rate: stepAt(5*min, 20, 10), opts: []fleetOpt{withReplicas(3)}, run: 15 * min,
			check: func(t *testing.T, f *fleet) {
				if p := f.peak(0, 15*min); p > 4 {
					t.Errorf("peaked at %d replicas for a target more replicas cannot meet\n%s", p, f.journal())
				}
				if f.count() != 2 {
					t.Errorf("ended with %d replicas, want 2 for 10 req/s", f.count())
				}
			},
		},
	}
	runFleetCases(t, tests, sloPolicy(nil))
}

func TestSLOReason(t *testing.T) {
	f := newFleet(t, sloPolicy(nil), stepAt(time.Minute, 10, 40), withReplicas(2))
	f.run(2 * time.Minute)
	var panicLine string
	for _, d := range f.decisions {
		if d.Change && strings.Contains(d.Reason, "panic window") {
			panicLine = d.Reason
			break
		}
	}
	if !strings.HasPrefix(panicLine, "scale 2 -> ") || !strings.Contains(panicLine, "in 6 s panic window") {
		t.Errorf("panic reason %q, want \"scale 2 -> N: ... in 6 s panic window\"", panicLine)
	}
}

func TestSLOStartingReplicasCountAsArrivingCapacity(t *testing.T) {
	a, err := NewAutoscaler(sloPolicy(nil))
	if err != nil {
		t.Fatal(err)
	}
	now := epoch.Add(time.Hour)
	base := Input{
		Now: now, Ready: 2, Starting: 4, ColdStart: time.Minute, Min: 1, Max: 50, ReportInterval: time.Second,
		StartingSince: []time.Time{now.Add(-50 * time.Second), now.Add(-50 * time.Second), now.Add(-50 * time.Second), now.Add(-50 * time.Second)},
	}
	// 50 req/s arrive at 2 ready replicas of 10 req/s with 100 queued: at risk, but the 4
	// starting replicas are ready in 10 s and then 60 req/s drain the queue.
	base.Panic = valuesFor(6*time.Second, 2, 50, 100)
	base.Stable = valuesFor(time.Minute, 2, 40, 50)
	d := a.Evaluate(base)
	if d.Change {
		t.Errorf("added replicas while enough were starting: %s", d.Reason)
	}
	// The same load with the starting replicas only just begun: the queue grows for a whole
	// cold start, and more are needed.
	for i := range base.StartingSince {
		base.StartingSince[i] = now
	}
	if d := a.Evaluate(base); !d.Change || d.Desired <= 6 {
		t.Errorf("desired %d with starting replicas a cold start away: %s", d.Desired, d.Reason)
	}
}
