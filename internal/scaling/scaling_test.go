package scaling

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llmscaler/llmscaler/internal/policy"
	"github.com/llmscaler/llmscaler/internal/window"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// recorder is a Counter that wants a fixed count and remembers what it saw.
type recorder struct {
	want int
	seen []State
}

func (r *recorder) Name() string                { return "recorder" }
func (r *recorder) WindowConfig() window.Config { return window.Config{} }
func (r *recorder) Desired(s *State) int {
	c := *s
	c.StartingSince = append([]time.Time(nil), s.StartingSince...)
	r.seen = append(r.seen, c)
	if r.want == 0 {
		return s.Ready + s.Starting
	}
	return r.want
}

func ready(id string, at time.Time, running float64) Replica {
	return Replica{ID: id, Phase: window.Ready, Sample: window.Sample{Time: at, Running: running}}
}

func TestStepCountsTheDecidedCount(t *testing.T) {
	rec := &recorder{want: 4}
	d := NewDeployment("d", FromCounter(rec), time.Second, 1)
	at := t0.Add(time.Second)
	dec, ok := d.Step(at, []Replica{ready("a", at, 1)}, Spec{Min: 1, Max: 10}, true)
	if !ok || !dec.Change || dec.Desired != 4 || d.Desired() != 4 {
		t.Fatalf("first step: %+v ok=%v desired=%d", dec, ok, d.Desired())
	}
	// The starts were decided but nothing reported them yet: the policy must see them as
	// starting since now, or it would ask for them again.
	rec.want = 0
	at = at.Add(time.Second)
	if dec, _ := d.Step(at, []Replica{ready("a", at, 1)}, Spec{Min: 1, Max: 10}, true); dec.Change {
		t.Fatalf("second step changed: %+v", dec)
	}
	s := rec.seen[1]
	if s.Ready != 1 || s.Starting != 3 || len(s.StartingSince) != 3 || !s.StartingSince[0].Equal(at) {
		t.Fatalf("state %+v", s)
	}
	if s.ColdStart != DefaultColdStart || s.Elapsed != time.Second {
		t.Fatalf("cold start %s elapsed %s", s.ColdStart, s.Elapsed)
	}
	// Reported starting replicas keep their own start times.
	since := at.Add(-5 * time.Second)
	at = at.Add(time.Second)
	reps := []Replica{ready("a", at, 1), {ID: "b", Phase: window.Starting, Since: since}}
	d.Step(at, reps, Spec{Min: 1, Max: 10, ColdStart: 90 * time.Second}, true)
	s = rec.seen[2]
	if s.Starting != 3 || !s.StartingSince[0].Equal(since) || s.ColdStart != 90*time.Second {
		t.Fatalf("state %+v", s)
	}
}

func TestStepStopsCountingReplicasBeingStopped(t *testing.T) {
	rec := &recorder{want: 1}
	d := NewDeployment("d", FromCounter(rec), time.Second, 3)
	at := t0.Add(time.Second)
	reps := []Replica{ready("a", at, 1), ready("b", at, 1), ready("c", at, 1)}
	if dec, _ := d.Step(at, reps, Spec{Min: 1}, true); dec.Desired != 1 || dec.Current != 3 {
		t.Fatalf("decision %+v", dec)
	}
	if d.Window().Replicas() != 3 {
		t.Fatalf("window holds %d replicas", d.Window().Replicas())
	}
	// The drains were sent; two replicas still report READY until they stop.
	rec.want = 0
	at = at.Add(time.Second)
	d.Step(at, reps, Spec{Min: 1}, true)
	if s := rec.seen[1]; s.Ready != 1 || s.Starting != 0 {
		t.Fatalf("state %+v", s)
	}
	// Gone replicas leave the windows.
	at = at.Add(time.Second)
	d.Step(at, reps[:1], Spec{Min: 1}, true)
	if d.Window().Replicas() != 1 {
		t.Fatalf("window holds %d replicas", d.Window().Replicas())
	}
}

func TestStepBoundsManualAndPause(t *testing.T) {
	rec := &recorder{want: 50}
	d := NewDeployment("d", FromCounter(rec), time.Second, 2)
	at := t0.Add(time.Second)
	reps := []Replica{ready("a", at, 1), ready("b", at, 1)}
	if dec, _ := d.Step(at, reps, Spec{Min: 1, Max: 5}, true); dec.Desired != 5 {
		t.Fatalf("max not applied: %+v", dec)
	}
	if _, ok := d.Step(at.Add(time.Second), reps, Spec{Min: 1, Max: 5, Manual: true}, true); ok {
		t.Fatal("the policy ran on a count held by hand")
	}
	if d.Window().Replicas() != 2 {
		t.Fatal("a manual count stopped the windows")
	}
	d.Bound(1, 3)
	if d.Desired() != 3 {
		t.Fatalf("new bounds: desired %d", d.Desired())
	}
	if dec, _ := d.Step(at.Add(2*time.Second), reps, Spec{Min: 1, Max: 5, Paused: true}, true); dec.Change {
		t.Fatalf("paused deployment changed: %+v", dec)
	}
}

