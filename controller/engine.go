package controller

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/llmscaler/llmscaler/internal/policy"
	"github.com/llmscaler/llmscaler/internal/window"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

const (
	// defaultColdStart is assumed for a profile until one of its instances has come up.
	defaultColdStart = 60 * time.Second
)

// engine is the autoscaler of one leadership term: it feeds what agents report into each
// deployment's windows, runs the deployment's policy, sets the desired count the reconciler
// works towards, and journals every decision. Windows, policies and their clocks are the pure
// packages internal/window and internal/policy, which the simulator runs too.
type engine struct {
	c   *Controller
	t   *term
	log hclog.Logger

	poked chan struct{}

	mu      sync.Mutex
	deps    map[string]*scaled
	journal *journal
	stored  map[string]*llmscalerv1.Decision // last decision stored in etcd, per deployment
	loaded  map[string]uint32                // autoscaler counts stored by earlier leaders
}

// scaled is one deployment's autoscaling state.
type scaled struct {
	spec      *llmscalerv1.Deployment
	win       *window.Deployment
	as        *policy.Autoscaler
	policyErr string
	desired   uint32 // the autoscaler's count; 0 until known
	lastEval  time.Time
	lastTick  time.Time
	ids       map[string]bool // replicas the window holds
}

func newEngine(c *Controller, t *term) *engine {
	return &engine{
		c: c, t: t, log: t.log.Named("engine"),
		poked:   make(chan struct{}, 1),
		deps:    map[string]*scaled{},
		journal: newJournal(),
		stored:  map[string]*llmscalerv1.Decision{},
		loaded:  map[string]uint32{},
	}
}

// load reads what earlier leaders stored: autoscaler counts and the journals.
func (e *engine) load(ctx context.Context, deps []*llmscalerv1.Deployment) error {
	counts, err := e.c.store.autoscaleCounts(ctx)
	if err != nil {
		return err
	}
	e.mu.Lock()
	e.loaded = counts
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
	e.mu.Lock()
	defer e.mu.Unlock()
	name := d.GetSpec().GetName()
	s := e.deps[name]
	if s == nil {
		as, err := policy.NewAutoscaler(d.GetSpec().GetPolicy())
		s = &scaled{}
		if err != nil {
			s.policyErr = err.Error()
			as, _ = policy.NewAutoscaler(nil)
		}
		s.as = as
		cfg := as.Config()
		cfg.ReportInterval = e.c.cfg.ReportInterval
		s.win = window.NewDeployment(cfg)
		s.desired = d.GetSpec().GetMinReplicas()
		if n, ok := e.loaded[name]; ok {
			s.desired = n
		}
		e.deps[name] = s
	} else if err := s.as.SetPolicy(d.GetSpec().GetPolicy()); err != nil {
		s.policyErr = err.Error()
	} else {
		s.policyErr = ""
		cfg := s.as.Config()
		cfg.ReportInterval = e.c.cfg.ReportInterval
		s.win.SetConfig(cfg)
	}
	s.spec = d
	// A new spec's bounds apply to the count at once.
	s.desired = min(max(s.desired, d.GetSpec().GetMinReplicas()), d.GetSpec().GetMaxReplicas())
}

// remove forgets a deleted deployment and its stored state.
func (e *engine) remove(ctx context.Context, name string) {
	e.mu.Lock()
	delete(e.deps, name)
	delete(e.stored, name)
	e.mu.Unlock()
	e.journal.forget(name)
	if err := e.c.store.deleteDeploymentState(ctx, e.t.fence, name); err != nil {
		e.log.Warn("delete autoscaling state failed", "deployment", name, "error", err)
	}
}

// desired is the count the autoscaler drives a deployment towards, if it knows the deployment.
func (e *engine) desired(name string) (uint32, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.deps[name]
	if s == nil || s.desired == 0 {
		return 0, false
	}
	return s.desired, true
}

