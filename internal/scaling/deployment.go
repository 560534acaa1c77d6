package scaling

import (
	"time"

	"github.com/llmscaler/llmscaler/internal/policy"
	"github.com/llmscaler/llmscaler/internal/window"
)

// DefaultColdStart is assumed for a deployment until one of its replicas has come up and
// reported how long that took.
const DefaultColdStart = 60 * time.Second

// Replica is one live replica's latest report.
type Replica struct {
	// ID names the replica; its window data is kept under it.
	ID string
	// Phase is Starting or Ready; draining and stopped replicas are not live.
	Phase window.Phase
	// Sample is what it reported last.
	Sample window.Sample
	// Since is when its start began, which with the cold start gives its expected ready time.
	Since time.Time
}

// Spec is what bounds a deployment's count at one step.
type Spec struct {
	// Min and Max bound the count; Max <= 0 means no upper bound.
	Min, Max int
	// Paused makes the policy decide nothing but a hold (ScaleDeployment's pause).
	Paused bool
	// Manual means an operator holds the count by hand: the windows keep learning but the
	// policy does not run.
	Manual bool
	// ColdStart is the measured time from start to ready of the deployment's replicas;
	// 0 means DefaultColdStart.
	ColdStart time.Duration
	// IdleToZero, with Min 0, is how long the deployment must see no request before it may
	// go to zero replicas; until then it keeps at least one. 0 with Min 0: zero as soon as
	// the policy allows.
	IdleToZero time.Duration
	// RouterWaiting and LastDemand are the routers' figures at this step (Observed).
	RouterWaiting float64
	LastDemand    time.Time
}

// State is what a Policy sees at one evaluation.
type State struct {
	// Now is the evaluation time; Elapsed is Now less the Deployment's first step.
	Now     time.Time
	Elapsed time.Duration
	// Deployment is the deployment's name.
	Deployment string
	// Ready and Starting count live replicas as the loop counts them: the count decided
	// last, not only what has reported.
	Ready, Starting int
	// StartingSince holds when each starting replica's start was decided.
	StartingSince []time.Time
	// ColdStart is a replica's expected time from start to ready.
	ColdStart time.Duration
	// Min and Max bound the count (Max <= 0: no bound); Paused is the pause.
	Min, Max int
	Paused   bool
	// Window holds the deployment's windows, ticked at Now with every live replica's sample.
	Window *window.Deployment
	// ReportInterval is how often replicas report.
	ReportInterval time.Duration
	// RouterWaiting is the requests routers hold for the deployment.
	RouterWaiting float64
}

// Policy decides a deployment's count at each step.
type Policy interface {
	// Name is the policy's name in decisions and results.
	Name() string
	// WindowConfig sizes the windows it reads; ReportInterval is the loop's to set.
	WindowConfig() window.Config
	// Decide evaluates one step. The decision is acted on unless it is a dry run.
	Decide(s *State) policy.Decision
}

// Autoscaler runs the controller's own policy code.
type Autoscaler struct{ *policy.Autoscaler }

// Name is "threshold", "target" or "slo".
func (a Autoscaler) Name() string { return a.Policy() }

// WindowConfig is the windows the policy reads.
func (a Autoscaler) WindowConfig() window.Config { return a.Config() }

// Decide reads the windows the policy asks for at s.Now and evaluates it.
func (a Autoscaler) Decide(s *State) policy.Decision {
	cfg := a.Config()
	in := policy.Input{
		Now:            s.Now,
		Deployment:     s.Deployment,
		Ready:          s.Ready,
		Starting:       s.Starting,
		StartingSince:  s.StartingSince,
		ColdStart:      s.ColdStart,
		Min:            s.Min,
		Max:            s.Max,
		Paused:         s.Paused,
		ReportInterval: s.ReportInterval,
		RouterWaiting:  s.RouterWaiting,
		Stable:         s.Window.Values(s.Now, cfg.Stable),
		Panic:          s.Window.Values(s.Now, cfg.Panic),
	}
	if cfg.History > 0 {
		in.Long = s.Window.Totals(s.Now, cfg.History)
	}
	return a.Evaluate(in)
}

