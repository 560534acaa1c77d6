package policy

import (
	"math"
	"time"

	"github.com/llmscaler/llmscaler/internal/window"
)

const (
	// capacityTau is the time constant of the capacity EWMA: long enough to average a
	// minute of saturated samples, short enough to follow a change in request mix.
	capacityTau = 60 * time.Second
	// minLatencyRequests is how many requests a window needs before its percentile is
	// trusted: p95 of a handful of requests is mostly noise.
	minLatencyRequests = 10
	// downMargin is the hysteresis of a scale-down: the remaining replicas must carry the
	// demand with headroom plus this share, so a demand that sits on the boundary between
	// two counts does not flap between them.
	downMargin = 0.1
	// arrivalSigmas is how far above ready capacity the panic window's arrival rate must be
	// before it alone means panic, in standard deviations of a Poisson count over the window:
	// at 3 a steady load sized with headroom almost never trips it by chance.
	arrivalSigmas = 3
)

// sloState is the SLO policy's memory.
type sloState struct {
	// capacity is the estimated requests/s one ready replica serves; measured is how much
	// saturated time went into it (0: still the prior).
	capacity float64
	measured time.Duration
	lastEval time.Time
	// spare is set while the stable window has shown spare capacity since spareSince.
	spare      bool
	spareSince time.Time
	// latAddLoad and latAddLatency are the per-replica load and the latency when a replica
	// was last added for latency alone; latStuck is set when that did not help, so latency
	// is not load-bound now and stops driving the count until it is back within target.
	latAddLoad, latAddLatency float64
	latStuck                  bool
	// readyAt is scratch for the expected ready times of starting replicas.
	readyAt []time.Time
}

// latency is the SLO metric at its percentile over a window, and whether enough requests
// back it.
func (c *sloConfig) latency(v *window.Values) (float64, bool) {
	s := v.TTFT()
	if c.e2e {
		s = v.E2E()
	}
	return s.Quantile(c.quantile), v.Requests >= minLatencyRequests
}

// learnCapacity updates the per-replica capacity estimate from the windows.
//
//   - A replica whose queue stayed non-empty through a report interval was serving as fast
//     as it can: the panic window's SaturatedFinishedPerReplica is a direct sample. The
//     estimate is a running mean of samples until capacityTau of them is seen, then an EWMA
//     with that time constant, so the first measurement replaces the prior at once.
//   - Serving d requests/s per replica for a whole stable window with the SLO met and no
//     queue proves a capacity of at least d: the estimate is raised to it. This undoes an
//     underestimate (a heavy request mix that has passed) without ever overloading.
func (a *Autoscaler) learnCapacity(in *Input) {
	s, c := &a.slo, &a.cfg.slo
	dt := in.ReportInterval
	if !s.lastEval.IsZero() && in.Now.After(s.lastEval) {
		dt = in.Now.Sub(s.lastEval)
	}
	dt = min(max(dt, time.Millisecond), a.cfg.panic)
	s.lastEval = in.Now
	if sat := in.Panic.SaturatedFinishedPerReplica; sat > 0 {
		s.measured += dt
		alpha := float64(dt) / float64(min(capacityTau, s.measured))
		s.capacity += alpha * (sat - s.capacity)
	}
	st := &in.Stable
	if st.Ready > 0 && st.Stale == 0 && st.Starting == 0 && in.Starting == 0 &&
		st.Covered >= st.Span*9/10 && st.Waiting < 1 {
		if lat, ok := c.latency(st); ok && lat <= c.targetS {
			if d := st.FinishedPerSec / float64(st.Ready); d > s.capacity {
				s.capacity = d
			}
		}
	}
}

