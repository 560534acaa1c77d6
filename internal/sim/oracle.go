package sim

import (
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/llmscaler/llmscaler/internal/trace"
	"github.com/llmscaler/llmscaler/internal/window"
)

// OracleWindow is the span of one step of the oracle's plan. It is an order of magnitude
// above the TTFT target (2 s), so that the look-ahead that judges a window's last requests
// costs a few percent more simulation and few requests straddle two windows; it is well
// below the cold start (80 s on the GPU profiles), so the plan follows a rise of load faster
// than any policy that must wait a cold start for a replica; and at fleet loads (10 req/s
// and up) a window holds hundreds of requests, so its 1 % of misses is a whole number that
// a one-replica change moves.
const OracleWindow = 30 * time.Second

const (
	// oraclePasses bounds the forward passes Oracle makes to find how many times its share
	// of misses a window may spend; oracleSpend is the first pass's, at which the seed,
	// Azure and m-mid day workloads spend 90 % of the budget or more in one pass.
	oraclePasses = 3
	oracleSpend  = 8.0
	// oracleReserve is the part of the later windows' shares of misses that a window may
	// not spend, in the passes that search s. At s = 1 a window uses a small part of its
	// share, so half is ample, and keeping all of it forbids spending early where that pays
	// (the Azure hour: 2.87 GPU-h against 2.82 at a half; 3.70 against 4.09 on the idle
	// gap); a last pass keeps all of it, which pays where the cheap misses come late
	// (mooncake: 3.35 against 4.50).
	oracleReserve = 0.5
	// oracleRepairs bounds the rounds in which Oracle adds replicas to a plan that Run
	// found short of the target.
	oracleRepairs = 4
)

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
	// Spend is how many times its share of misses a window could spend, and Reserve the
	// part of the later windows' shares it could not (see Oracle); Passes counts the
	// forward passes made to choose them.
	Spend, Reserve float64
	Passes         int
	// Planned is the attainment the plan's trials predicted; Repairs counts the replicas
	// added to it after Run found it short of the target.
	Planned float64
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
	// spend is how many times its share of misses a window may add.
	spend float64
	// budget is the misses allowed in all; rest[j] the shares of the windows after j, of
	// which no window may spend the part reserve, so that a pass that spends fast still
	// ends within the budget.
	budget  int
	rest    []float64
	reserve float64
	// horizon is how many windows a lower count must carry for a drop to pay: the windows
	// that meet [start, start+lead] of one, which the plan keeps warm for.
	horizon int
	state   *checkpoint // at the start of the window being planned
	// judged counts the misses among the requests up to hi[k-1] once window k-1 is judged.
	judged int
	// noDropUntil is the window before which no drop is tried (see step).
	noDropUntil int
}

// allowed is how many of the requests up to hi[j] may have missed once window j is judged,
// given base of them up to hi[j-1]: s times the window's share more, but never so many that
// the windows after it would not have the part reserve of their shares left.
func (o *oracle) allowed(j, base int) int {
	return min(base+int(math.Floor(o.spend*o.share[j]+1e-9)), o.budget-int(math.Ceil(o.reserve*o.rest[j]-1e-9)))
}

// trial is a run of windows from the oracle's state with n ready replicas.
type trial struct {
	// ok: every window tried kept within what it may miss; failed is the one that did not.
	ok     bool
	failed int
	// misses among the requests up to hi[k] once window k is judged; a lower bound when
	// not exact, as the trial stopped once it had seen more than it was allowed.
	misses int
	exact  bool
	end    *checkpoint // at the end of window k
}

