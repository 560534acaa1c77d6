package controller

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/llmscaler/llmscaler/internal/policy"
	"github.com/llmscaler/llmscaler/internal/scaling"
	"github.com/llmscaler/llmscaler/internal/window"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// engine is the autoscaler of one leadership term: it feeds what agents report into each
// deployment's scaling loop (internal/scaling, the same loop the simulator runs), sets the
// desired count the reconciler works towards, and journals every decision. The engine's own
// part is I/O: the fleet snapshot in, etcd, the reconciler, metrics and the journal out.
type engine struct {
	c     *Controller
	t     *term
	log   hclog.Logger
	loops *scaling.Fleet

	mu      sync.Mutex
	specs   map[string]*llmscalerv1.Deployment
	journal *journal
	history *replicaHistory
	stored  map[string]*llmscalerv1.Decision // last decision stored in etcd, per deployment
	// counts is each deployment's autoscaler count as last stored in etcd (at the start,
	// by earlier leaders). The reconciler follows these, not the loops' count, which is
	// ahead of etcd while a decision is being stored.
	counts map[string]uint32

	feed feed // only the scaling loops' goroutine touches it (Changes)
}

// feed is what the scaling loops were last given of the fleet: the engine tells them only
// what changed. At 10,000 nodes a whole-fleet snapshot observed 20,000 replicas up to ten
// times a second, a quarter of the controller's CPU.
type feed struct {
	// nodes holds each node's live replicas as last fed (a view's, which is never changed).
	nodes map[string][]nodeReplica
	// cold is the longest cold start per profile among the replicas fed; coldStale asks for
	// it to be counted again, after the replica that held a maximum went.
	cold      map[string]time.Duration
	coldStale bool
	routerGen uint64
	// Reused between calls.
	views   []nodeSnapshot
	changes []scaling.Change
	conds   map[string]scaling.Conditions
}

func newFeed() feed {
	return feed{nodes: map[string][]nodeReplica{}, cold: map[string]time.Duration{}, conds: map[string]scaling.Conditions{}}
}

func newEngine(c *Controller, t *term) *engine {
	e := &engine{
		c: c, t: t, log: t.log.Named("engine"),
		specs:   map[string]*llmscalerv1.Deployment{},
		journal: newJournal(),
		history: newReplicaHistory(historyStep, historySpan),
		stored:  map[string]*llmscalerv1.Decision{},
		counts:  map[string]uint32{},

		feed: newFeed(),
	}
	e.loops = scaling.NewFleet(scaling.RealClock{NowFunc: c.now}, c.cfg.ReportInterval, e, e)
	return e
}

// load reads what earlier leaders stored: autoscaler counts and the journals.
func (e *engine) load(ctx context.Context, deps []*llmscalerv1.Deployment) error {
	counts, err := e.c.store.autoscaleCounts(ctx)
	if err != nil {
		return err
	}
	e.mu.Lock()
	e.counts = counts
	e.mu.Unlock()
	for _, d := range deps {
		name := d.GetSpec().GetName()
		ds, err := e.c.store.decisions(ctx, name)
		if err != nil {
			return err
		}
		e.journal.seed(name, ds)
		if len(ds) > 0 {
			e.stored[name] = ds[0]
		}
		e.put(d)
	}
	return nil
}

// put adds or updates a deployment; a changed policy applies on the next evaluation.
func (e *engine) put(d *llmscalerv1.Deployment) {
	name := d.GetSpec().GetName()
	e.mu.Lock()
	e.specs[name] = d
	initial := int(e.counts[name])
	// New bounds apply to the stored count as the loop applies them to its own (Bound).
	if c, ok := e.counts[name]; ok {
		c = max(c, d.GetSpec().GetMinReplicas())
		if m := d.GetSpec().GetMaxReplicas(); m > 0 {
			c = min(c, m)
		}
		e.counts[name] = c
	}
	e.mu.Unlock()
	spec := scaling.Spec{
		Min:        int(d.GetSpec().GetMinReplicas()),
		Max:        int(d.GetSpec().GetMaxReplicas()),
		Paused:     d.GetScale().GetPaused(),
		Manual:     d.GetScale().ManualReplicas != nil,
		IdleToZero: defaultIdleToZero,
	}
	if w := d.GetSpec().GetIdleToZero(); w != nil {
		spec.IdleToZero = w.AsDuration()
	}
	if err := e.loops.Put(name, spec, d.GetSpec().GetPolicy(), initial); err != nil {
		// ApplyDeployment validates the policy, so this is a spec stored by another version.
		e.log.Warn("policy not applied", "deployment", name, "error", err)
	}
}

