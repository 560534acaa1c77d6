package sim

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/llmscaler/llmscaler/internal/scaling"
	"github.com/llmscaler/llmscaler/internal/servermodel"
	"github.com/llmscaler/llmscaler/internal/window"
)

// Defaults for Config fields left zero.
const (
	DefaultSLOTarget      = 2 * time.Second
	DefaultMaxReplicas    = 64
	DefaultReportInterval = time.Second
)

// epoch is the simulated clock's time zero.
var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Config is one simulation.
type Config struct {
	// Params is every replica's hardware profile.
	Params servermodel.Params
	// Workload is what arrives.
	Workload *Workload
	// SLOTarget is the TTFT a request must meet [2 s].
	SLOTarget time.Duration
	// MinReplicas [1] and MaxReplicas [64] bound the count.
	MinReplicas, MaxReplicas int
	// InitialReplicas are READY (warm) at time zero [MinReplicas]; see WarmReplicas.
	InitialReplicas int
	// ReportInterval is how often replicas report and the scaler ticks [1 s].
	ReportInterval time.Duration
	// Timeline records one TimelinePoint per report interval.
	Timeline bool
}

func (c Config) withDefaults() Config {
	if c.SLOTarget <= 0 {
		c.SLOTarget = DefaultSLOTarget
	}
	if c.MinReplicas <= 0 {
		c.MinReplicas = 1
	}
	if c.MaxReplicas <= 0 {
		c.MaxReplicas = DefaultMaxReplicas
	}
	c.MaxReplicas = max(c.MaxReplicas, c.MinReplicas)
	c.InitialReplicas = min(max(c.InitialReplicas, c.MinReplicas), c.MaxReplicas)
	if c.ReportInterval <= 0 {
		c.ReportInterval = DefaultReportInterval
	}
	return c
}

// Result is what one policy did to the workload.
type Result struct {
	Policy string `json:"policy"`
	// Requests counts arrivals; Rejected those no replica could ever hold (larger than the KV
	// cache), which count as missing the SLO.
	Requests int `json:"requests"`
	Rejected int `json:"rejected"`
	// SLOAttainment is the share of requests whose TTFT was at most the target, 0..1.
	SLOAttainment float64 `json:"slo_attainment"`
	GPUHours      float64 `json:"gpu_hours"`
	TTFTP50       float64 `json:"ttft_p50_s"`
	TTFTP95       float64 `json:"ttft_p95_s"`
	TTFTP99       float64 `json:"ttft_p99_s"`
	// QueueWaitP99 is the 99th percentile of arrival to admission into a running batch.
	QueueWaitP99 float64 `json:"queue_wait_p99_s"`
	// ScaleEvents counts decisions that changed the replica count.
	ScaleEvents  int `json:"scale_events"`
	PeakReplicas int `json:"peak_replicas"`
	// SimulatedSeconds is how long the simulation ran, until the last request finished.
	SimulatedSeconds float64 `json:"simulated_s"`
	// Timeline is one point per report interval, when Config.Timeline is set.
	Timeline []TimelinePoint `json:"-"`
	// Note says how a reference row was made (see References); empty for a policy.
	Note string `json:"note,omitempty"`
}

// TimelinePoint is the deployment during one report interval, sampled at its end.
type TimelinePoint struct {
	// Second is the end of the interval, in seconds from the start.
	Second float64
	// Arrivals in the interval.
	Arrivals int
	// Queue is requests waiting: in the front queue and in the replicas' waiting queues.
	Queue int
	// Replicas by phase.
	Starting, Ready, Draining int
	// Desired is the scaler's count after the tick; Change is Desired less the count before
	// the tick (a scaling event when not 0).
	Desired, Change int
	// GPUUtil is the mean GPU utilization of the ready replicas over the interval, 0-100.
	GPUUtil float64
	// TTFTMean and E2EMean are the mean time to first token and end-to-end latency, in
	// seconds, of the requests that had their first token (TTFT) or finished (E2E) in the
	// interval; NaN when there were none.
	TTFTMean, E2EMean float64
	// Reason is the policy's reason for a change of the count; empty when there was none.
	Reason string
}

