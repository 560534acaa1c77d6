package policy

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/llmscaler/llmscaler/internal/window"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// In these tests a replica serves 10 requests/s and the policy's prior says so, unless a
// test is about learning it; with the default 15 % headroom and one replica spare, 56
// requests/s need 7 replicas and 18 need 3. Loads stay off whole multiples of a replica's
// capacity, where the spare replica's hysteresis decides.
func TestSLO(t *testing.T) {
	const min = time.Minute
	tests := []fleetCase{
		{
			name: "step: panic scales up at once, then settles at the sized count",
			rate: stepAt(5*min, 18, 56), opts: []fleetOpt{withReplicas(3)}, run: 12 * min,
			check: func(t *testing.T, f *fleet) {
				if up := f.firstChange(5*min, true); up < 0 || up > 5*min+10*time.Second {
					t.Errorf("first scale-up at %v, want within 10 s of the 5m0s step", up)
				}
				// Replicas started for the backlog go once it is gone, never below what
				// the new rate needs, and none while a queue remains.
				if n := f.downsWithQueue(5*min, 12*min, 1); n != 0 {
					t.Errorf("%d scale-downs while the backlog drained\n%s", n, f.journal())
				}
				if low := f.lowest(5*min+30*time.Second, 12*min); low < 7 {
					t.Errorf("fell to %d replicas after the step, below the 7 that 56 req/s needs\n%s", low, f.journal())
				}
				if f.count() != 7 || f.queue() >= 1 {
					t.Errorf("ended with %d replicas and a queue of %.0f, want 7 and none", f.count(), f.queue())
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
			rate: burst(5*min, 30*time.Second, 18, 100), opts: []fleetOpt{withReplicas(3)}, run: 15 * min,
			check: func(t *testing.T, f *fleet) {
				if up := f.firstChange(5*min, true); up < 0 || up > 5*min+5*time.Second {
					t.Errorf("first scale-up at %v, want within 5 s of the burst", up)
				}
				// Until the burst has lasted two panic windows it is planned for by its queue
				// alone; after that as a new rate; once it is over, nothing more is added.
				if ups, _ := f.changes(5*min+30*time.Second, 15*min); ups != 0 {
					t.Errorf("%d scale-ups after the burst\n%s", ups, f.journal())
				}
				// The replicas started for the burst's queue may go once it is gone; those
				// its rate needed (100 req/s: 11.5 with headroom, 11 as the panic window
				// leaves the burst) stay for the 120 s delay.
				if n := f.downsWithQueue(5*min, 15*min, 1); n != 0 {
					t.Errorf("%d scale-downs with a queue\n%s", n, f.journal())
				}
				if low := f.lowest(5*min+30*time.Second, 5*min+30*time.Second+110*time.Second); low < 11 {
					t.Errorf("fell to %d replicas within the 120 s delay after the burst, want the 11 its rate needed\n%s", low, f.journal())
				}
				if f.count() != 3 {
					t.Errorf("ended with %d replicas, want the base load's 3", f.count())
				}
			},
		},
		{
			// 3 min at 18 req/s, 2 min at 75, with a 30 s cold start: each on-period
			// after a scale-down is a panic with a backlog. A scale-down regretted
			// (a panic back above what it left) doubles the 120 s delay; twice regretted,
			// 480 s outlasts the 3 min off-period and the count the load needs (75 x
			// 1.15 / 10: 9) is kept through it from then on.
			name: "on/off: regretted scale-downs stretch the delay until the off-periods are held",
			rate: onOff(3*min, 2*min, 18, 75), opts: []fleetOpt{withReplicas(3), withColdStart(30 * time.Second)}, run: 40 * min,
			check: func(t *testing.T, f *fleet) {
				for cycle := 3; cycle < 8; cycle++ {
					start := time.Duration(cycle) * 5 * min
					if low := f.lowest(start, start+3*min); low < 9 {
						t.Errorf("off-period %d fell to %d replicas, want the 9 the on-period needs kept\n%s", cycle, low, f.journal())
					}
					if q := f.maxQueue(start+3*min, start+5*min); q > 50 {
						t.Errorf("on-period %d queued %.0f requests\n%s", cycle, q, f.journal())
					}
				}
				// What is held is what the steady sizing asked for. A step looks like a
				// ramp to the trend until the stable window has filled, so that is up to
				// 14 (the forecast at the trend's cap), not the 9 the level needs: known
				// overshoot, see BENCHMARKS.md (onoff).
				if p := f.peak(30*min, 40*min); p > 14 {
					t.Errorf("held %d replicas in the last cycles, want at most 14\n%s", p, f.journal())
				}
			},
		},
		{
			name: "noisy flat load on a sizing boundary does not flap",
			// 50 req/s is 5 replicas' worth: with one spare, the demand sits exactly between
			// 6 and 7 replicas.
			rate: flat(50), opts: []fleetOpt{withReplicas(6), withNoise(1)}, run: 30 * min,
			check: func(t *testing.T, f *fleet) {
				ups, downs := f.changes(0, 30*min)
				if ups+downs > 1 {
					t.Errorf("%d changes in 30 minutes of flat load\n%s", ups+downs, f.journal())
				}
			},
		},
		{
			name: "slow cold start: adds in the first panic window, then waits",
			rate: stepAt(5*min, 18, 56), opts: []fleetOpt{withReplicas(3), withColdStart(time.Minute)}, run: 15 * min,
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
				// 7 replicas serve 56 req/s with headroom; 3 more drain, over one cold start,
				// the queue that builds while they load: (56-30) req/s x 60 s.
				if p := f.peak(5*min, 15*min); p > 10 {
					t.Errorf("peaked at %d replicas, want at most 10\n%s", p, f.journal())
				}
				if f.count() != 7 {
					t.Errorf("ended with %d replicas, want 7", f.count())
				}
			},
		},
		{
			name:   "capacity learned while saturated replaces a wrong prior",
			policy: sloPolicy(func(s *llmscalerv1.SloPolicy) { s.PriorRequestsPerSecond = ptr(20.0) }),
			rate:   stepAt(2*min, 20, 60), opts: []fleetOpt{withReplicas(2)}, run: 14 * min,
			check: func(t *testing.T, f *fleet) {
				// Learning runs only while the SLO is breached, so it stops once the
				// fleet is large enough: between the true 10 and the point where the
				// fleet it sizes carries 60 req/s (60 x 1.2 / 7 replicas = 10.3).
				if c := f.as.slo.capacity; c < 9 || c > 15 {
					t.Errorf("capacity estimate %.2f req/s, want it moved from the prior 20 to 9..15", c)
				}
				// 60 req/s at the estimate, with headroom and a spare: 6 at 12 req/s each,
				// 8 at the true 10.
				if n := f.count(); n < 6 || n > 9 {
					t.Errorf("ended with %d replicas, want 6 to 9 (60 req/s at 10-12 each, with headroom)\n%s", n, f.journal())
				}
				if q := f.queues[len(f.queues)-1]; q > 1 {
					t.Errorf("ended with %.1f requests queued, want the queue gone\n%s", q, f.journal())
				}
			},
		},
		{
			name: "scale-down waits out the delay, then follows the need down step by step",
			rate: stepAt(2*min, 56, 18), opts: []fleetOpt{withReplicas(7)}, run: 10 * min,
			check: func(t *testing.T, f *fleet) {
				downs := f.changeTimes(false)
				if len(downs) == 0 || downs[0] < 2*min+2*min {
					t.Errorf("scale-downs at %v, want the first one 120 s after the stable window shows the drop", downs)
				}
				// The drop is in the stable window a minute after it happens: back at the
				// need within the delay plus one more minute.
				if last := downs[len(downs)-1]; last > 2*min+min+2*min+min {
					t.Errorf("last scale-down at %v, want by %v\n%s", last, 6*min, f.journal())
				}
				for _, d := range f.decisions {
					if d.Change && d.Desired < d.Current-max(1, (d.Current-3)/2) {
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
			rate: stepAt(3*min, 18, 56), opts: []fleetOpt{withReplicas(3)}, run: 10 * min,
			check: func(t *testing.T, f *fleet) {
				if up := f.firstChange(3*min, true); up < 0 || up > 3*min+10*time.Second {
					t.Errorf("first scale-up at %v", up)
				}
				if f.count() != 7 {
					t.Errorf("ended with %d replicas, want 7", f.count())
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
			rate: stepAt(5*min, 18, 9), opts: []fleetOpt{withReplicas(3)}, run: 15 * min,
			check: func(t *testing.T, f *fleet) {
				if p := f.peak(0, 15*min); p > 4 {
					t.Errorf("peaked at %d replicas for a target more replicas cannot meet\n%s", p, f.journal())
				}
				// The latency-only additions lower the estimate towards the load at which
				// latency broke (9 req/s a replica), where 9 req/s is one replica's worth:
				// 2 replicas, or 3 with the spare replica's margin.
				if n := f.count(); n < 2 || n > 3 {
					t.Errorf("ended with %d replicas, want 2 or 3 for 9 req/s\n%s", n, f.journal())
				}
			},
		},
	}
	runFleetCases(t, tests, sloPolicy(nil))
}

func TestSLOReason(t *testing.T) {
	f := newFleet(t, sloPolicy(nil), stepAt(time.Minute, 9, 40), withReplicas(2))
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

func TestSized(t *testing.T) {
	tests := []struct {
		arrival, margin float64
		want            int
		spare           bool
	}{
		{0, 0, 0, false},
		{5, 0, 1, false},    // half a replica: 0.575 -> 1, no spare below one replica's worth
		{18, 0, 3, false},   // 1.8 x 1.15 = 2.07 -> 3, as many as 2 + 1 spare
		{20, 0, 3, false},   // exactly 2 replicas' worth: 2.3 -> 3 = 2 + 1
		{20, 0.05, 4, true}, // the margin of a scale-down check: 2.1 -> 3 + 1
		{15, 0, 3, true},    // 1.5 x 1.15 = 1.7 -> 2; the spare makes it 2 + 1
		{95, 0, 11, false},  // 9.5 x 1.15 = 10.9 -> 11, as many as 10 + 1
	}
	for _, tc := range tests {
		n, spare := sized(tc.arrival, 10, 0.15, tc.margin, true)
		if n != tc.want || spare != tc.spare {
			t.Errorf("sized(%g req/s, margin %g) = %d (spare %v), want %d (spare %v)", tc.arrival, tc.margin, n, spare, tc.want, tc.spare)
		}
	}
}

func TestForecast(t *testing.T) {
	a, err := NewAutoscaler(sloPolicy(nil))
	if err != nil {
		t.Fatal(err)
	}
	in := func(now time.Time, long, stable, panic float64) *Input {
		return &Input{Now: now, ColdStart: 80 * time.Second,
			Stable: window.Values{Span: time.Minute, Covered: time.Minute, ArrivalRate: stable},
			Long:   window.Values{Span: 2 * time.Minute, Covered: 2 * time.Minute, ArrivalRate: long},
			Panic:  window.Values{Span: 6 * time.Second, Covered: 6 * time.Second, ArrivalRate: panic}}
	}
	now := epoch.Add(time.Hour)
	if f := a.forecast(in(now, 50, 50, 50)); f != 50 {
		t.Errorf("flat load: forecast %g, want the stable rate 50", f)
	}
	// 51 against 50 over two minutes is within Poisson noise.
	if f := a.forecast(in(now, 50, 51, 51)); f != 51 {
		t.Errorf("noise: forecast %g, want the stable rate 51", f)
	}
	// A ramp of 0.25 req/s a second: the stable mean (30 s ago) is 7.5 above the long one
	// (60 s ago). Not sized for until it has lasted trendPersist.
	if f := a.forecast(in(now, 47.5, 55, 60)); f != 55 {
		t.Errorf("a rise just seen: forecast %g, want the stable rate 55 until it lasts", f)
	}
	now = now.Add(trendPersist)
	// The trend reaches 30 s + 80 s ahead: +27.5, less 3 standard deviations of
	// sqrt(55 x (1/60 - 1/120)) / 30 s x 110 s = 2.48.
	want := 55 + 27.5 - 3*math.Sqrt(55*(1.0/60-1.0/120))/30*110
	if f := a.forecast(in(now, 47.5, 55, 60)); math.Abs(f-want) > 1e-9 {
		t.Errorf("a lasting ramp: forecast %g, want %g", f, want)
	}
	// The same windows with the last seconds below the stable mean: a burst that passed.
	if f := a.forecast(in(now, 47.5, 55, 50)); f != 55 {
		t.Errorf("a passed burst: forecast %g, want the stable rate 55", f)
	}
	// A steep rise is capped at half the stable rate.
	if f := a.forecast(in(now, 20, 55, 60)); f != 55*(1+trendMaxRise) {
		t.Errorf("a steep rise: forecast %g, want the cap %g", f, 55*(1+trendMaxRise))
	}
	// The rise gone: the next one must last again.
	a.forecast(in(now.Add(time.Second), 55, 55, 55))
	if f := a.forecast(in(now.Add(2*time.Second), 47.5, 55, 60)); f != 55 {
		t.Errorf("a new rise: forecast %g, want 55 until it lasts", f)
	}
}

func TestBreachWhileShortTeachesNothing(t *testing.T) {
	a, err := NewAutoscaler(sloPolicy(nil)) // prior 10 req/s in these tests
	if err != nil {
		t.Fatal(err)
	}
	now := epoch.Add(time.Hour)
	for i := range 60 {
		// 3 replicas at 50 req/s: short by the model's own count (30 < 50 x 1.15), saturated
		// and over target for a minute.
		p := valuesFor(6*time.Second, 3, 50, 200)
		p.SaturatedFinishedPerReplica, p.SaturatedGenerationTPSPerReplica = 4, 400
		a.Evaluate(Input{Now: now.Add(time.Duration(i) * time.Second), Ready: 3, Min: 1, Max: 50,
			ReportInterval: time.Second, ColdStart: time.Minute,
			Stable: valuesFor(time.Minute, 3, 50, 200), Panic: p})
	}
	if c := a.slo.capacity; c != 10 {
		t.Errorf("capacity %g after a breach the model explains, want the prior 10", c)
	}
}

func TestSmallQueueIsNotABacklog(t *testing.T) {
	a, err := NewAutoscaler(sloPolicy(nil))
	if err != nil {
		t.Fatal(err)
	}
	// 8 replicas at 60 req/s with 3 requests waiting: under half a request a replica, with
	// latency in target, is the noise of batching; 80 req/s of capacity has room.
	in := Input{Now: epoch.Add(time.Hour), Ready: 8, Min: 1, Max: 50, ReportInterval: time.Second,
		Stable: valuesFor(time.Minute, 8, 60, 0), Panic: valuesFor(6*time.Second, 8, 60, 3)}
	if d := a.Evaluate(in); d.Desired != 8 {
		t.Errorf("a queue of 3 on 8 replicas: %s", d.Reason)
	}
	// 6 waiting on 8 replicas with arrivals at ready capacity: a backlog, but the stable
	// window says 60 req/s, so until it has lasted two panic windows it is a burst that the
	// capacity on hand drains.
	in.Panic = valuesFor(6*time.Second, 8, 80, 6)
	var d Decision
	for i := range 13 {
		in.Now = in.Now.Add(time.Second)
		if d = a.Evaluate(in); i < 11 && d.Desired != 8 {
			t.Errorf("a backlog of 6 at capacity for %d s: %s", i+1, d.Reason)
		}
	}
	if d.Desired <= 8 {
		t.Errorf("a backlog of 6 at capacity for 13 s: %s", d.Reason)
	}
}

// A scale-down followed by a panic back above it is regret only if the replica it stopped
// was missed: the latency went over target before a replica started for the panic could be
// ready, or the arrivals when it is ready are more than the count left carries. A burst
// the fleet absorbed by then leaves the delay as it was.
func TestRegretIsJudgedWhenThePanicsReplicaIsReady(t *testing.T) {
	const cold = 80 * time.Second
	tests := []struct {
		name string
		// flags are the panic's risks (1: latency over target already).
		flags uint8
		// breachAt is when, after the panic, the latency is over target for a moment (0: never);
		// arrival is the arrival rate from then on.
		breachAt time.Duration
		arrival  float64
		want     time.Duration
	}{
		{name: "burst over by the ready time", flags: 2, arrival: 25, want: 120 * time.Second},
		{name: "demand still above the count left", flags: 2, arrival: 45, want: 240 * time.Second},
		{name: "latency over target at the panic", flags: 1 | 2, arrival: 25, want: 240 * time.Second},
		{name: "latency over target before the ready time", flags: 2, breachAt: 20 * time.Second, arrival: 25, want: 240 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, err := NewAutoscaler(sloPolicy(nil))
			if err != nil {
				t.Fatal(err)
			}
			in := &Input{Now: epoch, ColdStart: cold}
			a.noteScale(in, 4, 3, causeSLOSpare)
			in.Now = epoch.Add(30 * time.Second)
			a.slo.panicNeed, a.cause.flags = 5, tc.flags
			a.noteScale(in, 3, 5, causeSLOPanic)
			for at := time.Second; at <= cold+10*time.Second; at += time.Second {
				breach := at == tc.breachAt
				a.judgeRegret(in.Now.Add(at), tc.arrival, 10, breach)
			}
			if a.slo.delay != tc.want {
				t.Errorf("delay %v after the panic's replica is ready, want %v", a.slo.delay, tc.want)
			}
			if a.slo.regretTo != 0 {
				t.Errorf("regret still pending (to %d) after it was judged", a.slo.regretTo)
			}
		})
	}
}
