package window

import "math"

// Summary is one latency distribution as a replica reports it for one report interval: its
// median and 95th percentile in seconds, and the number of requests it covers.
type Summary struct {
	P50, P95 float64
	Count    uint64
}

// minLatency floors latencies before taking logarithms: a reported 0 means "too fast to
// measure", and one microsecond is far below anything a GPU server answers in.
const minLatency = 1e-6

// The latency model. A report gives only p50 and p95, so merging needs an assumption about
// the rest of each distribution. Latencies are skewed and multiplicative (queueing adds
// delays proportional to the work ahead), so the model works in log space, u = ln(seconds),
// where latency is roughly symmetric (log-normal). With m = ln(p50) and s = ln(p95/p50),
// each interval is piecewise uniform in u, symmetric about m:
//
//	u in [m-2s, m-s): 5 %   u in [m-s, m): 45 %   u in [m, m+s): 45 %   u in [m+s, m+2s]: 5 %
//
// so it goes through the reported p50 and p95 exactly, with a p5 mirroring the p95 and tails
// that end at p50*(p95/p50)^±2 (about where a log-normal's p99.9 lies). A replica that
// reported p95 == p50 is a point mass.
//
// Its CDF is piecewise linear in u with five knots, which is what makes merging cheap: the
// mixture of many such distributions, each weighted by its request count, is again piecewise
// linear in u, and its quantile is found exactly by Newton steps that stop as soon as a step
// lands inside the linear piece it started from (see mixKnots). Merging happens twice: a
// tick merges its replicas and keeps the result's exact p5, p50, p95 and extremes (comp),
// then a window merges its ticks; only the refit between the two loses shape, and against
// the pooled percentiles of sampled latencies the window stays within a few percent (see
// TestWindowAgainstPooledTruth). The naive alternative, a
// count-weighted average of the percentiles, is wrong exactly when it matters: one overloaded
// replica with p95 = 10 s among nine healthy ones at 0.5 s averages to 1.45 s, while the
// merged p95 is several seconds, and an SLO policy must see that.

// comp is a latency distribution in the model's general form: piecewise uniform in u between
// five knots that hold 0, 5, 50, 95 and 100 % of its requests. A replica's Summary gives the
// symmetric form above; a merged tick keeps its exact p5, p50 and p95 and its extremes, so a
// second merge (ticks into a window) starts from the tick's real shape, skew included.
//
// Knots and weights are float32: a window reads its components once per tick, memory
// bandwidth is what that costs, and log-seconds to 7 digits are latencies to about 1e-6 of
// their value. Arithmetic is done in float64.
type comp struct {
	k  [5]float32 // knots in u
	iw [4]float32 // 1/(k[i+1]-k[i]); 0 for a segment of no width (a jump in the CDF)
	w  float32    // requests
}

// cum is the CDF at each knot; mass the probability of each segment.
var (
	cum  = [5]float64{0, 0.05, 0.5, 0.95, 1}
	mass = [4]float64{0.05, 0.45, 0.45, 0.05}
)

func (c *comp) setKnots(k [5]float64) {
	for i := range k {
		c.k[i] = float32(k[i])
	}
	for i := range c.iw {
		c.iw[i] = 0
		if d := float64(c.k[i+1]) - float64(c.k[i]); d > 0 {
			c.iw[i] = float32(1 / d)
		}
	}
}

// toComp turns a Summary into the model; ok is false when it covers no requests.
func toComp(s Summary) (c comp, ok bool) {
	if s.Count == 0 {
		return comp{}, false
	}
	p50 := max(s.P50, minLatency)
	p95 := max(s.P95, p50)
	u, sp := math.Log(p50), math.Log(p95/p50)
	c.setKnots([5]float64{u - 2*sp, u - sp, u, u + sp, u + 2*sp})
	c.w = float32(s.Count)
	return c, true
}

// meanOf is the mean latency in seconds of one Summary under the model: each uniform piece
// in u of mass p over [u1, u2] contributes p*(e^u2 - e^u1)/(u2 - u1).
func meanOf(s Summary) float64 {
	p50 := max(s.P50, minLatency)
	p95 := max(s.P95, p50)
	r := p95 / p50
	ls := math.Log(r)
	if ls < 1e-9 {
		return p50
	}
	ir := 1 / r
	m := 0.05*(ir-ir*ir) + 0.45*(1-ir) + 0.45*(r-1) + 0.05*(r*r-r)
	return p50 * m / ls
}

