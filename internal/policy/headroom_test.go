package policy

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// feedRises samples rate(elapsed) into a tracker every riseStep for d, with a 90 s horizon
// and a 60 s span (an 80 s cold start plus half a 20 s stable window, roughly the suite's).
func feedRises(t *riseTracker, d time.Duration, rate func(time.Duration) float64) {
	for e := time.Duration(0); e <= d; e += riseStep {
		t.observe(epoch.Add(e), rate(e), 90*time.Second, 60*time.Second)
	}
}

func TestRiseTrackerNeedsHistory(t *testing.T) {
	var tr riseTracker
	feedRises(&tr, 20*time.Minute, flat(50))
	if _, ok := tr.headroom(50); ok {
		t.Errorf("learned a headroom from 20 minutes of history, want none before %v", riseMinHistory)
	}
	feedRises(&tr, 40*time.Minute, flat(50))
	if h, ok := tr.headroom(50); !ok || h != 0 {
		t.Errorf("flat exact load for 40 minutes: headroom %g (ok %v), want 0", h, ok)
	}
}

func TestRiseTrackerNoisyFlat(t *testing.T) {
	// A stable window's rate over 20 s at 50 req/s has a standard deviation of
	// sqrt(50/20) = 1.6 req/s: the headroom covers that noise, a few percent, and no more.
	rng := rand.New(rand.NewPCG(1, 2))
	var tr riseTracker
	feedRises(&tr, 90*time.Minute, func(time.Duration) float64 {
		return 50 + math.Sqrt(50.0/20)*rng.NormFloat64()
	})
	h, ok := tr.headroom(50)
	if !ok || h <= 0 || h > 0.15 {
		t.Errorf("noisy flat load: headroom %g (ok %v), want a few percent", h, ok)
	}
}

func TestRiseTrackerOnOff(t *testing.T) {
	// 4 min at 20 req/s, 2 min at 80, for an hour and a half: from the trough the demand a
	// replica started now meets is the crest's, from the crest no more than the crest.
	var tr riseTracker
	feedRises(&tr, 90*time.Minute, onOff(4*time.Minute, 2*time.Minute, 20, 80))
	if h, ok := tr.headroom(20); !ok || 20*(1+h) < 79 {
		t.Errorf("trough of a recurring on/off load: headroom %g (ok %v) sizes for %g req/s, want the crest's 80", h, ok, 20*(1+h))
	}
	if h, ok := tr.headroom(80); !ok || h > 0.01 {
		t.Errorf("crest of a recurring on/off load: headroom %g (ok %v), want none", h, ok)
	}
}

func TestRiseTrackerIgnoresOneFlash(t *testing.T) {
	// One 5-minute flash crowd at 10x in an hour of flat load: a rise seen once, in one
	// half of the memory, holds no replicas after it.
	var tr riseTracker
	feedRises(&tr, 60*time.Minute, burst(20*time.Minute, 5*time.Minute, 20, 200))
	if h, ok := tr.headroom(20); !ok || h > 0.01 {
		t.Errorf("after one flash crowd: headroom %g (ok %v), want none", h, ok)
	}
}

func TestRiseTrackerRamp(t *testing.T) {
	// A ramp from 10 to 100 req/s over 90 minutes rises 1 req/s a minute: a replica started
	// now meets the rate about two minutes on (90 s horizon plus half the 60 s span).
	var tr riseTracker
	feedRises(&tr, 80*time.Minute, ramp(0, 90*time.Minute, 10, 100))
	rate := 10 + 80.0
	h, ok := tr.headroom(rate)
	if want := 2.0; !ok || math.Abs(rate*h-want) > 0.3 {
		t.Errorf("ramp: headroom %g (ok %v) adds %g req/s, want about %g", h, ok, rate*h, want)
	}
}

func TestRiseTrackerClockBack(t *testing.T) {
	var tr riseTracker
	feedRises(&tr, 40*time.Minute, flat(50))
	tr.observe(epoch.Add(-time.Hour), 50, 90*time.Second, 60*time.Second)
	if _, ok := tr.headroom(50); ok {
		t.Errorf("the clock went back: still learned, want the history dropped")
	}
}

// TestCapacityNotRaisedByDrainingReplicas: after a scale-down the window's finished
// requests still include those of the replicas that left (they finish what they hold), so
// for a window's length they are not a measure of the ready replicas' capacity.
func TestCapacityNotRaisedByDrainingReplicas(t *testing.T) {
	a, err := NewAutoscaler(sloPolicy(nil)) // prior 10 req/s
	if err != nil {
		t.Fatal(err)
	}
	now := epoch.Add(time.Hour)
	eval := func(ready int, finished float64) {
		st := valuesFor(time.Minute, ready, 40, 0)
		st.FinishedPerSec = finished
		a.Evaluate(Input{Now: now, Ready: ready, Min: 1, Max: 50, ReportInterval: time.Second,
			ColdStart: time.Minute, Stable: st, Panic: valuesFor(6*time.Second, ready, 40, 0)})
		now = now.Add(time.Second)
	}
	for range 120 {
		eval(6, 40)
	}
	// Down to 4: the window still finishes 48 req/s (the 2 that left drain into it), 12 a
	// replica by the new count.
	for range 50 {
		eval(4, 48)
	}
	if c := a.slo.capacity; c != 10 {
		t.Errorf("capacity %g after a scale-down inside the window, want the prior 10", c)
	}
	// Held for long past the window: 48 req/s on 4 ready replicas is theirs, raised to its
	// Poisson lower bound, (2880 - 4 sqrt(2880)) / 60 / 4 = 11.1 req/s.
	for range 120 {
		eval(4, 48)
	}
	want := (2880 - raiseSigmas*math.Sqrt(2880)) / 60 / 4
	if c := a.slo.capacity; math.Abs(c-want) > 0.01 {
		t.Errorf("capacity %g after the count held, want the lower bound %g", c, want)
	}
}
