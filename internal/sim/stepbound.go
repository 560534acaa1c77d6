package sim

import (
	"fmt"
	"time"
)

// stepBoundSettle is how long before a step StepBound holds its count, so that replicas
// above it have drained by the step.
const stepBoundSettle = 5 * time.Minute

// StepBound is the most any policy can attain on cfg's workload if it holds at most held
// replicas when the load steps up at onset, a rise it cannot see coming: an upper bound for
// every causal policy, however good, that has not already paid for the step's capacity
// before it came. The bound's fleet is as large as MaxReplicas allows until
// stepBoundSettle before onset, held from then until one cold start after onset (a replica
// started at the step is ready no sooner), and MaxReplicas again from then on. Requests
// are dispatched to a replica on arrival, as in every run of the simulator, so the queues
// that build on the held replicas during the cold start stay theirs. GPU-hours mean
// nothing here; only the attainment does.
func StepBound(cfg Config, onset time.Duration, held int) (*Result, error) {
	cfg = cfg.withDefaults()
	if cfg.Workload == nil {
		return nil, fmt.Errorf("no workload")
	}
	if onset <= 0 || held < 1 || held > cfg.MaxReplicas {
		return nil, fmt.Errorf("step bound at %s with %d held: want a positive onset and 1 to %d replicas", onset, held, cfg.MaxReplicas)
	}
	end := max(cfg.Workload.Duration(), onset) + cfg.Params.ColdStart + time.Minute
	ready := make([]int, int(end/time.Second)+1)
	for k := range ready {
		at := time.Duration(k) * time.Second
		ready[k] = cfg.MaxReplicas
		if at >= onset-stepBoundSettle && at < onset+cfg.Params.ColdStart {
			ready[k] = held
		}
	}
	cfg.MinReplicas = 1
	cfg.InitialReplicas = ready[0]
	plan := &OraclePlan{Window: time.Second, Ready: ready, Lead: cfg.Params.ColdStart, Min: 1, Planned: 1}
	res, err := Run(cfg, plan)
	if err != nil {
		return nil, err
	}
	res.Policy = "step-bound"
	res.Note = fmt.Sprintf("at most %d replicas ready from %s before the step at %s to one cold start (%s) after it", held, stepBoundSettle, onset, cfg.Params.ColdStart)
	return res, nil
}

// StepReplicas is the fewest replicas a policy must hold at the step at onset for
// StepBound to reach attainment, and the bound's attainment with one fewer (1 when one
// replica suffices). ok is false when not even MaxReplicas do.
func StepReplicas(cfg Config, onset time.Duration, attainment float64) (n int, below float64, ok bool, err error) {
	cfg = cfg.withDefaults()
	if cfg.Workload == nil {
		return 0, 0, false, fmt.Errorf("no workload")
	}
	if !(attainment > 0 && attainment <= 1) {
		return 0, 0, false, fmt.Errorf("attainment %v: want a share in (0, 1]", attainment)
	}
	got := map[int]float64{}
	var first error
	meets := func(held int) bool {
		if first != nil {
			return true // the search runs out without another run; the error is returned
		}
		if a, seen := got[held]; seen {
			return a >= attainment
		}
		res, err := StepBound(cfg, onset, held)
		if err != nil {
			first = err
			return true
		}
		got[held] = res.SLOAttainment
		return res.SLOAttainment >= attainment
	}
	n, ok = fewest(1, cfg.MaxReplicas, staticGuess(cfg, attainment), meets)
	if first != nil {
		return 0, 0, false, first
	}
	below = 1
	if n > 1 {
		meets(n - 1)
		if first != nil {
			return 0, 0, false, first
		}
		below = got[n-1]
	}
	return n, below, ok, nil
}
