package window

import (
	"math"
	"time"
)

// Phase is where a replica is in its life, as far as the windows care: only Ready replicas
// serve, so only they count towards per-replica means.
type Phase int

const (
	// Starting is a replica that runs but is not healthy yet.
	Starting Phase = iota
	// Ready is a healthy, routable replica.
	Ready
)

// Defaults for Config fields left zero.
const (
	DefaultReportInterval = time.Second
	DefaultStable         = 60 * time.Second
	DefaultPanic          = 6 * time.Second
)

// StaleIntervals is how many report intervals old a replica's latest sample may be before the
// replica counts as stale: its data is then missing, not merely late.
const StaleIntervals = 3

// maxPoints bounds the ring however fast the caller ticks, so a misconfigured tick rate costs
// a bounded amount of memory rather than an unbounded one.
const maxPoints = 1 << 16

// Sample is what one replica reported for one report interval.
type Sample struct {
	// Time is when the data was scraped; a sample's age, and so staleness, is measured from it.
	Time time.Time
	// Waiting and Running are the requests queued and in the running batch at Time.
	Waiting, Running float64
	// KVCache is the share of KV-cache blocks in use, 0-1, when HasKVCache.
	KVCache    float64
	HasKVCache bool
	// TTFT and E2E are time to first token and end-to-end latency over the interval.
	TTFT, E2E Summary
	// Rates over the interval.
	PromptTPS, GenerationTPS, FinishedPerSec float64
	// GPUUtil is the mean utilization of the replica's GPUs in percent, when HasGPUUtil.
	GPUUtil    float64
	HasGPUUtil bool
}

// Config sets the windows. Zero fields take the defaults.
type Config struct {
	// ReportInterval is how often replicas report [1 s]: staleness is measured in it, and the
	// ring holds one point per interval.
	ReportInterval time.Duration
	// Stable [60 s] and Panic [6 s] are the long and short windows. The Deployment only uses
	// them to size its ring; callers pass the span they want to Values.
	Stable, Panic time.Duration
	// History is the longest span callers read, when longer than Stable (a trend over two
	// stable windows): the ring covers it too.
	History time.Duration
}

// WithDefaults returns c with its zero (or negative) fields set to the defaults.
func (c Config) WithDefaults() Config {
	if c.ReportInterval <= 0 {
		c.ReportInterval = DefaultReportInterval
	}
	if c.Stable <= 0 {
		c.Stable = DefaultStable
	}
	if c.Panic <= 0 {
		c.Panic = DefaultPanic
	}
	return c
}

// Values are a deployment's figures over one window ending at the time they were asked for.
type Values struct {
	// Span is the window asked for; Covered how much of it has data (less after a start or a
	// gap in ticks, zero when nothing recent is known).
	Span, Covered time.Duration
	// ArrivalRate is requests/s arriving: requests finished plus the growth of waiting+running
	// over the window. The growth is summed per replica between consecutive ticks, so a
	// replica that joins, leaves or goes stale does not look like a change in load.
	ArrivalRate float64
	// Waiting and Running are deployment totals, time-averaged over the window.
	Waiting, Running float64
	// KVCache (0-1) and GPUUtil (percent) are means over ready replicas and ticks, among those
	// that report them; 0 when none does.
	KVCache, GPUUtil float64
	// Latencies in seconds, merged over the window's requests as the Summary model describes:
	// each tick merges its replicas' summaries, then the window merges the ticks, both as
	// count-weighted mixtures whose quantiles are solved exactly under the model. E2EMean is
	// the count-weighted mean of the replicas' model means, exact under the model.
	TTFTP50, TTFTP95, E2EP50, E2EP95, E2EMean float64
	// Token and request rates, deployment totals time-averaged over the window.
	GenerationTPS, PromptTPS, FinishedPerSec float64
	// Requests is the number of finished requests the latency figures cover, as counted by
	// the replicas' E2E summaries.
	Requests uint64
	// Ready and Starting count replicas with fresh data by phase at the time asked; Stale
	// counts those whose latest sample is older than StaleIntervals report intervals. Every
	// known replica is in exactly one of the three.
	Ready, Starting, Stale int
	// SaturatedFinishedPerReplica is requests/s per ready replica measured in report
	// intervals where the replica's queue was non-empty at both ends, so it was busy
	// throughout: its capacity for the current request mix. 0 if none was saturated.
	SaturatedFinishedPerReplica float64
	// SaturatedGenerationTPSPerReplica is output tokens/s per ready replica over the same
	// intervals. Divided by the output tokens of a request it is the replica's request rate
	// without the lag of finished counts: a replica that has just filled up generates at
	// its full rate at once, but finishes its first requests only seconds later.
	SaturatedGenerationTPSPerReplica float64
}

