package sim

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/llmscaler/llmscaler/internal/policy"
	"github.com/llmscaler/llmscaler/internal/scaling"
	"github.com/llmscaler/llmscaler/internal/servermodel"
	"github.com/llmscaler/llmscaler/internal/window"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

// State is what a scaler sees at one report tick: the scaling loop's view.
type State = scaling.State

// Scaler decides how many replicas the deployment should have: a scaling.Policy (the
// controller's policy code, through PolicyScaler) or a scaling.Counter (the baselines from
// other systems and the references), run by the same scaling loop as the controller's.
type Scaler interface {
	// Name is the policy's name in the results.
	Name() string
	// WindowConfig sizes the deployment's windows.
	WindowConfig() window.Config
}

// asPolicy is sc as the scaling loop runs it.
func asPolicy(sc Scaler) (scaling.Policy, error) {
	switch p := sc.(type) {
	case scaling.Policy:
		return p, nil
	case scaling.Counter:
		return scaling.FromCounter(p), nil
	}
	return nil, fmt.Errorf("scaler %s: neither a scaling.Policy nor a scaling.Counter", sc.Name())
}

// Env is what a scaler may be built from.
type Env struct {
	// Params is the replicas' hardware profile.
	Params servermodel.Params
	// Workload is the whole workload; only clairvoyant scalers read it.
	Workload *Workload
	// SLOTarget is the TTFT target.
	SLOTarget time.Duration
	// Capacity is the requests/s per replica the clairvoyant scaler provisions for, and
	// WarmReplicas counts with: SLOCapacity with ClairvoyantCalibration. 0 means
	// ReplicaCapacity at the workload's mean lengths, which is right for a light-tailed mix
	// and far too high for long prompts, which hold a replica's prefill for seconds.
	Capacity float64
	// SLOPrior is the slo policy's prior capacity in requests/s per replica (its
	// prior_requests_per_second); 0 leaves the policy's default.
	SLOPrior float64
}

// Policy names NewScaler knows.
const (
	PolicyThreshold   = "threshold"
	PolicyTarget      = "target"
	PolicySLO         = "slo"
	PolicyClairvoyant = "clairvoyant"
)

// PolicyNames are the policies NewScaler knows, in the order results list them.
var PolicyNames = []string{PolicyThreshold, PolicyTarget, PolicySLO, PolicyHPA, PolicyKPA, PolicyRay, PolicyClairvoyant}

// targetLoad is the share of a replica's capacity at which the target policy's in-flight
// target is set.
const targetLoad = 0.7

// NewScaler returns the named policy for env. hpa, kpa and ray are the baselines in
// baselines.go: hpa and kpa aim at BaselineInFlightTarget requests in flight per replica, ray
// at Ray Serve's default RayTargetOngoingRequests. threshold, target and slo are the
// controller's own policy code (policy.Autoscaler) with the policy's defaults, and for slo the TTFT target
// env.SLOTarget at p95; target tracks in-flight requests per replica at the count Little's law
// gives at 70 % of a replica's capacity (see ReplicaCapacity), since the policy has no default
// target.
func NewScaler(name string, env Env) (Scaler, error) {
	if env.SLOTarget <= 0 {
		env.SLOTarget = DefaultSLOTarget
	}
	var p *llmscalerv1.Policy
	switch name {
	case PolicyThreshold:
		p = &llmscalerv1.Policy{Kind: &llmscalerv1.Policy_Threshold{Threshold: &llmscalerv1.ThresholdPolicy{}}}
	case PolicyTarget:
		prompt, output := env.Workload.MeanLengths()
		target := InFlightAt(env.Params, prompt, output, targetLoad*ReplicaCapacity(env.Params, prompt, output))
		p = &llmscalerv1.Policy{Kind: &llmscalerv1.Policy_Target{Target: &llmscalerv1.TargetPolicy{
			Metric: llmscalerv1.TargetMetric_TARGET_METRIC_IN_FLIGHT,
			Target: math.Max(target, 1),
		}}}
	case PolicySLO:
		slo := &llmscalerv1.SloPolicy{
			Metric: llmscalerv1.SloMetric_SLO_METRIC_TTFT,
			Target: durationpb.New(env.SLOTarget),
		}
		if env.SLOPrior > 0 {
			slo.PriorRequestsPerSecond = &env.SLOPrior
		}
		p = &llmscalerv1.Policy{Kind: &llmscalerv1.Policy_Slo{Slo: slo}}
	case PolicyHPA:
		return NewHPA(BaselineInFlightTarget), nil
	case PolicyKPA:
		return NewKPA(BaselineInFlightTarget), nil
	case PolicyRay:
		return NewRay(RayTargetOngoingRequests), nil
	case PolicyClairvoyant:
		return NewClairvoyant(env), nil
	default:
		return nil, fmt.Errorf("unknown policy %q: want one of %s", name, strings.Join(PolicyNames, ", "))
	}
	return NewPolicyScaler(p)
}

