package sim

import (
	"math"
	"time"

	"github.com/llmscaler/llmscaler/internal/window"
)

// Baseline policy names NewScaler knows: other systems' autoscalers, written from their
// published algorithms and run with their published defaults.
const (
	PolicyHPA = "hpa"
	PolicyKPA = "kpa"
	PolicyRay = "ray"
)

// BaselineInFlightTarget is the requests in flight (waiting + running) per ready replica that
// the hpa and kpa baselines aim for, so that they differ only in their control laws. It is the
// default target_ongoing_requests of Ray Serve LLM (DEFAULT_TARGET_ONGOING_REQUESTS = 16 in
// ray/llm/_internal/serve/configs/constants.py), the one published per-replica default meant
// for LLM replicas that batch. HPA has no default target at all, and Knative's 100 x 70 % = 70
// was chosen for request-at-a-time HTTP servers.
const BaselineInFlightTarget = 16.0

// RayTargetOngoingRequests is plain Ray Serve's default target_ongoing_requests [2]
// (ray/serve/_private/constants.py), which the ray baseline keeps, as a Ray Serve user who sets
// nothing gets it. It was chosen for request-at-a-time HTTP servers: on a replica that batches
// up to 256 sequences (vLLM's --max-num-seqs) it asks for many replicas, each nearly idle.
const RayTargetOngoingRequests = 2.0

// inFlight is the deployment's time-averaged requests in flight over v's span.
func inFlight(v window.Values) float64 { return v.Waiting + v.Running }

// every reports whether now is an evaluation time of a loop that runs every period from the
// start of the simulation, given the report interval the simulator ticks at.
func every(s *State, period time.Duration) bool {
	iv := s.ReportInterval
	if iv <= 0 {
		iv = DefaultReportInterval
	}
	// The tick whose interval contains a multiple of period evaluates.
	return s.Elapsed%period < iv
}

// HPA defaults, from the Kubernetes documentation ("Horizontal Pod Autoscaling",
// kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/: "Algorithm details" and
// "Default Behavior") and kube-controller-manager's flags.
const (
	// HPASyncPeriod is --horizontal-pod-autoscaler-sync-period [15 s].
	HPASyncPeriod = 15 * time.Second
	// HPATolerance is --horizontal-pod-autoscaler-tolerance [0.1].
	HPATolerance = 0.1
	// HPAScaleDownStabilization is behavior.scaleDown.stabilizationWindowSeconds [300].
	HPAScaleDownStabilization = 300 * time.Second
	// HPAScaleUpPods and HPAScaleUpPercent are the default scale-up policies, both per
	// HPAPolicyPeriod (15 s), selectPolicy Max. Scale-down's default policy, 100 % per 15 s,
	// allows any step, so it is not modelled.
	HPAScaleUpPods    = 4
	HPAScaleUpPercent = 100
	HPAPolicyPeriod   = 15 * time.Second
)

type recommendation struct {
	at time.Time
	n  int
}

type scaleEvent struct {
	at    time.Time
	delta int
}

// HPA is the Kubernetes HorizontalPodAutoscaler (autoscaling/v2) on a Pods metric: requests in
// flight per replica, averaged over the last sync period, with target BaselineInFlightTarget.
// Every HPASyncPeriod it computes, as the replica calculator does (calcPlainMetricReplicas in
// kubernetes pkg/controller/podautoscaler/replica_calculator.go):
//
//	ratio = (in flight / ready) / target
//	if |ratio - 1| <= tolerance: keep the current count, else desired = ceil(ratio x ready)
//
// Replicas still starting report no metric: they are "missing pods", counted as 0 usage when
// scaling up and as exactly the target when scaling down; the ratio is then recomputed over
// all replicas and the change dropped if it falls within tolerance or flips direction. With
// no ready replica the metric is unavailable and the count is kept, as HPA does on a metrics
// error. The recommendation then goes through the default behavior
// (normalizeDesiredReplicasWithBehaviors in horizontal.go): scale-down takes the highest
// recommendation of the last 300 s, scale-up has no stabilization and is limited to the
// larger of +4 pods and +100 % per 15 s.
type HPA struct {
	target float64
	recs   []recommendation
	events []scaleEvent
	last   int
	begun  bool
}

// NewHPA returns an HPA with the Kubernetes defaults and target in-flight requests per replica.
func NewHPA(target float64) *HPA { return &HPA{target: target} }

// Name is "hpa".
func (h *HPA) Name() string { return PolicyHPA }

// WindowConfig is the defaults: HPA reads one sync period, well within the stable window.
func (h *HPA) WindowConfig() window.Config { return window.Config{}.WithDefaults() }

