package router

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// maxSamples bounds the latency samples kept per series and interval. Up to it the
// percentiles are exact; past it they come from a uniform sample of the interval.
const maxSamples = 2048

// Counters are counts of requests. Totals are cumulative since the router first saw the
// deployment or instance; Interval holds their growth since the previous Stats call.
type Counters struct {
	// Arrivals: for a deployment, requests routed to it by their model; for an instance,
	// attempts sent to it (a retried request is one arrival at each of two instances).
	Arrivals uint64
	// Finished are arrivals that ended, however they ended.
	Finished uint64
	// Errors: for a deployment, requests answered 5xx other than Rejected, or whose
	// response broke off; for an instance, attempts that met a connection error, a 5xx or
	// a broken response.
	Errors uint64
	// Rejected are requests answered 503 for want of an instance: queue full or wait over.
	// Deployments only.
	Rejected uint64
	// Cancelled are requests whose client went away first.
	Cancelled uint64
	// Retries are requests sent to a second instance. Deployments only.
	Retries uint64
	// CompletionTokens are output tokens: usage.completion_tokens of a JSON answer; for a
	// stream, its last usage.completion_tokens if it reports one, else its count of SSE
	// data events other than [DONE]. The latter is an estimate: engines may put several
	// tokens in one event, and a chat stream's first event carries only the role.
	CompletionTokens uint64
}

func (c Counters) sub(o Counters) Counters {
	return Counters{
		Arrivals:         c.Arrivals - o.Arrivals,
		Finished:         c.Finished - o.Finished,
		Errors:           c.Errors - o.Errors,
		Rejected:         c.Rejected - o.Rejected,
		Cancelled:        c.Cancelled - o.Cancelled,
		Retries:          c.Retries - o.Retries,
		CompletionTokens: c.CompletionTokens - o.CompletionTokens,
	}
}

// Latency summarises the latencies of the requests that finished in an interval with a
// complete answer below 400.
type Latency struct {
	P50, P95 time.Duration
	// Count is how many requests the summary covers.
	Count uint64
}

// Interval is what happened between the previous Stats call and this one.
type Interval struct {
	Counters
	// TTFT is the time to the first byte of the response body (to the first SSE data event
	// for a stream). E2E is the time to its last byte. For a deployment both are counted
	// from the request's arrival at the router, queueing and retries included; for an
	// instance, from the attempt's start.
	TTFT, E2E Latency
	// TokensPerSecond is CompletionTokens over the interval's length.
	TokensPerSecond float64
}

// Snapshot is what the router measured, as Stats returns it.
type Snapshot struct {
	// Time is the time given to Stats; Since is that of the previous call (or New's).
	Time, Since time.Time
	// Deployments are sorted by name. A removed deployment stays while requests it had
	// are in flight, and then for one more snapshot.
	Deployments []DeploymentStats
}

// DeploymentStats is one deployment's part of a Snapshot.
type DeploymentStats struct {
	Name string
	// Removed is set when the deployment is no longer in the table.
	Removed bool
	// Endpoints are the instances in the table now.
	Endpoints int
	// Waiting are requests queued in the router now; InFlight are those sent to an
	// instance and not finished.
	Waiting, InFlight int
	Total             Counters
	Interval          Interval
	// Instances are sorted by ID. A removed instance stays while it drains, and then for
	// one more snapshot.
	Instances []InstanceStats
}

// NeedsInstance reports demand on a deployment that has no instance to meet it: requests
// waiting now, or any that arrived in the interval. It is the signal to scale from zero.
func (d DeploymentStats) NeedsInstance() bool {
	return !d.Removed && d.Endpoints == 0 && (d.Waiting > 0 || d.Interval.Arrivals > 0)
}

// InstanceStats is one instance's part of a Snapshot.
type InstanceStats struct {
	ID string
	// Removed is set when the instance is no longer in the table: it only drains.
	Removed bool
	// Ejected is set while the instance is left out of balancing after failing.
	Ejected bool
	// InFlight are requests sent to it and not finished.
	InFlight int
	Total    Counters
	Interval Interval
}

// reservoir holds an interval's latency samples: all of them up to maxSamples, then a
// uniform sample (Vitter's algorithm R).
type reservoir struct {
	n  uint64
	xs []time.Duration
}

func (r *reservoir) add(x time.Duration) {
	r.n++
	if len(r.xs) < maxSamples {
		r.xs = append(r.xs, x)
		return
	}
	if j := rand.Uint64N(r.n); j < maxSamples {
		r.xs[j] = x
	}
}

// take summarises the samples and starts a new interval.
func (r *reservoir) take() Latency {
	l := Latency{Count: r.n}
	if len(r.xs) > 0 {
		slices.Sort(r.xs)
		l.P50, l.P95 = rank(r.xs, 0.50), rank(r.xs, 0.95)
	}
	r.n, r.xs = 0, r.xs[:0]
	return l
}

// rank is the nearest-rank percentile of sorted xs.
func rank(xs []time.Duration, q float64) time.Duration {
	i := int(math.Ceil(q*float64(len(xs)))) - 1
	return xs[max(0, min(i, len(xs)-1))]
}

// Stats returns the router's counts and the interval's latencies since the previous call,
// and starts a new interval. It is meant to be called by one reporter, once per report
// interval; now is the end of the interval.
func (r *Router) Stats(now time.Time) Snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	snap := Snapshot{Time: now, Since: r.statsSince}
	secs := now.Sub(r.statsSince).Seconds()
	r.statsSince = now
	r.statsCalled.Store(true)

	interval := func(total Counters, last *Counters, ttft, e2e *reservoir) Interval {
		iv := Interval{Counters: total.sub(*last), TTFT: ttft.take(), E2E: e2e.take()}
		if secs > 0 {
			iv.TokensPerSecond = float64(iv.CompletionTokens) / secs
		}
		*last = total
		return iv
	}
	for _, d := range r.all {
		d.mu.Lock()
		ds := DeploymentStats{
			Name:      d.name,
			Removed:   d.removed,
			Endpoints: len(d.live),
			Waiting:   d.queue.Len(),
			InFlight:  d.active - d.queue.Len(),
			Total:     d.total,
			Interval:  interval(d.total, &d.last, &d.ttft, &d.e2e),
		}
		for _, in := range d.byID {
			ds.Instances = append(ds.Instances, InstanceStats{
				ID:       in.id,
				Removed:  in.removed,
				Ejected:  in.ejected(r.cfg.Now()),
				InFlight: in.outstanding,
				Total:    in.total,
				Interval: interval(in.total, &in.last, &in.ttft, &in.e2e),
			})
			if in.removed && in.outstanding == 0 {
				d.forgetLocked(in)
			}
		}
		slices.SortFunc(ds.Instances, func(a, b InstanceStats) int { return strings.Compare(a.ID, b.ID) })
		if d.drainedLocked() {
			r.forgetLocked(d)
		}
		d.mu.Unlock()
		snap.Deployments = append(snap.Deployments, ds)
	}
	slices.SortFunc(snap.Deployments, func(a, b DeploymentStats) int { return strings.Compare(a.Name, b.Name) })
	return snap
}

// Queued returns the requests waiting in the router and those in flight to instances, now,
// for one deployment (zero for one it does not know). Unlike Stats it starts no interval,
// so a live view may call it as often as it likes beside the reporter.
func (r *Router) Queued(deployment string) (waiting, inFlight int) {
	r.mu.Lock()
	d := r.all[deployment]
	r.mu.Unlock()
	if d == nil {
		return 0, 0
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.queue.Len(), d.active - d.queue.Len()
}
