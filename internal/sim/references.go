package sim

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/llmscaler/llmscaler/internal/scaling"
	"github.com/llmscaler/llmscaler/internal/trace"
	"github.com/llmscaler/llmscaler/internal/window"
)

// Names of the two references every scaling result is judged against, as they appear in
// Result.Policy.
const (
	// PolicyStatic is no autoscaler: a fixed pool of always-warm replicas (see Static).
	PolicyStatic = "static"
	// PolicyOracle is a clairvoyant plan that knows every arrival (see Oracle).
	PolicyOracle = "oracle"
)

// OracleWindow is the span of one step of the oracle's plan. It is an order of magnitude
// above the TTFT target (2 s), so that the look-ahead that judges a window's last requests
// costs a few percent more simulation and few requests straddle two windows; it is well
// below the cold start (80 s on the GPU profiles), so the plan follows a change of load
// faster than any policy that must wait a cold start for a replica; and at fleet loads (10
// req/s and up) a window holds hundreds of requests, so its 1 % of misses is a whole number
// that a one-replica change moves.
const OracleWindow = 30 * time.Second

var oracleWindowX = OracleWindow
var oracleNoGrowth = 0.0
var oracleSuccessor = 0
var oracleCumulative = false
var oracleBankFraction = 1.0

// oraclePasses bounds the forward passes Oracle makes to spend the budget.
var oraclePasses = 4

// oracleRepairs bounds the rounds in which Oracle adds replicas to a plan that its
// verification found short of the target.
const oracleRepairs = 6

// ErrUnreachable is what Static, Oracle and References wrap when no fleet within
// Config.MaxReplicas reaches the attainment target (requests too long for the SLO on the
// hardware, or a load beyond MaxReplicas); the result they return with it is the best
// they found.
var ErrUnreachable = errors.New("attainment target unreachable")

// allowedMisses is how many of n requests may miss for attainment a: the most m with
// (n-m)/n >= a, with room for the rounding of 1-a.
func allowedMisses(n int, a float64) int {
	return max(int(math.Floor((1-a)*float64(n)+1e-9)), 0)
}

func referenceConfig(cfg Config, attainment float64) (Config, error) {
	cfg = cfg.withDefaults()
	if cfg.Workload == nil {
		return cfg, errors.New("no workload")
	}
	if err := cfg.Params.Validate(); err != nil {
		return cfg, fmt.Errorf("hardware profile: %w", err)
	}
	if !(attainment > 0 && attainment <= 1) {
		return cfg, fmt.Errorf("attainment %v: want a share in (0, 1]", attainment)
	}
	return cfg, nil
}

// staticPool is a fixed count: the static reference's scaler.
type staticPool int

func (staticPool) Name() string                { return PolicyStatic }
func (staticPool) WindowConfig() window.Config { return window.Config{}.WithDefaults() }
func (s staticPool) Desired(*State) int        { return int(s) }

// Static is the reference with no autoscaler, what an operator of bare metal runs: the fewest
// fixed, always-warm replicas n (READY at time zero, never scaled) whose run reaches
// attainment over the whole workload, and that run, named PolicyStatic. A pool of n-1 misses.
//
// The search starts from an estimate of what the load needs (see staticGuess) and gallops
// from there, down or up, then bisects, taking attainment to grow with n. Its trials are
// checkpoint runs, which stop as soon as more requests have missed than the target allows;
// only the answer is run with the scaling loop, by Run. If even cfg.MaxReplicas misses the
// target, n is cfg.MaxReplicas, the result is its run, and the error wraps ErrUnreachable.
func Static(cfg Config, attainment float64) (n int, res *Result, err error) {
	cfg, err = referenceConfig(cfg, attainment)
	if err != nil {
		return 0, nil, err
	}
	reqs := cfg.Workload.Requests
	budget := allowedMisses(len(reqs), attainment)
	meets := func(n int) bool {
		c := newCheckpoint(cfg, budget)
		return c.advance(math.MaxInt64, n) && len(reqs)-c.j.met <= budget
	}
	n, ok := fewest(cfg.MinReplicas, cfg.MaxReplicas, staticGuess(cfg, attainment), meets)
	res, err = runStatic(cfg, n)
	if err != nil {
		return 0, nil, err
	}
	res.Note = fmt.Sprintf("%d replicas always warm: the fewest that reach %g %% attainment", n, 100*attainment)
	if !ok {
		res.Note = fmt.Sprintf("%d replicas always warm (the most allowed) reach %.2f %% attainment, short of %g %%", n, 100*res.SLOAttainment, 100*attainment)
		return n, res, fmt.Errorf("static: %d replicas reach %.4f attainment, want %g: %w", n, res.SLOAttainment, attainment, ErrUnreachable)
	}
	return n, res, nil
}