// try runs windows k to k+h-1 with n ready replicas, window k allowed first misses in all
// (-1: no limit) and each later one its allowance more than the window before, and then
// window k+h with n+1: a count must leave queues that one more replica serves within the
// next window's allowance, or it would take a spike of replicas to clear them later. Each
// window is judged after a look-ahead of one TTFT target into the next with the same
// replicas and its arrivals, which compete with the window's last requests as they do in a
// real run; by then every request of the window has met its target or missed it.
func (o *oracle) try(k, n, h, first int) trial {
	t := trial{failed: k}
	c := o.state.clone()
	allowed := first
	for j := k; j <= min(k+h, len(o.hi)-1); j++ {
		t.failed = j
		c.j.maxMisses = allowed
		end := time.Duration(j+1) * o.w
		resize := 0
		switch j {
		case k:
			resize = n
		case k + h:
			resize = n + 1
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

// step plans window k, given the count held in the window before (0 for none), and
// advances the state through it.
func (o *oracle) step(k, held, guess int) int {
	// A count below the one held is a drop that pays only if it lasts a lead, as does the
	// first window's, which the warm start holds for a lead.
	horizon := func(n int) int {
		if k == 0 || n < held {
			return o.horizon
		}
		return 1
	}
	lo, hi := o.cfg.MinReplicas, o.cfg.MaxReplicas
	if k > 0 && k < o.noDropUntil {
		lo = max(lo, min(held, hi))
	}
	first := o.allowed(k, o.judged)
	cache := map[int]trial{}
	get := func(n int) trial {
		t, ok := cache[n]
		if !ok {
			t = o.try(k, n, horizon(n), first)
			cache[n] = t
		}
		return t
	}
	n, ok := fewest(lo, hi, guess, func(n int) bool { return get(n).ok })
	if t, tried := cache[held-1]; tried && !t.ok && n >= held {
		// A drop now broke window t.failed: one at any window up to it would meet that
		// window with as few replicas, and most likely break it too.
		o.noDropUntil = t.failed
	}
	if !ok {
		// Even the most replicas miss more than the window may. The reserve kept for the
		// later windows is there for this: first the window's own allowance, then, if
		// even that is beyond the most replicas, its share more than they miss. Paying
		// for every miss that replicas can still save would put tens of replicas on a
		// window of long prompts to save a few requests.
		if own := o.judged + int(math.Floor(o.spend*o.share[k]+1e-9)); own > first {
			first = own
			clear(cache)
			n, ok = fewest(o.cfg.MinReplicas, hi, guess, func(n int) bool { return get(n).ok })
		}
		if !ok {
			best := o.try(k, hi, 0, -1)
			first = best.misses + int(math.Floor(o.share[k]+1e-9))
			clear(cache)
			n, _ = fewest(o.cfg.MinReplicas, hi, guess, func(n int) bool {
				t := get(n)
				return t.exact && t.misses <= first
			})
		}
	}
	t := get(n)
	o.state, o.judged = t.end, t.misses
	return n
}

// pass plans every window at o.spend from time zero, and returns the plan, the misses its
// trials judged, and its GPU time to the end of the last window. It gives up once the misses
// exceed the budget, returning a nil plan and the misses that its pace would have come to.
func (o *oracle) pass(guess, budget int) (ready []int, misses int, gpu time.Duration) {
	o.state, o.judged, o.noDropUntil = newCheckpoint(o.cfg, -1), 0, 0
	defer func() { o.state = nil }()
	ready = make([]int, len(o.hi))
	held := 0
	for k := range ready {
		ready[k] = o.step(k, held, guess)
		held, guess = ready[k], ready[k]
		if o.judged > budget {
			n := len(o.cfg.Workload.Requests)
			return nil, int(float64(o.judged) * float64(n) / float64(max(o.hi[k], 1))), 0
		}
	}
	gpu = o.state.r.gpuTime
	for _, rep := range o.state.r.reps {
		gpu += o.state.now - rep.started
	}
	return ready, o.judged, gpu
}

// Oracle is a lower reference for the GPU-hours of any policy that reaches attainment: a
// plan that knows every arrival, starts each replica exactly one cold start before it is
// needed, and holds in each OracleWindow the fewest ready replicas that keep the misses
// within the budget, given the queues carried into the window. It returns the plan's run by
// Run (named PolicyOracle) and the plan.
//
// Time is cut into windows. Going forward from a checkpoint of the simulation (the replicas'
// engines with their queues and batches, the front queue), window k is tried with n ready
// replicas: its arrivals are simulated, then a TTFT target more with the next window's
// arrivals and the same replicas, by which time every request of the window has met the
// target or missed it. The window may add s times its share (1-attainment of its own
// arrivals) to the misses, a request of an earlier window that it delays past the target
// counting against it, but never so many that what is left of the budget would not cover a
// part (oracleReserve, or all) of the later windows' shares, so that spending fast early
// does not leave the last windows short. Misses lag the load: a count too small for a window fills the
// replicas' batches long before its requests miss, and leaves the next window a backlog, so
// a count must also let the next window keep within its allowance with one replica more. A
// count below the previous window's must keep the windows of the next cold start within
// theirs, or the drop would not pay (the plan keeps warm a replica needed again within a
// cold start). The fewest such n is found by galloping from the previous window's count and
// bisecting; a trial stops as soon as it has seen more misses than allowed, and once a drop
// has failed at a window no drop is tried again before it. The checkpoint advances through
// the window with that n, and the next window is planned from there.
//
// s sets how fast the budget may be spent: at 1 each window has the same risk, but most
// windows then need far fewer misses than their share (a replica more or less is a big
// step) and the budget goes unused; without a bound every quiet window's unused share is
// spent at the first chance, however little it saves. A pass runs at s = oracleSpend, and if
// it leaves more than a tenth of the budget unused, at an s scaled up by the budget over its
// misses, up to oraclePasses; then one more at the cheapest pass's s that keeps the whole of
// the later windows' shares. The cheapest pass is kept. The passes differ only in where they
// spend the budget, and the simulation is chaotic enough (a replica more in one window moves
// every later request) that which of them is cheapest varies from workload to workload.
//
// That plan is run by Run as a scaling.Counter (OraclePlan): replicas are started a cold
// start ahead of their window (and their GPU time counts from then), drained ones finish
// their requests and count until they stop, and a replica that would be drained and needed
// again within a cold start is kept warm instead, all of which the trials do too. Should
// that run miss the target all the same, replicas are added to the windows with the most
// misses and it is run again, up to oracleRepairs times; the error is non-nil if it still
// misses. The error wraps ErrUnreachable when the requests that no fleet serves in time
// (IdleTTFT over the target, or too long for the KV cache) alone exceed the budget.
func Oracle(cfg Config, attainment float64) (*Result, *OraclePlan, error) {
	cfg, err := referenceConfig(cfg, attainment)
	if err != nil {
		return nil, nil, err
	}
	reqs := cfg.Workload.Requests
	w := OracleWindow
	windows := int(cfg.Workload.Duration()/w) + 1
	if len(reqs) == 0 {
		windows = 0
	}
	lead := cfg.Params.ColdStart
	if tick := cfg.ReportInterval; lead%tick != 0 {
		lead += tick - lead%tick
	}
	o := &oracle{cfg: cfg, w: w, hi: make([]int, windows), share: make([]float64, windows), horizon: int(lead/w) + 1}
	forced, i := 0, 0
	for k := range windows {
		end := time.Duration(k+1) * w
		first := i
		for ; i < len(reqs) && reqs[i].At < end; i++ {
			if q := reqs[i]; rejects(cfg.Params, q) || IdleTTFT(cfg.Params, q.PromptTokens) > cfg.SLOTarget {
				forced++
			}
		}
		o.hi[k] = i
		o.share[k] = (1 - attainment) * float64(i-first)
	}
	budget := allowedMisses(len(reqs), attainment)
	o.budget, o.rest = budget, make([]float64, windows)
	for k := windows - 2; k >= 0; k-- {
		o.rest[k] = o.rest[k+1] + o.share[k+1]
	}
	if forced > budget {
		return nil, nil, fmt.Errorf("oracle: %d of %d requests can meet the %s target on no fleet, more than %g %% allow: %w",
			forced, len(reqs), cfg.SLOTarget, 100*(1-attainment), ErrUnreachable)
	}
	guess := cfg.MinReplicas
	if windows > 0 {
		work := 0.0
		for _, q := range reqs[:o.hi[0]] {
			work += workSeconds(cfg.Params, q.PromptTokens, q.OutputTokens)
		}
		guess = int(math.Ceil(work / w.Seconds()))
	}

	plan := &OraclePlan{Window: w, Lead: lead, Min: cfg.MinReplicas, Planned: 1}
	var bestGPU time.Duration
	// good is the most s of a pass within the budget, bad the least of one that broke it
	// (which only windows that even the most replicas cannot hold to their shares do).
	good, bad := 0.0, math.Inf(1)
	o.spend, o.reserve = oracleSpend, oracleReserve
	keep := func(ready []int, misses int, gpu time.Duration) {
		if ready != nil && (plan.Ready == nil || gpu < bestGPU) {
			plan.Ready, bestGPU, plan.Spend, plan.Reserve = ready, gpu, o.spend, o.reserve
			plan.Planned = 1 - float64(misses)/float64(max(len(reqs), 1))
		}
	}
	for plan.Passes < oraclePasses {
		ready, misses, gpu := o.pass(guess, budget)
		plan.Passes++
		keep(ready, misses, gpu)
		if ready == nil {
			bad = o.spend
		} else {
			if misses >= budget*9/10 {
				break
			}
			good = o.spend
		}
		switch {
		case math.IsInf(bad, 1):
			// Where the misses would reach the budget if they grew in proportion to s.
			o.spend = min(max(good*float64(budget)/float64(max(misses, 1)), good*1.25), good*8)
		case good == 0:
			o.spend = bad / 2
		default:
			o.spend = math.Sqrt(good * bad)
		}
	}
	if plan.Ready != nil {
		// The same pace with every later window's whole share kept: slower to spend early,
		// never short at the end. Which of the two is cheaper depends on where the cheap
		// misses fall.
		o.spend, o.reserve = plan.Spend, 1
		ready, misses, gpu := o.pass(guess, budget)
		plan.Passes++
		keep(ready, misses, gpu)
	}
	if plan.Ready == nil {
		return nil, nil, fmt.Errorf("oracle: no pass kept the misses within %d", budget)
	}
	return o.verify(plan, budget, attainment)
}

// verify runs the plan by Run, and repairs it while it misses the target.
func (o *oracle) verify(plan *OraclePlan, budget int, attainment float64) (*Result, *OraclePlan, error) {
	cfg, reqs := o.cfg, o.cfg.Workload.Requests
	slo := cfg.SLOTarget.Seconds()
	for round := 0; ; round++ {
		run := cfg
		run.InitialReplicas = plan.at(0)
		res, ttft, err := observe(run, plan)
		if err != nil {
			return nil, nil, err
		}
		res.Note = fmt.Sprintf("plan of %d windows of %s, spending up to %.3g times a window's share of misses and keeping %g of the later ones' (best of %d passes); %d replicas added by repairs",
			len(plan.Ready), plan.Window, plan.Spend, plan.Reserve, plan.Passes, plan.Repairs)
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
// no first token), which the oracle's repairs read.
func observe(cfg Config, sc Scaler) (*Result, []float64, error) {
	r, err := simulate(cfg, sc)
	if err != nil {
		return nil, nil, err
	}
	ttft := slices.Clone(r.ttft)
	return r.finish(), ttft, nil
}
