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
	// priorWeight is how much saturated time the prior counts as: a few seconds of
	// samples, each a handful of finished requests, move it only part of the way.
	priorWeight = 20 * time.Second
	// trendSigmas is how many standard deviations of chance a rising arrival rate must
	// exceed before the policy sizes for where it is heading.
	trendSigmas = 3
	// trendPersist is how long a rise must last before the policy sizes for its trend, and
	// trendMaxRise the most it projects, as a share of the stable rate.
	trendPersist = 10 * time.Second
	trendMaxRise = 0.5
	// backlogNoise is the queue per ready replica below which a queue is not a backlog.
	backlogNoise = 0.5
	// minLatencyRequests is how many requests a window needs before its percentile is
	// trusted: p95 of a handful of requests is mostly noise.
	minLatencyRequests = 10
	// downMargin is the hysteresis of a scale-down: the remaining replicas must carry the
	// demand with headroom plus this share, so a demand that sits on the boundary between
	// two counts does not flap between them.
	downMargin = 0.05
	// burstPersist is how long arrivals above ready capacity must last, in panic windows,
	// before the policy plans for them to go on for a whole cold start: a burst of a few
	// seconds is over long before a replica started for it is ready, and is served by the
	// queue and the replicas on hand.
	burstPersist = 2
	// maxDelayFactor bounds how far regret stretches the scale-down delay: at most this
	// many times the configured delay.
	maxDelayFactor = 8
	// downRecords is how many recent scale-downs are remembered to tell regret.
	downRecords = 8
	// arrivalSigmas is how far above ready capacity the panic window's arrival rate must be
	// before it alone means panic, in standard deviations of a Poisson count over the window:
	// at 3 a steady load sized with headroom almost never trips it by chance.
	arrivalSigmas = 3
	// raiseSigmas is how many standard deviations of a Poisson count below what a window
	// finished a raise of the capacity estimate goes: at 4 the most of a day's windows
	// (about 3.2 standard deviations above the mean) stays below the mean.
	raiseSigmas = 4
	// breachGrace is how many panic windows without a breach end one.
	breachGrace = 2
)

// sloState is the SLO policy's memory.
type sloState struct {
	// capacity is the estimated requests/s one ready replica serves; measured is how much
	// saturated time went into it (0: still the prior).
	capacity float64
	measured time.Duration
	lastEval time.Time
	// breachSince is when the panic window's latency went over the target; zero while it
	// is within.
	breachSince time.Time
	// breachSeen is when the breach was last seen.
	breachSeen time.Time
	// risingSince is when the arrival rate's rise last became significant; zero while not.
	risingSince time.Time
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
	// overSince is when the panic window's arrivals went above ready capacity; zero while
	// they are not.
	overSince time.Time
	// delay is the scale-down delay in force: the configured one, stretched while recent
	// scale-downs were regretted (undone by a scale-up within a cold start and a delay),
	// and shrinking back while they are not. downs are the recent scale-downs.
	delay time.Duration
	downs [downRecords]downRecord
	// needs is what the steady sizing asked for (with the scale-down margin), each entry
	// kept only while nothing later asked for as much: its first entry since a time is the
	// most asked for since then.
	needs []stampedCount
	// panicNeed is the count the panic's arrival rate needs, without its backlog: a
	// scale-down that left fewer is regretted if its replica was missed (judgeRegret).
	panicNeed int
	// regretTo is the most that the scale-downs awaiting that judgement left (0: none
	// awaits it), and regretAt when a replica started for their panic is ready.
	regretTo int
	regretAt time.Time
	// downFull says the scale-down being decided goes to the current need (downRecord.full).
	downFull bool
	// shrunk is when the delay last shrank back.
	shrunk time.Time
	// firstEval is when the policy first ran: its need history covers only the time since.
	firstEval time.Time
	// lastReady is the stable window's ready count at the last evaluation, and readySince
	// since when it has been that.
	lastReady  int
	readySince time.Time
	// rise learns the headroom from the recent rises of the demand (headroom.go).
	rise riseTracker
	// model fits the replicas' busy second to their steps, output and prompt tokens
	// (capmodel.go); probedAt is when the capacity was last probed upwards.
	model    batchModel
	probedAt time.Time
	// satCapacity is the mean of the saturated rates measured (an EWMA over capacityTau):
	// probes stay below what saturated replicas served.
	satCapacity float64
	// ceiling is the capacity model's bound, smoothed over ceilingTau (0: none yet).
	ceiling float64
}