// TestAutoscalerThroughTheLoop runs the controller's slo policy through the loop: an
// overloaded replica scales up, and the decision carries the panic window it read.
func TestAutoscalerThroughTheLoop(t *testing.T) {
	as, err := policy.NewAutoscaler(nil)
	if err != nil {
		t.Fatal(err)
	}
	d := NewDeployment("d", Autoscaler{as}, time.Second, 1)
	var dec policy.Decision
	for i := 1; i <= 8; i++ {
		at := t0.Add(time.Duration(i) * time.Second)
		s := window.Sample{Time: at, Waiting: 60, Running: 8, FinishedPerSec: 2,
			TTFT: window.Summary{P50: 4, P95: 9, Count: 20}, E2E: window.Summary{P50: 8, P95: 12, Count: 2}}
		dec, _ = d.Step(at, []Replica{{ID: "a", Phase: window.Ready, Sample: s}}, Spec{Min: 1, Max: 10}, true)
		if dec.Change {
			break
		}
	}
	if !dec.Change || dec.Desired <= 1 || dec.Policy != "slo" || dec.Panic.Span != 6*time.Second || d.Desired() != dec.Desired {
		t.Fatalf("decision %+v", dec)
	}
}

// TestMinZeroFollowsDemand: at min_replicas 0 the floor is one replica from a router's
// demand or a replica's work until the idle period has passed, then zero; and the slo
// policy starts one replica from zero on requests waiting in a router, and none without.
func TestMinZeroFollowsDemand(t *testing.T) {
	rec := &recorder{}
	d := NewDeployment("d", FromCounter(rec), time.Second, 0)
	spec := Spec{Min: 0, Max: 4, IdleToZero: 10 * time.Second}
	step := func(at time.Time, reps []Replica, sp Spec) int {
		t.Helper()
		d.Step(at, reps, sp, true)
		return rec.seen[len(rec.seen)-1].Min
	}
	if m := step(t0, nil, spec); m != 0 {
		t.Fatalf("floor %d with no demand ever seen, want 0", m)
	}
	demand := spec
	demand.LastDemand = t0.Add(time.Second)
	if m := step(t0.Add(2*time.Second), nil, demand); m != 1 {
		t.Fatalf("floor %d right after a request, want 1", m)
	}
	// A replica with work keeps the deployment active however old the routers' figure is.
	at := t0.Add(9 * time.Second)
	if m := step(at, []Replica{ready("a", at, 1)}, demand); m != 1 {
		t.Fatalf("floor %d with a busy replica, want 1", m)
	}
	at = t0.Add(18 * time.Second)
	if m := step(at, []Replica{ready("a", at, 0)}, demand); m != 1 {
		t.Fatalf("floor %d 9 s after the last work, want 1 until the 10 s idle period", m)
	}
	at = t0.Add(20 * time.Second)
	if m := step(at, []Replica{ready("a", at, 0)}, demand); m != 0 {
		t.Fatalf("floor %d after the idle period, want 0", m)
	}
	// Min above 0 is the floor whatever the demand.
	if m := step(at.Add(time.Second), nil, Spec{Min: 2, Max: 4}); m != 2 {
		t.Fatalf("floor %d, want min_replicas 2", m)
	}

	as, err := policy.NewAutoscaler(nil)
	if err != nil {
		t.Fatal(err)
	}
	z := NewDeployment("z", Autoscaler{as}, time.Second, 0)
	if dec, _ := z.Step(t0, nil, Spec{Min: 0, Max: 4}, true); dec.Change || dec.Desired != 0 {
		t.Fatalf("started %+v with no demand", dec)
	}
	dec, _ := z.Step(t0.Add(time.Second), nil, Spec{Min: 0, Max: 4, RouterWaiting: 3, LastDemand: t0}, true)
	if !dec.Change || dec.Desired != 1 || !strings.Contains(dec.Reason, "scale from zero: 3 requests waiting in routers") {
		t.Fatalf("decision %+v, want one replica started from zero", dec)
	}
}