type phase uint8

const (
	phaseStarting phase = iota
	phaseReady
	phaseDraining
	phaseStopped
)

type replica struct {
	id        string
	eng       *servermodel.Engine
	phase     phase
	started   time.Duration // start decided
	readyAt   time.Duration
	busyUntil time.Duration
	// Interval accumulators, reset at every report.
	ttft, e2e []float64
	busy      time.Duration
	last      servermodel.Counters
}

func (r *replica) load() int { return r.eng.Waiting() + r.eng.Running() }

type run struct {
	cfg    Config
	sc     Scaler
	scaler *scaling.Deployment
	// stopped is set when a replica stops, until compact drops it.
	stopped bool
	obs     []scaling.Replica
	reps    []*replica // live replicas (not stopped)
	nextID  int

	front    []int // indices into the workload of requests waiting for a READY replica
	next     int   // next arrival
	inflight int   // dispatched, not finished
	// lastStart is the latest start of an iteration stepped so far.
	lastStart time.Duration

	ttft, wait []float64 // per finished request, seconds; index = request index
	met        int
	gpuTime    time.Duration
	res        Result
	arrivals   int // in the current interval
	scratch    []float64
}

// Run simulates the workload under the scaler.
func Run(cfg Config, sc Scaler) (*Result, error) {
	r, err := simulate(cfg, sc)
	if err != nil {
		return nil, err
	}
	return r.finish(), nil
}

// simulate runs the workload under the scaler to its end and returns the finished run,
// before finish summarises (and sorts away) its per-request figures.
func simulate(cfg Config, sc Scaler) (*run, error) {
	cfg = cfg.withDefaults()
	if cfg.Workload == nil {
		return nil, errors.New("no workload")
	}
	if err := cfg.Params.Validate(); err != nil {
		return nil, fmt.Errorf("hardware profile: %w", err)
	}
	pol, err := asPolicy(sc)
	if err != nil {
		return nil, err
	}
	r := &run{cfg: cfg, sc: sc, scaler: scaling.NewDeployment("sim", pol, cfg.ReportInterval, cfg.InitialReplicas)}
	r.scaler.StartAt(epoch)
	n := len(cfg.Workload.Requests)
	r.ttft = make([]float64, n)
	r.wait = make([]float64, n)
	for i := range r.ttft {
		r.ttft[i] = math.Inf(1)
		r.wait[i] = math.Inf(1)
	}
	r.res = Result{Policy: sc.Name(), Requests: n}
	for range cfg.InitialReplicas {
		rep := r.start(0)
		rep.phase, rep.readyAt = phaseReady, 0
	}
	r.loop()
	return r, nil
}

func (r *run) start(now time.Duration) *replica {
	rep := &replica{
		id:      "r" + strconv.Itoa(r.nextID),
		eng:     servermodel.NewEngine(r.cfg.Params),
		started: now,
		readyAt: now + r.cfg.Params.ColdStart,
	}
	rep.eng.SetTokenEvents(false) // step reads first tokens and completions only
	r.nextID++
	r.reps = append(r.reps, rep)
	return rep
}

