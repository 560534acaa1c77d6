package sim

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/llmscaler/llmscaler/internal/servermodel"
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
// The search gallops from an estimate of what the load needs, down or up, then bisects,
// taking attainment to grow with n. Its trials are checkpoint runs, which stop as soon as
// more requests have missed than the target allows, so a pool too small costs a fraction of
// a run and one large enough a whole run: the estimate is made to fall a little short. It is
// the larger of the full-batch pool for the busiest minutes (see staticGuess) and, on a
// workload longer than three staticStretch, the fewest replicas that keep the busiest
// staticStretch of it, replayed alone, within the whole budget: the rest of the workload
// can only add misses, so a pool that misses more than that there misses the target.
// Only the answer is run with the scaling loop, by Run. If even cfg.MaxReplicas misses the
// target, n is cfg.MaxReplicas, the result is its run, and the error wraps ErrUnreachable.
func Static(cfg Config, attainment float64) (n int, res *Result, err error) {
	cfg, err = referenceConfig(cfg, attainment)
	if err != nil {
		return 0, nil, err
	}
	budget := allowedMisses(len(cfg.Workload.Requests), attainment)
	guess := staticGuess(cfg, attainment)
	if cfg.Workload.Duration() > 3*staticStretch {
		peak := cfg
		peak.Workload = busiest(cfg, staticStretch)
		least, _ := fewest(cfg.MinReplicas, cfg.MaxReplicas, guess, fixedMeets(peak, budget))
		guess = max(guess, least)
	}
	n, ok := fewest(cfg.MinReplicas, cfg.MaxReplicas, guess, fixedMeets(cfg, budget))
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

// staticStretch is the span of the busiest stretch of a workload that Static sizes its first
// guess on: long enough for queues to build as they do in the whole run.
const staticStretch = 10 * time.Minute

// fixedMeets reports whether a fixed pool of n replicas keeps the misses of cfg's workload
// within budget.
func fixedMeets(cfg Config, budget int) func(n int) bool {
	return func(n int) bool {
		c := newCheckpoint(cfg, budget)
		return c.advance(math.MaxInt64, n) && len(cfg.Workload.Requests)-c.j.met <= budget
	}
}

// busiest is the stretch of span d of cfg's workload whose requests cost the most replica
// time (see workSeconds), from a whole minute, rebased to start at zero.
func busiest(cfg Config, d time.Duration) *Workload {
	reqs := cfg.Workload.Requests
	minutes := make([]float64, int(cfg.Workload.Duration()/time.Minute)+1)
	for _, q := range reqs {
		minutes[int(q.At/time.Minute)] += workSeconds(cfg.Params, q.PromptTokens, q.OutputTokens)
	}
	span := int(d / time.Minute)
	best, start, sum := -1.0, 0, 0.0
	for m := range minutes {
		sum += minutes[m]
		if m >= span {
			sum -= minutes[m-span]
		}
		if m+1 >= span && sum > best {
			best, start = sum, m+1-span
		}
	}
	from := time.Duration(start) * time.Minute
	var out []trace.Request
	for _, q := range reqs {
		if q.At >= from && q.At < from+d {
			q.At -= from
			out = append(out, q)
		}
	}
	return &Workload{Name: cfg.Workload.Name + ", busiest stretch", Requests: out}
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

// workSeconds is a lower bound on the replica time, in seconds, a request costs: its prompt
// at the per-token prefill cost plus its share of the iterations' base costs at the fullest
// iteration (MaxBatchTokens of prefill, MaxConcurrency of decode).
func workSeconds(p servermodel.Params, prompt, output int) float64 {
	return float64(prompt)*(p.PrefillPerToken.Seconds()+p.PrefillBase.Seconds()/float64(p.MaxBatchTokens)) +
		float64(max(output-1, 0))*(p.DecodeBase.Seconds()/float64(p.MaxConcurrency)+p.DecodePerSeq.Seconds())
}

// staticGuess is where Static's search starts: the replicas whose full-batch throughput (see
// workSeconds) carries the load of every minute but the busiest, where the busiest hold
// 1-attainment of the requests. A fixed pool must carry nearly every minute's load, and
// replicas at the SLO run below full batch, so the answer is seldom below the guess.
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
		m.work += workSeconds(cfg.Params, q.PromptTokens, q.OutputTokens)
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
	var plan *Result
	var oerr error
	if err == nil {
		plan, _, oerr = Oracle(cfg, attainment)
	}
	return static, OracleRow(static, staticN, err, plan, oerr), staticN, err
}

// OracleRow is the oracle's row given the static reference (its run, size and error) and the
// oracle's verified plan (its run and error, from Oracle, which may run at the same time as
// Static): the plan, or the static pool renamed where that is cheaper, where no fleet reaches
// the target, or where the plan was not verified.
func OracleRow(static *Result, staticN int, staticErr error, plan *Result, planErr error) *Result {
	switch {
	case staticErr != nil:
		return renamed(static, "the static pool: no fleet within max replicas reaches the target")
	case planErr != nil || plan == nil:
		return renamed(static, fmt.Sprintf("the static pool of %d: the oracle's plan was not verified (%v)", staticN, planErr))
	case plan.GPUHours > static.GPUHours:
		return renamed(static, fmt.Sprintf("the static pool of %d: cheaper than the oracle's plan (%.3f GPU-hours)", staticN, plan.GPUHours))
	}
	return plan
}

func renamed(res *Result, note string) *Result {
	c := *res
	c.Policy, c.Note = PolicyOracle, note
	return &c
}
