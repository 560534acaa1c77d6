package sim

import (
	"strconv"
	"testing"
	"time"

	"github.com/llmscaler/llmscaler/internal/scaling"
	"github.com/llmscaler/llmscaler/internal/window"
)

// fleet drives a Scaler through the scaling loop on a fake clock the way the simulator
// does: every second each ready replica reports its share of the deployment's requests in
// flight, and the loop steps. A started replica is ready after cold; scaling down drops
// starting replicas first.
type fleet struct {
	sc       Scaler
	loop     *scaling.Deployment
	now      time.Duration
	cold     time.Duration
	ready    int
	starting []time.Duration // when each starting replica is ready
}

func newFleet(sc Scaler, ready int, cold time.Duration) *fleet {
	pol, err := asPolicy(sc)
	if err != nil {
		panic(err)
	}
	return &fleet{sc: sc, loop: scaling.NewDeployment("test", pol, time.Second, ready), ready: ready, cold: cold}
}

// replicas counts ready and starting replicas.
func (f *fleet) replicas() int { return f.ready + len(f.starting) }

// step advances one second with total requests in flight and returns the decision.
func (f *fleet) step(total float64) int {
	f.now += time.Second
	for len(f.starting) > 0 && f.starting[0] <= f.now {
		f.starting = f.starting[1:]
		f.ready++
	}
	at := epoch.Add(f.now)
	var reps []scaling.Replica
	for i := range f.ready {
		reps = append(reps, scaling.Replica{ID: "r" + strconv.Itoa(i), Phase: window.Ready,
			Sample: window.Sample{Time: at, Running: total / float64(f.ready)}})
	}
	for i, ready := range f.starting {
		reps = append(reps, scaling.Replica{ID: "s" + strconv.Itoa(i), Phase: window.Starting,
			Sample: window.Sample{Time: at}, Since: epoch.Add(ready - f.cold)})
	}
	want := f.replicas()
	d, _ := f.loop.Step(at, reps, scaling.Spec{Min: 1, Max: 64, ColdStart: f.cold}, true)
	if d.Change && !d.DryRun {
		want = d.Desired
	}
	for f.replicas() < want {
		f.starting = append(f.starting, f.now+f.cold)
	}
	for f.replicas() > want && len(f.starting) > 0 {
		f.starting = f.starting[:len(f.starting)-1]
	}
	f.ready = min(f.ready, want)
	return want
}

// run steps for d at a constant load and returns the time of the first change of the
// replica count, measured from the start of the run, or -1.
func (f *fleet) run(d time.Duration, total float64) time.Duration {
	start, first := f.now, time.Duration(-1)
	prev := f.replicas()
	for f.now-start < d {
		if n := f.step(total); n != prev && first < 0 {
			first = f.now - start
		}
		prev = f.replicas()
	}
	return first
}

// below keeps a steady load just under a whole number of replicas' targets, so rounding in
// the windows' averages cannot ask for one more.
const below = 0.97

// targetOf is the in-flight target per replica the named baseline aims at.
func targetOf(name string) float64 {
	if name == PolicyRay {
		return RayTargetOngoingRequests
	}
	return BaselineInFlightTarget
}

func newBaseline(t *testing.T, name string) Scaler {
	t.Helper()
	sc, err := NewScaler(name, Env{})
	if err != nil {
		t.Fatal(err)
	}
	return sc
}

func TestBaselinesScaleUpOnLoad(t *testing.T) {
	const want = 10
	for _, name := range []string{PolicyHPA, PolicyKPA, PolicyRay} {
		t.Run(name, func(t *testing.T) {
			f := newFleet(newBaseline(t, name), 2, 0)
			f.run(3*time.Minute, (want-0.3)*targetOf(name))
			if f.ready != want {
				t.Errorf("%d replicas after 3 min at %d replicas' load, want %d", f.ready, want, want)
			}
		})
	}
}