// PolicyScaler runs the controller's policy code.
type PolicyScaler struct {
	scaling.Autoscaler
	// OnChange, when set, is called with every decision whose desired count differs from
	// the current one, as the controller journals them.
	OnChange func(elapsed time.Duration, d policy.Decision)
}

// NewPolicyScaler wraps a policy.Autoscaler for p.
func NewPolicyScaler(p *llmscalerv1.Policy) (*PolicyScaler, error) {
	as, err := policy.NewAutoscaler(p)
	if err != nil {
		return nil, err
	}
	return &PolicyScaler{Autoscaler: scaling.Autoscaler{Autoscaler: as}}, nil
}

// Decide evaluates the policy as the controller's engine does.
func (p *PolicyScaler) Decide(s *State) policy.Decision {
	d := p.Autoscaler.Decide(s)
	if p.OnChange != nil && d.Desired != d.Current {
		p.OnChange(s.Elapsed, d)
	}
	return d
}

// ReplicaCapacity is the requests/s one replica sustains for requests of the given mean
// lengths, from the timing model: a request costs PrefillBase + prompt x PrefillPerToken of
// prefill (the base charged whole to every request, which is pessimistic: prefills share
// iterations) and output-1 decode steps at the largest batch B the replica can hold
// (MaxConcurrency, or fewer if the KV cache fills first), each costing DecodeBase/B +
// DecodePerSeq of the replica's time. Capacity is one over that cost. The cost is linear in
// the lengths, so means give the exact mean cost, except through B.
func ReplicaCapacity(p servermodel.Params, prompt, output float64) float64 {
	b := batchAtCapacity(p, prompt, output)
	cost := p.PrefillTime(0).Seconds() + prompt*p.PrefillPerToken.Seconds() +
		math.Max(output-1, 0)*(p.DecodeBase.Seconds()/b+p.DecodePerSeq.Seconds())
	if cost <= 0 {
		return math.Inf(1)
	}
	return 1 / cost
}

func batchAtCapacity(p servermodel.Params, prompt, output float64) float64 {
	b := float64(p.MaxConcurrency)
	if need := prompt + output; need > 0 {
		b = math.Min(b, math.Floor(float64(p.KVCacheTokens)/need))
	}
	return math.Max(b, 1)
}

// InFlightAt is the mean number of requests in flight on one replica at rate requests/s, by
// Little's law with the latency of an unqueued request: prefill, then output-1 decode steps
// whose time grows with the batch, n = rate x (prefill + (output-1) x (DecodeBase +
// n x DecodePerSeq)), solved for n.
func InFlightAt(p servermodel.Params, prompt, output, rate float64) float64 {
	steps := math.Max(output-1, 0)
	a := p.PrefillTime(0).Seconds() + prompt*p.PrefillPerToken.Seconds() + steps*p.DecodeBase.Seconds()
	den := 1 - rate*steps*p.DecodePerSeq.Seconds()
	if den <= 0 {
		return float64(p.MaxConcurrency)
	}
	return math.Min(rate*a/den, float64(p.MaxConcurrency))
}

// Clairvoyant defaults.
const (
	// ClairvoyantHeadroom is the capacity kept above the future rate by NewClairvoyant;
	// TuneClairvoyant finds the least that meets the SLO.
	ClairvoyantHeadroom = 0.0
	// ClairvoyantWindow is the span the future rate is averaged over: short, so that the
	// scaler sees the bursts it must carry.
	ClairvoyantWindow = 10 * time.Second
	// ClairvoyantAttainment is the SLO attainment TuneClairvoyant aims for: the quality
	// bar's.
	ClairvoyantAttainment = 0.99
)

// ClairvoyantCalibration measures the capacity the clairvoyant scaler provisions for: a pool
// of 8 replicas (the fleet size the quality bar asks for) keeping 99.5 % of requests within
// the target under Poisson arrivals with the workload's own lengths.
var ClairvoyantCalibration = Calibration{Replicas: 8, Attainment: 0.99, Duration: 5 * time.Minute, Seed: 1}