// remove forgets a deleted deployment and its stored state.
func (e *engine) remove(ctx context.Context, name string) {
	e.loops.Remove(name)
	e.mu.Lock()
	delete(e.specs, name)
	delete(e.stored, name)
	delete(e.counts, name)
	e.mu.Unlock()
	e.journal.forget(name)
	e.c.metrics.forgetDeployment(name)
	if err := e.c.store.deleteDeploymentState(ctx, e.t.fence, name); err != nil {
		e.failWrite("delete the autoscaling state of "+name, err)
	}
}

// failWrite ends the leadership term after a failed leader write, unless the term is
// already ending (its context is done, so the write could not be made anyway).
func (e *engine) failWrite(what string, err error) {
	if e.t.ctx.Err() != nil {
		return
	}
	e.log.Error("leader write failed: stepping down", "write", what, "error", err)
	e.t.fail(fmt.Errorf("%s: %w", what, err))
}

// desired is the count the autoscaler drives a deployment towards, if it knows the deployment.
//
// It is the count stored in etcd: the loops decide a new count before the engine stores it
// (Decided), and a reconcile pass in between must not act on a count that the next leader
// would not know.
func (e *engine) desired(name string) (uint32, bool) {
	n, ok := e.loops.Desired(name)
	if !ok {
		return 0, false
	}
	e.mu.Lock()
	c, stored := e.counts[name]
	e.mu.Unlock()
	if stored {
		return c, true
	}
	return uint32(n), true
}

// poke asks for an evaluation soon (a report arrived); it never blocks.
func (e *engine) poke() { e.loops.Poke() }

// run runs the scaling loops and samples the replica history for the status page.
func (e *engine) run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return e.loops.Run(gctx) })
	g.Go(func() error { return e.runHistory(gctx) })
	return g.Wait()
}

// Changes gives the scaling loops what changed since they last asked: the replicas of every
// node that changed (new or updated, and gone), with the routers' figures merged in, and
// each deployment's conditions. When the routers' figures change, every replica of a
// deployment they route is given again with the new figures merged; with all, every replica.
func (e *engine) Changes(all bool) ([]scaling.Change, map[string]scaling.Conditions) {
	f := &e.feed
	routers, gen := e.t.routers.view(e.c.now(), e.c.cfg.ReportInterval)
	ch := f.update(e.t.fleet, routers, gen, all)
	clear(f.conds)
	e.mu.Lock()
	for name, d := range e.specs {
		c := scaling.Conditions{ColdStart: f.cold[d.GetSpec().GetProfile()]}
		if rv := routers[name]; rv != nil {
			c.RouterWaiting, c.LastDemand = rv.waiting, rv.lastDemand
		}
		f.conds[name] = c
	}
	e.mu.Unlock()
	return ch, f.conds
}