// Desired evaluates every HPASyncPeriod and holds its decision in between.
func (h *HPA) Desired(s *State) int {
	cur := s.Ready + s.Starting
	if !h.begun {
		h.last, h.begun = cur, true
	}
	if !every(s, HPASyncPeriod) {
		return h.last
	}
	raw := h.replicas(s, cur)
	n := h.stabilize(s.Now, cur, raw)
	n = h.limit(s.Now, cur, n)
	n = min(max(n, s.Min), s.Max)
	if n != cur {
		h.events = append(h.events, scaleEvent{at: s.Now, delta: n - cur})
	}
	h.last = n
	return n
}

// replicas is the replica calculator's recommendation.
func (h *HPA) replicas(s *State, cur int) int {
	if s.Ready == 0 {
		return cur
	}
	v := s.Window.Values(s.Now, HPASyncPeriod)
	total := inFlight(v)
	ratio := total / float64(s.Ready) / h.target
	if s.Starting == 0 {
		if math.Abs(ratio-1) <= HPATolerance {
			return cur
		}
		return int(math.Ceil(ratio * float64(s.Ready)))
	}
	if math.Abs(ratio-1) <= HPATolerance {
		return cur
	}
	all := float64(s.Ready + s.Starting)
	var adj float64
	if ratio > 1 {
		adj = total / (h.target * all) // missing pods at 0 usage
	} else {
		adj = (total + h.target*float64(s.Starting)) / (h.target * all) // missing pods at target
	}
	if math.Abs(adj-1) <= HPATolerance || (ratio > 1) != (adj > 1) {
		return cur
	}
	return int(math.Ceil(adj * all))
}

// stabilize applies the default stabilization windows: none up, 300 s down.
func (h *HPA) stabilize(now time.Time, cur, desired int) int {
	cutoff := now.Add(-HPAScaleDownStabilization)
	keep := h.recs[:0]
	down := desired
	for _, r := range h.recs {
		if r.at.After(cutoff) {
			keep = append(keep, r)
			down = max(down, r.n)
		}
	}
	h.recs = append(keep, recommendation{at: now, n: desired})
	n := max(cur, desired) // up: no stabilization
	return min(n, down)
}

// limit applies the default scale-up policies over the events of the last policy period.
func (h *HPA) limit(now time.Time, cur, n int) int {
	if n <= cur {
		return n
	}
	cutoff := now.Add(-HPAPolicyPeriod)
	added := 0
	keep := h.events[:0]
	for _, e := range h.events {
		if e.at.After(cutoff) {
			keep = append(keep, e)
			added += e.delta
		}
	}
	h.events = keep
	start := cur - added
	byPods := start + HPAScaleUpPods
	byPercent := int(math.Ceil(float64(start) * (1 + HPAScaleUpPercent/100.0)))
	return min(n, max(byPods, byPercent))
}

// KPA defaults, from Knative Serving's config-autoscaler ConfigMap
// (knative.dev/docs/serving/autoscaling/kpa-specific/ and config/core/configmaps/autoscaler.yaml).
const (
	// KPAStableWindow is stable-window [60s].
	KPAStableWindow = 60 * time.Second
	// KPAPanicWindow is panic-window-percentage [10] % of the stable window: 6 s.
	KPAPanicWindow = KPAStableWindow / 10
	// KPAPanicThreshold is panic-threshold-percentage [200] / 100.
	KPAPanicThreshold = 2.0
	// KPAMaxScaleUpRate is max-scale-up-rate [1000].
	KPAMaxScaleUpRate = 1000.0
	// KPAMaxScaleDownRate is max-scale-down-rate [2].
	KPAMaxScaleDownRate = 2.0
	// KPATickInterval is the autoscaler's tick-interval [2s].
	KPATickInterval = 2 * time.Second
)

// KPA is the Knative Pod Autoscaler on concurrency (requests in flight), with target
// BaselineInFlightTarget per pod in place of Knative's container-concurrency-target-default
// 100 x 70 % (see BaselineInFlightTarget), and scale-to-zero off (the simulator's minimum
// holds). Every KPATickInterval it does what Knative's decider does (Scale in
// pkg/autoscaler/scaling/autoscaler.go):
//
//	ready = max(1, ready pods)
//	stable = ceil(in flight over 60 s / target), panic = ceil(in flight over 6 s / target),
//	both clamped to [floor(ready / 2), ceil(ready x 1000)]
//	panic mode starts, or is extended, while panic / ready >= 2.0, and ends once 60 s have
//	passed since it was last over the threshold
//	desired = stable, or in panic mode the most panic count seen since panic began (it never
//	scales down while panicking)
type KPA struct {
	target     float64
	panicSince time.Time // when the panic threshold was last crossed; zero when not panicking
	maxPanic   int
	last       int
	begun      bool
}

// NewKPA returns a KPA with the Knative defaults and target in-flight requests per pod.
func NewKPA(target float64) *KPA { return &KPA{target: target} }

// Name is "kpa".
func (k *KPA) Name() string { return PolicyKPA }

// WindowConfig sizes the windows to Knative's stable and panic windows.
func (k *KPA) WindowConfig() window.Config {
	return window.Config{Stable: KPAStableWindow, Panic: KPAPanicWindow}.WithDefaults()
}