// Clairvoyant knows the workload's future arrivals and a replica's exact capacity at the SLO
// (Env.Capacity). The replicas needed at time t are
// n(t) = ceil(rate over [t, t+ClairvoyantWindow) x (1+ClairvoyantHeadroom) / capacity). At every tick it wants the
// most of n over [now, now+cold start]: replicas are started exactly one cold start before
// they are needed, and none is stopped that is still needed now.
type Clairvoyant struct {
	perSec   []int // arrivals in each second of the workload
	prefix   []int // prefix[i] = arrivals in seconds [0, i)
	capacity float64
	headroom float64
	span     int // seconds
}

// NewClairvoyant builds the clairvoyant scaler for env.
func NewClairvoyant(env Env) *Clairvoyant {
	secs := int(env.Workload.Duration()/time.Second) + 1
	c := &Clairvoyant{perSec: make([]int, secs), headroom: ClairvoyantHeadroom, span: int(ClairvoyantWindow / time.Second)}
	for _, r := range env.Workload.Requests {
		c.perSec[int(r.At/time.Second)]++
	}
	c.prefix = make([]int, secs+1)
	for i, n := range c.perSec {
		c.prefix[i+1] = c.prefix[i] + n
	}
	c.capacity = env.Capacity
	if c.capacity <= 0 {
		prompt, output := env.Workload.MeanLengths()
		c.capacity = ReplicaCapacity(env.Params, prompt, output)
	}
	return c
}

// Headroom is the capacity the scaler keeps above the future rate, as a fraction.
func (c *Clairvoyant) Headroom() float64 { return c.headroom }

// TuneClairvoyant makes the clairvoyant scaler the reference the simulator compares with: the
// fewest GPU-hours that still meet the SLO. It bisects, to 0.01, for the least headroom in
// [-0.3, 1] at which a run of cfg reaches attainment (a negative headroom provisions below
// the calibrated capacity, whose 99.5 % target leaves some slack), and returns that scaler
// and its run. Attainment is taken to grow with headroom; where noise breaks that, the
// result is still a headroom that meets the target, if any does. With none that does, it
// returns the scaler with headroom 1.
func TuneClairvoyant(cfg Config, env Env, attainment float64) (*Clairvoyant, *Result, error) {
	c := NewClairvoyant(env)
	try := func(h float64) (*Result, error) {
		c.headroom = h
		return Run(cfg, c)
	}
	lo, hi := -0.3, 1.0
	best, err := try(hi)
	if err != nil || best.SLOAttainment < attainment {
		return c, best, err
	}
	for hi-lo > 0.01 {
		mid := (lo + hi) / 2
		res, err := try(mid)
		if err != nil {
			return nil, nil, err
		}
		if res.SLOAttainment >= attainment {
			hi, best = mid, res
		} else {
			lo = mid
		}
	}
	c.headroom = hi
	return c, best, nil
}

// Name is "clairvoyant".
func (c *Clairvoyant) Name() string { return PolicyClairvoyant }

// WindowConfig is the defaults: the clairvoyant reads no window.
func (c *Clairvoyant) WindowConfig() window.Config { return window.Config{}.WithDefaults() }

// Capacity is the requests/s the scaler assumes one replica serves.
func (c *Clairvoyant) Capacity() float64 { return c.capacity }

// need is n(t) for the second sec.
func (c *Clairvoyant) need(sec int) int {
	lo := min(max(sec, 0), len(c.perSec))
	hi := min(lo+c.span, len(c.perSec))
	if hi <= lo {
		return 0
	}
	// The last window of the workload is shorter: its rate is over the seconds it has.
	rate := float64(c.prefix[hi]-c.prefix[lo]) / float64(hi-lo)
	return int(math.Ceil(rate * (1 + c.headroom) / c.capacity))
}

// Desired is the most replicas needed between now and one cold start from now.
func (c *Clairvoyant) Desired(s *State) int {
	now := int(s.Elapsed / time.Second)
	cold := int((s.ColdStart + time.Second - 1) / time.Second)
	want := 0
	for t := now; t <= now+cold; t++ {
		want = max(want, c.need(t))
	}
	return want
}

// WarmReplicas is the most replicas the workload needs within its first cold start, as the
// clairvoyant scaler with no headroom counts them: no policy can add a replica before then,
// so this is a fair warm start for every policy.
func WarmReplicas(env Env) int {
	c := NewClairvoyant(env)
	want := 1
	for t := 0; t <= int((env.Params.ColdStart+time.Second-1)/time.Second); t++ {
		want = max(want, c.need(t))
	}
	return want
}
