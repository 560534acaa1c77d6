package policy

import (
	"math"
	"time"

	"github.com/llmscaler/llmscaler/internal/window"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// targetState is the target policy's memory: its recommendations, for stabilization, and
// its scaling events, for rate limits, each in a ring that only grows while it warms up.
type targetState struct {
	recs   timedLog
	events timedLog
	// ready holds the ready count seen at each evaluation over the panic window.
	ready timedLog
}

// timedLog holds (time, value) pairs oldest first and drops those older than a span. Live
// entries are the contiguous tail t[start:], so a scan is a plain loop; the tail is copied
// down when it reaches the end, which keeps the arrays from growing once they hold twice
// the entries of a span.
type timedLog struct {
	t     []int64
	v     []int
	start int
}

func (l *timedLog) push(t int64, v int, span time.Duration) {
	l.prune(t, span)
	if len(l.t) == cap(l.t) && l.start > 0 {
		n := copy(l.t, l.t[l.start:])
		copy(l.v, l.v[l.start:])
		l.t, l.v, l.start = l.t[:n], l.v[:n], 0
	}
	l.t = append(l.t, t)
	l.v = append(l.v, v)
}

// prune drops entries at or before now-span.
func (l *timedLog) prune(now int64, span time.Duration) {
	cut := now - int64(span)
	for l.start < len(l.t) && l.t[l.start] <= cut {
		l.start++
	}
}

// live returns the entries kept, oldest first.
func (l *timedLog) live() ([]int64, []int) { return l.t[l.start:], l.v[l.start:] }

func (s *targetState) addEvent(now time.Time, delta int, span time.Duration) {
	s.events.push(now.UnixNano(), delta, span)
}

// changes sums the replicas added and removed by scaling events after now-period.
func (s *targetState) changes(now time.Time, period time.Duration) (added, removed int) {
	cut := now.UnixNano() - int64(period)
	ts, vs := s.events.live()
	for i, t := range ts {
		v := vs[i]
		if t <= cut {
			continue
		}
		if v > 0 {
			added += v
		} else {
			removed -= v
		}
	}
	return added, removed
}

// targetMetric is the tracked metric per ready replica now, from the panic window. Queue
// figures are deployment totals, divided by the replicas now. KV cache and GPU utilization
// are window means over the replicas of each tick: right after new replicas turn ready those
// means still weigh the old, busier count, and ratio x ready would scale up again for load
// already spread. So their total, mean x the ready count averaged over the window, is
// divided by the replicas now: the sum of usage over target, as HPA means it.
func targetMetric(m llmscalerv1.TargetMetric, p *window.Values, avgReady float64) float64 {
	ready := float64(p.Ready)
	switch m {
	case llmscalerv1.TargetMetric_TARGET_METRIC_WAITING:
		return p.Waiting / ready
	case llmscalerv1.TargetMetric_TARGET_METRIC_KV_CACHE:
		return p.KVCache * avgReady / ready
	case llmscalerv1.TargetMetric_TARGET_METRIC_GPU_UTILIZATION:
		return p.GPUUtil * avgReady / ready
	}
	return (p.Waiting + p.Running) / ready
}

// avgReady is the mean ready count over the evaluations in the panic window, now included.
func (s *targetState) avgReady(now time.Time, ready int, span time.Duration) float64 {
	s.ready.push(now.UnixNano(), ready, span)
	_, vs := s.ready.live()
	sum := 0
	for _, v := range vs {
		sum += v
	}
	return float64(sum) / float64(len(vs))
}

// evalTarget is target tracking as the Kubernetes HPA does it (pkg/controller/podautoscaler
// replica_calculator.go and horizontal.go), evaluated every tick instead of every 15 s.
// HPA reads the current metric at each sync; the panic window's means are this policy's
// "current" reading, short enough to react like HPA and long enough to smooth one sample.
//
//   - ratio = metric/target over ready replicas; no change while |ratio-1| <= tolerance.
//   - Scaling up, starting and stale replicas count as replicas at 0 (HPA's unready and
//     missing pods); scaling down, stale ones count as exactly at target. If that brings the
//     ratio within tolerance, or flips its direction, hold. Else desired = ceil(ratio x ready).
//   - Stabilization: the recommendation is raised to the lowest of the scale-up window and
//     lowered to the highest of the scale-down window (clamp "stabilization").
//   - Rate limits: up to the larger of +max_scale_up_replicas and +max_scale_up_percent of the
//     count at the start of the period, down to -max_scale_down_percent (clamp "rate_limit").
func (a *Autoscaler) evalTarget(in *Input, cur int) (raw, want int) {
	c := &a.cfg.target
	p := &in.Panic
	if p.Ready == 0 || in.Ready == 0 {
		a.cause.code = causeNoReady
		return cur, cur
	}
	m := targetMetric(c.metric, p, a.target.avgReady(in.Now, p.Ready, a.cfg.panic))
	ratio := m / c.target
	a.cause = cause{code: causeTgWithin, a: m, b: c.target}
	raw = cur
	if math.Abs(ratio-1) > c.tolerance {
		ready := float64(p.Ready)
		a.cause.code = causeTgScale
		raw = ceilCount(ratio * ready)
		if unready, missing := float64(in.Starting), float64(p.Stale); ratio > 1 && unready+missing > 0 {
			n := ready + unready + missing
			if r := m * ready / n / c.target; r <= 1+c.tolerance {
				raw, a.cause.code = cur, causeTgUnready
			} else {
				raw = ceilCount(r * n)
			}
		} else if ratio < 1 && missing > 0 {
			n := ready + missing
			if r := (m*ready + c.target*missing) / n / c.target; r >= 1-c.tolerance {
				raw, a.cause.code = cur, causeTgUnready
			} else {
				raw = ceilCount(r * n)
			}
		}
	}
	if raw < cur {
		raw = max(raw, min(cur, in.Min))
	}

	// Stabilization over the recommendations, this one included.
	now := in.Now.UnixNano()
	st := &a.target
	st.recs.push(now, raw, c.historySpan)
	up, down := raw, raw
	upCut, downCut := now-int64(c.upStab), now-int64(c.downStab)
	ts, vs := st.recs.live()
	for i, t := range ts {
		v := vs[i]
		if t > upCut {
			up = min(up, v)
		}
		if t > downCut {
			down = max(down, v)
		}
	}
	want = cur
	if want < up {
		want = up
	}
	if want > down {
		want = down
	}
	if want != raw {
		if want < raw {
			a.addClamp(ClampStabilization, raw, want, clampStabUp, float64(up), c.upStab.Seconds())
		} else {
			a.addClamp(ClampStabilization, raw, want, clampStabDown, float64(down), c.downStab.Seconds())
		}
	}

	// Rate limits against the count at the start of each period.
	switch {
	case want > cur:
		added, removed := st.changes(in.Now, c.upPeriod)
		start := cur - added + removed
		limit := max(start+c.maxUpReplicas, ceilCount(float64(start)*(1+c.maxUpPercent/100)))
		limit = max(limit, cur)
		if want > limit {
			a.addClamp(ClampRateLimit, want, limit, clampRateUp, float64(limit-start), c.upPeriod.Seconds())
			want = limit
		}
	case want < cur:
		added, removed := st.changes(in.Now, c.downPeriod)
		start := cur - added + removed
		limit := min(int(float64(start)*(1-c.maxDownPercent/100)), cur)
		if want < limit {
			a.addClamp(ClampRateLimit, want, limit, clampRateDown, float64(limit), c.downPeriod.Seconds())
			want = limit
		}
	}
	return raw, want
}