// stampedCount is a replica count and when it was asked for.
type stampedCount struct {
	at time.Time
	n  int
}

// maxNeeds bounds the steady-need history: entries are strictly decreasing counts.
const maxNeeds = 64

// noteNeed records the steady sizing's count at now, dropping what it supersedes and what
// is older than horizon.
func (s *sloState) noteNeed(now time.Time, n int, horizon time.Duration) {
	for len(s.needs) > 0 && s.needs[len(s.needs)-1].n <= n {
		s.needs = s.needs[:len(s.needs)-1]
	}
	drop := 0
	for drop < len(s.needs) && (now.Sub(s.needs[drop].at) > horizon || len(s.needs)-drop >= maxNeeds) {
		drop++
	}
	s.needs = append(s.needs[:0], s.needs[drop:]...)
	s.needs = append(s.needs, stampedCount{at: now, n: n})
}

// heldNeed is the most the steady sizing asked for since since.
func (s *sloState) heldNeed(since time.Time) int {
	for _, e := range s.needs {
		if !e.at.Before(since) {
			return e.n
		}
	}
	return 0
}

// downRecord is one scale-down: the count it left and when.
type downRecord struct {
	to int
	at time.Time
	// full is set when it went to what the demand needs now, not to a count the recent
	// history holds: only such a scale-down, unregretted, says the delay could be shorter.
	full bool
}

// regretWindow is how soon after a scale-down a scale-up back to its count means the
// scale-down was a mistake: within a cold start plus the delay, the replica stopped would
// have cost less kept warm than stopped and started again, and its absence was felt.
func (a *Autoscaler) regretWindow(in *Input) time.Duration {
	return in.ColdStart + a.cfg.slo.delay
}

// noteScale updates the adaptive scale-down delay with a change of the count from cur to
// want, acted on at in.Now; panicked says the change was for an SLO at risk.
func (a *Autoscaler) noteScale(in *Input, cur, want int, code causeCode) {
	panicked := code == causeSLOPanic || code == causeSLOPanicCovered || code == causeSLOPanicLatencyOnly
	s, c := &a.slo, &a.cfg.slo
	if s.delay < c.delay {
		s.delay = c.delay
	}
	horizon := a.regretWindow(in)
	// Scale-downs older than the horizon were not regretted: the delay shrinks back a step.
	// The delay shrinks back a step at most once per horizon, however many steps one
	// scale-down took.
	for i := range s.downs {
		d := &s.downs[i]
		if !d.at.IsZero() && in.Now.Sub(d.at) > horizon {
			d.at = time.Time{}
			if d.full && in.Now.Sub(s.shrunk) > horizon {
				s.delay, s.shrunk = max(c.delay, s.delay*3/4), in.Now
			}
		}
	}
	switch {
	case want < cur:
		// Remember it in the oldest slot.
		oldest := 0
		for i := range s.downs {
			if s.downs[i].at.IsZero() {
				oldest = i
				break
			}
			if s.downs[i].at.Before(s.downs[oldest].at) {
				oldest = i
			}
		}
		s.downs[oldest] = downRecord{to: want, at: in.Now, full: s.downFull}
	case want > cur && !panicked:
		// Demand that rose again soon after a scale-down says nothing for a shorter delay.
		for i := range s.downs {
			s.downs[i].full = false
		}
	case want > cur && panicked:
		// Only a scale-up for an SLO at risk is regret: one that follows a demand that
		// sits on the boundary between two counts costs a cold start, not the SLO.
		// It is judged once a replica started for it is ready: a burst that is over by then
		// was the fleet's to absorb, and the scale-down it followed was no mistake.
		regretNow := false
		for i := range s.downs {
			d := &s.downs[i]
			switch {
			case d.at.IsZero():
			case s.panicNeed > d.to && a.cause.flags&1 != 0:
				// The latency is over target already: its absence was felt.
				d.at, regretNow = time.Time{}, true
			case s.panicNeed > d.to:
				if s.regretTo == 0 {
					s.regretAt = in.Now.Add(in.ColdStart)
				}
				d.at, s.regretTo = time.Time{}, max(s.regretTo, d.to)
			default:
				d.full = false
			}
		}
		if regretNow {
			a.stretchDelay()
		}
	}
}

