package policy

import (
	"cmp"
	"math"
	"slices"
	"time"
)

// Learned headroom: how far the demand rose over one cold start in the recent past, so that
// bursty or fast-changing traffic gets the headroom it needs and smooth traffic none.
//
// Every riseStep the stable window's arrival rate is sampled. A sample's rise is how far the
// sample a horizon after it (one cold start, plus half a stable window: the stable mean lags
// the true rate by that much) is above it, in requests/s: what a replica started at the
// sample's time met when it was ready. That covers the noise of the measured rate as well as
// real growth: sizing on a measured rate is off by its noise.
//
// The headroom for a rate is the riseQuantile of the rises of the samples at or near that
// rate (at least riseLevel of it): an oscillating demand rises a lot from its troughs and not
// at all from its crests, so in a trough the policy keeps what the crests need, and at a
// crest what a crest needs, not a trough's headroom on top of the crest. When fewer than
// riseLevelMin samples were that high (a demand higher than most of the recent past), the
// riseLevelMin highest count: a ramp into new heights has the rises of the ramp so far.
//
// A rise counts only if it recurs: the quantile is taken in each half of the memory and the
// lower one is used. A flash crowd or a return from idle seen once is met by the panic
// path, not paid for with an hour of spare replicas; bursts every few minutes are in both.
const (
	riseStep = 10 * time.Second
	// riseMemory is how far back rises count: two halves long enough for a few cycles of
	// minute-scale bursts each, short enough to forget the night's noise by the morning.
	riseMemory = 60 * time.Minute
	// riseMinHistory is how much rise history the learned headroom needs; before that the
	// fixed headroom, the spare replica and the trend projection apply.
	riseMinHistory = 30 * time.Minute
	// riseQuantile is the share of the recent rises the headroom covers.
	riseQuantile = 0.98
	// riseLevel is how high, as a share of the rate being sized, a sample must have been
	// for its rise to count, and riseLevelMin how many such samples each half needs.
	riseLevel    = 0.9
	riseLevelMin = 15
)

// riseSample is one sample of the stable arrival rate at a time (Unix nanoseconds).
type riseSample struct {
	at   int64
	rate float64
}

// levelRise is a sample's time, rate and rise.
type levelRise struct {
	at         int64
	rate, rise float64
}

// riseTracker learns the headroom from the rises of the stable arrival rate.
type riseTracker struct {
	samples []riseSample // oldest first
	// rises are those of the recent samples whose rise is known; ok is set once they cover
	// riseMinHistory.
	rises []levelRise
	ok    bool
	// halves are the older and the newer half's rises by rate, highest first, rebuilt when a
	// sample is taken; headroom reads them on every evaluation.
	halves  [2]riseHalf
	scratch []float64
}

// riseHalf is one half of the memory's rises, highest rate first, and the riseQuantile of
// the rises of its first n, the last prefix asked for (n -1: none yet). The prefix changes
// only when the rate being sized crosses a sample's, so most evaluations reuse it.
type riseHalf struct {
	byRate []levelRise
	n      int
	q      float64
}

// observe samples rate at now (at most once per riseStep) and relearns the rises: each
// sample's rise is the mean of the samples from horizon to horizon+span after it, less it.
// It is linear in the samples kept (two pointers over a running sum), and runs once per
// riseStep whatever the evaluation rate.
func (t *riseTracker) observe(now time.Time, rate float64, horizon, span time.Duration) {
	at := now.UnixNano()
	if n := len(t.samples); n > 0 && at < t.samples[n-1].at {
		t.samples = t.samples[:0] // the clock went back: start over
	}
	if n := len(t.samples); n > 0 && at-t.samples[n-1].at < int64(riseStep) {
		return
	}
	full := int64(horizon + span) // the newest sample whose rise is known is this far back
	memory := int64(riseMemory)
	keep := memory + full + int64(riseStep)
	drop := 0
	for drop < len(t.samples) && at-t.samples[drop].at > keep {
		drop++
	}
	t.samples = append(t.samples[:0], t.samples[drop:]...)
	t.samples = append(t.samples, riseSample{at: at, rate: rate})

	t.rises = t.rises[:0]
	last := at - full
	first := int64(math.MaxInt64)
	lo, hi, sum := 0, 0, 0.0 // samples[lo:hi] are those from horizon to horizon+span after u
	for i, u := range t.samples {
		if u.at > last {
			break
		}
		if last-u.at > memory {
			continue
		}
		first = min(first, u.at)
		for hi < len(t.samples) && t.samples[hi].at-u.at <= full {
			sum += t.samples[hi].rate
			hi++
		}
		for lo < hi && (lo <= i || t.samples[lo].at-u.at < int64(horizon)) {
			sum -= t.samples[lo].rate
			lo++
		}
		later := u.rate // no sample a horizon on (a gap): no rise
		if n := hi - lo; n > 0 {
			later = sum / float64(n)
		}
		t.rises = append(t.rises, levelRise{at: u.at, rate: u.rate, rise: later - u.rate})
	}
	t.ok = first != math.MaxInt64 && last-first >= int64(riseMinHistory)
	if !t.ok {
		return
	}
	mid := first + (last-first)/2
	for i := range t.halves {
		h := &t.halves[i]
		h.byRate, h.n = h.byRate[:0], -1
		for _, r := range t.rises {
			if (r.at > mid) == (i == 1) {
				h.byRate = append(h.byRate, r)
			}
		}
		slices.SortFunc(h.byRate, func(a, b levelRise) int { return cmp.Compare(b.rate, a.rate) })
	}
}

// headroom is the share to size rate with: the lower of the two halves' riseQuantile of the
// rises of the samples that were at least riseLevel of rate (or the half's riseLevelMin
// highest), over rate. ok is false while there is too little history.
func (t *riseTracker) headroom(rate float64) (h float64, ok bool) {
	if !t.ok {
		return 0, false
	}
	if rate <= 0 {
		return 0, true
	}
	extra := math.Inf(1)
	for i := range t.halves {
		half := &t.halves[i]
		if len(half.byRate) == 0 {
			return 0, true
		}
		level := riseLevel * rate
		if len(half.byRate) > riseLevelMin {
			level = min(level, half.byRate[riseLevelMin-1].rate)
		}
		// The samples at or above level: a prefix of the half, highest rate first.
		n, _ := slices.BinarySearchFunc(half.byRate, level, func(r levelRise, level float64) int {
			return cmp.Compare(level, r.rate)
		})
		for n < len(half.byRate) && half.byRate[n].rate >= level {
			n++
		}
		if n != half.n {
			xs := t.scratch[:0]
			for _, r := range half.byRate[:n] {
				xs = append(xs, r.rise)
			}
			t.scratch = xs
			half.n, half.q = n, quantileOf(xs, riseQuantile)
		}
		extra = min(extra, half.q)
	}
	return max(extra, 0) / rate, true
}

// quantileOf is the q-quantile of xs by nearest rank, which it sorts; where q x len(xs) is
// whole it takes the rank above (the safer side for a headroom).
func quantileOf(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	slices.Sort(xs)
	i := min(int(q*float64(len(xs))), len(xs)-1)
	return xs[i]
}
