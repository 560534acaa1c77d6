package sim

import (
	"fmt"
	"math"
	"time"

	"github.com/llmscaler/llmscaler/internal/servermodel"
	"github.com/llmscaler/llmscaler/internal/trace"
	"github.com/llmscaler/llmscaler/internal/window"
)

// Calibration is how SLOCapacity measures a replica's capacity: the way a user benchmarks a
// model server before trusting it with traffic (vLLM's benchmark_serving.py with a
// --request-rate sweep), run on the simulator's own timing model.
type Calibration struct {
	// Replicas is the size of the fixed fleet measured; per-replica capacity grows with it,
	// since a pool absorbs Poisson bursts better than one replica.
	Replicas int
	// Attainment is the share of requests that must meet the target, 0..1, among those that
	// can: a request whose prompt alone takes longer than the target to prefill misses it on
	// any fleet, and counting it would make the capacity fall towards zero as the share of
	// such requests nears 1 - Attainment.
	Attainment float64
	// Duration is the span of Poisson arrivals at each rate tried.
	Duration time.Duration
	// Seed draws the arrivals and lengths.
	Seed uint64
}

// DefaultCalibration measures one replica at 99.5 % of attainable requests over 5 minutes: what a user finds by
// benchmarking a single server, and a safe figure for any fleet.
var DefaultCalibration = Calibration{Replicas: 1, Attainment: 0.995, Duration: 5 * time.Minute, Seed: 1}

// fixed keeps the count it is given.
type fixed struct{}

func (fixed) Name() string                { return "fixed" }
func (fixed) WindowConfig() window.Config { return window.Config{}.WithDefaults() }
func (fixed) Desired(s *State) int        { return s.Ready + s.Starting }

// SLOCapacity is the highest arrival rate per replica, in requests/s, at which a fixed fleet
// of c.Replicas warm replicas of p keeps c.Attainment of the requests that can meet the TTFT
// target (see Attainable) within it,
// with Poisson arrivals and lengths drawn from lengths. It bisects on the rate between 0 and
// the rate ReplicaCapacity says saturates a replica, to 1 %. It is 0 when even a trickle of
// requests misses the target (prompts too long for it on this hardware).
func SLOCapacity(p servermodel.Params, lengths []trace.Request, target time.Duration, c Calibration) (float64, error) {
	if c.Replicas < 1 || !(c.Attainment > 0 && c.Attainment <= 1) || c.Duration <= 0 {
		return 0, fmt.Errorf("calibration %+v: want at least one replica, attainment in (0, 1] and a positive duration", c)
	}
	l, err := LengthsFrom(lengths)
	if err != nil {
		return 0, err
	}
	prompt, output := (&Workload{Requests: lengths}).MeanLengths()
	hi := 1.5 * ReplicaCapacity(p, prompt, output)
	lo := 0.0
	meets := func(rate float64) (bool, error) {
		total := rate * float64(c.Replicas)
		w, err := FromRates("calibration", []trace.RatePoint{{RPS: total}, {Start: c.Duration, RPS: total}}, 1, l, c.Seed)
		if err != nil {
			return false, err
		}
		w.Truncate(c.Duration)
		if len(w.Requests) == 0 {
			return true, nil
		}
		res, err := Run(Config{Params: p, Workload: w, SLOTarget: target, MinReplicas: c.Replicas, MaxReplicas: c.Replicas}, fixed{})
		if err != nil {
			return false, err
		}
		can := Attainable(p, w, target)
		return can > 0 && res.SLOAttainment >= c.Attainment*can, nil
	}
	for hi-lo > 0.01*hi {
		mid := (lo + hi) / 2
		ok, err := meets(mid)
		if err != nil {
			return 0, err
		}
		if ok {
			lo = mid
		} else {
			hi = mid
		}
	}
	return lo, nil
}

// IdleTTFT is a request's time to first token on an idle replica: its prompt prefilled in
// chunks of at most MaxBatchTokens, one iteration each.
func IdleTTFT(p servermodel.Params, prompt int) time.Duration {
	chunks := (prompt + p.MaxBatchTokens - 1) / p.MaxBatchTokens
	return time.Duration(chunks)*p.PrefillBase + time.Duration(prompt)*p.PrefillPerToken
}

// Attainable is the share of the workload's requests whose IdleTTFT meets the target: the
// most any policy can reach, with a replica to itself for every request.
func Attainable(p servermodel.Params, w *Workload, target time.Duration) float64 {
	if len(w.Requests) == 0 {
		return 1
	}
	ok := 0
	for _, r := range w.Requests {
		if r.PromptTokens+r.OutputTokens <= p.KVCacheTokens && IdleTTFT(p, r.PromptTokens) <= target {
			ok++
		}
	}
	return float64(ok) / float64(len(w.Requests))
}

// FleetCapacity is the capacity at the SLO for the fleet the workload needs: SLOCapacity with
// c, measured again with as many replicas as the workload's mean rate needs at the first
// figure (1 to 64) when that differs from c.Replicas. Per-replica capacity at the SLO grows
// with the pool, more so for heavy-tailed prompts, so a benchmark of the wrong size misleads;
// it returns the figure and the pool size it was measured with.
func FleetCapacity(p servermodel.Params, w *Workload, target time.Duration, c Calibration) (float64, int, error) {
	capacity, err := SLOCapacity(p, w.Requests, target, c)
	if err != nil || capacity <= 0 || w.Duration() <= 0 {
		return capacity, c.Replicas, err
	}
	mean := float64(len(w.Requests)) / w.Duration().Seconds()
	k := min(max(int(math.Round(mean/capacity)), 1), 64)
	if k == c.Replicas {
		return capacity, k, nil
	}
	c.Replicas = k
	capacity, err = SLOCapacity(p, w.Requests, target, c)
	return capacity, k, err
}