// stretchDelay doubles the scale-down delay in force for a regretted scale-down, up to
// maxDelayFactor times the configured one.
func (a *Autoscaler) stretchDelay() {
	s, c := &a.slo, &a.cfg.slo
	s.delay = min(2*max(s.delay, c.delay), maxDelayFactor*c.delay)
}

// judgeRegret settles a pending regret (noteScale): the scale-down was a mistake if the
// latency goes over target (breach; not while it is known not to be load-bound) before a replica started for the panic is ready, or if
// by then the count it left cannot carry the arrivals. Arrival is the higher of the panic
// and stable windows' rates, so a demand that lasted the cold start counts though the last
// seconds dipped.
func (a *Autoscaler) judgeRegret(now time.Time, arrival, capacity float64, breach bool) {
	s := &a.slo
	if s.regretTo == 0 || (now.Before(s.regretAt) && !breach) {
		return
	}
	if breach || arrival > float64(s.regretTo)*capacity {
		a.stretchDelay()
	}
	s.regretTo = 0
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
//   - While the panic window's latency is over the target although the estimate says the
//     ready replicas have the headroom to spare, the estimate is too high, the replicas are
//     truly saturated, and those whose queue stayed non-empty through a report interval were
//     serving as fast as they can: saturatedRate is a direct sample. The estimate is a
//     running mean of the prior (weighted as priorWeight of samples) and the samples until
//     capacityTau of them is seen, then an EWMA with that time constant. A queue alone is
//     not enough: with continuous batching, a request or two wait now and then behind a
//     chunked prefill at any load, and LLM requests finish seconds after they start, so a
//     replica that has just filled finishes far fewer requests per second than it serves.
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
	// A breach counts as evidence against the estimate only while the estimate says the
	// ready replicas carry the arrivals with the headroom to spare: a fleet that is short by
	// the model's own count breaches as the model expects, and says nothing of capacity.
	p := &in.Panic
	lat, ok := c.latency(p)
	covered := float64(p.Ready)*s.capacity >= max(p.ArrivalRate, 0)*(1+c.headroom)
	// A queue left by a time the fleet was short drains for minutes after the fleet has
	// grown, with latency over target and replicas busy serving prefills of the backlog: it
	// says nothing of what a replica sustains. Only a breach while the requests in flight
	// are not falling (arrivals at least what finishes) says the replicas cannot keep up.
	draining := p.FinishedPerSec > max(p.ArrivalRate, 0)
	// The panic window is short and its figures noisy: a breach ends only once none has
	// been seen for breachGrace, or a long breach (a queue of long prompts growing for
	// minutes) would restart its clock on every window whose p95 dipped under the target.
	switch {
	case !ok || lat <= c.targetS || !covered || draining:
		if in.Now.Sub(s.breachSeen) > breachGrace*a.cfg.panic {
			s.breachSince = time.Time{}
		}
	case s.breachSince.IsZero():
		s.breachSince, s.breachSeen = in.Now, in.Now
	default:
		s.breachSeen = in.Now
	}
	// Only a breach that has lasted a few request lifetimes says what a saturated replica
	// serves: before that, replicas that have just filled up serve prefills first and
	// finish little.
	settle := max(a.cfg.panic, time.Duration(2*in.Stable.E2EMean*float64(time.Second)))
	if sat := saturatedRate(in); sat > 0 && !s.breachSince.IsZero() && s.breachSeen.Equal(in.Now) && in.Now.Sub(s.breachSince) >= settle {
		s.measured += dt
		alpha := float64(dt) / float64(min(capacityTau, s.measured+priorWeight))
		s.capacity += alpha * (sat - s.capacity)
		s.satCapacity = smooth(s.satCapacity, sat, dt, capacityTau)
	}
	st := &in.Stable
	if c.probe {
		s.model.observe(in.Now, dt, p)
		// The model's bound for probes, smoothed so that one window's request mix does not
		// decide a probe.
		if ceil, ok := s.model.ceiling(st); ok {
			s.ceiling = smooth(s.ceiling, ceil, dt, ceilingTau)
		}
	}
	if st.Ready != s.lastReady {
		s.lastReady, s.readySince = st.Ready, in.Now
	}
	// The window's finished requests are the deployment's, those of replicas that left it
	// (drained after a scale-down, finishing what they held) included: they count for the
	// ready replicas only once the count has held for the window and the drain after it.
	held := in.Now.Sub(s.readySince) >= st.Span+settle
	if held && st.Ready > 0 && st.Stale == 0 && st.Starting == 0 && in.Starting == 0 &&
		st.Covered >= st.Span*9/10 && st.Waiting < 1 {
		if lat, ok := c.latency(st); ok && lat <= c.targetS {
			// The finished count is a Poisson count: its maximum over the windows of a day
			// is several standard deviations above its mean, and raising to it would ratchet
			// the estimate up on noise. The lower bound (raiseSigmas below) does not.
			span := st.Covered.Seconds()
			n := st.FinishedPerSec * span
			if d := (n - raiseSigmas*math.Sqrt(n)) / span / float64(st.Ready); d > s.capacity {
				s.capacity = d
			}
		}
	}
	if c.probe {
		a.probeCapacity(in, settle)
	}
}

