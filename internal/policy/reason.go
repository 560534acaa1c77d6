package policy

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// Reasons are kept as codes and figures during an evaluation and put into words only when
// the decision is worth journaling, so a steady hold formats nothing.

type causeCode uint8

const (
	causeNone causeCode = iota
	causePaused
	causeNoReady

	causeThUp
	causeThDown
	causeThWithin

	causeTgScale
	causeTgWithin
	causeTgUnready

	causeSLOPanic
	causeSLOPanicCovered
	causeSLOPanicLatencyOnly
	causeSLOLatencyNotLoad
	causeSLOSize
	causeSLOFits
	causeSLOSpare
	causeSLOSpareWaiting
	causeSLOStarting
	causeSLOAtMin
	causeFromZero
)

// cause is why the policy recommended what it did, with the figures that say so.
type cause struct {
	code causeCode
	// Threshold: flags of the conditions met (1 queue, 2 response time, 4 GPU).
	// SLO panic: flags of the risks seen (1 latency, 2 backlog, 4 arrival rate).
	flags      uint8
	a, b, c, d float64
	n          int
}

// phrase is a hold's cause in static words.
func (c causeCode) phrase() string {
	switch c {
	case causePaused:
		return "autoscaling paused"
	case causeNoReady:
		return "no ready replica to measure"
	case causeThWithin:
		return "metrics within thresholds"
	case causeThUp, causeThDown:
		return "threshold crossed"
	case causeTgWithin:
		return "metric within tolerance of target"
	case causeTgUnready:
		return "starting or stale replicas would take the excess"
	case causeTgScale:
		return "metric off target"
	case causeSLOPanicCovered:
		return "SLO at risk, starting replicas will cover it"
	case causeSLOFits:
		return "capacity matches demand"
	case causeSLOSpareWaiting:
		return "spare capacity, waiting out the scale-down delay"
	case causeSLOStarting:
		return "replicas starting"
	case causeSLOAtMin:
		return "at min_replicas"
	case causeSLOLatencyNotLoad:
		return "latency over target but not load-bound: more replicas would not help"
	}
	return "no change needed"
}

type clampCode uint8

const (
	clampNone clampCode = iota
	clampStep
	clampPanicStep
	clampCooldown
	clampStabUp
	clampStabDown
	clampRateUp
	clampRateDown
	clampStale
	clampUnreported
	clampNoWindow
	clampMax
	clampMin
	clampDryRun
)

// words is the clamp's reason; a and b are its figures.
func (c *clampRec) words() string {
	switch c.code {
	case clampStep:
		return fmt.Sprintf("max_step: at most %d replicas per decision", int(c.a))
	case clampPanicStep:
		return fmt.Sprintf("panic_max_step: at most %d replicas per panic decision", int(c.a))
	case clampCooldown:
		return fmt.Sprintf("cooldown: %s of %s left", secs(c.a), secs(c.b))
	case clampStabUp:
		return fmt.Sprintf("scale-up stabilization: lowest recommendation in %s is %d", secs(c.b), int(c.a))
	case clampStabDown:
		return fmt.Sprintf("scale-down stabilization: highest recommendation in %s is %d", secs(c.b), int(c.a))
	case clampRateUp:
		return fmt.Sprintf("rate limit: at most %d replicas added per %s", int(c.a), secs(c.b))
	case clampRateDown:
		return fmt.Sprintf("rate limit: no fewer than %d replicas within %s", int(c.a), secs(c.b))
	case clampStale:
		return fmt.Sprintf("no scale-down on missing data: %d replicas without data for over %s", int(c.a), secs(c.b))
	case clampUnreported:
		return fmt.Sprintf("no scale-down on missing data: %d live replicas never reported", int(c.a))
	case clampNoWindow:
		return "no scale-down on missing data: the windows hold too few recent points"
	case clampMax:
		return fmt.Sprintf("max_replicas %d", int(c.a))
	case clampMin:
		return fmt.Sprintf("min_replicas %d", int(c.a))
	case clampDryRun:
		return "dry run: decided, not acted on"
	}
	return ""
}

// holdText is "hold at N: <phrase>", cached so a steady hold allocates nothing.
func (a *Autoscaler) holdText(n int) string {
	code := a.cause.code
	for i := range a.holds {
		if h := &a.holds[i]; h.text != "" && h.n == n && h.code == code {
			return h.text
		}
	}
	h := &a.holds[a.nextHold]
	a.nextHold = (a.nextHold + 1) % len(a.holds)
	*h = holdReason{n: n, code: code, text: "hold at " + strconv.Itoa(n) + ": " + code.phrase()}
	return h.text
}

// journalText is the full line for a decision worth journaling.
func (a *Autoscaler) journalText(d *Decision) string {
	var b strings.Builder
	switch {
	case d.Change:
		fmt.Fprintf(&b, "scale %d -> %d: ", d.Current, d.Desired)
	case d.DryRun && a.nClamps > 0 && a.clamps[a.nClamps-1].code == clampDryRun:
		fmt.Fprintf(&b, "dry run, would scale %d -> %d: ", d.Current, a.clamps[a.nClamps-1].from)
	default:
		fmt.Fprintf(&b, "hold at %d: ", d.Current)
	}
	b.WriteString(a.causeText())
	for i := 0; i < a.nClamps; i++ {
		if a.clamps[i].code == clampDryRun {
			continue
		}
		b.WriteString("; ")
		b.WriteString(a.clamps[i].words())
	}
	return b.String()
}