// zOf is where probability q lies in the model, in units of s from the median.
func zOf(q float64) float64 {
	switch {
	case q <= 0:
		return -2
	case q < 0.05:
		return -2 + q/0.05
	case q < 0.5:
		return -1 + (q-0.05)/0.45
	case q < 0.95:
		return (q - 0.5) / 0.45
	case q < 1:
		return 1 + (q-0.95)/0.05
	default:
		return 2
	}
}

// Quantile is the q-quantile (0 <= q <= 1) of s in seconds under the model above: exact at
// 0.5 and 0.95, interpolated in log space elsewhere. Policies use it to read an SLO at a
// percentile other than 50 or 95 from a window's merged p50 and p95. It is 0 when s has no
// latencies.
func (s Summary) Quantile(q float64) float64 {
	if s.P50 <= 0 && s.P95 <= 0 {
		return 0
	}
	p50 := max(s.P50, minLatency)
	p95 := max(s.P95, p50)
	return p50 * math.Pow(p95/p50, zOf(q))
}

// quantile is the q-quantile of c in u. The probabilities the windows use are knots.
func (c *comp) quantile(q float64) float64 {
	switch q {
	case 0.05:
		return float64(c.k[1])
	case 0.5:
		return float64(c.k[2])
	case 0.95:
		return float64(c.k[3])
	}
	if q <= 0 {
		return float64(c.k[0])
	}
	for i := range mass {
		if q < cum[i+1] {
			return float64(c.k[i]) + (q-cum[i])/mass[i]*(float64(c.k[i+1])-float64(c.k[i]))
		}
	}
	return float64(c.k[4])
}

// empty is a tick without requests: no weight, and knots beyond any u so it never bounds
// a linear piece.
var empty = comp{k: [5]float32{inf32, inf32, inf32, inf32, inf32}}

var inf32 = float32(math.Inf(1))

// mixEval adds to cdf and slope the count-weighted CDF of cs at u and its slope, and narrows
// kl <= u < kh to the knots between which every component is linear.
func mixEval(cs []comp, u float64, cdf, slope, kl, kh *float64) {
	for i := range cs {
		c := &cs[i]
		switch {
		case u < float64(c.k[0]):
			*kh = min(*kh, float64(c.k[0]))
			continue
		case u >= float64(c.k[4]):
			*cdf += float64(c.w)
			*kl = max(*kl, float64(c.k[4]))
			continue
		}
		j := 3
		switch {
		case u < float64(c.k[1]):
			j = 0
		case u < float64(c.k[2]):
			j = 1
		case u < float64(c.k[3]):
			j = 2
		}
		w := float64(c.w)
		d := mass[j] * float64(c.iw[j])
		*cdf += w * (cum[j] + d*(u-float64(c.k[j])))
		*slope += w * d
		*kl = max(*kl, float64(c.k[j]))
		*kh = min(*kh, float64(c.k[j+1]))
	}
}

// knotBounds holds, for the quantiles at the knots k[1..3] (5, 50 and 95 %), the weighted
// sums of the components' quantiles and the smallest and largest of them: a mixture's
// quantile always lies between those two.
type knotBounds struct {
	total       float64
	sum, lo, hi [3]float64
}

// add folds the components of cs into b in one pass, with the accumulators in locals:
// this pass is the first touch of a window's components and most of what reading one costs.
func (b *knotBounds) add(cs []comp) {
	total := b.total
	s1, s2, s3 := b.sum[0], b.sum[1], b.sum[2]
	l1, l2, l3 := b.lo[0], b.lo[1], b.lo[2]
	h1, h2, h3 := b.hi[0], b.hi[1], b.hi[2]
	for i := range cs {
		c := &cs[i]
		if c.w == 0 {
			continue
		}
		w := float64(c.w)
		x1, x2, x3 := float64(c.k[1]), float64(c.k[2]), float64(c.k[3])
		total += w
		s1, s2, s3 = s1+w*x1, s2+w*x2, s3+w*x3
		l1, l2, l3 = min(l1, x1), min(l2, x2), min(l3, x3)
		h1, h2, h3 = max(h1, x1), max(h2, x2), max(h3, x3)
	}
	b.total = total
	b.sum = [3]float64{s1, s2, s3}
	b.lo = [3]float64{l1, l2, l3}
	b.hi = [3]float64{h1, h2, h3}
}