// smooth moves an exponentially weighted mean with time constant tau towards v over dt; a
// mean of 0 (none yet) starts at v.
func smooth(mean, v float64, dt, tau time.Duration) float64 {
	if mean == 0 {
		return v
	}
	return mean + float64(dt)/float64(tau)*(v-mean)
}

const (
	// ceilingTau smooths the capacity model's bound.
	ceilingTau = 5 * time.Minute
	// probeStep is the least one probe raises the capacity estimate by, once the halfway
	// step to the model's bound is smaller: close to the bound a step of a tenth is what
	// the SLO's margin absorbs.
	probeStep = 0.1
	// probeLatency is the share of the target the stable window's latency must stay under
	// for a probe: a server whose latency grows with its load (long prompts queueing behind
	// each other's prefills) stops the probe before it reaches the target.
	probeLatency = 0.6
	// probeLoad is how much of the capacity estimate, with headroom, the replicas must be
	// carrying: a probe raises an estimate the fleet has followed, not one already ahead of
	// any load seen served.
	probeLoad = 0.6
	// probeBatch is the batch per replica a probe may plan for while the capacity model
	// has no fit: twice the model's least sample batch, so that the replicas' batches are
	// above modelMinBatch with the headroom on top.
	probeBatch = 2 * modelMinBatch
)