// TTFT is the window's merged time-to-first-token distribution as a Summary.
func (v Values) TTFT() Summary { return Summary{P50: v.TTFTP50, P95: v.TTFTP95, Count: v.Requests} }

// E2E is the window's merged end-to-end latency distribution as a Summary.
func (v Values) E2E() Summary { return Summary{P50: v.E2EP50, P95: v.E2EP95, Count: v.Requests} }

// sums are running totals over every tick since the Deployment started. A window's figure
// is the difference between the totals at its newest point and at the point just before it,
// so reading a window costs the same whatever its length. In float64 the differences stay
// within about 1e-9 of a window's own figures after a year of one tick a second.
type sums struct {
	covered                             int64   // ns
	waiting, running, gen, prom, finish float64 // integrals over time: value x seconds
	growth                              float64 // requests
	kv, gpu, satFinished, satGen        float64 // sums over replica-ticks
	kvN, gpuN, satN                     int64
	requests                            uint64  // finished requests with latency
	e2eMean                             float64 // requests x their mean E2E latency
}

func (a sums) minus(b sums) sums {
	return sums{
		covered: a.covered - b.covered,
		waiting: a.waiting - b.waiting, running: a.running - b.running,
		gen: a.gen - b.gen, prom: a.prom - b.prom, finish: a.finish - b.finish,
		growth: a.growth - b.growth,
		kv:     a.kv - b.kv, gpu: a.gpu - b.gpu, satFinished: a.satFinished - b.satFinished, satGen: a.satGen - b.satGen,
		kvN: a.kvN - b.kvN, gpuN: a.gpuN - b.gpuN, satN: a.satN - b.satN,
		requests: a.requests - b.requests, e2eMean: a.e2eMean - b.e2eMean,
	}
}

// replica is the latest state of one replica.
type replica struct {
	id    string
	phase Phase
	s     Sample
	// prevWaiting is the queue in the sample before s, to tell a replica busy through a whole
	// interval from one whose queue just formed.
	prevWaiting float64
	hasPrev     bool
	// counted is true once s's latency summaries went into a point, so a sample seen by
	// several ticks is not counted twice.
	counted bool
	// inflight is waiting+running at the last tick that saw the replica fresh.
	inflight    float64
	hasInflight bool
}

// Deployment holds one deployment's replicas and its ring of aggregation points. It is pure:
// no I/O, no goroutines, no clock; the caller passes the time in. It is not safe for
// concurrent use.
//
// The ring is kept as parallel arrays (tick times, running totals, merged latencies) so that
// reading a window touches only what it needs: a binary search over times, two totals, and
// the latency components, which the quantile solver reads in place.
type Deployment struct {
	cfg      Config
	replicas []replica
	index    map[string]int

	ts          []int64 // tick times (unix ns)
	cum         []sums  // running totals at each tick
	ttft, e2e   []comp  // latency of the requests first seen at each tick
	head, n     int     // next write; points held
	pushed      uint64  // points ever pushed
	total       sums    // running totals as of the last tick
	lastTick    int64
	ticked      bool
	ttftScratch []comp // one tick's replica latencies, reused
	e2eScratch  []comp
}

// NewDeployment returns an empty Deployment with the windows of c.
func NewDeployment(c Config) *Deployment {
	d := &Deployment{index: make(map[string]int)}
	d.SetConfig(c)
	return d
}

// TicksPerInterval is how many times per report interval the controller ticks at most: once
// on its interval timer and when reports arrive, so a burst is acted on without waiting for
// the next interval. The ring grows to hold the stable window at that rate.
const TicksPerInterval = 10

// SetConfig changes the windows. History is kept, so a longer window is filled from the
// points already held as far as they go; the ring grows if the new windows need it.
func (d *Deployment) SetConfig(c Config) {
	d.cfg = c.WithDefaults()
	need := int(max(d.cfg.Stable, d.cfg.Panic, d.cfg.History)/d.cfg.ReportInterval) + 2
	if need > len(d.ts) {
		d.resize(min(need, maxPoints))
	}
}

// Config is the Deployment's configuration with defaults applied.
func (d *Deployment) Config() Config { return d.cfg }