func (r *run) loop() {
	reqs := r.cfg.Workload.Requests
	tick := r.cfg.ReportInterval
	nextTick := tick
	now := time.Duration(0)
	// Most instants are the end of one replica's iteration and nothing else: those step the
	// replicas due, from a heap of iteration ends, rather than look at every replica. Only
	// arrivals, a replica coming up and a report tick (which may scale) give an idle replica
	// work or drain it, and the instants with those look at every replica. The order in which
	// replicas step at one instant changes nothing: each steps its own engine and records its
	// own requests. checkpoint.simulate runs the references' trials the same way.
	var busy iterationEnds
	var due []*replica
	starting := false // whether a replica may be starting
	for {
		// Replicas that come up.
		ready := false
		if starting {
			ready, starting = r.comeUp(now)
		}
		if ready && len(r.front) > 0 {
			for _, i := range r.front {
				r.dispatch(i, now)
			}
			r.front = r.front[:0]
		}
		all := ready // whether to look at every replica
		for r.next < len(reqs) && reqs[r.next].At <= now {
			r.arrivals++
			r.dispatch(r.next, now)
			r.next++
			all = true
		}
		if now >= nextTick {
			r.report(now)
			nextTick += tick
			all, starting = true, true
		}
		// Step idle engines that have work; stop drained replicas. Nothing reaches a replica
		// before the next arrival, tick or replica coming up, so each runs its iterations
		// back to back until then.
		until := r.horizon(nextTick, starting)
		due = due[:0]
		for busy.len() > 0 && busy.next() <= now {
			due = append(due, busy.pop())
		}
		list := due
		if all {
			list = r.reps
		}
		for _, rep := range list {
			if rep.busyUntil > now {
				continue
			}
			if rep.eng.Busy() {
				r.step(rep, now, until)
				busy.push(rep) // an iteration takes time: it ends after now
			} else if rep.phase == phaseDraining {
				r.stop(rep, now)
			}
		}
		r.compact()
		if r.next >= len(reqs) && r.inflight == 0 && len(r.front) == 0 {
			break
		}
		// The next event.
		t := until
		if busy.len() > 0 {
			t = min(t, busy.next())
		}
		now = t
	}
	r.res.SimulatedSeconds = r.stopAll(now).Seconds()
}

// comeUp makes the starting replicas whose cold start is over by now ready, and reports
// whether any did and whether any are still starting.
func (r *run) comeUp(now time.Duration) (ready, starting bool) {
	for _, rep := range r.reps {
		if rep.phase == phaseStarting {
			if rep.readyAt <= now {
				rep.phase = phaseReady
				ready = true
			} else {
				starting = true
			}
		}
	}
	return ready, starting
}

// horizon is the first instant after now at which something can reach a replica from
// outside it: the next arrival, a replica coming up (if any may be starting) or bound.
func (r *run) horizon(bound time.Duration, starting bool) time.Duration {
	t := bound
	if reqs := r.cfg.Workload.Requests; r.next < len(reqs) {
		t = min(t, reqs[r.next].At)
	}
	if starting {
		for _, rep := range r.reps {
			if rep.phase == phaseStarting {
				t = min(t, rep.readyAt)
			}
		}
	}
	return t
}

// stopAll ends the run once the last request has finished (noticed at now): at the start of
// the iteration that finished it, which is when stepping one iteration at a time would have
// seen it, less for a draining replica that went idle before then and stopped when it did.
// It returns the end.
func (r *run) stopAll(now time.Duration) time.Duration {
	end := max(now, r.lastStart)
	for _, rep := range r.reps {
		if rep.phase == phaseDraining && rep.busyUntil < end {
			r.stop(rep, rep.busyUntil)
		} else {
			r.stop(rep, end)
		}
	}
	r.compact()
	return end
}

// dispatch sends request i to the least-loaded READY replica, or to the front queue.
func (r *run) dispatch(i int, now time.Duration) {
	var best *replica
	for _, rep := range r.reps {
		if rep.phase == phaseReady && (best == nil || rep.load() < best.load()) {
			best = rep
		}
	}
	if best == nil {
		r.front = append(r.front, i)
		return
	}
	q := r.cfg.Workload.Requests[i]
	err := best.eng.Submit(servermodel.Request{
		ID: uint64(i), PromptTokens: q.PromptTokens, OutputTokens: q.OutputTokens,
		Arrival: epoch.Add(q.At),
	})
	if err != nil {
		r.res.Rejected++
		return
	}
	r.inflight++
}

