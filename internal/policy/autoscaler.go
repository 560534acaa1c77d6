package policy

import (
	"math"
	"time"

	"github.com/llmscaler/llmscaler/internal/window"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// Input is what one evaluation of a deployment sees.
type Input struct {
	// Now is the evaluation time; the policy reads no clock.
	Now        time.Time
	Deployment string
	// Ready and Starting are the live replicas as the controller counts them.
	Ready, Starting int
	// StartingSince holds when each starting replica was started.
	StartingSince []time.Time
	// ColdStart is the expected time from start to ready for a new replica.
	ColdStart time.Duration
	// Stable and Panic are the deployment's windows at Now, over the spans Config returns.
	// Long is the window over Config's History (two stable windows), read with
	// window.Deployment.Totals, from which the slo policy reads the trend of the arrival rate;
	// its zero value means no trend. Only slo sets a History; the others need no Long.
	Stable, Panic, Long window.Values
	// Min and Max bound the replica count; Max <= 0 means no upper bound.
	Min, Max int
	// Paused is set by ScaleDeployment: decide nothing but a hold.
	Paused bool
	// ReportInterval is how often replicas report, for the words of a stale-data clamp.
	ReportInterval time.Duration
	// RouterWaiting is the requests routers hold for the deployment: no replica is ready, or
	// every one is at its in-flight cap. Any replica can serve them, unlike an engine's queue.
	RouterWaiting float64
}

// Clamp kinds, as the journal spells them.
const (
	ClampBounds        = "bounds"
	ClampMaxStep       = "max_step"
	ClampCooldown      = "cooldown"
	ClampStabilization = "stabilization"
	ClampRateLimit     = "rate_limit"
	ClampStaleData     = "stale_data"
	ClampPaused        = "paused"
	ClampDryRun        = "dry_run"
)

// Clamp is one limit that changed a recommendation on its way to the desired count.
type Clamp struct {
	// Kind is one of the Clamp* constants.
	Kind string
	// From and To are the count before and after this clamp.
	From, To int
	// Reason says why, in words.
	Reason string
}

// Decision is the outcome of one evaluation.
type Decision struct {
	Time time.Time
	// Policy is "threshold", "target" or "slo".
	Policy string
	// Current is Ready+Starting at evaluation.
	Current int
	// Recommended is the policy's own answer, before any clamp. A policy that would scale
	// down while already at Min recommends Min: staying at the floor is not news.
	Recommended int
	// Desired is the count after every clamp: what the controller should drive towards.
	Desired int
	// Clamps are the limits that applied, in order. Do not modify them: a paused
	// deployment's decisions share one slice.
	Clamps []Clamp
	// Reason is one line for a person: "scale 2 -> 4: ..." or "hold at 3: ...".
	Reason string
	// Change is Desired != Current.
	Change bool
	// DryRun is set when the policy only decides; Desired then stays Current.
	DryRun bool
	// Stable and Panic are the window figures the decision read.
	Stable, Panic window.Values
}

// maxClamps is more than one evaluation can apply (policy clamp, step, stale, bounds, dry run).
const maxClamps = 8

// clampRec is a clamp before its reason is put into words, which only journal-worthy
// decisions pay for.
type clampRec struct {
	kind     string
	from, to int
	code     clampCode
	a, b     float64
}

// Autoscaler evaluates one deployment's policy tick by tick and holds the policy's state:
// the last scaling (cooldowns), the recommendation and scaling history (stabilization and
// rate limits), and the measured replica capacity. It is pure and not safe for concurrent use.
type Autoscaler struct {
	cfg config

	lastScale time.Time
	scaled    bool
	target    targetState
	slo       sloState

	// Per-evaluation scratch, reused so a steady state allocates nothing.
	clamps  [maxClamps]clampRec
	nClamps int
	cause   cause

	holds        [4]holdReason
	nextHold     int
	pausedAt     int
	pausedClamps []Clamp
}

// holdReason caches the words of a hold that is not journal-worthy.
type holdReason struct {
	n    int
	code causeCode
	text string
}

// NewAutoscaler returns an Autoscaler for p; nil means slo with its defaults.
func NewAutoscaler(p *llmscalerv1.Policy) (*Autoscaler, error) {
	if err := Validate(p); err != nil {
		return nil, err
	}
	a := &Autoscaler{pausedAt: -1}
	a.cfg = compile(p)
	a.slo.capacity = a.cfg.slo.prior
	return a, nil
}

// SetPolicy replaces the policy from the next Evaluate. State that still means the same
// thing is kept: the last scaling time (so a new cooldown counts from it), the measured
// capacity, and the target policy's history. A capacity not yet measured follows a new prior.
func (a *Autoscaler) SetPolicy(p *llmscalerv1.Policy) error {
	if err := Validate(p); err != nil {
		return err
	}
	old := a.cfg
	a.cfg = compile(p)
	if a.slo.measured == 0 {
		a.slo.capacity = a.cfg.slo.prior
	}
	if old.name != a.cfg.name {
		a.slo.spare = false
	}
	a.holds = [4]holdReason{}
	return nil
}

// Config is the windows the policy reads; ReportInterval is left 0 for the caller to set.
func (a *Autoscaler) Config() window.Config {
	c := window.Config{Stable: a.cfg.stable, Panic: a.cfg.panic}
	if a.cfg.name == NameSLO {
		c.History = 2 * a.cfg.stable // the trend of the arrival rate
	}
	return c
}

// Policy is the name of the policy in force: "threshold", "target" or "slo".
func (a *Autoscaler) Policy() string { return a.cfg.name }

// Evaluate decides one tick. The decision is assumed acted on unless it is a dry run: a
// change starts the cooldown and enters the scaling history.
func (a *Autoscaler) Evaluate(in Input) Decision {
	cur := in.Ready + in.Starting
	d := Decision{
		Time: in.Now, Policy: a.cfg.name, Current: cur, DryRun: a.cfg.dryRun,
		Stable: in.Stable, Panic: in.Panic,
	}
	a.nClamps = 0
	a.cause = cause{}
	if in.Paused {
		if a.cfg.name == NameSLO {
			a.learnCapacity(&in)
		}
		a.slo.spare = false
		d.Recommended, d.Desired = cur, cur
		d.Clamps = a.pausedClampsFor(cur)
		a.cause.code = causePaused
		d.Reason = a.holdText(cur)
		return d
	}

	var raw, want, upStep, downStep int
	var panicking bool
	if cur == 0 {
		// No replica to measure: requests waiting in a router are the only demand there
		// is, and one replica is the start (scale from zero); the windows size the rest
		// once it serves.
		want = 0
		a.cause.code = causeNoReady
		if in.RouterWaiting > 0 {
			want = 1
			a.cause = cause{code: causeFromZero, a: in.RouterWaiting}
		}
		raw = want
	}
	switch {
	case cur == 0:
	case a.cfg.name == NameThreshold:
		raw, want = a.evalThreshold(&in, cur)
		upStep, downStep = a.stepOr(1), a.stepOr(1)
	case a.cfg.name == NameTarget:
		raw, want = a.evalTarget(&in, cur)
		upStep, downStep = a.stepOr(0), a.stepOr(0)
	default:
		raw, want, panicking = a.evalSLO(&in, cur)
		upStep, downStep = a.stepOr(defaultSLOStepUp), a.stepOr(0)
		if panicking {
			upStep = a.cfg.slo.panicMaxStep
		}
	}
	d.Recommended = raw

	// Step limits.
	if upStep > 0 && want > cur+upStep {
		code := clampStep
		if panicking {
			code = clampPanicStep
		}
		a.addClamp(ClampMaxStep, want, cur+upStep, code, float64(upStep), 0)
		want = cur + upStep
	}
	if downStep > 0 && want < cur-downStep {
		a.addClamp(ClampMaxStep, want, cur-downStep, clampStep, float64(downStep), 0)
		want = cur - downStep
	}
	// Missing data never causes a scale-down; bounds come after, so lowering max_replicas
	// still takes effect without fresh data.
	if want < cur {
		if code, n := missingData(&in, cur); code != clampNone {
			ri := in.ReportInterval
			if ri <= 0 {
				ri = window.DefaultReportInterval
			}
			a.addClamp(ClampStaleData, want, cur, code, float64(n), ri.Seconds()*window.StaleIntervals)
			want = cur
		}
	}
	if in.Max > 0 && want > in.Max {
		a.addClamp(ClampBounds, want, in.Max, clampMax, float64(in.Max), 0)
		want = in.Max
	}
	if want < in.Min {
		a.addClamp(ClampBounds, want, in.Min, clampMin, float64(in.Min), 0)
		want = in.Min
	}
	if a.cfg.dryRun && want != cur {
		a.addClamp(ClampDryRun, want, cur, clampDryRun, 0, 0)
		want = cur
	}
	d.Desired = want
	d.Change = want != cur

	a.commit(&in, &d)
	if a.nClamps > 0 {
		d.Clamps = make([]Clamp, a.nClamps)
		for i := range d.Clamps {
			c := &a.clamps[i]
			d.Clamps[i] = Clamp{Kind: c.kind, From: c.from, To: c.to, Reason: c.words()}
		}
	}
	if d.Recommended != cur || d.Change {
		d.Reason = a.journalText(&d)
	} else {
		d.Reason = a.holdText(cur)
	}
	return d
}

// stepOr is the policy's max_step, or def when unset (0: no limit).
func (a *Autoscaler) stepOr(def int) int {
	if a.cfg.maxStep > 0 {
		return a.cfg.maxStep
	}
	return def
}

func (a *Autoscaler) addClamp(kind string, from, to int, code clampCode, x, y float64) {
	if a.nClamps < maxClamps {
		a.clamps[a.nClamps] = clampRec{kind: kind, from: from, to: to, code: code, a: x, b: y}
		a.nClamps++
	}
}

// missingData says why the data cannot support a scale-down, if it cannot: a replica is
// stale, a live replica never reported, or the windows hold no recent points.
func missingData(in *Input, cur int) (clampCode, int) {
	if n := max(in.Stable.Stale, in.Panic.Stale); n > 0 {
		return clampStale, n
	}
	if known := in.Panic.Ready + in.Panic.Starting; known < cur {
		return clampUnreported, cur - known
	}
	if in.Panic.Covered < in.Panic.Span/2 || in.Stable.Covered < in.Stable.Span/2 {
		return clampNoWindow, 0
	}
	return clampNone, 0
}

// commit updates the policy state as if the decision is acted on.
func (a *Autoscaler) commit(in *Input, d *Decision) {
	if !d.Change || d.DryRun {
		return
	}
	a.lastScale, a.scaled = in.Now, true
	if a.cfg.name == NameTarget {
		a.target.addEvent(in.Now, d.Desired-d.Current, a.cfg.target.eventsSpan)
	}
	if d.Desired > d.Current {
		// New capacity is on its way: spare capacity must be shown afresh.
		a.slo.spare = false
	}
	if a.cfg.name == NameSLO {
		a.noteScale(in, d.Current, d.Desired, a.cause.code)
	}
}

func (a *Autoscaler) pausedClampsFor(cur int) []Clamp {
	if a.pausedAt != cur || a.pausedClamps == nil {
		a.pausedAt = cur
		a.pausedClamps = []Clamp{{Kind: ClampPaused, From: cur, To: cur, Reason: "autoscaling paused by ScaleDeployment"}}
	}
	return a.pausedClamps
}

// ceilCount is ceil(x) as a replica count; a hair of rounding below an integer does not
// add a replica, and an absurd figure (a capacity near zero) is capped.
func ceilCount(x float64) int {
	if !(x > 0) {
		return 0
	}
	return int(math.Min(math.Ceil(x-1e-9), 1<<20))
}

// ToProto turns a decision into the journal's form. Acted is Change && !DryRun.
func ToProto(d Decision, deployment string, epoch int64) *llmscalerv1.Decision {
	out := &llmscalerv1.Decision{
		Time:         timestampOf(d.Time),
		Deployment:   deployment,
		Reason:       d.Reason,
		FromReplicas: u32(d.Current),
		ToReplicas:   u32(d.Desired),
		Policy:       d.Policy,
		Recommended:  u32(d.Recommended),
		Stable:       windowValues(d.Stable),
		Panic:        windowValues(d.Panic),
		Acted:        d.Change && !d.DryRun,
		Epoch:        epoch,
	}
	for _, c := range d.Clamps {
		out.Clamps = append(out.Clamps, &llmscalerv1.Clamp{Kind: c.Kind, From: u32(c.From), To: u32(c.To), Reason: c.Reason})
	}
	return out
}

func u32(n int) uint32 {
	if n < 0 {
		return 0
	}
	return uint32(min(n, math.MaxUint32))
}

func windowValues(v window.Values) *llmscalerv1.WindowValues {
	return &llmscalerv1.WindowValues{
		Window:                    durationOf(v.Span),
		ArrivalRate:               v.ArrivalRate,
		Waiting:                   v.Waiting,
		Running:                   v.Running,
		KvCacheUsage:              v.KVCache,
		TtftP95Seconds:            v.TTFTP95,
		E2EP95Seconds:             v.E2EP95,
		E2EMeanSeconds:            v.E2EMean,
		GpuUtilizationPercent:     v.GPUUtil,
		GenerationTokensPerSecond: v.GenerationTPS,
		FinishedPerSecond:         v.FinishedPerSec,
		Ready:                     u32(v.Ready),
		Starting:                  u32(v.Starting),
		Stale:                     u32(v.Stale),
	}
}
