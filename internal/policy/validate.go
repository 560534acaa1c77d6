package policy

import (
	"fmt"
	"math"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// FieldError says which field of a policy is wrong and why. Error() starts with the field's
// path under "deployment.policy", so the controller can pass it on as InvalidArgument as is.
type FieldError struct {
	// Field is the path, for example "deployment.policy.target.target".
	Field string
	// Problem is what is wrong with it, for example "must be > 0".
	Problem string
}

// Error is "<field>: <problem>".
func (e *FieldError) Error() string { return e.Field + ": " + e.Problem }

// maxDuration bounds every duration in a policy: a window, delay or cooldown of more than an
// hour is a typo (seconds for minutes), not a plan, and would hold unbounded history.
const maxDuration = time.Hour

// maxHeadroom and maxScaleUpPercent bound the "sane" range: ten times the demand as spare
// capacity, or a hundredfold scale-up per period, are beyond any deliberate setting.
const (
	maxHeadroom       = 10
	maxScaleUpPercent = 10000
)

const root = "deployment.policy"

// Validate checks a policy. nil and a policy without a kind are valid (slo with defaults).
// The first problem found is returned as a *FieldError.
func Validate(p *llmscalerv1.Policy) error {
	if p == nil {
		return nil
	}
	v := validator{}
	if p.MaxStep != nil && p.GetMaxStep() < 1 {
		v.fail(root+".max_step", "must be >= 1 when set")
	}
	stable := v.window(root+".stable_window", p.GetStableWindow(), defaultStable)
	panicW := v.window(root+".panic_window", p.GetPanicWindow(), defaultPanic)
	if v.err == nil && panicW >= stable {
		v.fail(root+".panic_window", fmt.Sprintf("must be shorter than the stable window (%s), is %s", stable, panicW))
	}
	switch k := p.GetKind().(type) {
	case nil:
	case *llmscalerv1.Policy_Threshold:
		v.threshold(k.Threshold)
	case *llmscalerv1.Policy_Target:
		v.target(k.Target)
	case *llmscalerv1.Policy_Slo:
		v.slo(k.Slo)
	}
	if v.err != nil {
		return v.err
	}
	return nil
}

// validator keeps the first error, so checks read as a flat list.
type validator struct{ err *FieldError }

func (v *validator) fail(field, problem string) {
	if v.err == nil {
		v.err = &FieldError{Field: field, Problem: problem}
	}
}

// duration checks an optional duration against [lo, 1h] and returns it, or def when unset.
func (v *validator) duration(field string, d *durationpb.Duration, def time.Duration, positive bool) time.Duration {
	if d == nil {
		return def
	}
	if err := d.CheckValid(); err != nil {
		v.fail(field, "must be a valid duration")
		return def
	}
	x := d.AsDuration()
	switch {
	case positive && x <= 0:
		v.fail(field, "must be > 0")
	case x < 0:
		v.fail(field, "must be >= 0")
	case x > maxDuration:
		v.fail(field, fmt.Sprintf("must be <= %s, is %s", maxDuration, x))
	}
	return x
}

func (v *validator) window(field string, d *durationpb.Duration, def time.Duration) time.Duration {
	return v.duration(field, d, def, true)
}

// number checks that x is finite and within [lo, hi].
func (v *validator) number(field string, x, lo, hi float64) {
	switch {
	case math.IsNaN(x) || math.IsInf(x, 0):
		v.fail(field, "must be a finite number")
	case x < lo:
		v.fail(field, fmt.Sprintf("must be >= %g", lo))
	case x > hi:
		v.fail(field, fmt.Sprintf("must be <= %g", hi))
	}
}

func (v *validator) threshold(t *llmscalerv1.ThresholdPolicy) {
	if t == nil {
		return
	}
	f := root + ".threshold."
	c := compileThreshold(t)
	if t.QueueUp != nil {
		v.number(f+"queue_up", t.GetQueueUp(), 0, math.MaxFloat64)
	}
	if t.QueueDown != nil {
		v.number(f+"queue_down", t.GetQueueDown(), 0, math.MaxFloat64)
	}
	if t.GpuUtilizationUpPercent != nil {
		v.number(f+"gpu_utilization_up_percent", t.GetGpuUtilizationUpPercent(), 0, 100)
	}
	if t.GpuUtilizationDownPercent != nil {
		v.number(f+"gpu_utilization_down_percent", t.GetGpuUtilizationDownPercent(), 0, 100)
	}
	v.duration(f+"response_time_up", t.GetResponseTimeUp(), 0, true)
	v.duration(f+"response_time_down", t.GetResponseTimeDown(), 0, false)
	v.duration(f+"cooldown", t.GetCooldown(), 0, false)
	// A down threshold above its up threshold would let one reading ask for both.
	if v.err != nil {
		return
	}
	switch {
	case c.queueDown > c.queueUp:
		v.fail(f+"queue_down", fmt.Sprintf("must be <= queue_up (%g)", c.queueUp))
	case c.responseDown > c.responseUp:
		v.fail(f+"response_time_down", fmt.Sprintf("must be <= response_time_up (%s)", c.responseUp))
	case c.gpuDown > c.gpuUp:
		v.fail(f+"gpu_utilization_down_percent", fmt.Sprintf("must be <= gpu_utilization_up_percent (%g)", c.gpuUp))
	}
}

func (v *validator) target(t *llmscalerv1.TargetPolicy) {
	f := root + ".target."
	if t == nil {
		v.fail(f+"target", "must be > 0")
		return
	}
	if _, ok := llmscalerv1.TargetMetric_name[int32(t.GetMetric())]; !ok {
		v.fail(f+"metric", fmt.Sprintf("unknown metric %d", t.GetMetric()))
	}
	x := t.GetTarget()
	switch {
	case math.IsNaN(x) || math.IsInf(x, 0):
		v.fail(f+"target", "must be a finite number")
	case x <= 0:
		v.fail(f+"target", "must be > 0")
	case t.GetMetric() == llmscalerv1.TargetMetric_TARGET_METRIC_KV_CACHE && x > 1:
		v.fail(f+"target", "must be <= 1 for KV-cache usage, a share")
	case t.GetMetric() == llmscalerv1.TargetMetric_TARGET_METRIC_GPU_UTILIZATION && x > 100:
		v.fail(f+"target", "must be <= 100 for GPU utilization, a percentage")
	}
	if t.Tolerance != nil {
		tol := t.GetTolerance()
		if math.IsNaN(tol) || tol < 0 || tol >= 1 {
			v.fail(f+"tolerance", "must be in [0, 1)")
		}
	}
	v.duration(f+"scale_up_stabilization", t.GetScaleUpStabilization(), 0, false)
	v.duration(f+"scale_down_stabilization", t.GetScaleDownStabilization(), 0, false)
	if t.MaxScaleUpReplicas != nil && t.GetMaxScaleUpReplicas() < 1 {
		v.fail(f+"max_scale_up_replicas", "must be >= 1 when set")
	}
	if t.MaxScaleUpPercent != nil {
		if p := t.GetMaxScaleUpPercent(); !(p > 0) {
			v.fail(f+"max_scale_up_percent", "must be > 0")
		} else {
			v.number(f+"max_scale_up_percent", p, 0, maxScaleUpPercent)
		}
	}
	if t.MaxScaleDownPercent != nil {
		if p := t.GetMaxScaleDownPercent(); !(p > 0) || p > 100 {
			v.fail(f+"max_scale_down_percent", "must be in (0, 100]")
		}
	}
	v.duration(f+"scale_up_period", t.GetScaleUpPeriod(), 0, true)
	v.duration(f+"scale_down_period", t.GetScaleDownPeriod(), 0, true)
}

func (v *validator) slo(s *llmscalerv1.SloPolicy) {
	if s == nil {
		return
	}
	f := root + ".slo."
	if _, ok := llmscalerv1.SloMetric_name[int32(s.GetMetric())]; !ok {
		v.fail(f+"metric", fmt.Sprintf("unknown metric %d", s.GetMetric()))
	}
	if s.Percentile != nil {
		if p := s.GetPercentile(); !(p > 0 && p < 100) {
			v.fail(f+"percentile", "must be in (0, 100)")
		}
	}
	v.duration(f+"target", s.GetTarget(), 0, true)
	if s.Headroom != nil {
		v.number(f+"headroom", s.GetHeadroom(), 0, maxHeadroom)
	}
	if s.PriorRequestsPerSecond != nil {
		if p := s.GetPriorRequestsPerSecond(); !(p > 0) || math.IsInf(p, 0) {
			v.fail(f+"prior_requests_per_second", "must be > 0")
		}
	}
	v.duration(f+"scale_down_delay", s.GetScaleDownDelay(), 0, false)
	if s.PanicMaxStep != nil && s.GetPanicMaxStep() < 1 {
		v.fail(f+"panic_max_step", "must be >= 1 when set")
	}
}