// causeText puts the cause into words with its figures.
func (a *Autoscaler) causeText() string {
	c := &a.cause
	switch c.code {
	case causeThUp:
		return a.thresholdText(true)
	case causeThDown:
		return a.thresholdText(false)
	case causeTgScale:
		return fmt.Sprintf("%s %s vs target %s (ratio %.2f, tolerance %g) in %s window",
			a.targetMetricName(), num(c.a), num(c.b), c.a/c.b, a.cfg.target.tolerance, secs(a.cfg.panic.Seconds()))
	case causeSLOPanic, causeSLOPanicLatencyOnly, causeSLOPanicCovered:
		return a.panicText()
	case causeSLOSpare:
		return fmt.Sprintf("spare capacity: %d replicas are the most the demand needed in the last %s",
			c.n, secs(c.d))
	case causeFromZero:
		return fmt.Sprintf("scale from zero: %s requests waiting in routers", num(c.a))
	case causeSLOSize:
		lead := ""
		sizing := "x " + num(1+c.b) + " headroom"
		if c.flags&2 != 0 {
			sizing += " (learned)"
		}
		if c.flags&1 != 0 {
			sizing = "with one replica spare"
		}
		return fmt.Sprintf("%s%s req/s %s needs %d replicas at %s req/s each in %s window",
			lead, num(c.a), sizing, c.n, num(c.c), secs(a.cfg.stable.Seconds()))
	}
	return c.code.phrase()
}

func (a *Autoscaler) thresholdText(up bool) string {
	c, t := &a.cause, &a.cfg.threshold
	var parts []string
	win := " in " + secs(a.cfg.panic.Seconds()) + " window"
	if up {
		if c.flags&1 != 0 {
			parts = append(parts, fmt.Sprintf("queue %s > %s", num(c.a), num(t.queueUp)))
		}
		if c.flags&2 != 0 {
			parts = append(parts, fmt.Sprintf("mean response %s > %s", secs(c.b), secs(t.responseUpS)))
		}
		if c.flags&4 != 0 {
			parts = append(parts, fmt.Sprintf("GPU %s %% > %s %%", num(c.c), num(t.gpuUp)))
		}
		return strings.Join(parts, ", ") + win
	}
	return fmt.Sprintf("queue %s < %s, mean response %s < %s, GPU %s %% < %s %%%s",
		num(c.a), num(t.queueDown), secs(c.b), secs(t.responseDownS), num(c.c), num(t.gpuDown), win)
}

func (a *Autoscaler) panicText() string {
	c, s := &a.cause, &a.cfg.slo
	var parts []string
	if c.flags&1 != 0 {
		parts = append(parts, fmt.Sprintf("p%g %s %s > %s target", s.percentile, a.sloMetricName(), secs(c.a), secs(s.targetS)))
	}
	if c.flags&2 != 0 {
		parts = append(parts, fmt.Sprintf("queue of %s cannot drain within %s at %s req/s arriving", num(c.b), secs(s.targetS), num(c.c)))
	}
	if c.flags&4 != 0 && c.flags&2 == 0 {
		parts = append(parts, fmt.Sprintf("%s req/s arriving > %s req/s ready capacity", num(c.c), num(c.d)))
	}
	out := strings.Join(parts, ", ") + " in " + secs(a.cfg.panic.Seconds()) + " panic window"
	switch c.code {
	case causeSLOPanicCovered:
		out += fmt.Sprintf("; %d starting replicas will cover it", c.n)
	case causeSLOPanicLatencyOnly:
		out += "; capacity model says enough, adding one"
	}
	return out
}

func (a *Autoscaler) targetMetricName() string {
	switch a.cfg.target.metric {
	case llmscalerv1.TargetMetric_TARGET_METRIC_WAITING:
		return "waiting per replica"
	case llmscalerv1.TargetMetric_TARGET_METRIC_KV_CACHE:
		return "KV-cache usage"
	case llmscalerv1.TargetMetric_TARGET_METRIC_GPU_UTILIZATION:
		return "GPU utilization %"
	}
	return "in-flight per replica"
}

func (a *Autoscaler) sloMetricName() string {
	if a.cfg.slo.e2e {
		return "E2E latency"
	}
	return "TTFT"
}

// num formats a figure for a person: three significant digits, whole numbers from 100 up.
func num(x float64) string {
	if math.Abs(x) >= 100 {
		return strconv.FormatFloat(x, 'f', 0, 64)
	}
	return strconv.FormatFloat(x, 'g', 3, 64)
}

// secs formats seconds as "2 s" or "0.35 s", short enough for a one-line reason.
func secs(x float64) string { return num(x) + " s" }

func timestampOf(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func durationOf(d time.Duration) *durationpb.Duration { return durationpb.New(d) }
