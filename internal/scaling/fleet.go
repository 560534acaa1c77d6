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

// Change is one replica's latest report, or with Gone its end: stopped, draining or lost
// (only Replica.ID is read then).
type Change struct {
	Deployment string
	Replica    Replica
	Gone       bool
}

// Conditions are what a deployment's evaluation needs beside its replicas.
type Conditions struct {
	// ColdStart is the longest measured cold start of the deployment's profile, 0 if none.
	ColdStart time.Duration
	// RouterWaiting is the requests routers hold for the deployment (no replica ready, or
	// every one at its in-flight cap); LastDemand is when a router last saw a request for
	// it (zero: never).
	RouterWaiting float64
	LastDemand    time.Time
}

// Source feeds the Fleet what agents and routers report.
type Source interface {
	// Changes is what changed since the last call, in order, and every deployment's
	// conditions now. With all set it includes every live replica as well (a deployment
	// the Fleet did not know may have some). The first call gives every live replica
	// anyway. Both results are the Fleet's only until the next call.
	Changes(all bool) ([]Change, map[string]Conditions)
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
	// resync asks the source for every live replica at the next pass: a new deployment's
	// replicas may have reported before it was known.
	resync bool
}

type entry struct {
	loop *Deployment
	as   *policy.Autoscaler
	spec Spec
	// changed is set by a change to the deployment's replicas or conditions since its last
	// evaluation; lastChanged is when a change last had it evaluated (a poked pass).
	changed     bool
	lastChanged time.Time
	conds       Conditions
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
		f.resync = true
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

// Run evaluates every deployment each report interval, and a deployment whose replicas
// reported as soon as they did, until ctx ends. Pokes are taken at most once per batch (a
// hundredth of the report interval): the source's changes are read in batches however
// many agents report. A deployment is evaluated on its replicas' reports at most once per
// gap (a tenth of the interval): one whose gap has not passed is evaluated as soon as it has,
// not at the next interval.
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
	batch := f.interval / batchesPerInterval
	var lastPoked time.Time
	for {
		poked := true
		select {
		case <-ctx.Done():
			return nil
		case <-tk.C():
			poked = false
		case <-f.poked:
			if since := f.clock.Now().Sub(lastPoked); since < batch {
				if !armed {
					retry.Reset(batch - since)
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

// batchesPerInterval is how many times per report interval Run reads changes at most.
const batchesPerInterval = 100

type decided struct {
	name  string
	d     policy.Decision
	acted bool
}

// Tick is one pass at the clock's now. It applies the source's changes to the deployments'
// loops; then a poke-triggered pass evaluates each deployment whose replicas or conditions
// changed and whose last such evaluation is a gap old, and the interval's pass evaluates every
// deployment. Each evaluation closes a window point. Decisions go to the sink. It returns
// how long until a changed deployment it skipped can be evaluated, 0 if it skipped none.
func (f *Fleet) Tick(ctx context.Context, poked bool) time.Duration {
	now := f.clock.Now()
	f.mu.Lock()
	all := f.resync
	f.resync = false
	f.mu.Unlock()
	changes, conds := f.src.Changes(all)
	var out []decided
	var wait time.Duration
	f.mu.Lock()
	for i := range changes {
		c := &changes[i]
		e := f.deps[c.Deployment]
		if e == nil {
			continue
		}
		if c.Gone {
			e.loop.Gone(c.Replica.ID)
		} else {
			e.loop.Update(c.Replica)
		}
		e.changed = true
	}
	for name, e := range f.deps {
		// Routers' figures change with no replica changing: a deployment at zero replicas
		// that routers now hold requests for must be evaluated at once.
		if c := conds[name]; c != e.conds {
			e.conds, e.changed = c, true
		}
		if poked {
			if !e.changed {
				continue
			}
			if since := now.Sub(e.lastChanged); since < f.gap {
				if w := f.gap - since; wait == 0 || w < wait {
					wait = w
				}
				continue
			}
			e.lastChanged = now
		}
		e.changed = false
		c := e.conds
		spec := e.spec
		spec.ColdStart = c.ColdStart
		spec.RouterWaiting, spec.LastDemand = c.RouterWaiting, c.LastDemand
		d, ok := e.loop.Evaluate(now, spec, true)
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