// step runs rep's iterations from now until the first that would start at until or later.
func (r *run) step(rep *replica, now, until time.Duration) {
	last, end, evs := rep.eng.StepUntil(epoch.Add(now), epoch.Add(until))
	r.lastStart = max(r.lastStart, last.Sub(epoch))
	d := end.Sub(epoch)
	rep.busy += d - now
	rep.busyUntil = d
	for i := range evs {
		ev := &evs[i]
		switch ev.Kind {
		case servermodel.EventFirstToken:
			t := ev.Time.Sub(ev.Arrival).Seconds()
			r.ttft[ev.ID] = t
			r.wait[ev.ID] = ev.Start.Sub(ev.Arrival).Seconds()
			if t <= r.cfg.SLOTarget.Seconds() {
				r.met++
			}
			rep.ttft = append(rep.ttft, t)
		}
		if ev.Kind == servermodel.EventDone {
			rep.e2e = append(rep.e2e, ev.Time.Sub(ev.Arrival).Seconds())
			r.inflight--
		}
	}
}

func (r *run) stop(rep *replica, now time.Duration) {
	if rep.phase == phaseStopped {
		return
	}
	rep.phase = phaseStopped
	r.stopped = true
	r.gpuTime += now - rep.started
}

// compact drops stopped replicas, keeping the order of the rest.
func (r *run) compact() {
	if !r.stopped {
		return // most events stop no replica: skip the scan
	}
	r.stopped = false
	r.reps = slices.DeleteFunc(r.reps, func(rep *replica) bool { return rep.phase == phaseStopped })
}

// summary is the p50 and p95 of xs (sorted in place).
func summary(xs []float64) window.Summary {
	if len(xs) == 0 {
		return window.Summary{}
	}
	slices.Sort(xs)
	return window.Summary{P50: quantile(xs, 0.5), P95: quantile(xs, 0.95), Count: uint64(len(xs))}
}

// quantile of sorted xs, nearest rank.
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(xs)))) - 1
	return xs[min(max(i, 0), len(xs)-1)]
}