// fakeClock is a Clock whose time moves only when the test says.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	timers  []*fakeTimer
	changed chan struct{} // a timer was armed or stopped
}

type fakeTimer struct {
	c      chan time.Time
	at     time.Time
	period time.Duration // > 0: a ticker
	armed  bool
	clk    *fakeClock
}

func newFakeClock() *fakeClock { return &fakeClock{now: t0, changed: make(chan struct{}, 64)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) add(d, period time.Duration) *fakeTimer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: make(chan time.Time, 1), at: c.now.Add(d), period: period, armed: true, clk: c}
	c.timers = append(c.timers, t)
	return t
}

func (c *fakeClock) NewTicker(d time.Duration) Ticker { return c.add(d, d) }
func (c *fakeClock) NewTimer(d time.Duration) Timer   { return c.add(d, 0) }

// advance moves the clock by d, firing what falls due.
func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	for _, t := range c.timers {
		for t.armed && !t.at.After(c.now) {
			select {
			case t.c <- t.at:
			default:
			}
			if t.period > 0 {
				t.at = t.at.Add(t.period)
			} else {
				t.armed = false
			}
		}
	}
}

// armedTimer reports whether a one-shot timer is armed.
func (c *fakeClock) armedTimer() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range c.timers {
		if t.period == 0 && t.armed {
			return true
		}
	}
	return false
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }
func (t *fakeTimer) Stop() {
	t.clk.mu.Lock()
	t.armed = false
	t.clk.mu.Unlock()
}
func (t *fakeTimer) Reset(d time.Duration) {
	t.clk.mu.Lock()
	t.at, t.armed = t.clk.now.Add(d), true
	t.clk.mu.Unlock()
	select {
	case t.clk.changed <- struct{}{}:
	default:
	}
}

// stubSource reports a new sample of one READY replica of deployment "d" at each call.
type stubSource struct{ clk *fakeClock }

func (s stubSource) Changes(bool) ([]Change, map[string]Conditions) {
	return []Change{{Deployment: "d", Replica: ready("a", s.clk.Now(), 1)}}, nil
}

type sinkEvent struct {
	at   time.Time
	name string
}

type chanSink chan sinkEvent

func (c chanSink) Decided(_ context.Context, name string, d policy.Decision, _ bool) {
	c <- sinkEvent{at: d.Time, name: name}
}

func next(t *testing.T, c chanSink) sinkEvent {
	t.Helper()
	select {
	case e := <-c:
		return e
	case <-time.After(5 * time.Second):
		t.Fatal("no evaluation")
	}
	return sinkEvent{}
}