// resize reallocates the ring to size, keeping the newest points.
func (d *Deployment) resize(size int) {
	ts, cum := make([]int64, size), make([]sums, size)
	ttft, e2e := make([]comp, size), make([]comp, size)
	keep := min(d.n, size)
	for k := 0; k < keep; k++ {
		i, j := d.idx(k), keep-1-k
		ts[j], cum[j], ttft[j], e2e[j] = d.ts[i], d.cum[i], d.ttft[i], d.e2e[i]
	}
	d.ts, d.cum, d.ttft, d.e2e = ts, cum, ttft, e2e
	d.n = keep
	d.head = keep % size
}

// idx is the ring index of the k-th newest point.
func (d *Deployment) idx(k int) int {
	i := d.head - 1 - k
	if i < 0 {
		i += len(d.ts)
	}
	return i
}

// Observe records the latest report of a replica. A sample older than the one held is
// ignored, so reports that arrive out of order do not move time backwards. O(1).
func (d *Deployment) Observe(instanceID string, phase Phase, s Sample) {
	i, ok := d.index[instanceID]
	if !ok {
		d.index[instanceID] = len(d.replicas)
		d.replicas = append(d.replicas, replica{id: instanceID, phase: phase, s: s})
		return
	}
	r := &d.replicas[i]
	r.phase = phase
	if s.Time.Before(r.s.Time) {
		return
	}
	if s.Time.After(r.s.Time) {
		r.prevWaiting, r.hasPrev = r.s.Waiting, true
		r.counted = false
	}
	r.s = s
}

// Remove forgets a replica that stopped, failed or is draining. Its data leaves the windows
// from the next tick. O(1).
func (d *Deployment) Remove(instanceID string) {
	i, ok := d.index[instanceID]
	if !ok {
		return
	}
	last := len(d.replicas) - 1
	if i != last {
		d.replicas[i] = d.replicas[last]
		d.index[d.replicas[i].id] = i
	}
	d.replicas[last] = replica{}
	d.replicas = d.replicas[:last]
	delete(d.index, instanceID)
}

// Replicas is the number of replicas known.
func (d *Deployment) Replicas() int { return len(d.replicas) }

// staleAge is how old a sample may be and still count as fresh.
func (d *Deployment) staleAge() time.Duration {
	return StaleIntervals * d.cfg.ReportInterval
}

// Tick closes one aggregation point at now from the replicas' latest data: O(replicas), no
// allocation once the ring and scratch space have grown. Call it once per report interval;
// a tick at or before the previous one is ignored. Stale replicas are left out, so old data
// is never used as if fresh.
func (d *Deployment) Tick(now time.Time) {
	t := now.UnixNano()
	maxGap := d.staleAge()
	dt := int64(d.cfg.ReportInterval)
	gap := false
	if d.ticked {
		if t <= d.lastTick {
			return
		}
		dt = t - d.lastTick
		// After a gap in ticks the point stands for its last intervals only, and growth
		// across the gap is unknown.
		if dt > int64(maxGap) {
			dt, gap = int64(maxGap), true
		}
	}
	var waiting, running, gen, prom, finish float64
	p := &d.total
	ttft, e2e := d.ttftScratch[:0], d.e2eScratch[:0]
	for i := range d.replicas {
		r := &d.replicas[i]
		if now.Sub(r.s.Time) > maxGap {
			r.hasInflight = false
			continue
		}
		s := &r.s
		inflight := s.Waiting + s.Running
		if r.hasInflight && !gap {
			p.growth += inflight - r.inflight
		}
		r.inflight, r.hasInflight = inflight, true
		waiting += s.Waiting
		running += s.Running
		gen += s.GenerationTPS
		prom += s.PromptTPS
		finish += s.FinishedPerSec
		if r.phase == Ready {
			if s.HasKVCache {
				p.kv += s.KVCache
				p.kvN++
			}
			if s.HasGPUUtil {
				p.gpu += s.GPUUtil
				p.gpuN++
			}
			if s.Waiting > 0 && r.hasPrev && r.prevWaiting > 0 {
				p.satFinished += s.FinishedPerSec
				p.satGen += s.GenerationTPS
				p.satN++
			}
		}
		if !r.counted {
			r.counted = true
			if c, ok := toComp(s.TTFT); ok {
				ttft = append(ttft, c)
			}
			if c, ok := toComp(s.E2E); ok {
				e2e = append(e2e, c)
				p.requests += s.E2E.Count
				p.e2eMean += float64(s.E2E.Count) * meanOf(s.E2E)
			}
		}
	}
	sec := float64(dt) / float64(time.Second)
	p.covered += dt
	p.waiting += waiting * sec
	p.running += running * sec
	p.gen += gen * sec
	p.prom += prom * sec
	p.finish += finish * sec
	d.ttftScratch, d.e2eScratch = ttft, e2e
	d.push(t, merge(ttft), merge(e2e))
	d.lastTick, d.ticked = t, true
}