// update reads the nodes that changed in fl since the last call and returns the changes to
// their replicas, routers' figures merged (Changes).
func (f *feed) update(fl *fleet, routers map[string]*routerView, gen uint64, all bool) []scaling.Change {
	f.views = fl.changes(f.views)
	remerge := gen != f.routerGen
	f.routerGen = gen
	// again: the replica will be given in the pass over every node below.
	again := func(nr *nodeReplica) bool { return all || (remerge && routers[nr.deployment] != nil) }
	ch := f.changes[:0]
	give := func(nr *nodeReplica) {
		r := nr.replica
		if rv := routers[nr.deployment]; rv != nil {
			mergeRouter(&r.Sample, rv.instances[r.ID])
		}
		ch = append(ch, scaling.Change{Deployment: nr.deployment, Replica: r})
	}
	for i := range f.views {
		ns := &f.views[i]
		if !ns.derived {
			ns.derive()
		}
		id := ns.node.GetNodeId()
		for j := range f.nodes[id] {
			o := &f.nodes[id][j]
			now := findReplica(ns.replicas, o.replica.ID)
			if now == nil {
				ch = append(ch, scaling.Change{Deployment: o.deployment, Replica: scaling.Replica{ID: o.replica.ID}, Gone: true})
			}
			if o.coldStart > 0 && o.coldStart == f.cold[o.profile] && (now == nil || now.coldStart < o.coldStart) {
				f.coldStale = true
			}
		}
		for j := range ns.replicas {
			nr := &ns.replicas[j]
			f.cold[nr.profile] = max(f.cold[nr.profile], nr.coldStart)
			if !again(nr) {
				give(nr)
			}
		}
		if len(ns.replicas) == 0 {
			delete(f.nodes, id)
		} else {
			f.nodes[id] = ns.replicas
		}
	}
	if f.coldStale {
		clear(f.cold)
		for _, reps := range f.nodes {
			for j := range reps {
				f.cold[reps[j].profile] = max(f.cold[reps[j].profile], reps[j].coldStart)
			}
		}
		f.coldStale = false
	}
	if all || remerge {
		for _, reps := range f.nodes {
			for j := range reps {
				if again(&reps[j]) {
					give(&reps[j])
				}
			}
		}
	}
	f.changes = ch
	return ch
}

// findReplica is the replica id among a node's few, nil if absent.
func findReplica(reps []nodeReplica, id string) *nodeReplica {
	for i := range reps {
		if reps[i].replica.ID == id {
			return &reps[i]
		}
	}
	return nil
}

// observeInstance is a live (STARTING or READY) instance as the scaling loops observe it;
// gpus are the node's latest GPU samples.
func observeInstance(in *llmscalerv1.InstanceStatus, gpus []*llmscalerv1.GpuSample) (scaling.Replica, bool) {
	var ph window.Phase
	switch in.GetPhase() {
	case llmscalerv1.InstancePhase_INSTANCE_PHASE_STARTING:
		ph = window.Starting
	case llmscalerv1.InstancePhase_INSTANCE_PHASE_READY:
		ph = window.Ready
	default:
		return scaling.Replica{}, false
	}
	return scaling.Replica{ID: in.GetInstanceId(), Phase: ph, Sample: sampleOf(in, gpus), Since: in.GetStartedAt().AsTime()}, true
}

// sampleOf turns an instance's reported metrics into a window sample. GPU utilization is the
// mean over the instance's GPUs, from the node's latest GPU samples.
func sampleOf(in *llmscalerv1.InstanceStatus, gpus []*llmscalerv1.GpuSample) window.Sample {
	m := in.GetMetrics()
	s := window.Sample{
		Time:           m.GetScrapedAt().AsTime(),
		Waiting:        m.GetWaiting(),
		Running:        m.GetRunning(),
		TTFT:           window.Summary{P50: m.GetTtft().GetP50Seconds(), P95: m.GetTtft().GetP95Seconds(), Count: m.GetTtft().GetCount()},
		E2E:            window.Summary{P50: m.GetE2ELatency().GetP50Seconds(), P95: m.GetE2ELatency().GetP95Seconds(), Count: m.GetE2ELatency().GetCount()},
		PromptTPS:      m.GetPromptTokensPerSecond(),
		GenerationTPS:  m.GetGenerationTokensPerSecond(),
		FinishedPerSec: m.GetFinishedRequestsPerSecond(),
	}
	if m.GetScrapedAt() == nil {
		// Not scraped yet (a starting server): its data is as old as the instance.
		s.Time = in.GetStartedAt().AsTime()
	}
	if m != nil && m.KvCacheUsage != nil {
		s.KVCache, s.HasKVCache = m.GetKvCacheUsage(), true
	}
	var sum float64
	var n int
	for _, g := range in.GetGpuIndices() {
		for _, gs := range gpus {
			if gs.GetIndex() == g && gs.UtilizationPercent != nil {
				sum += gs.GetUtilizationPercent()
				n++
				break
			}
		}
	}
	if n > 0 {
		s.GPUUtil, s.HasGPUUtil = sum/float64(n), true
	}
	return s
}