// probeCapacity raises the capacity estimate when no prior was configured, the replicas
// carry a load near the estimate (probeLoad) with the stable window's latency within
// probeLatency of the target, no queue and no replica starting, and a stable window and its
// settling time have passed since the last probe. The raise is probeStep, or half the way
// to the capacity model's bound (capmodel.go) when that is more, and never past that bound
// or the saturated rate measured. Without the probe the default prior is a ratchet that
// only moves up on loads it did not plan for: a fleet sized by a low estimate never shows
// it more. The ready count need not have held, as for the raise above: the probe reads no
// finished count but the request mix, which draining replicas do not skew.
func (a *Autoscaler) probeCapacity(in *Input, settle time.Duration) {
	s, c, st := &a.slo, &a.cfg.slo, &in.Stable
	if !s.probedAt.IsZero() && in.Now.Sub(s.probedAt) < st.Span+settle {
		return
	}
	if st.Ready <= 0 || st.Stale > 0 || st.Starting > 0 || in.Starting > 0 ||
		st.Covered < st.Span*9/10 || st.Waiting >= 1 || !s.breachSince.IsZero() {
		return
	}
	lat, ok := c.latency(st)
	if !ok || lat > probeLatency*c.targetS {
		return
	}
	h, _ := a.headroom(max(st.ArrivalRate, 0))
	if max(st.ArrivalRate, 0)/float64(st.Ready)*(1+h) < probeLoad*s.capacity {
		return
	}
	ceil, ok, guess := s.ceiling, s.ceiling > 0, false
	if b := st.Running / float64(st.Ready); !ok && b > 0 && b < modelMinBatch {
		// The model has had nothing to fit: the batches are below what a sample needs.
		// By Little's law a replica serving x requests/s holds x times a request's
		// lifetime in sequences, and at small batches continuous batching barely slows a
		// request down, so x times probeBatch / b is about the rate at which the batch is
		// probeBatch: there, with the headroom on top, the model gets its samples.
		// Without this a default prior far below the truth on short requests is never
		// probed at all: its estimate spreads the load so thin that no batch reaches
		// modelMinBatch.
		// It is a guess, not a model's bound (a server with fewer slots than probeBatch
		// queues before its batch gets there), so the probe takes only probeStep towards
		// it at a time, and stops, as ever, at a queue or a latency past probeLatency.
		ceil, ok, guess = max(st.ArrivalRate, 0)/float64(st.Ready)*probeBatch/b, true, true
	}
	if s.measured > 0 {
		ceil = min(ceil, s.satCapacity)
	}
	if !ok || s.capacity >= ceil {
		return
	}
	next := min(max(s.capacity*(1+probeStep), (s.capacity+ceil)/2), ceil)
	if guess {
		next = min(s.capacity*(1+probeStep), ceil)
	}
	s.capacity = next
	s.probedAt = in.Now
}

// saturatedRate is the requests/s a saturated replica serves: its output tokens/s over the
// output tokens of a finished request in the stable window, which has no lag; or, when the
// windows have no token counts (a server that does not export them), its finished
// requests/s. 0 when no replica was saturated.
func saturatedRate(in *Input) float64 {
	p, st := &in.Panic, &in.Stable
	if p.SaturatedGenerationTPSPerReplica > 0 && st.FinishedPerSec > 0 && st.GenerationTPS > 0 {
		return p.SaturatedGenerationTPSPerReplica * st.FinishedPerSec / st.GenerationTPS
	}
	return p.SaturatedFinishedPerReplica
}

// sized is the replicas that carry arrival at capacity each with headroom h, plus margin of
// the result: ceil(load x (1+h) x (1+margin)), where load = arrival / capacity, and at least
// one replica spare once the load needs a whole one: ceil(load x (1+margin)) + 1. spare
// reports that the spare replica decided. The spare matters for small fleets, where 15 % of
// two replicas is less than one and a rising load waits a whole cold start for the next;
// margin applies to both terms, so that a scale-down is not undone by the next tick.
//
// With a learned headroom (withSpare false) there is no spare replica: the headroom is what
// the demand's rises over a cold start showed it needs.
func sized(arrival, capacity, h, margin float64, withSpare bool) (n int, spare bool) {
	load := arrival / capacity * (1 + margin)
	n = ceilCount(load * (1 + h))
	if withSpare && load >= 1 {
		if m := ceilCount(load) + 1; m > n {
			return m, true
		}
	}
	return n, false
}