// poke asks for an evaluation soon (a report arrived); it never blocks.
func (e *engine) poke() {
	select {
	case e.poked <- struct{}{}:
	default:
	}
}

func (e *engine) run(ctx context.Context) error {
	tk := time.NewTicker(e.c.cfg.ReportInterval)
	defer tk.Stop()
	// retry fires when a report arrived for a deployment evaluated too recently to evaluate
	// again at once: it is evaluated as soon as the gap has passed, not at the next interval.
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	armed := false
	// A tick snapshots the whole fleet, so report-triggered ticks run at most once per gap
	// however many agents report: a report that comes sooner waits for the retry timer.
	gap := e.c.cfg.ReportInterval / window.TicksPerInterval
	var lastPoked time.Time
	for {
		poked := true
		select {
		case <-ctx.Done():
			return nil
		case <-tk.C:
			poked = false
		case <-e.poked:
			if since := e.c.now().Sub(lastPoked); since < gap {
				if !armed {
					retry.Reset(gap - since)
					armed = true
				}
				continue
			}
		case <-retry.C:
			armed = false
		}
		if poked {
			lastPoked = e.c.now()
		}
		if wait := e.tick(ctx, poked); wait > 0 && !armed {
			retry.Reset(wait)
			armed = true
		}
	}
}

// observation is one replica's latest report, as the engine feeds it to a window.
type observation struct {
	id    string
	phase window.Phase
	s     window.Sample
	since time.Time
}

// tick feeds the latest reports into the windows and evaluates the deployments. A tick that
// a report triggered evaluates a deployment and closes a window point at most
// window.TicksPerInterval times per report interval, which the windows have room for.
// It returns how long until a deployment it skipped can be evaluated, 0 if it skipped none.
func (e *engine) tick(ctx context.Context, poked bool) time.Duration {
	now := e.c.now()
	byDep, cold := observe(e.t.fleet.snapshot())
	gap := e.c.cfg.ReportInterval / window.TicksPerInterval

	e.mu.Lock()
	var evals []string
	var wait time.Duration
	for name, s := range e.deps {
		if since := now.Sub(s.lastEval); poked && since < gap {
			if w := gap - since; wait == 0 || w < wait {
				wait = w
			}
			continue
		}
		present := make(map[string]bool, len(byDep[name]))
		for _, o := range byDep[name] {
			present[o.id] = true
			s.win.Observe(o.id, o.phase, o.s)
		}
		for id := range s.ids {
			if !present[id] {
				s.win.Remove(id)
			}
		}
		s.ids = present
		if !poked || now.Sub(s.lastTick) >= gap {
			s.win.Tick(now)
			s.lastTick = now
		}
		s.lastEval = now
		evals = append(evals, name)
	}
	e.mu.Unlock()

	for _, name := range evals {
		e.evaluate(ctx, name, now, byDep[name], cold)
	}
	return wait
}

// observe turns a fleet snapshot into each deployment's replica observations and the longest
// measured cold start of each profile.
func observe(nodes []nodeSnapshot) (map[string][]observation, map[string]time.Duration) {
	byDep := map[string][]observation{}
	cold := map[string]time.Duration{}
	for _, ns := range nodes {
		util := map[uint32]*float64{}
		for _, g := range ns.node.GetGpuSamples() {
			util[g.GetIndex()] = g.UtilizationPercent
		}
		for _, in := range ns.instances {
			var ph window.Phase
			switch in.GetPhase() {
			case llmscalerv1.InstancePhase_INSTANCE_PHASE_STARTING:
				ph = window.Starting
			case llmscalerv1.InstancePhase_INSTANCE_PHASE_READY:
				ph = window.Ready
				if cs := in.GetColdStart().AsDuration(); cs > 0 {
					cold[in.GetProfile()] = max(cold[in.GetProfile()], cs)
				}
			default:
				continue
			}
			byDep[in.GetDeployment()] = append(byDep[in.GetDeployment()], observation{
				id: in.GetInstanceId(), phase: ph, s: sampleOf(in, util), since: in.GetStartedAt().AsTime()})
		}
	}
	return byDep, cold
}