// Decided acts on one evaluation: metrics, the stored count, a reconciler pass, the journal.
func (e *engine) Decided(ctx context.Context, name string, d policy.Decision, acted bool) {
	e.c.metrics.observeDecision(name, d, acted)
	if !d.Change && d.Recommended == d.Current {
		return
	}
	pd := policy.ToProto(d, name, e.t.epoch)
	if acted {
		if err := e.c.store.putAutoscale(ctx, e.t.fence, name, uint32(d.Desired)); err != nil {
			// Acting on a count that is not stored would let the next leader undo it
			// unseen: step down instead, and let the next term start from etcd.
			e.failWrite("store the desired count of "+name, err)
			return
		}
		e.mu.Lock()
		e.counts[name] = uint32(d.Desired)
		e.mu.Unlock()
		// Act now rather than at the reconciler's next pass: a burst should not wait. The
		// reconciler's own pass may have been quicker; either way the journal gets the
		// commands sent since the decision.
		e.t.reconciler.pass()
		pd.Commands = e.t.reconciler.sentSince(name, d.Time)
		e.log.Info("scaling", "deployment", name, "from", d.Current, "to", d.Desired, "reason", d.Reason)
	}
	e.journal.add(pd)
	e.c.events.publish(&llmscalerv1.Event{Time: timestamppb.New(d.Time), Type: llmscalerv1.EventType_EVENT_TYPE_DECISION,
		Deployment: name, Message: pd.GetReason(), Decision: pd})
	e.mu.Lock()
	last := e.stored[name]
	store := !sameKind(pd, last)
	if store {
		e.stored[name] = pd
	}
	e.mu.Unlock()
	if store {
		if err := e.c.store.putDecision(ctx, e.t.fence, pd); err != nil {
			e.failWrite("journal a decision of "+name, err)
		}
	}
}

// scaledByHand journals a change that ScaleDeployment made to a deployment's scale state (a
// count held by hand or handed back, autoscaling paused or resumed), with who made it: the
// policy does not run while a count is held, so this is the journal's record of it.
func (e *engine) scaledByHand(ctx context.Context, prev, d *llmscalerv1.Deployment) {
	name := d.GetSpec().GetName()
	was, now := prev.GetScale(), d.GetScale()
	from, to := e.t.reconciler.desired(prev), e.t.reconciler.desired(d)
	var what []string
	switch {
	case now.ManualReplicas != nil && (was.ManualReplicas == nil || *was.ManualReplicas != *now.ManualReplicas):
		n := now.GetManualReplicas()
		what = append(what, fmt.Sprintf("held at %d %s", n, map[bool]string{true: "replica", false: "replicas"}[n == 1]))
	case now.ManualReplicas == nil && was.ManualReplicas != nil:
		what = append(what, "count handed back to the policy")
	}
	switch {
	case now.GetPaused() && !was.GetPaused():
		what = append(what, "autoscaling paused")
	case !now.GetPaused() && was.GetPaused():
		what = append(what, "autoscaling resumed")
	}
	if len(what) == 0 {
		return
	}
	by := d.GetUpdatedBy()
	if by == "" {
		by = "an unknown caller"
	}
	reason := fmt.Sprintf("scaled by hand by %s: %s", by, strings.Join(what, ", "))
	pd := &llmscalerv1.Decision{
		Time: timestamppb.New(e.c.now()), Deployment: name, Reason: reason,
		FromReplicas: from, ToReplicas: to, Recommended: to,
		Clamps: []*llmscalerv1.Clamp{{Kind: "manual", From: from, To: to, Reason: reason}},
		Acted:  from != to, Epoch: e.t.epoch, Actor: d.GetUpdatedBy(),
	}
	e.log.Info("scaled by hand", "deployment", name, "from", from, "to", to, "caller", by)
	e.journal.add(pd)
	e.c.events.publish(&llmscalerv1.Event{Time: pd.GetTime(), Type: llmscalerv1.EventType_EVENT_TYPE_DECISION,
		Deployment: name, Message: reason, Decision: pd, Actor: pd.GetActor()})
	e.mu.Lock()
	e.stored[name] = pd
	e.mu.Unlock()
	if err := e.c.store.putDecision(ctx, e.t.fence, pd); err != nil {
		e.failWrite("journal a change by hand of "+name, err)
	}
}