func none(t *testing.T, c chanSink) {
	t.Helper()
	select {
	case e := <-c:
		t.Fatalf("unexpected evaluation at %s", e.at.Sub(t0))
	default:
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestFleetCoalescesReports drives Run on a fake clock: the report interval's ticker
// evaluates; a report evaluates at once; reports that come within a tenth of an interval of
// the last evaluation are held and evaluated together once that gap has passed.
func TestFleetCoalescesReports(t *testing.T) {
	clk := newFakeClock()
	sink := make(chanSink, 16)
	f := NewFleet(clk, time.Second, stubSource{clk}, sink)
	if err := f.Put("d", Spec{Min: 1, Max: 4}, nil, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Put("bad", Spec{Min: 1}, &llmscalerv1.Policy{MaxStep: ptr(uint32(0))}, 0); err == nil || !strings.Contains(err.Error(), "max_step") {
		t.Fatal("an invalid policy was accepted")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	waitFor(t, "the ticker", func() bool {
		clk.mu.Lock()
		defer clk.mu.Unlock()
		return len(clk.timers) == 2
	})

	clk.advance(time.Second)
	if e := next(t, sink); e.at != t0.Add(time.Second) || e.name != "d" {
		t.Fatalf("tick evaluated %s at %s", e.name, e.at.Sub(t0))
	}
	// A report 300 ms later: evaluated at once.
	clk.advance(300 * time.Millisecond)
	f.Poke()
	if e := next(t, sink); e.at != t0.Add(1300*time.Millisecond) {
		t.Fatalf("report evaluated at %s", e.at.Sub(t0))
	}
	// Three reports 20 ms later: within the 100 ms gap, so held for the retry timer.
	clk.advance(20 * time.Millisecond)
	f.Poke()
	waitFor(t, "the retry timer", clk.armedTimer)
	f.Poke()
	f.Poke()
	none(t, sink)
	clk.advance(79 * time.Millisecond)
	none(t, sink)
	clk.advance(time.Millisecond)
	if e := next(t, sink); e.at != t0.Add(1400*time.Millisecond) {
		t.Fatalf("held reports evaluated at %s", e.at.Sub(t0))
	}
	if n, ok := f.Desired("d"); !ok || n != 1 {
		t.Fatalf("desired %d %v", n, ok)
	}
	f.Remove("d")
	if _, ok := f.Desired("d"); ok {
		t.Fatal("a removed deployment still has a count")
	}
}

func ptr[T any](v T) *T { return &v }

// TestFleetTickSkipsWithinGap checks the gap directly: a poked pass evaluates a deployment
// at most once per tenth of a report interval and says how long until it can.
func TestFleetTickSkipsWithinGap(t *testing.T) {
	clk := newFakeClock()
	sink := make(chanSink, 16)
	f := NewFleet(clk, time.Second, stubSource{clk}, sink)
	if err := f.Put("d", Spec{Min: 1, Max: 4}, nil, 0); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if w := f.Tick(ctx, true); w != 0 {
		t.Fatalf("first pass waits %s", w)
	}
	next(t, sink)
	clk.advance(30 * time.Millisecond)
	if w := f.Tick(ctx, true); w != 70*time.Millisecond {
		t.Fatalf("pass within the gap waits %s", w)
	}
	none(t, sink)
	// The interval's own tick is never skipped.
	if w := f.Tick(ctx, false); w != 0 {
		t.Fatalf("tick waits %s", w)
	}
	next(t, sink)
}

// TestUpdatesMatchStep feeds one loop the whole replica set at every step (the simulator)
// and another only what changed (the controller): both must decide the same and hold the
// same replicas, through replicas joining, updating, starting and going.
func TestUpdatesMatchStep(t *testing.T) {
	mk := func() *Deployment {
		as, err := policy.NewAutoscaler(nil)
		if err != nil {
			t.Fatal(err)
		}
		return NewDeployment("d", Autoscaler{as}, time.Second, 2)
	}
	full, inc := mk(), mk()
	spec := Spec{Min: 1, Max: 20, ColdStart: 30 * time.Second}
	held := map[string]Replica{}
	for step := 1; step <= 120; step++ {
		at := t0.Add(time.Duration(step) * time.Second)
		var changes []Change
		put := func(r Replica) { held[r.ID] = r; changes = append(changes, Change{Deployment: "d", Replica: r}) }
		gone := func(id string) {
			delete(held, id)
			changes = append(changes, Change{Deployment: "d", Replica: Replica{ID: id}, Gone: true})
		}
		// A load that rises for a minute and falls again, over replicas that come and go.
		load := float64(step)
		if step > 60 {
			load = float64(120 - step)
		}
		for k := range 6 {
			id := string(rune('a' + k))
			switch {
			case step%(k+2) == 0 && k >= 4:
				gone(id)
			case k == 5 && step%7 == 0:
				put(Replica{ID: id, Phase: window.Starting, Since: at.Add(-time.Duration(k) * time.Second)})
			default:
				s := window.Sample{Time: at, Waiting: load / 4, Running: 4, FinishedPerSec: 2,
					TTFT: window.Summary{P50: 0.1 * load, P95: 0.3 * load, Count: 4}}
				put(Replica{ID: id, Phase: window.Ready, Sample: s})
			}
		}
		// A sample older than the one held is ignored by both.
		if step%11 == 0 {
			old := held["a"]
			old.Sample.Time = at.Add(-time.Hour)
			old.Sample.Running = 99
			changes = append(changes, Change{Deployment: "d", Replica: old})
		}
		reps := make([]Replica, 0, len(held))
		for k := range 6 {
			if r, ok := held[string(rune('a'+k))]; ok {
				reps = append(reps, r)
			}
		}
		for _, c := range changes {
			if c.Gone {
				inc.Gone(c.Replica.ID)
			} else {
				inc.Update(c.Replica)
			}
		}
		df, okf := full.Step(at, reps, spec, true)
		di, oki := inc.Evaluate(at, spec, true)
		if okf != oki || df.Desired != di.Desired || df.Current != di.Current || df.Change != di.Change || df.Reason != di.Reason {
			t.Fatalf("step %d: full %+v, changes only %+v", step, df, di)
		}
		if full.Replicas() != len(reps) || inc.Replicas() != len(reps) || inc.Window().Replicas() != len(reps) {
			t.Fatalf("step %d: %d replicas live, loops hold %d and %d (window %d)", step, len(reps), full.Replicas(), inc.Replicas(), inc.Window().Replicas())
		}
	}
	if full.Desired() == 2 {
		t.Fatal("the load never moved the count: the comparison tested nothing")
	}
}

// changeSource gives the changes queued in it, and records the all flag of each call.
type changeSource struct {
	mu   sync.Mutex
	next []Change
	all  []bool
}

func (s *changeSource) queue(c ...Change) {
	s.mu.Lock()
	s.next = append(s.next, c...)
	s.mu.Unlock()
}

func (s *changeSource) Changes(all bool) ([]Change, map[string]Conditions) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.next
	s.next = nil
	s.all = append(s.all, all)
	return out, map[string]Conditions{"a": {ColdStart: 42 * time.Second}}
}

// TestFleetEvaluatesWhatChanged checks that a poke evaluates only the deployments whose
// replicas changed, that the interval's pass evaluates all, and that the interval's pass does
// not hold back the evaluation of a report that comes right after it.
func TestFleetEvaluatesWhatChanged(t *testing.T) {
	clk := newFakeClock()
	sink := make(chanSink, 16)
	src := &changeSource{}
	f := NewFleet(clk, time.Second, src, sink)
	for _, name := range []string{"a", "b"} {
		if err := f.Put(name, Spec{Min: 1, Max: 4}, nil, 0); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	names := func() []string {
		var out []string
		for {
			select {
			case e := <-sink:
				out = append(out, e.name)
			default:
				return out
			}
		}
	}
	f.Tick(ctx, false)
	if got := names(); strings.Join(got, ",") != "a,b" {
		t.Fatalf("interval pass evaluated %v", got)
	}
	if len(src.all) != 1 || !src.all[0] {
		t.Fatalf("a new deployment did not ask for every replica: %v", src.all)
	}
	clk.advance(5 * time.Millisecond)
	src.queue(Change{Deployment: "a", Replica: ready("a-1", clk.Now(), 1)})
	if w := f.Tick(ctx, true); w != 0 {
		t.Fatalf("waits %s", w)
	}
	if got := names(); strings.Join(got, ",") != "a" {
		t.Fatalf("a report of a, 5 ms after the interval's pass, evaluated %v", got)
	}
	if src.all[1] {
		t.Fatal("asked for every replica again")
	}
	// A second report of a within the gap waits for it; b, unchanged, is not evaluated.
	clk.advance(30 * time.Millisecond)
	src.queue(Change{Deployment: "a", Replica: ready("a-1", clk.Now(), 2)})
	if w := f.Tick(ctx, true); w != 70*time.Millisecond {
		t.Fatalf("a report within the gap waits %s", w)
	}
	if got := names(); len(got) != 0 {
		t.Fatalf("evaluated %v within the gap", got)
	}
	clk.advance(70 * time.Millisecond)
	f.Tick(ctx, true)
	if got := names(); strings.Join(got, ",") != "a" {
		t.Fatalf("after the gap evaluated %v", got)
	}
	// A replica that goes leaves the loop.
	src.queue(Change{Deployment: "a", Replica: Replica{ID: "a-1"}, Gone: true}, Change{Deployment: "nobody", Replica: ready("x", clk.Now(), 1)})
	clk.advance(100 * time.Millisecond)
	f.Tick(ctx, true)
	names()
	f.mu.Lock()
	n := f.deps["a"].loop.Replicas()
	f.mu.Unlock()
	if n != 0 {
		t.Fatalf("a holds %d replicas after its one went", n)
	}
}

// condSource gives no replica changes, only conditions.
type condSource struct{ waiting float64 }

func (s *condSource) Changes(bool) ([]Change, map[string]Conditions) {
	return nil, map[string]Conditions{"z": {RouterWaiting: s.waiting}}
}

// TestFleetEvaluatesChangedConditions: a deployment with no replica whose routers start to
// hold requests is evaluated on the poke, not at the next interval.
func TestFleetEvaluatesChangedConditions(t *testing.T) {
	clk := newFakeClock()
	sink := make(chanSink, 16)
	src := &condSource{}
	f := NewFleet(clk, time.Second, src, sink)
	if err := f.Put("z", Spec{Min: 0, Max: 4}, nil, 0); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	f.Tick(ctx, false)
	next(t, sink)
	clk.advance(200 * time.Millisecond)
	f.Tick(ctx, true)
	none(t, sink)
	src.waiting = 3
	clk.advance(200 * time.Millisecond)
	f.Tick(ctx, true)
	if e := next(t, sink); e.name != "z" {
		t.Fatalf("evaluated %s", e.name)
	}
}
