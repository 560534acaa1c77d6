package policy

import (
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// Defaults, as the proto documents them in brackets.
const (
	defaultStable = 60 * time.Second
	defaultPanic  = 6 * time.Second

	defaultQueueUp      = 10
	defaultResponseUp   = 5 * time.Second
	defaultGPUUp        = 85
	defaultQueueDown    = 2
	defaultResponseDown = time.Second
	defaultGPUDown      = 30
	defaultCooldown     = 300 * time.Second

	defaultTolerance        = 0.1
	defaultUpStabilization  = 0
	defaultDownStabilizaton = 300 * time.Second
	defaultMaxUpReplicas    = 4
	defaultMaxUpPercent     = 100
	defaultMaxDownPercent   = 100
	defaultRatePeriod       = 15 * time.Second

	defaultSLOPercentile = 95
	defaultSLOTarget     = 2 * time.Second
	defaultHeadroom      = 0.15
	defaultPrior         = 2
	defaultDownDelay     = 120 * time.Second
	defaultPanicMaxStep  = 10
	defaultSLOStepUp     = 4
)

// Policy names, as Decision.Policy and the journal spell them.
const (
	NameThreshold = "threshold"
	NameTarget    = "target"
	NameSLO       = "slo"
)

// config is a validated policy with every default filled in, so evaluation never touches
// the proto.
type config struct {
	name      string
	dryRun    bool
	maxStep   int // 0: the policy's own default
	stable    time.Duration
	panic     time.Duration
	threshold thresholdConfig
	target    targetConfig
	slo       sloConfig
}

type thresholdConfig struct {
	queueUp, queueDown         float64
	responseUp, responseDown   time.Duration
	responseUpS, responseDownS float64 // the same in seconds
	gpuUp, gpuDown             float64
	cooldown                   time.Duration
}

type targetConfig struct {
	metric                  llmscalerv1.TargetMetric
	target, tolerance       float64
	upStab, downStab        time.Duration
	maxUpReplicas           int
	maxUpPercent            float64
	upPeriod                time.Duration
	maxDownPercent          float64
	downPeriod              time.Duration
	historySpan, eventsSpan time.Duration
}

type sloConfig struct {
	e2e        bool    // metric is end-to-end latency, else TTFT
	quantile   float64 // percentile/100
	percentile float64
	target     time.Duration
	targetS    float64
	headroom   float64
	// fixedHeadroom: the policy sets headroom, so none is learned.
	fixedHeadroom bool
	prior         float64
	// probe: no prior was configured, so the capacity is probed upwards (probeCapacity).
	probe        bool
	delay        time.Duration
	panicMaxStep int
}

func durOr(d *durationpb.Duration, def time.Duration) time.Duration {
	if d == nil {
		return def
	}
	return d.AsDuration()
}

// compile turns a validated policy into a config. nil means slo with defaults.
func compile(p *llmscalerv1.Policy) config {
	c := config{
		name:   NameSLO,
		dryRun: p.GetDryRun(),
		maxStep: func() int {
			if p != nil && p.MaxStep != nil {
				return int(p.GetMaxStep())
			}
			return 0
		}(),
		stable: durOr(p.GetStableWindow(), defaultStable),
		panic:  durOr(p.GetPanicWindow(), defaultPanic),
	}
	switch k := p.GetKind().(type) {
	case *llmscalerv1.Policy_Threshold:
		c.name = NameThreshold
		c.threshold = compileThreshold(k.Threshold)
	case *llmscalerv1.Policy_Target:
		c.name = NameTarget
		c.target = compileTarget(k.Target)
	case *llmscalerv1.Policy_Slo:
		c.slo = compileSLO(k.Slo)
	default:
		c.slo = compileSLO(nil)
	}
	return c
}

func compileThreshold(t *llmscalerv1.ThresholdPolicy) thresholdConfig {
	c := thresholdConfig{
		queueUp:      defaultQueueUp,
		queueDown:    defaultQueueDown,
		responseUp:   durOr(t.GetResponseTimeUp(), defaultResponseUp),
		responseDown: durOr(t.GetResponseTimeDown(), defaultResponseDown),
		gpuUp:        defaultGPUUp,
		gpuDown:      defaultGPUDown,
		cooldown:     durOr(t.GetCooldown(), defaultCooldown),
	}
	if t != nil {
		if t.QueueUp != nil {
			c.queueUp = t.GetQueueUp()
		}
		if t.QueueDown != nil {
			c.queueDown = t.GetQueueDown()
		}
		if t.GpuUtilizationUpPercent != nil {
			c.gpuUp = t.GetGpuUtilizationUpPercent()
		}
		if t.GpuUtilizationDownPercent != nil {
			c.gpuDown = t.GetGpuUtilizationDownPercent()
		}
	}
	c.responseUpS = c.responseUp.Seconds()
	c.responseDownS = c.responseDown.Seconds()
	return c
}

func compileTarget(t *llmscalerv1.TargetPolicy) targetConfig {
	c := targetConfig{
		metric:         t.GetMetric(),
		target:         t.GetTarget(),
		tolerance:      defaultTolerance,
		upStab:         durOr(t.GetScaleUpStabilization(), defaultUpStabilization),
		downStab:       durOr(t.GetScaleDownStabilization(), defaultDownStabilizaton),
		maxUpReplicas:  defaultMaxUpReplicas,
		maxUpPercent:   defaultMaxUpPercent,
		upPeriod:       durOr(t.GetScaleUpPeriod(), defaultRatePeriod),
		maxDownPercent: defaultMaxDownPercent,
		downPeriod:     durOr(t.GetScaleDownPeriod(), defaultRatePeriod),
	}
	if c.metric == llmscalerv1.TargetMetric_TARGET_METRIC_UNSPECIFIED {
		c.metric = llmscalerv1.TargetMetric_TARGET_METRIC_IN_FLIGHT
	}
	if t != nil {
		if t.Tolerance != nil {
			c.tolerance = t.GetTolerance()
		}
		if t.MaxScaleUpReplicas != nil {
			c.maxUpReplicas = int(t.GetMaxScaleUpReplicas())
		}
		if t.MaxScaleUpPercent != nil {
			c.maxUpPercent = t.GetMaxScaleUpPercent()
		}
		if t.MaxScaleDownPercent != nil {
			c.maxDownPercent = t.GetMaxScaleDownPercent()
		}
	}
	c.historySpan = max(c.upStab, c.downStab)
	c.eventsSpan = max(c.upPeriod, c.downPeriod)
	return c
}

func compileSLO(s *llmscalerv1.SloPolicy) sloConfig {
	c := sloConfig{
		e2e:          s.GetMetric() == llmscalerv1.SloMetric_SLO_METRIC_E2E,
		percentile:   defaultSLOPercentile,
		target:       durOr(s.GetTarget(), defaultSLOTarget),
		headroom:     defaultHeadroom,
		prior:        defaultPrior,
		probe:        true,
		delay:        durOr(s.GetScaleDownDelay(), defaultDownDelay),
		panicMaxStep: defaultPanicMaxStep,
	}
	if s != nil {
		if s.Percentile != nil {
			c.percentile = s.GetPercentile()
		}
		if s.Headroom != nil {
			c.headroom, c.fixedHeadroom = s.GetHeadroom(), true
		}
		if s.PriorRequestsPerSecond != nil {
			c.prior, c.probe = s.GetPriorRequestsPerSecond(), false
		}
		if s.PanicMaxStep != nil {
			c.panicMaxStep = int(s.GetPanicMaxStep())
		}
	}
	c.quantile = c.percentile / 100
	c.targetS = c.target.Seconds()
	return c
}