// sampleOf turns an instance's reported metrics into a window sample. GPU utilization is the
// mean over the instance's GPUs, from the node's latest GPU samples.
func sampleOf(in *llmscalerv1.InstanceStatus, util map[uint32]*float64) window.Sample {
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
		if u := util[g]; u != nil {
			sum += *u
			n++
		}
	}
	if n > 0 {
		s.GPUUtil, s.HasGPUUtil = sum/float64(n), true
	}
	return s
}

// evaluate runs one deployment's policy and acts on the decision.
func (e *engine) evaluate(ctx context.Context, name string, now time.Time, obs []observation, cold map[string]time.Duration) {
	e.mu.Lock()
	s := e.deps[name]
	if s == nil {
		e.mu.Unlock()
		return
	}
	spec := s.spec.GetSpec()
	if s.spec.GetScale().ManualReplicas != nil {
		// Held by hand: the policy does not run; the reconciler uses the manual count.
		e.mu.Unlock()
		return
	}
	in := policy.Input{
		Now:            now,
		Deployment:     name,
		Min:            int(spec.GetMinReplicas()),
		Max:            int(spec.GetMaxReplicas()),
		Paused:         s.spec.GetScale().GetPaused(),
		ReportInterval: e.c.cfg.ReportInterval,
		ColdStart:      defaultColdStart,
	}
	if cs, ok := cold[spec.GetProfile()]; ok {
		in.ColdStart = cs
	}
	for _, o := range obs {
		switch o.phase {
		case window.Ready:
			in.Ready++
		case window.Starting:
			in.Starting++
			in.StartingSince = append(in.StartingSince, o.since)
		}
	}
	// The policy decides from the count the controller is driving towards, not from what
	// has come up so far: replicas whose start was sent but not reported yet count as
	// starting now, replicas being stopped no longer count. Otherwise every pass while
	// replicas come up would look like a new need to scale.
	want := int(s.desired)
	for in.Ready+in.Starting < want {
		in.Starting++
		in.StartingSince = append(in.StartingSince, now)
	}
	for in.Ready+in.Starting > want && in.Starting > 0 {
		in.Starting--
		in.StartingSince = in.StartingSince[:len(in.StartingSince)-1]
	}
	if in.Ready > want {
		in.Ready = want
	}
	cfg := s.as.Config()
	in.Stable = s.win.Values(now, cfg.Stable)
	in.Panic = s.win.Values(now, cfg.Panic)
	if cfg.History > 0 {
		in.Long = s.win.Totals(now, cfg.History)
	}
	d := s.as.Evaluate(in)
	acted := d.Change && !d.DryRun
	if acted {
		s.desired = uint32(d.Desired)
	}
	e.mu.Unlock()

	e.c.metrics.observeDecision(name, d, acted)
	if !d.Change && d.Recommended == d.Current {
		return
	}
	pd := policy.ToProto(d, name, e.t.epoch)
	if acted {
		if err := e.c.store.putAutoscale(ctx, e.t.fence, name, uint32(d.Desired)); err != nil {
			e.log.Warn("store desired count failed", "deployment", name, "error", err)
		}
		// Act now rather than at the reconciler's next pass: a burst should not wait. The
		// reconciler's own pass may have been quicker; either way the journal gets the
		// commands sent since the decision.
		e.t.reconciler.pass()
		pd.Commands = e.t.reconciler.sentSince(name, now)
		e.log.Info("scaling", "deployment", name, "from", d.Current, "to", d.Desired, "reason", d.Reason)
	}
	e.journal.add(pd)
	e.c.events.publish(&llmscalerv1.Event{Time: timestamppb.New(now), Type: llmscalerv1.EventType_EVENT_TYPE_DECISION,
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
			e.log.Warn("journal decision failed", "deployment", name, "error", err)
		}
	}
}