func runStatic(cfg Config, n int) (*Result, error) {
	cfg.MinReplicas, cfg.MaxReplicas, cfg.InitialReplicas = n, n, n
	return Run(cfg, staticPool(n))
}

// fewest is the least n in [lo, hi] that meets, taking meets to be monotone in n, found by
// galloping from guess and then bisecting; ok is false, with n = hi, when none does.
func fewest(lo, hi, guess int, meets func(int) bool) (n int, ok bool) {
	g := min(max(guess, lo), hi)
	var bad, good int // bad fails (or is lo-1), good meets
	if meets(g) {
		bad, good = lo-1, g
		for step := 1; good > lo; step *= 2 {
			c := max(good-step, lo)
			if !meets(c) {
				bad = c
				break
			}
			good = c
		}
	} else {
		bad, good = g, hi+1
		for step := 1; bad < hi; step *= 2 {
			c := min(bad+step, hi)
			if meets(c) {
				good = c
				break
			}
			bad = c
		}
		if good > hi {
			return hi, false
		}
	}
	for good-bad > 1 {
		mid := (bad + good) / 2
		if meets(mid) {
			good = mid
		} else {
			bad = mid
		}
	}
	return good, true
}

// workSeconds is a lower bound on the replica time request q costs: its prompt at the
// per-token prefill cost plus its share of iterations' base costs at the fullest iteration
// (MaxBatchTokens of prefill, MaxConcurrency of decode).
func workSeconds(cfg Config, prompt, output int) float64 {
	p := cfg.Params
	return float64(prompt)*(p.PrefillPerToken.Seconds()+p.PrefillBase.Seconds()/float64(p.MaxBatchTokens)) +
		float64(max(output-1, 0))*(p.DecodeBase.Seconds()/float64(p.MaxConcurrency)+p.DecodePerSeq.Seconds())
}

