package policy

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

func TestValidate(t *testing.T) {
	slo := func(s *llmscalerv1.SloPolicy) *llmscalerv1.Policy {
		return &llmscalerv1.Policy{Kind: &llmscalerv1.Policy_Slo{Slo: s}}
	}
	tests := []struct {
		name string
		p    *llmscalerv1.Policy
		want string // prefix of the error; "" for valid
	}{
		{"nil", nil, ""},
		{"no kind", &llmscalerv1.Policy{}, ""},
		{"every default", slo(&llmscalerv1.SloPolicy{}), ""},
		{"full threshold", thresholdPolicy(func(p *llmscalerv1.ThresholdPolicy) {
			p.QueueUp, p.QueueDown = ptr(20.0), ptr(5.0)
			p.ResponseTimeUp, p.ResponseTimeDown = dur(10*time.Second), dur(2*time.Second)
			p.GpuUtilizationUpPercent, p.GpuUtilizationDownPercent = ptr(90.0), ptr(20.0)
			p.Cooldown = dur(0)
		}), ""},
		{"full target", targetPolicy(func(p *llmscalerv1.TargetPolicy) {
			p.Metric, p.Target, p.Tolerance = llmscalerv1.TargetMetric_TARGET_METRIC_KV_CACHE, 0.7, ptr(0.0)
			p.ScaleUpStabilization, p.ScaleDownStabilization = dur(0), dur(time.Hour)
			p.MaxScaleUpReplicas, p.MaxScaleUpPercent, p.MaxScaleDownPercent = ptr(uint32(2)), ptr(50.0), ptr(100.0)
		}), ""},

		{"max_step 0", &llmscalerv1.Policy{MaxStep: ptr(uint32(0))}, "deployment.policy.max_step: must be >= 1"},
		{"stable window 0", &llmscalerv1.Policy{StableWindow: dur(0)}, "deployment.policy.stable_window: must be > 0"},
		{"stable window 2h", &llmscalerv1.Policy{StableWindow: dur(2 * time.Hour)}, "deployment.policy.stable_window: must be <= 1h"},
		{"negative panic window", &llmscalerv1.Policy{PanicWindow: dur(-time.Second)}, "deployment.policy.panic_window: must be > 0"},
		{"invalid duration", &llmscalerv1.Policy{PanicWindow: &durationpb.Duration{Seconds: 1, Nanos: -5}}, "deployment.policy.panic_window: must be a valid duration"},
		{"panic not shorter", &llmscalerv1.Policy{StableWindow: dur(10 * time.Second), PanicWindow: dur(10 * time.Second)}, "deployment.policy.panic_window: must be shorter than the stable window"},
		{"panic vs default stable", &llmscalerv1.Policy{PanicWindow: dur(2 * time.Minute)}, "deployment.policy.panic_window: must be shorter"},

		{"threshold queue_up negative", thresholdPolicy(func(p *llmscalerv1.ThresholdPolicy) { p.QueueUp = ptr(-1.0) }), "deployment.policy.threshold.queue_up: must be >= 0"},
		{"threshold queue_down above up", thresholdPolicy(func(p *llmscalerv1.ThresholdPolicy) { p.QueueDown = ptr(20.0) }), "deployment.policy.threshold.queue_down: must be <= queue_up"},
		{"threshold gpu over 100", thresholdPolicy(func(p *llmscalerv1.ThresholdPolicy) { p.GpuUtilizationUpPercent = ptr(120.0) }), "deployment.policy.threshold.gpu_utilization_up_percent: must be <= 100"},
		{"threshold gpu NaN", thresholdPolicy(func(p *llmscalerv1.ThresholdPolicy) { p.GpuUtilizationDownPercent = ptr(math.NaN()) }), "deployment.policy.threshold.gpu_utilization_down_percent: must be a finite number"},
		{"threshold gpu down above up", thresholdPolicy(func(p *llmscalerv1.ThresholdPolicy) { p.GpuUtilizationDownPercent = ptr(90.0) }), "deployment.policy.threshold.gpu_utilization_down_percent: must be <= gpu_utilization_up_percent"},
		{"threshold response up 0", thresholdPolicy(func(p *llmscalerv1.ThresholdPolicy) { p.ResponseTimeUp = dur(0) }), "deployment.policy.threshold.response_time_up: must be > 0"},
		{"threshold response down above up", thresholdPolicy(func(p *llmscalerv1.ThresholdPolicy) { p.ResponseTimeDown = dur(6 * time.Second) }), "deployment.policy.threshold.response_time_down: must be <= response_time_up"},
		{"threshold cooldown negative", thresholdPolicy(func(p *llmscalerv1.ThresholdPolicy) { p.Cooldown = dur(-time.Second) }), "deployment.policy.threshold.cooldown: must be >= 0"},
		{"threshold cooldown 2h", thresholdPolicy(func(p *llmscalerv1.ThresholdPolicy) { p.Cooldown = dur(2 * time.Hour) }), "deployment.policy.threshold.cooldown: must be <= 1h"},

		{"target missing", &llmscalerv1.Policy{Kind: &llmscalerv1.Policy_Target{}}, "deployment.policy.target.target: must be > 0"},
		{"target 0", targetPolicy(func(p *llmscalerv1.TargetPolicy) { p.Target = 0 }), "deployment.policy.target.target: must be > 0"},
		{"target inf", targetPolicy(func(p *llmscalerv1.TargetPolicy) { p.Target = math.Inf(1) }), "deployment.policy.target.target: must be a finite number"},
		{"target unknown metric", targetPolicy(func(p *llmscalerv1.TargetPolicy) { p.Metric = 9 }), "deployment.policy.target.metric: unknown metric 9"},
		{"target kv over 1", targetPolicy(func(p *llmscalerv1.TargetPolicy) {
			p.Metric, p.Target = llmscalerv1.TargetMetric_TARGET_METRIC_KV_CACHE, 80
		}), "deployment.policy.target.target: must be <= 1 for KV-cache usage"},
		{"target gpu over 100", targetPolicy(func(p *llmscalerv1.TargetPolicy) {
			p.Metric, p.Target = llmscalerv1.TargetMetric_TARGET_METRIC_GPU_UTILIZATION, 150
		}), "deployment.policy.target.target: must be <= 100 for GPU utilization"},
		{"target tolerance 1", targetPolicy(func(p *llmscalerv1.TargetPolicy) { p.Tolerance = ptr(1.0) }), "deployment.policy.target.tolerance: must be in [0, 1)"},
		{"target tolerance negative", targetPolicy(func(p *llmscalerv1.TargetPolicy) { p.Tolerance = ptr(-0.1) }), "deployment.policy.target.tolerance: must be in [0, 1)"},
		{"target stabilization 2h", targetPolicy(func(p *llmscalerv1.TargetPolicy) { p.ScaleDownStabilization = dur(2 * time.Hour) }), "deployment.policy.target.scale_down_stabilization: must be <= 1h"},
		{"target up replicas 0", targetPolicy(func(p *llmscalerv1.TargetPolicy) { p.MaxScaleUpReplicas = ptr(uint32(0)) }), "deployment.policy.target.max_scale_up_replicas: must be >= 1"},
		{"target up percent 0", targetPolicy(func(p *llmscalerv1.TargetPolicy) { p.MaxScaleUpPercent = ptr(0.0) }), "deployment.policy.target.max_scale_up_percent: must be > 0"},
		{"target up percent huge", targetPolicy(func(p *llmscalerv1.TargetPolicy) { p.MaxScaleUpPercent = ptr(1e9) }), "deployment.policy.target.max_scale_up_percent: must be <= 10000"},
		{"target down percent 150", targetPolicy(func(p *llmscalerv1.TargetPolicy) { p.MaxScaleDownPercent = ptr(150.0) }), "deployment.policy.target.max_scale_down_percent: must be in (0, 100]"},
		{"target up period 0", targetPolicy(func(p *llmscalerv1.TargetPolicy) { p.ScaleUpPeriod = dur(0) }), "deployment.policy.target.scale_up_period: must be > 0"},
		{"target down period 2h", targetPolicy(func(p *llmscalerv1.TargetPolicy) { p.ScaleDownPeriod = dur(2 * time.Hour) }), "deployment.policy.target.scale_down_period: must be <= 1h"},

		{"slo unknown metric", slo(&llmscalerv1.SloPolicy{Metric: 7}), "deployment.policy.slo.metric: unknown metric 7"},
		{"slo percentile 100", slo(&llmscalerv1.SloPolicy{Percentile: ptr(100.0)}), "deployment.policy.slo.percentile: must be in (0, 100)"},
		{"slo percentile 0", slo(&llmscalerv1.SloPolicy{Percentile: ptr(0.0)}), "deployment.policy.slo.percentile: must be in (0, 100)"},
		{"slo target 0", slo(&llmscalerv1.SloPolicy{Target: dur(0)}), "deployment.policy.slo.target: must be > 0"},
		{"slo target 2h", slo(&llmscalerv1.SloPolicy{Target: dur(2 * time.Hour)}), "deployment.policy.slo.target: must be <= 1h"},
		{"slo headroom negative", slo(&llmscalerv1.SloPolicy{Headroom: ptr(-0.1)}), "deployment.policy.slo.headroom: must be >= 0"},
		{"slo headroom insane", slo(&llmscalerv1.SloPolicy{Headroom: ptr(50.0)}), "deployment.policy.slo.headroom: must be <= 10"},
		{"slo prior 0", slo(&llmscalerv1.SloPolicy{PriorRequestsPerSecond: ptr(0.0)}), "deployment.policy.slo.prior_requests_per_second: must be > 0"},
		{"slo delay negative", slo(&llmscalerv1.SloPolicy{ScaleDownDelay: dur(-time.Second)}), "deployment.policy.slo.scale_down_delay: must be >= 0"},
		{"slo panic step 0", slo(&llmscalerv1.SloPolicy{PanicMaxStep: ptr(uint32(0))}), "deployment.policy.slo.panic_max_step: must be >= 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Validate(tc.p)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want an error starting %q", err, tc.want)
			}
			var fe *FieldError
			if !errors.As(err, &fe) || !strings.HasPrefix(tc.want, fe.Field+": ") {
				t.Errorf("error %v is not a *FieldError naming the field", err)
			}
			if _, err := NewAutoscaler(tc.p); err == nil {
				t.Error("NewAutoscaler accepted an invalid policy")
			}
		})
	}
}