// Panicking reports whether the autoscaler is in panic mode.
func (k *KPA) Panicking() bool { return !k.panicSince.IsZero() }

// Desired evaluates every KPATickInterval and holds its decision in between.
func (k *KPA) Desired(s *State) int {
	if !k.begun {
		k.last, k.begun = s.Ready+s.Starting, true
	}
	if !every(s, KPATickInterval) {
		return k.last
	}
	ready := float64(max(s.Ready, 1))
	up := int(math.Ceil(ready * KPAMaxScaleUpRate))
	down := int(math.Floor(ready / KPAMaxScaleDownRate))
	stable := int(math.Ceil(inFlight(s.Window.Values(s.Now, KPAStableWindow)) / k.target))
	panic := int(math.Ceil(inFlight(s.Window.Values(s.Now, KPAPanicWindow)) / k.target))
	stable = min(max(stable, down), up)
	panic = min(max(panic, down), up)
	over := float64(panic)/ready >= KPAPanicThreshold
	switch {
	case over:
		k.panicSince = s.Now
	case k.Panicking() && s.Now.After(k.panicSince.Add(KPAStableWindow)):
		k.panicSince, k.maxPanic = time.Time{}, 0
	}
	n := stable
	if k.Panicking() {
		k.maxPanic = max(k.maxPanic, panic)
		n = k.maxPanic
	}
	k.last = min(max(n, s.Min), s.Max)
	return k.last
}

// Ray Serve defaults, from ray.serve.config.AutoscalingConfig
// (docs.ray.io/en/latest/serve/api/doc/ray.serve.config.AutoscalingConfig.html) and
// ray/serve/autoscaling_policy.py.
const (
	// RayUpscaleDelay is upscale_delay_s [30].
	RayUpscaleDelay = 30 * time.Second
	// RayDownscaleDelay is downscale_delay_s [600].
	RayDownscaleDelay = 600 * time.Second
	// RayLookBack is look_back_period_s [30]: ongoing requests are averaged over it
	// (aggregation_function MEAN).
	RayLookBack = 30 * time.Second
	// RayScalingFactor is upscaling_factor and downscaling_factor, which default to
	// smoothing_factor [1.0].
	RayScalingFactor = 1.0
)

// Ray is Ray Serve's default autoscaling policy (replica_queue_length_autoscaling_policy with
// the delay logic of _apply_delay_logic in ray/serve/autoscaling_policy.py), with
// target_ongoing_requests RayTargetOngoingRequests. Ray's controller runs it every 0.1 s; here
// it runs at every report tick, and a delay counts ticks:
//
//	desired = running x (ongoing over 30 s / (target x running)), then
//	ceil(running + factor x (desired - running)), clamped to [min, max]
//	a higher desired must hold for more than upscale_delay_s of consecutive ticks, a lower
//	one for more than downscale_delay_s, before the target changes; any tick that wants the
//	current target resets the count, and a change of direction restarts it
//
// With no running replica, Ray's cold-start path keeps the current target.
type Ray struct {
	target  float64
	counter int // > 0: ticks wanting more; < 0: ticks wanting fewer
	cur     int // the current target, Ray's target_num_replicas
	begun   bool
}

// NewRay returns a Ray Serve autoscaler with the defaults and target_ongoing_requests target.
func NewRay(target float64) *Ray { return &Ray{target: target} }

// Name is "ray".
func (r *Ray) Name() string { return PolicyRay }

// WindowConfig is the defaults: the 30 s look-back fits in the 60 s stable window.
func (r *Ray) WindowConfig() window.Config { return window.Config{}.WithDefaults() }

// Desired applies one control-loop iteration.
func (r *Ray) Desired(s *State) int {
	if !r.begun {
		r.cur, r.begun = s.Ready+s.Starting, true
	}
	if s.Ready == 0 {
		return r.cur
	}
	iv := s.ReportInterval
	if iv <= 0 {
		iv = DefaultReportInterval
	}
	running := float64(s.Ready)
	ongoing := inFlight(s.Window.Values(s.Now, RayLookBack))
	want := running * (ongoing / (r.target * running))
	// The scaling factors act on the running count, the delays on the target.
	n := int(math.Ceil(running + RayScalingFactor*(want-running)))
	if int(math.Ceil(want)) < s.Ready && n == s.Ready {
		n--
	}
	n = min(max(n, s.Min), s.Max)
	cur := r.cur
	switch {
	case n > cur:
		r.counter = max(r.counter, 0) + 1
		if r.counter > int(RayUpscaleDelay/iv) {
			r.counter, r.cur = 0, n
		}
	case n < cur:
		r.counter = min(r.counter, 0) - 1
		if r.counter < -int(RayDownscaleDelay/iv) {
			r.counter, r.cur = 0, max(n, 1)
		}
	default:
		r.counter = 0
	}
	return r.cur
}