// staticGuess is where Static's search starts: the replicas whose full-batch throughput (see
// workSeconds) carries the load of every minute but the busiest, where the busiest hold
// 1-attainment of the requests. A fixed pool must carry nearly every minute's load, and
// replicas never run at full batch at the SLO, so the answer is usually a little above.
func staticGuess(cfg Config, attainment float64) int {
	reqs := cfg.Workload.Requests
	if len(reqs) == 0 {
		return cfg.MinReplicas
	}
	type minute struct {
		work  float64
		count int
	}
	ms := make([]minute, int(cfg.Workload.Duration()/time.Minute)+1)
	for _, q := range reqs {
		m := &ms[int(q.At/time.Minute)]
		m.work += workSeconds(cfg, q.PromptTokens, q.OutputTokens)
		m.count++
	}
	slices.SortFunc(ms, func(a, b minute) int { return cmpFloat(b.work, a.work) })
	skip := allowedMisses(len(reqs), attainment)
	for _, m := range ms {
		if m.count > skip {
			return int(math.Ceil(m.work / time.Minute.Seconds()))
		}
		skip -= m.count
	}
	return cfg.MinReplicas
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// OraclePlan is the oracle's schedule, and the scaling.Counter that plays it: the ready
// replicas it holds in each window of time.
type OraclePlan struct {
	// Window is the span of one step of the plan.
	Window time.Duration
	// Ready is the count of READY replicas the plan holds in window k, [k, k+1) x Window.
	Ready []int
	// Lead is how long before its window a replica is started so that it is READY at the
	// window's start: the cold start, rounded up to the report interval.
	Lead time.Duration
	// Min is the count after the last window.
	Min int
	// Planned is the attainment the plan's trials predicted, before verification.
	Planned float64
	// Spend is how many times its share of misses each window could add (see Oracle).
	Spend float64
	// Repairs counts the replicas that verification added to windows after the trials.
	Repairs int
}

// Name is "oracle".
func (p *OraclePlan) Name() string { return PolicyOracle }

// WindowConfig is the defaults: the plan reads no window.
func (p *OraclePlan) WindowConfig() window.Config { return window.Config{}.WithDefaults() }

// Desired is the most replicas any window within one lead of now holds: a replica is started
// a lead before the window that needs it, and one that a window within a lead will need
// again is kept warm rather than drained and started again, which would cost a cold start
// of GPU time for at most a lead of idle time saved.
func (p *OraclePlan) Desired(s *State) int { return p.at(s.Elapsed) }

func (p *OraclePlan) at(t time.Duration) int {
	want := p.Min
	for k := int(t / p.Window); k < len(p.Ready) && time.Duration(k)*p.Window <= t+p.Lead; k++ {
		want = max(want, p.Ready[k])
	}
	return want
}

// oracle is Oracle's forward pass.
type oracle struct {
	cfg Config
	w   time.Duration
	// hi[k] is the number of requests that arrive before the end of window k; share[k] is
	// 1-attainment of the window's own arrivals.
	hi    []int
	share []float64
	// spend is how many times its share of misses a window may add (see Oracle).
	spend float64
	// horizon is how many windows a lower count must carry for a drop to pay: the windows
	// that meet [start, start+lead] of one, which the plan keeps warm for (OraclePlan.Desired).
	horizon int
	state   *checkpoint // at the start of the window being planned
	judged  int         // misses among the requests of the windows planned so far
	// noDropUntil is the window before which no drop is tried (see window).
	noDropUntil int
}

// allowed is how many of the requests up to hi[j] may have missed once window j is judged,
// given base of them up to hi[j-1].
func (o *oracle) allowed(j, base int) int {
	if oracleCumulative {
		c := 0.0
		for i := 0; i <= j; i++ {
			c += o.share[i]
		}
		bank := math.Max(c-o.share[j]-float64(base), 0)
		return base + int(math.Floor(o.share[j]+oracleBankFraction*bank+1e-9))
	}
	return base + int(math.Floor(o.spend*o.share[j]+1e-9))
}

// trial is a run of windows from the oracle's state with n ready replicas.
type trial struct {
	// ok: every window tried kept its misses within what it allows.
	ok bool
	// misses among the requests up to hi[k] once window k is judged; a lower bound when
	// not exact, as the trial stopped once it had seen more than it was allowed.
	misses int
	exact  bool
	end    *checkpoint // at the end of window k
	// failed is the window that broke its allowance, when not ok.
	failed int
}

// try runs windows k to k+h-1 with n ready replicas, window k allowed allowedK misses in
// all (-1: no limit, an exact count) and each later one its share more than the window
// before. Each window is judged after a look-ahead of one TTFT target into the next with the
// same replicas and its arrivals, which compete with the window's last requests as they will
// in the real run; by then every request of the window has met its target or missed it.
func (o *oracle) try(k, n, h, allowedK int) trial {
	t := trial{failed: k}
	c := o.state.clone()
	allowed := allowedK
	last := k + h - 1
	if oracleSuccessor > 0 {
		last++
	}
	for j := k; j <= min(last, len(o.hi)-1); j++ {
		t.failed = j
		c.j.maxMisses = allowed
		end := time.Duration(j+1) * o.w
		resize := 0
		if j == k {
			resize = n
		}
		if j == k+h {
			resize = n + oracleSuccessor
		}
		if !c.advance(end, resize) {
			if j == k {
				t.misses = c.misses()
			}
			return t
		}
		if j == k {
			t.end = c.clone()
		}
		c.j.setMark(o.hi[j])
		if !c.advance(end+o.cfg.SLOTarget, 0) {
			if j == k {
				t.misses = c.misses()
			}
			return t
		}
		m := o.hi[j] - c.metBelowMark()
		c.j.setMark(math.MaxInt)
		if j == k {
			t.misses, t.exact = m, true
		}
		if allowed >= 0 && m > allowed {
			return t
		}
		if j+1 < len(o.hi) {
			allowed = o.allowed(j+1, m)
		}
	}
	t.ok = true
	return t
}

// window plans window k, given the count held in the window before (0 for none), and
// advances the state through it.
func (o *oracle) window(k, held, guess int) int {
	// A count below the one held is a drop that pays only if it lasts, as does the first
	// window's, which the warm start holds for a lead.
	horizon := func(n int) int {
		if k == 0 || n < held {
			return o.horizon
		}
		return 1
	}
	allowed := o.allowed(k, o.judged)
	lo := o.cfg.MinReplicas
	if k > 0 && k < o.noDropUntil {
		lo = max(lo, min(held, o.cfg.MaxReplicas))
	}
	cache := map[int]trial{}
	get := func(n int) trial {
		t, ok := cache[n]
		if !ok {
			t = o.try(k, n, horizon(n), allowed)
			cache[n] = t
		}
		return t
	}
	n, ok := fewest(lo, o.cfg.MaxReplicas, guess, func(n int) bool { return get(n).ok })
	if t, tried := cache[held-1]; tried && !t.ok && n >= held {
		// A drop now broke window t.failed: one at any window up to it would meet the same
		// window with as few replicas, and most likely break it too.
		o.noDropUntil = t.failed
	}
	if !ok {
		// Even the most replicas miss more than the window allows: take the fewest that do
		// as well in this window as the most.
		best := o.try(k, o.cfg.MaxReplicas, 1, -1)
		clear(cache)
		cache[o.cfg.MaxReplicas] = best
		get = func(n int) trial {
			t, ok := cache[n]
			if !ok {
				t = o.try(k, n, 1, best.misses)
				cache[n] = t
			}
			return t
		}
		n, _ = fewest(o.cfg.MinReplicas, o.cfg.MaxReplicas, guess, func(n int) bool { return get(n).ok })
	}
	t := get(n)
	o.state, o.judged = t.end, t.misses
	return n
}

// pass plans every window at o.spend from time zero, and returns the plan, the misses its
// trials judged, and its GPU time to the end of the last window.
func (o *oracle) pass(guess int) (ready []int, misses int, gpu time.Duration) {
	o.state, o.judged, o.noDropUntil = newCheckpoint(o.cfg, -1), 0, 0
	ready = make([]int, len(o.hi))
	held := 0
	for k := range ready {
		ready[k] = o.window(k, held, guess)
		held, guess = ready[k], ready[k]
	}
	gpu = o.state.r.gpuTime
	for _, rep := range o.state.r.reps {
		gpu += o.state.now - rep.started
	}
	misses = o.judged
	o.state = nil
	return ready, misses, gpu
}

// Oracle is a lower reference for the GPU-hours of any policy that reaches attainment: a
// plan that knows every arrival, starts each replica exactly one cold start before it is
// needed, and holds in each OracleWindow the fewest ready replicas that keep the window's
// requests within a share of misses, given the queues carried into the window. It returns
// the plan's run through the simulator (named PolicyOracle) and the plan.
//
// Time is cut into windows. Going forward from a checkpoint of the simulation (the replicas'
// engines with their queues and batches, the front queue), window k is tried with n ready
// replicas: its arrivals are simulated, then a TTFT target more with the next window's
// arrivals and the same replicas, by which time every request of the window has met the
// target or missed it. A window may add s times its share (1-attainment of its arrivals) to
// the misses, where the requests of earlier windows it delays count against it. The fewest
// n is found by galloping from the previous window's count and bisecting; a trial stops as
// soon as it has seen more misses than allowed. A count below the previous one must also
// hold the next windows within a cold start, or the drop would not pay: the plan keeps
// warm a replica needed again within a cold start. The state advances through the window
// with the chosen n, and the next window is planned from there. A pass at s = 1 gives every
// window the same risk and meets the target overall; as windows that need fewer misses
// leave budget unused, s is then raised by secant steps, up to oraclePasses in all, and the
// cheapest pass whose total misses are within budget is kept.
//
// The plan is then run by Run as a scaling.Counter (OraclePlan): replicas are started a cold
// start ahead of their window (and their GPU time counts from then), drained ones finish
// their requests and count until they stop, and a replica that would be drained and needed
// again within a cold start is kept warm instead. The trials follow the same rules step for
// step, so that run matches the plan's; if it misses the target nonetheless, replicas are
// added to the windows with the most misses and the plan is run again, up to oracleRepairs
// times; the error is non-nil if it still misses. The error wraps ErrUnreachable when the
// requests that no fleet serves in time (IdleTTFT over the target, or too long for the KV
// cache) alone exceed the budget.
func Oracle(cfg Config, attainment float64) (*Result, *OraclePlan, error) {
	cfg, err := referenceConfig(cfg, attainment)
	if err != nil {
		return nil, nil, err
	}
	reqs := cfg.Workload.Requests
	w := oracleWindowX
	windows := int(cfg.Workload.Duration()/w) + 1
	if len(reqs) == 0 {
		windows = 0
	}
	o := &oracle{cfg: cfg, w: w, hi: make([]int, windows), share: make([]float64, windows), spend: 1}
	forced, i := 0, 0
	for k := range windows {
		end := time.Duration(k+1) * w
		lo := i
		for ; i < len(reqs) && reqs[i].At < end; i++ {
			if q := reqs[i]; rejects(cfg.Params, q) || IdleTTFT(cfg.Params, q.PromptTokens) > cfg.SLOTarget {
				forced++
			}
		}
		o.hi[k] = i
		o.share[k] = (1 - attainment) * float64(i-lo)
	}
	budget := allowedMisses(len(reqs), attainment)
	if forced > budget {
		return nil, nil, fmt.Errorf("oracle: %d of %d requests can meet the %s target on no fleet, more than %g %% allow: %w",
			forced, len(reqs), cfg.SLOTarget, 100*(1-attainment), ErrUnreachable)
	}
	lead := cfg.Params.ColdStart
	if tick := cfg.ReportInterval; lead%tick != 0 {
		lead += tick - lead%tick
	}
	o.horizon = int(lead/w) + 1
	guess := cfg.MinReplicas
	if windows > 0 {
		work := 0.0
		for _, q := range reqs[:o.hi[0]] {
			work += workSeconds(cfg, q.PromptTokens, q.OutputTokens)
		}
		guess = int(math.Ceil(work / w.Seconds()))
	}

	plan := &OraclePlan{Window: w, Lead: lead, Min: cfg.MinReplicas, Planned: 1}
	var bestGPU time.Duration
	// (s, misses) of the feasible pass with the most s and the infeasible one with the
	// least, for the secant.
	okS, okM, badS, badM := 0.0, 0, math.Inf(1), 0
	passes := oraclePasses
	if oracleCumulative || oracleWindowX == 0 {
		passes = 1
	}
	for p := 0; p < passes; p++ {
		ready, misses, gpu := o.pass(guess)
		if misses <= budget {
			if plan.Ready == nil || gpu < bestGPU {
				plan.Ready, bestGPU, plan.Spend = ready, gpu, o.spend
				plan.Planned = 1 - float64(misses)/float64(max(len(reqs), 1))
			}
			okS, okM = o.spend, misses
		} else {
			badS, badM = o.spend, misses
		}
		if misses >= budget*97/100 && misses <= budget {
			break
		}
		// The next s: on the secant through the last feasible pass and the first infeasible
		// one, or, with none infeasible yet, where misses would reach the budget if they grew
		// in proportion to s.
		var next float64
		switch {
		case okS == 0:
			// Rounding, or windows that even the most replicas cannot hold to their share.
			next = badS / 2
		case math.IsInf(badS, 1):
			next = okS * float64(budget) / float64(max(okM, 1))
			next = min(max(next, okS*1.25), okS*8)
		default:
			next = okS + (badS-okS)*float64(budget-okM)/float64(max(badM-okM, 1))
			next = min(max(next, okS+(badS-okS)/8), badS-(badS-okS)/8)
		}
		o.spend = next
	}
	if plan.Ready == nil {
		return nil, nil, fmt.Errorf("oracle: no pass kept the misses within %d", budget)
	}

	slo := cfg.SLOTarget.Seconds()
	for round := 0; ; round++ {
		run := cfg
		run.InitialReplicas = plan.at(0)
		res, ttft, err := observe(run, plan)
		if err != nil {
			return nil, nil, err
		}
		res.Note = fmt.Sprintf("plan of %d windows of %s, %d replicas added by verification", windows, w, plan.Repairs)
		missed := 0
		for _, x := range ttft {
			if !(x <= slo) {
				missed++
			}
		}
		deficit := missed - budget
		if res.SLOAttainment >= attainment || deficit <= 0 {
			return res, plan, nil
		}
		if round == oracleRepairs {
			return res, plan, fmt.Errorf("oracle: the plan reaches %.4f attainment after %d repairs, want %g", res.SLOAttainment, round, attainment)
		}
		plan.Repairs += repair(plan, reqs, ttft, slo, cfg.MaxReplicas, deficit)
	}
}

// repair adds a replica to the windows whose requests missed most in ttft (seconds per
// request), most first, until those windows hold twice the deficit of misses, and returns
// how many it added.
func repair(plan *OraclePlan, reqs []trace.Request, ttft []float64, slo float64, most, deficit int) int {
	missed := make([]int, len(plan.Ready))
	for i, q := range reqs {
		if k := int(q.At / plan.Window); k < len(missed) && !(ttft[i] <= slo) {
			missed[k]++
		}
	}
	order := make([]int, len(missed))
	for k := range order {
		order[k] = k
	}
	slices.SortStableFunc(order, func(a, b int) int { return missed[b] - missed[a] })
	added, covered := 0, 0
	for _, k := range order {
		if covered >= 2*deficit || missed[k] == 0 {
			break
		}
		if plan.Ready[k] < most {
			plan.Ready[k]++
			added++
			covered += missed[k]
		}
	}
	return added
}

// observe is Run that also returns every request's TTFT in seconds (+Inf for a request with
// no first token), which the oracle's repairs read. It must stay Run step for step:
// TestObserveIsRun holds it to that.
func observe(cfg Config, sc Scaler) (*Result, []float64, error) {
	cfg = cfg.withDefaults()
	if cfg.Workload == nil {
		return nil, nil, errors.New("no workload")
	}
	if err := cfg.Params.Validate(); err != nil {
		return nil, nil, fmt.Errorf("hardware profile: %w", err)
	}
	pol, err := asPolicy(sc)
	if err != nil {
		return nil, nil, err
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
	ttft := slices.Clone(r.ttft)
	return r.finish(), ttft, nil
}

// References are the two reference rows for cfg's workload at an attainment target: static
// (Static, whose pool size is staticN) and oracle (Oracle). The oracle is a lower reference,
// the cheapest plan known that meets the target, so where the static pool costs fewer
// GPU-hours than the oracle's verified plan, or the plan could not be verified, the oracle's
// row is the static pool's run, renamed; Result.Note says which it is. The error wraps
// ErrUnreachable when even MaxReplicas miss the target; both rows are then the largest
// pool's run.
func References(cfg Config, attainment float64) (static, oracle *Result, staticN int, err error) {
	staticN, static, err = Static(cfg, attainment)
	if static == nil {
		return nil, nil, 0, err
	}
	if err != nil {
		return static, renamed(static, "the static pool: no fleet within max replicas reaches the target"), staticN, err
	}
	oracle, _, oerr := Oracle(cfg, attainment)
	switch {
	case oerr != nil:
		oracle = renamed(static, fmt.Sprintf("the static pool of %d: the oracle's plan was not verified (%v)", staticN, oerr))
	case oracle.GPUHours > static.GPUHours:
		oracle = renamed(static, fmt.Sprintf("the static pool of %d: cheaper than the oracle's plan (%.3f GPU-hours)", staticN, oracle.GPUHours))
	}
	return static, oracle, staticN, nil
}

func renamed(res *Result, note string) *Result {
	c := *res
	c.Policy, c.Note = PolicyOracle, note
	return &c
}
