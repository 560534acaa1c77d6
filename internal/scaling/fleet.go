package scaling

import (
	"context"
	"errors"
	"sort"
	"sync"
	"time"

	"github.com/llmscaler/llmscaler/internal/policy"
	"github.com/llmscaler/llmscaler/internal/window"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// Observed is one deployment's replicas in a fleet snapshot.
type Observed struct {
	Replicas []Replica
	// ColdStart is the longest measured cold start of the deployment's profile, 0 if none.
	ColdStart time.Duration
	// RouterWaiting is the requests routers hold for the deployment (no replica ready, or
	// every one at its in-flight cap); LastDemand is when a router last saw a request for
	// it (zero: never).
	RouterWaiting float64
	LastDemand    time.Time
}

// Source gives the Fleet the latest reports, per deployment.
type Source interface {
	Snapshot() map[string]Observed
}

// Sink acts on decisions. Decided is called outside the Fleet's lock, once per evaluation,
// in deployment-name order; acted is Change && !DryRun, and the count is already the
// Fleet's Desired when it is called.
type Sink interface {
	Decided(ctx context.Context, deployment string, d policy.Decision, acted bool)
}

// Fleet runs the scaling loops of every deployment a controller leads. Safe for concurrent
// use: Put, Remove, Desired and Poke may be called from any goroutine while Run runs.
type Fleet struct {
	clock    Clock
	interval time.Duration
	gap      time.Duration
	src      Source
	sink     Sink
	poked    chan struct{}

	mu   sync.Mutex
	deps map[string]*entry
}

type entry struct {
	loop *Deployment
	as   *policy.Autoscaler
	spec Spec
}

// NewFleet returns a Fleet whose replicas report every reportInterval.
func NewFleet(clock Clock, reportInterval time.Duration, src Source, sink Sink) *Fleet {
	if reportInterval <= 0 {
		reportInterval = window.DefaultReportInterval
	}
	return &Fleet{
		clock: clock, interval: reportInterval, gap: reportInterval / window.TicksPerInterval,
		src: src, sink: sink, poked: make(chan struct{}, 1), deps: map[string]*entry{},
	}
}

// Put adds a deployment or updates its policy and bounds; a changed policy applies from the
// next evaluation, keeping what the old one learned that still means the same thing.
// initial is the count decided by an earlier leader, used only when the deployment is new
// (0: none, start from spec.Min). An invalid policy is an error and changes nothing.
func (f *Fleet) Put(name string, spec Spec, p *llmscalerv1.Policy, initial int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	e := f.deps[name]
	if e == nil {
		as, err := policy.NewAutoscaler(p)
		if err != nil {
			return err
		}
		if initial <= 0 {
			initial = spec.Min
		}
		e = &entry{as: as, loop: NewDeployment(name, Autoscaler{as}, f.interval, initial)}
		f.deps[name] = e
	} else {
		if err := e.as.SetPolicy(p); err != nil {
			return err
		}
		e.loop.SetPolicy(Autoscaler{e.as})
	}
	e.spec = spec
	e.loop.Bound(spec.Min, spec.Max)
	return nil
}

// Remove forgets a deployment.
func (f *Fleet) Remove(name string) {
	f.mu.Lock()
	delete(f.deps, name)
	f.mu.Unlock()
}

// Desired is the count the autoscaler drives a deployment towards, if it knows one.
func (f *Fleet) Desired(name string) (int, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e := f.deps[name]
	if e == nil || e.loop.Desired() == 0 {
		return 0, false
	}
	return e.loop.Desired(), true
}

// Poke asks for an evaluation soon (a report arrived); it never blocks.
func (f *Fleet) Poke() {
	select {
	case f.poked <- struct{}{}:
	default:
	}
}

// Run evaluates every report interval and on pokes until ctx ends. A tick snapshots the
// whole fleet, so poke-triggered ticks run at most once per gap (a tenth of the report
// interval) however many agents report: a poke that comes sooner waits for a retry timer,
// and a deployment evaluated too recently is evaluated as soon as its gap has passed, not
// at the next interval.
func (f *Fleet) Run(ctx context.Context) error {
	if f.src == nil || f.sink == nil {
		return errors.New("scaling: fleet without source or sink")
	}
	tk := f.clock.NewTicker(f.interval)
	defer tk.Stop()
	retry := f.clock.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	armed := false
	var lastPoked time.Time
	for {
		poked := true
		select {
		case <-ctx.Done():
			return nil
		case <-tk.C():
			poked = false
		case <-f.poked:
			if since := f.clock.Now().Sub(lastPoked); since < f.gap {
				if !armed {
					retry.Reset(f.gap - since)
					armed = true
				}
				continue
			}
		case <-retry.C():
			armed = false
		}
		if poked {
			lastPoked = f.clock.Now()
		}
		if wait := f.Tick(ctx, poked); wait > 0 && !armed {
			retry.Reset(wait)
			armed = true
		}
	}
}

type decided struct {
	name  string
	d     policy.Decision
	acted bool
}

// Tick is one pass over the fleet at the clock's now: each deployment observes its replicas
// and, unless a poke-triggered pass comes within its gap of the last evaluation, closes a
// window point and evaluates. Decisions go to the sink. It returns how long until a
// deployment it skipped can be evaluated, 0 if it skipped none.
func (f *Fleet) Tick(ctx context.Context, poked bool) time.Duration {
	now := f.clock.Now()
	snap := f.src.Snapshot()
	var out []decided
	var wait time.Duration
	f.mu.Lock()
	for name, e := range f.deps {
		if since := e.loop.SinceEval(now); poked && since < f.gap {
			if w := f.gap - since; wait == 0 || w < wait {
				wait = w
			}
			continue
		}
		obs := snap[name]
		spec := e.spec
		spec.ColdStart = obs.ColdStart
		spec.RouterWaiting, spec.LastDemand = obs.RouterWaiting, obs.LastDemand
		closePoint := !poked || now.Sub(e.loop.LastTick()) >= f.gap
		d, ok := e.loop.Step(now, obs.Replicas, spec, closePoint)
		if ok {
			out = append(out, decided{name: name, d: d, acted: d.Change && !d.DryRun})
		}
	}
	f.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	for _, o := range out {
		f.sink.Decided(ctx, o.name, o.d, o.acted)
	}
	return wait
}