// report is one report interval's end: samples, then one step of the scaling loop (a window
// point and a decision), which the simulator acts on at once.
func (r *run) report(now time.Duration) {
	at := epoch.Add(now)
	iv := r.cfg.ReportInterval.Seconds()
	var util, ttftSum, e2eSum float64
	var ttftN, e2eN, ready, starting int
	r.obs = r.obs[:0]
	for _, rep := range r.reps {
		var ph window.Phase
		switch rep.phase {
		case phaseStarting:
			ph = window.Starting
			starting++
		case phaseReady:
			ph = window.Ready
			ready++
		default:
			// Draining: out of the windows, but its requests count in the timeline.
			ttftSum, ttftN = ttftSum+sum(rep.ttft), ttftN+len(rep.ttft)
			e2eSum, e2eN = e2eSum+sum(rep.e2e), e2eN+len(rep.e2e)
			rep.ttft, rep.e2e = rep.ttft[:0], rep.e2e[:0]
			continue
		}
		c := rep.eng.Counters()
		// The iteration running now counts towards this interval up to now only.
		busy := rep.busy
		if rep.busyUntil > now {
			busy -= rep.busyUntil - now
		}
		s := window.Sample{
			Time:           at,
			Waiting:        float64(rep.eng.Waiting()),
			Running:        float64(rep.eng.Running()),
			KVCache:        rep.eng.KVUsage(),
			HasKVCache:     true,
			TTFT:           summary(rep.ttft),
			E2E:            summary(rep.e2e),
			PromptTPS:      float64(c.PromptTokens-rep.last.PromptTokens) / iv,
			GenerationTPS:  float64(c.GenerationTokens-rep.last.GenerationTokens) / iv,
			FinishedPerSec: float64(c.FinishedRequests-rep.last.FinishedRequests) / iv,
			GPUUtil:        min(100, max(0, 100*busy.Seconds()/iv)),
			HasGPUUtil:     true,
		}
		rep.busy -= busy
		rep.last = c
		if rep.phase == phaseReady {
			util += s.GPUUtil
		}
		ttftSum, ttftN = ttftSum+sum(rep.ttft), ttftN+len(rep.ttft)
		e2eSum, e2eN = e2eSum+sum(rep.e2e), e2eN+len(rep.e2e)
		rep.ttft, rep.e2e = rep.ttft[:0], rep.e2e[:0]
		r.obs = append(r.obs, scaling.Replica{ID: rep.id, Phase: ph, Sample: s, Since: epoch.Add(rep.started)})
	}
	spec := scaling.Spec{Min: r.cfg.MinReplicas, Max: r.cfg.MaxReplicas, ColdStart: r.cfg.Params.ColdStart}
	cur := ready + starting
	want, reason := cur, ""
	if d, ok := r.scaler.Step(at, r.obs, spec, true); ok && d.Change && !d.DryRun {
		want, reason = min(max(d.Desired, spec.Min), spec.Max), d.Reason
	}
	if want != cur {
		r.res.ScaleEvents++
		r.scale(cur, want, now)
	}
	if cur := len(r.reps); cur > r.res.PeakReplicas {
		r.res.PeakReplicas = cur
	}
	if r.cfg.Timeline {
		p := TimelinePoint{Second: now.Seconds(), Arrivals: r.arrivals, Queue: len(r.front), Desired: want,
			Change: want - cur, TTFTMean: mean(ttftSum, ttftN), E2EMean: mean(e2eSum, e2eN)}
		if want != cur {
			p.Reason = reason
		}
		if ready > 0 {
			p.GPUUtil = util / float64(ready)
		}
		for _, rep := range r.reps {
			p.Queue += rep.eng.Waiting()
			switch rep.phase {
			case phaseStarting:
				p.Starting++
			case phaseReady:
				p.Ready++
			case phaseDraining:
				p.Draining++
			}
		}
		r.res.Timeline = append(r.res.Timeline, p)
	}
	r.arrivals = 0
}

func sum(xs []float64) float64 {
	t := 0.0
	for _, x := range xs {
		t += x
	}
	return t
}

func mean(sum float64, n int) float64 {
	if n == 0 {
		return math.NaN()
	}
	return sum / float64(n)
}

// scale starts or drains replicas to go from cur to want.
func (r *run) scale(cur, want int, now time.Duration) {
	for ; cur < want; cur++ {
		r.start(now)
	}
	// Starting replicas hold no requests: stop the newest first.
	for i := len(r.reps) - 1; i >= 0 && cur > want; i-- {
		if rep := r.reps[i]; rep.phase == phaseStarting {
			r.stop(rep, now)
			cur--
		}
	}
	for cur > want {
		var best *replica
		for _, rep := range r.reps {
			if rep.phase == phaseReady && (best == nil || rep.load() < best.load()) {
				best = rep
			}
		}
		if best == nil {
			break
		}
		best.phase = phaseDraining
		cur--
	}
	r.compact()
}

func (r *run) finish() *Result {
	res := &r.res
	res.GPUHours = r.gpuTime.Hours()
	if res.Requests > 0 {
		res.SLOAttainment = float64(r.met) / float64(res.Requests)
	}
	// Rejected requests never had a first token: they count against attainment only.
	infinite := func(x float64) bool { return math.IsInf(x, 1) }
	r.ttft = slices.DeleteFunc(r.ttft, infinite)
	r.wait = slices.DeleteFunc(r.wait, infinite)
	slices.Sort(r.ttft)
	slices.Sort(r.wait)
	res.TTFTP50 = quantile(r.ttft, 0.5)
	res.TTFTP95 = quantile(r.ttft, 0.95)
	res.TTFTP99 = quantile(r.ttft, 0.99)
	res.QueueWaitP99 = quantile(r.wait, 0.99)
	return res
}