func TestBaselineDelays(t *testing.T) {
	tests := []struct {
		name     string
		policy   string
		from     int     // steady replicas before the change
		load     float64 // in flight after the change, in replicas' targets
		min, max time.Duration
	}{
		// The last high recommendation is at most one sync period old at the change, and the
		// first low one needs one sync period of low load.
		{"hpa waits 300 s to scale down", PolicyHPA, 10, 2, HPAScaleDownStabilization - HPASyncPeriod, HPAScaleDownStabilization + HPASyncPeriod},
		{"hpa scales up at the next sync", PolicyHPA, 2, 10, 0, HPASyncPeriod},
		// Ray's desired count crosses the current one within the look-back of the change,
		// and must then hold for longer than the delay.
		{"ray waits 30 s to scale up", PolicyRay, 2, 10, RayUpscaleDelay, RayUpscaleDelay + RayLookBack/5},
		{"ray waits 600 s to scale down", PolicyRay, 10, 2, RayDownscaleDelay, RayDownscaleDelay + RayLookBack/2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tgt := targetOf(tc.policy)
			f := newFleet(newBaseline(t, tc.policy), tc.from, 0)
			// 7 s past a sync tick, so the change falls inside a sync period.
			if got := f.run(12*time.Minute+7*time.Second, below*float64(tc.from)*tgt); got >= 0 {
				t.Fatalf("count changed %s into the steady load", got)
			}
			got := f.run(tc.max+time.Minute, tc.load*tgt)
			if got < tc.min || got > tc.max {
				t.Errorf("first change %s after the load changed, want within [%s, %s]", got, tc.min, tc.max)
			}
		})
	}
}

func TestRayDownscaleResetsOnLoad(t *testing.T) {
	f := newFleet(newBaseline(t, PolicyRay), 10, 0)
	f.run(2*time.Minute, below*10*BaselineInFlightTarget)
	// Low load for most of the delay, then back up: the count must hold throughout.
	if got := f.run(RayDownscaleDelay-time.Minute, 2*BaselineInFlightTarget); got >= 0 {
		t.Fatalf("scaled down %s into a %s delay", got, RayDownscaleDelay)
	}
	if got := f.run(2*time.Minute, below*10*BaselineInFlightTarget); got >= 0 {
		t.Errorf("count changed %s after the load came back", got)
	}
}

func TestKPAPanic(t *testing.T) {
	const steady = 4
	tests := []struct {
		name  string
		burst float64 // load as a multiple of what the steady fleet is sized for
		panic bool
	}{
		{"3x burst panics", 3, true},
		{"2x burst panics", 2, true},
		{"1.5x burst does not", 1.5, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k := NewKPA(BaselineInFlightTarget)
			// New pods take 60 s to be ready, so the ratio to ready pods is the burst's.
			f := newFleet(k, steady, time.Minute)
			f.run(2*time.Minute, below*steady*BaselineInFlightTarget)
			if k.Panicking() {
				t.Fatal("panicking at a steady load")
			}
			panicked, prev := false, f.ready
			for range 30 {
				n := f.step(tc.burst * steady * BaselineInFlightTarget)
				if k.Panicking() {
					panicked = true
					if n < prev {
						t.Errorf("scaled down from %d to %d in panic mode", prev, n)
					}
				}
				prev = n
			}
			if panicked != tc.panic {
				t.Errorf("panicked %v on a %.1fx burst, want %v", panicked, tc.burst, tc.panic)
			}
			// Panic mode sizes for the burst at once; stable mode is still catching up.
			want := steady + 1
			if tc.panic {
				want = int(tc.burst * steady)
			}
			if f.replicas() < want {
				t.Errorf("%d replicas 30 s into the burst, want at least %d", f.replicas(), want)
			}
		})
	}
}

func TestKPAPanicHoldsForStableWindow(t *testing.T) {
	k := NewKPA(BaselineInFlightTarget)
	f := newFleet(k, 4, 0)
	f.run(2*time.Minute, below*4*BaselineInFlightTarget)
	f.run(10*time.Second, 12*BaselineInFlightTarget)
	if !k.Panicking() {
		t.Fatal("no panic on a 3x burst")
	}
	peak := f.ready
	// Load falls back: panic mode holds the count for a stable window past the last time
	// the threshold was crossed (within the burst's 10 s), then stable mode scales down.
	got := f.run(3*time.Minute, below*4*BaselineInFlightTarget)
	if got < KPAStableWindow-10*time.Second {
		t.Errorf("scaled down from %d %s after the burst, want at least %s", peak, got, KPAStableWindow)
	}
	if f.ready >= peak || k.Panicking() {
		t.Errorf("%d replicas (panic %v) 3 min after a burst peaked at %d", f.ready, k.Panicking(), peak)
	}
}