// Counter is a policy that only names a count: the simulator's baselines and references.
type Counter interface {
	Name() string
	WindowConfig() window.Config
	// Desired is the count to drive towards; the loop clamps it to [Min, Max].
	Desired(s *State) int
}

// FromCounter makes a Policy of c. Its decisions carry the count only: no clamps, no reason.
func FromCounter(c Counter) Policy { return counterPolicy{c} }

type counterPolicy struct{ Counter }

func (c counterPolicy) Decide(s *State) policy.Decision {
	cur := s.Ready + s.Starting
	n := max(c.Desired(s), s.Min)
	if s.Max > 0 {
		n = min(n, s.Max)
	}
	if s.Paused {
		n = cur
	}
	return policy.Decision{Time: s.Now, Policy: c.Name(), Current: cur, Recommended: n, Desired: n, Change: n != cur}
}

// Deployment is one deployment's scaling loop: its windows, its policy and its replica set.
// It is not safe for concurrent use.
type Deployment struct {
	name     string
	pol      Policy
	win      *window.Deployment
	interval time.Duration

	// reps are the live replicas, each as last reported; index finds one by id. The windows
	// hold the same set.
	reps    []heldReplica
	index   map[string]int
	mark    uint64 // Observe's sweep
	desired int    // the count decided last; 0 until known
	started bool
	start   time.Time
	// lastActive is when the deployment last had a request (effectiveMin).
	lastActive time.Time
	since      []time.Time
}

// NewDeployment returns the loop of the named deployment under p, whose replicas report
// every reportInterval. desired is the count already decided (by an earlier leader, or the
// replicas warm at the start), 0 if none.
func NewDeployment(name string, p Policy, reportInterval time.Duration, desired int) *Deployment {
	if reportInterval <= 0 {
		reportInterval = window.DefaultReportInterval
	}
	d := &Deployment{name: name, pol: p, interval: reportInterval, desired: max(desired, 0),
		index: map[string]int{}}
	d.win = window.NewDeployment(d.windowConfig())
	return d
}

func (d *Deployment) windowConfig() window.Config {
	cfg := d.pol.WindowConfig()
	cfg.ReportInterval = d.interval
	return cfg
}

// Policy is the policy in force.
func (d *Deployment) Policy() Policy { return d.pol }

// SetPolicy replaces the policy from the next step and resizes the windows for it; the data
// they hold is kept.
func (d *Deployment) SetPolicy(p Policy) {
	d.pol = p
	d.win.SetConfig(d.windowConfig())
}

// StartAt sets the time State.Elapsed counts from; by default it is the first step's.
func (d *Deployment) StartAt(t time.Time) { d.started, d.start = true, t }

// Window is the deployment's windows.
func (d *Deployment) Window() *window.Deployment { return d.win }

// Desired is the count the loop drives towards, 0 until known.
func (d *Deployment) Desired() int { return d.desired }

// Bound applies new bounds to the count at once (a new spec's min and max).
func (d *Deployment) Bound(minReplicas, maxReplicas int) {
	n := max(d.desired, minReplicas)
	if maxReplicas > 0 {
		n = min(n, maxReplicas)
	}
	d.desired = n
}

type heldReplica struct {
	Replica
	mark uint64
}

// Update records one replica's latest report: a new replica joins the windows. A sample
// older than the one held is ignored (reports can arrive out of order), but the phase is
// taken. O(1).
func (d *Deployment) Update(r Replica) {
	d.win.Observe(r.ID, r.Phase, r.Sample)
	i, ok := d.index[r.ID]
	if !ok {
		d.index[r.ID] = len(d.reps)
		d.reps = append(d.reps, heldReplica{Replica: r, mark: d.mark})
		return
	}
	h := &d.reps[i]
	h.Phase, h.Since, h.mark = r.Phase, r.Since, d.mark
	if !r.Sample.Time.Before(h.Sample.Time) {
		h.Sample = r.Sample
	}
}

// Gone removes a replica that stopped, failed, is draining or was lost: it leaves the
// windows from the next point. O(1).
func (d *Deployment) Gone(id string) {
	i, ok := d.index[id]
	if !ok {
		return
	}
	d.win.Remove(id)
	d.drop(i)
}