// forecast is the arrival rate to size for: the stable window's, or, when the arrival rate
// has been rising beyond what chance explains for trendPersist and still is, the rate its
// trend reaches one cold start from now, so that replicas started now are not already short
// when they are ready.
//
// A linear trend puts each window's mean at the middle of the time it covers, so the slope is
// the difference of the Stable and Long (two stable windows) means over the gap between their
// middles. For Poisson arrivals that difference has variance rate x (1/stable - 1/long) (one
// window holds the other); the projected rise counts only beyond trendSigmas standard
// deviations of it, and never beyond trendMaxRise of the stable rate. Real traffic is
// burstier than Poisson, so a rise must also last, and the panic window must not be below
// the stable mean: a burst passes, a ramp goes on.
func (a *Autoscaler) forecast(in *Input) float64 {
	st, l, s := &in.Stable, &in.Long, &a.slo
	base := max(st.ArrivalRate, 0)
	if l.Span <= st.Span || l.Covered < l.Span*9/10 || st.Covered < st.Span*9/10 || l.Covered <= st.Covered {
		s.risingSince = time.Time{}
		return base
	}
	long := max(l.ArrivalRate, 0)
	ss, ls := st.Covered.Seconds(), l.Covered.Seconds()
	gap := (ls - ss) / 2
	ahead := ss/2 + in.ColdStart.Seconds()
	rise := (base - long) / gap * ahead
	noise := math.Sqrt(base*(1/ss-1/ls)) / gap * ahead
	if rise <= trendSigmas*noise {
		s.risingSince = time.Time{}
		return base
	}
	if s.risingSince.IsZero() {
		s.risingSince = in.Now
	}
	if in.Now.Sub(s.risingSince) < trendPersist || in.Panic.ArrivalRate < base {
		// Not for long enough yet, or the last seconds are below the stable mean: a burst
		// that has passed, not a ramp.
		return base
	}
	return base + min(rise-trendSigmas*noise, trendMaxRise*base)
}

// headroom is the headroom to size rate with: the learned one (learned true) once there is
// history enough, unless the policy fixes its headroom; else the configured one.
func (a *Autoscaler) headroom(rate float64) (h float64, learned bool) {
	if !a.cfg.slo.fixedHeadroom {
		if h, ok := a.slo.rise.headroom(rate); ok {
			return h, true
		}
	}
	return a.cfg.slo.headroom, false
}