// Knot quantiles mixKnots can solve, as bits of its want argument.
const (
	want05 = 1 << iota
	want50
	want95
)

// mixKnots sets out[i] (i = 0, 1, 2 for 5, 50, 95 %), in u, for each quantile in want, to
// the quantile of the count-weighted mixture of the components in a and b (the two
// stretches of a ring): the least u at which the mixture's CDF reaches it. ok is false when
// they hold no requests.
//
// Each search brackets the answer between the smallest and largest component quantiles,
// starts from their weighted mean and takes Newton steps; because the CDF is piecewise
// linear, a step that lands inside the linear piece it was taken from is exact, which
// usually ends the search after one or two passes. Bisection guards against steps that
// leave the bracket.
func mixKnots(a, b []comp, want int, out *[3]float64) (ok bool) {
	bd := knotBounds{
		lo: [3]float64{math.Inf(1), math.Inf(1), math.Inf(1)},
		hi: [3]float64{math.Inf(-1), math.Inf(-1), math.Inf(-1)},
	}
	bd.add(a)
	bd.add(b)
	if bd.total == 0 {
		return false
	}
	for i := range out {
		if want&(1<<i) != 0 {
			out[i] = solve(a, b, cum[i+1]*bd.total, bd.sum[i]/bd.total, bd.lo[i], bd.hi[i])
		}
	}
	return true
}

// mixQuantile is the q-quantile of the mixture for any q, bracketed the slow way.
func mixQuantile(a, b []comp, q float64) (float64, bool) {
	var total, sum float64
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, cs := range [2][]comp{a, b} {
		for i := range cs {
			if cs[i].w == 0 {
				continue
			}
			x, w := cs[i].quantile(q), float64(cs[i].w)
			total += w
			sum += w * x
			lo, hi = min(lo, x), max(hi, x)
		}
	}
	if total == 0 {
		return 0, false
	}
	return solve(a, b, q*total, sum/total, lo, hi), true
}

// solve finds the least u in [lo, hi] where the mixture's weighted CDF reaches target,
// starting from u.
func solve(a, b []comp, target, u, lo, hi float64) float64 {
	if hi-lo <= 1e-12 {
		return hi
	}
	// Just below the smallest component quantile every component is below q.
	lo -= 1e-12
	for iter := 0; iter < 100; iter++ {
		var cdf, slope float64
		kl, kh := math.Inf(-1), math.Inf(1)
		mixEval(a, u, &cdf, &slope, &kl, &kh)
		mixEval(b, u, &cdf, &slope, &kl, &kh)
		if cdf >= target {
			hi = u
		} else {
			lo = u
		}
		if slope > 0 {
			n := u + (target-cdf)/slope
			if n >= kl && n <= kh {
				return n
			}
			// Every third step bisects, so a run of poor Newton steps cannot stall.
			if n > lo && n < hi && iter%3 != 2 {
				u = n
				continue
			}
		}
		if hi-lo <= 1e-9 {
			return hi
		}
		u = lo + (hi-lo)/2
	}
	return hi
}

// merge is the mixture of cs refitted to the model: its exact p5, p50 and p95, its extremes,
// and the total weight; empty when cs holds no requests. It is how one tick's replicas
// become one interval of the window.
func merge(cs []comp) comp {
	switch len(cs) {
	case 0:
		return empty
	case 1:
		return cs[0]
	}
	var c comp
	lo, hi := math.Inf(1), math.Inf(-1)
	for i := range cs {
		c.w += cs[i].w
		lo = min(lo, float64(cs[i].k[0]))
		hi = max(hi, float64(cs[i].k[4]))
	}
	var q [3]float64
	mixKnots(cs, nil, want05|want50|want95, &q)
	c.setKnots([5]float64{lo, q[0], q[1], q[2], hi})
	return c
}

// MergeSummaries is the count-weighted mixture of two summaries under the model, as its
// p50, p95 and count: how the figures of one request stream measured in two places (two
// routers in front of one replica) become one. Either may cover no requests.
func MergeSummaries(a, b Summary) Summary {
	ca, okA := toComp(a)
	cb, okB := toComp(b)
	switch {
	case !okA:
		return b
	case !okB:
		return a
	}
	c := merge([]comp{ca, cb})
	return Summary{P50: math.Exp(c.quantile(0.5)), P95: math.Exp(c.quantile(0.95)), Count: a.Count + b.Count}
}