// drop removes d.reps[i], moving the last replica into its place.
func (d *Deployment) drop(i int) {
	last := len(d.reps) - 1
	delete(d.index, d.reps[i].ID)
	if i != last {
		d.reps[i] = d.reps[last]
		d.index[d.reps[i].ID] = i
	}
	d.reps[last] = heldReplica{}
	d.reps = d.reps[:last]
}

// Replicas is the number of live replicas held.
func (d *Deployment) Replicas() int { return len(d.reps) }

// Observe makes reps the whole live set: each is updated, and a replica held but missing
// from reps is gone (stopped, draining, lost).
func (d *Deployment) Observe(reps []Replica) {
	d.mark++
	for i := range reps {
		d.Update(reps[i])
	}
	for i := len(d.reps) - 1; i >= 0; i-- {
		if d.reps[i].mark != d.mark {
			d.win.Remove(d.reps[i].ID)
			d.drop(i)
		}
	}
}

// Step is one pass of the loop at now: it observes reps, closes a window point when
// closePoint is set (once per report interval, and at most window.TicksPerInterval times
// per interval in all), and, unless the count is held by hand, evaluates the policy. ok is
// false when the policy did not run. The returned decision's Desired is the new count when
// Change is set and it is no dry run.
func (d *Deployment) Step(now time.Time, reps []Replica, spec Spec, closePoint bool) (dec policy.Decision, ok bool) {
	d.Observe(reps)
	return d.Evaluate(now, spec, closePoint)
}

// Evaluate is Step over the replicas held (Update, Gone), for a caller that feeds only
// what changed.
func (d *Deployment) Evaluate(now time.Time, spec Spec, closePoint bool) (dec policy.Decision, ok bool) {
	if !d.started {
		d.started, d.start = true, now
	}
	reps := d.reps
	if closePoint {
		d.win.Tick(now)
	}
	if spec.Manual {
		return policy.Decision{}, false
	}
	s := State{
		Now: now, Elapsed: now.Sub(d.start), Deployment: d.name,
		ColdStart: spec.ColdStart, Min: d.effectiveMin(now, reps, spec), Max: spec.Max, Paused: spec.Paused,
		Window: d.win, ReportInterval: d.interval, RouterWaiting: spec.RouterWaiting,
	}
	if s.ColdStart <= 0 {
		s.ColdStart = DefaultColdStart
	}
	d.since = d.since[:0]
	for i := range reps {
		switch reps[i].Phase {
		case window.Ready:
			s.Ready++
		case window.Starting:
			s.Starting++
			d.since = append(d.since, reps[i].Since)
		}
	}
	// The policy decides from the count the loop is driving towards, not from what has come
	// up so far: replicas whose start was decided but not reported yet count as starting
	// now, replicas being stopped no longer count. Otherwise every pass while replicas come
	// up would look like a new need to scale.
	if want := d.desired; want > 0 {
		for s.Ready+s.Starting < want {
			s.Starting++
			d.since = append(d.since, now)
		}
		for s.Ready+s.Starting > want && s.Starting > 0 {
			s.Starting--
			d.since = d.since[:len(d.since)-1]
		}
		s.Ready = min(s.Ready, want)
	}
	s.StartingSince = d.since
	dec = d.pol.Decide(&s)
	if dec.Change && !dec.DryRun {
		d.desired = dec.Desired
	}
	return dec, true
}

// effectiveMin is the floor at this step: spec.Min, or with Min 0 one replica while the
// deployment has seen a request within IdleToZero (routers' demand, or a replica with work).
func (d *Deployment) effectiveMin(now time.Time, reps []heldReplica, spec Spec) int {
	if spec.LastDemand.After(d.lastActive) {
		d.lastActive = spec.LastDemand
	}
	for i := range reps {
		if sm := &reps[i].Sample; sm.Waiting+sm.Running > 0 || sm.FinishedPerSec > 0 {
			d.lastActive = now
			break
		}
	}
	if spec.RouterWaiting > 0 {
		d.lastActive = now
	}
	if spec.Min > 0 || d.lastActive.IsZero() || now.Sub(d.lastActive) >= spec.IdleToZero {
		return spec.Min
	}
	return 1
}