// push adds a point at t with the current totals, growing the ring if its oldest point is
// still inside the longest window (the caller ticks faster than once per report interval).
func (d *Deployment) push(t int64, ttft, e2e comp) {
	if d.n == len(d.ts) && len(d.ts) < maxPoints {
		if t-d.ts[d.head] < int64(max(d.cfg.Stable, d.cfg.Panic)) {
			d.resize(min(2*len(d.ts), maxPoints))
		}
	}
	i := d.head
	d.ts[i], d.cum[i], d.ttft[i], d.e2e[i] = t, d.total, ttft, e2e
	d.head++
	if d.head == len(d.ts) {
		d.head = 0
	}
	if d.n < len(d.ts) {
		d.n++
	}
	d.pushed++
}

// Values returns the figures over the points closed in (now-span, now], and the replica
// counts at now. O(log points + points in the span for latencies + replicas), no allocation.
func (d *Deployment) Values(now time.Time, span time.Duration) Values {
	return d.values(now, span, true)
}

// Totals is Values without the latency percentiles (TTFT and E2E P50 and P95 stay 0), for a
// long span read only for its rates: O(log points + replicas), no allocation.
func (d *Deployment) Totals(now time.Time, span time.Duration) Values {
	return d.values(now, span, false)
}

func (d *Deployment) values(now time.Time, span time.Duration, latency bool) Values {
	v := Values{Span: span}
	// The window is the m newest points: those after now-span.
	cut := now.UnixNano() - int64(span)
	lo, hi := 0, d.n
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if d.ts[d.idx(mid)] > cut {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	m := lo
	var base sums
	switch {
	case m < d.n:
		base = d.cum[d.idx(m)]
	case d.pushed > uint64(d.n):
		// The point before the oldest held was overwritten: the oldest serves as base.
		m--
		base = d.cum[d.idx(m)]
	}
	if m > 0 {
		w := d.cum[d.idx(0)].minus(base)
		d.fill(&v, &w, m, latency)
	}
	staleAge := d.staleAge()
	for i := range d.replicas {
		r := &d.replicas[i]
		switch {
		case now.Sub(r.s.Time) > staleAge:
			v.Stale++
		case r.phase == Ready:
			v.Ready++
		default:
			v.Starting++
		}
	}
	return v
}

// fill sets the figures of v from the window's totals w over its m newest points, and the
// latency percentiles when latency is set.
func (d *Deployment) fill(v *Values, w *sums, m int, latency bool) {
	v.Covered = time.Duration(w.covered)
	if w.covered > 0 {
		sec := float64(w.covered) / float64(time.Second)
		v.Waiting = w.waiting / sec
		v.Running = w.running / sec
		v.GenerationTPS = w.gen / sec
		v.PromptTPS = w.prom / sec
		v.FinishedPerSec = w.finish / sec
		v.ArrivalRate = max(0, v.FinishedPerSec+w.growth/sec)
	}
	if w.kvN > 0 {
		v.KVCache = w.kv / float64(w.kvN)
	}
	if w.gpuN > 0 {
		v.GPUUtil = w.gpu / float64(w.gpuN)
	}
	if w.satN > 0 {
		v.SaturatedFinishedPerReplica = w.satFinished / float64(w.satN)
		v.SaturatedGenerationTPSPerReplica = w.satGen / float64(w.satN)
	}
	v.Requests = w.requests
	if w.requests > 0 {
		v.E2EMean = w.e2eMean / float64(w.requests)
	}
	if !latency {
		return
	}
	// The window's latency components lie in the ring from the m-th newest point to the
	// newest: one stretch, or two where it wraps.
	first, last := d.idx(m-1), d.idx(0)
	var a, b []comp
	seg := func(ring []comp) ([]comp, []comp) {
		if first <= last {
			return ring[first : last+1], nil
		}
		return ring[first:], ring[:last+1]
	}
	var u [3]float64
	a, b = seg(d.ttft)
	if mixKnots(a, b, want50|want95, &u) {
		v.TTFTP50, v.TTFTP95 = math.Exp(u[1]), math.Exp(u[2])
	}
	a, b = seg(d.e2e)
	if mixKnots(a, b, want50|want95, &u) {
		v.E2EP50, v.E2EP95 = math.Exp(u[1]), math.Exp(u[2])
	}
}