// evalSLO keeps the latency SLO with as few replicas as it can; see the package doc.
func (a *Autoscaler) evalSLO(in *Input, cur int) (raw, want int, panicking bool) {
	c, s := &a.cfg.slo, &a.slo
	a.learnCapacity(in)
	capacity := max(s.capacity, 1e-6)
	h := c.headroom
	p, st := &in.Panic, &in.Stable
	arrivalP := max(p.ArrivalRate, 0)
	backlog := max(p.Waiting, 0)
	readyCap := float64(p.Ready) * capacity

	// Is the SLO at risk now?
	var risk uint8
	latP, okP := c.latency(p)
	switch {
	case okP && latP > c.targetS && !s.latStuck:
		risk |= 1
	case okP && latP <= c.targetS:
		s.latStuck, s.latAddLoad = false, 0
	}
	if backlog >= 1 && (arrivalP >= readyCap || backlog/(readyCap-arrivalP) > c.targetS) {
		risk |= 2
	}
	if cov := p.Covered.Seconds(); cov > 0 && arrivalP > readyCap+arrivalSigmas*math.Sqrt(readyCap/cov) {
		risk |= 4
	}

	if risk != 0 {
		s.spare = false
		a.cause = cause{code: causeSLOPanic, flags: risk, a: latP, b: backlog, c: arrivalP, d: readyCap}
		// Size for the panic window's arrivals with headroom, plus draining the backlog as
		// it will stand when a replica started now is ready, counting starting replicas
		// from their expected ready times. Draining within the target is the goal when cold
		// starts are quick; with slow ones the drain is spread over one cold start, since a
		// faster plan would buy replicas that arrive after the queue is gone.
		projected := a.projectBacklog(in, backlog, arrivalP, capacity, p.Ready)
		horizon := max(c.targetS, in.ColdStart.Seconds())
		need := ceilCount((arrivalP*(1+h) + projected/horizon) / capacity)
		if need <= cur {
			if in.Starting > 0 {
				a.cause.code, a.cause.n = causeSLOPanicCovered, in.Starting
				return cur, cur, true
			}
			if risk != 1 || backlog >= 1 {
				// The model says the capacity on hand and on its way drains the queue in
				// time; latency over target is that queue, which is going.
				a.cause.code = causeSLOFits
				return cur, cur, true
			}
			// Latency is over target with no queue and the model saying there is capacity
			// enough: the estimate is too high for this load (for E2E, per-request speed
			// falls as batches grow). Learn the load the SLO broke at, and add one replica
			// (one per cold start, as the next waits for it) as long as each one helps.
			perReplica := arrivalP / float64(max(p.Ready, 1))
			if s.latAddLoad > 0 && perReplica < 0.95*s.latAddLoad && latP >= 0.95*s.latAddLatency {
				// The last replica added took load off each replica but not latency off
				// the requests: more replicas will not meet this target.
				s.latStuck = true
				a.cause.code = causeSLOLatencyNotLoad
				return cur, cur, true
			}
			s.latAddLoad, s.latAddLatency = perReplica, latP
			if perReplica < s.capacity {
				s.capacity += 0.25 * (perReplica - s.capacity)
			}
			a.cause.code = causeSLOPanicLatencyOnly
			need = cur + 1
		}
		return need, need, true
	}

	// Steady sizing on the stable window.
	arrivalS := max(st.ArrivalRate, 0)
	need := ceilCount(arrivalS * (1 + h) / capacity)
	a.cause = cause{code: causeSLOFits, a: arrivalS, c: capacity, n: need}
	switch {
	case need > cur:
		s.spare = false
		a.cause.code = causeSLOSize
		return need, need, false
	case ceilCount(arrivalS*(1+h)*(1+downMargin)/capacity) < cur:
		latS, okS := c.latency(st)
		if (okS && latS > c.targetS && !s.latStuck) || st.Covered < st.Span/2 {
			s.spare = false
			return cur, cur, false
		}
		if in.Starting > 0 {
			// Capacity is still arriving; its effect is not in the window yet.
			s.spare = false
			a.cause.code = causeSLOStarting
			return cur, cur, false
		}
		if !s.spare {
			s.spare, s.spareSince = true, in.Now
		}
		lasted := in.Now.Sub(s.spareSince)
		// The first step waits out the delay; each further one a panic window after the
		// last change, long enough for a queue to show if the step went too far. Spare
		// capacity is judged from demand and capacity, not from the current count, so it
		// stays valid across steps.
		if lasted < c.delay || (a.scaled && in.Now.Sub(a.lastScale) < a.cfg.panic) {
			a.cause.code = causeSLOSpareWaiting
			return cur, cur, false
		}
		if cur <= in.Min {
			a.cause.code = causeSLOAtMin
			return cur, cur, false
		}
		a.cause.code, a.cause.d = causeSLOSpare, lasted.Seconds()
		return cur - 1, cur - 1, false
	default:
		s.spare = false
		return cur, cur, false
	}
}

// projectBacklog is the queue, in requests, expected when a replica started now would be
// ready: it grows at the arrival rate less the capacity of the ready replicas, and each
// starting replica adds its capacity at its expected ready time.
func (a *Autoscaler) projectBacklog(in *Input, backlog, arrival, capacity float64, ready int) float64 {
	end := in.Now.Add(in.ColdStart)
	times := a.slo.readyAt[:0]
	for _, since := range in.StartingSince {
		at := since.Add(in.ColdStart)
		if at.Before(in.Now) {
			at = in.Now // overdue: any moment now
		}
		if at.After(end) {
			at = end
		}
		// Insertion sort: a handful of replicas start at once.
		times = append(times, at)
		for i := len(times) - 1; i > 0 && times[i].Before(times[i-1]); i-- {
			times[i], times[i-1] = times[i-1], times[i]
		}
	}
	a.slo.readyAt = times
	t, k := in.Now, float64(ready)
	for _, at := range times {
		backlog = max(0, backlog+(arrival-k*capacity)*at.Sub(t).Seconds())
		t, k = at, k+1
	}
	return max(0, backlog+(arrival-k*capacity)*end.Sub(t).Seconds())
}