// evalSLO keeps the latency SLO with as few replicas as it can; see the package doc.
func (a *Autoscaler) evalSLO(in *Input, cur int) (raw, want int, panicking bool) {
	c, s := &a.cfg.slo, &a.slo
	if s.firstEval.IsZero() {
		s.firstEval = in.Now
	}
	a.learnCapacity(in)
	capacity := max(s.capacity, 1e-6)
	p, st := &in.Panic, &in.Stable
	if st.Covered >= st.Span*9/10 && st.Stale == 0 {
		s.rise.observe(in.Now, max(st.ArrivalRate, 0), in.ColdStart+a.cfg.stable/2, a.cfg.stable)
	}
	arrivalP := max(p.ArrivalRate, 0)
	// The queue in the engines plus what routers hold back (admission control): both wait.
	backlog := max(p.Waiting, 0) + max(in.RouterWaiting, 0)
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
	a.judgeRegret(in.Now, max(arrivalP, st.ArrivalRate), capacity, risk&1 != 0)
	// A queue under half a request per ready replica is the noise of continuous batching
	// (a request waiting behind a long chunked prefill), not a backlog: arrivals beyond
	// capacity are caught below, before a real backlog forms.
	if backlog >= max(1, float64(p.Ready)*backlogNoise) && (arrivalP >= readyCap || backlog/(readyCap-arrivalP) > c.targetS) {
		risk |= 2
	}
	if cov := p.Covered.Seconds(); cov > 0 && arrivalP > readyCap+arrivalSigmas*math.Sqrt(readyCap/cov) {
		risk |= 4
	}
	switch {
	case arrivalP < readyCap:
		s.overSince = time.Time{}
	case s.overSince.IsZero():
		s.overSince = in.Now
	}

	if risk != 0 {
		// A risk the capacity on hand covers holds this tick but leaves the spare-capacity
		// clock running: with long prompts a queue that drains in time comes every minute,
		// and restarting the clock each time would keep a burst's replicas for good.
		a.cause = cause{code: causeSLOPanic, flags: risk, a: latP, b: backlog, c: arrivalP, d: readyCap}
		// Size for the panic window's arrivals with headroom, plus draining the backlog as
		// it will stand when a replica started now is ready, counting starting replicas
		// from their expected ready times. Draining within the target is the goal when cold
		// starts are quick; with slow ones the drain is spread over one cold start, since a
		// faster plan would buy replicas that arrive after the queue is gone.
		// Arrivals above capacity plan for a whole cold start only once they have lasted a
		// few panic windows; until then the burst counts by the queue it has left and the
		// rate is taken to return to the stable window's.
		arrival := arrivalP
		if s.overSince.IsZero() || in.Now.Sub(s.overSince) < burstPersist*a.cfg.panic {
			arrival = min(arrivalP, max(a.forecast(in), 0))
		}
		h, _ := a.headroom(arrival)
		projected := a.projectBacklog(in, backlog, arrival, capacity, p.Ready)
		horizon := max(c.targetS, in.ColdStart.Seconds())
		// An engine's backlog sits in the replicas that have it (a request is dispatched
		// when it arrives), so a new replica cannot take any of it: at most the replicas
		// holding it are busy draining it, and the new ones must carry the arrivals.
		// A router's queue is the exception: any replica takes from it, new ones included.
		drain := min(projected/horizon/capacity, float64(p.Ready)+max(in.RouterWaiting, 0)/horizon/capacity)
		need := ceilCount(arrival*(1+h)/capacity + drain)
		rateNeed := ceilCount(arrival * (1 + h) / capacity)
		s.panicNeed = rateNeed
		s.noteNeed(in.Now, rateNeed, maxDelayFactor*c.delay)
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
			if latS, okS := c.latency(st); !okS || latS <= c.targetS || p.FinishedPerSec > arrivalP {
				// Over target in the panic window only, with no queue: a few requests slow
				// by their own size (a long prompt's prefill), which more replicas do not
				// make faster. A lasting breach shows in the stable window too. So does the
				// tail of a backlog left by a time the fleet was short, while it drains
				// (more finishing than arriving): that says nothing of the capacity either.
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
		s.spare = false
		return need, need, true
	}

	// Steady sizing on the stable window, or where its trend is heading.
	// A learned headroom has the trend in it already (a ramp's rises over a cold start):
	// projecting the trend on top would count it twice.
	arrivalS := max(st.ArrivalRate, 0)
	h, learned := a.headroom(arrivalS)
	if !learned {
		arrivalS = a.forecast(in)
		h, _ = a.headroom(arrivalS)
	}
	need, spare := sized(arrivalS, capacity, h, 0, !learned)
	fewer, _ := sized(arrivalS, capacity, h, downMargin, !learned)
	s.noteNeed(in.Now, fewer, maxDelayFactor*c.delay)
	a.cause = cause{code: causeSLOFits, a: arrivalS, b: h, c: capacity, n: need}
	if spare {
		a.cause.flags = 1
	}
	if learned {
		a.cause.flags |= 2
	}
	switch {
	case need > cur:
		s.spare = false
		a.cause.code = causeSLOSize
		return need, need, false
	case fewer < cur:
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
		// The count goes down to the most the demand needed over the delay in force (a
		// panic counts its arrival rate, not the queue it planned to drain, so replicas
		// started for a backlog go once it is gone), and only after a panic window of spare
		// capacity since the last change, long enough for a queue to show if the step went
		// too far. Before the policy has a delay's history (a new leader), it waits out the
		// delay from the first spare tick instead.
		delay := max(s.delay, c.delay)
		floor := max(fewer, in.Min)
		if in.Now.Sub(s.firstEval) >= delay {
			floor = max(floor, s.heldNeed(in.Now.Add(-delay)))
		} else if lasted < delay {
			floor = cur
		}
		if floor >= cur || lasted < a.cfg.panic || (a.scaled && in.Now.Sub(a.lastScale) < a.cfg.panic) {
			a.cause.code = causeSLOSpareWaiting
			if cur <= in.Min {
				a.cause.code = causeSLOAtMin
			}
			return cur, cur, false
		}
		a.cause.code, a.cause.n, a.cause.d = causeSLOSpare, floor, delay.Seconds()
		s.downFull = floor <= max(fewer, in.Min)
		return floor, floor, false
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
