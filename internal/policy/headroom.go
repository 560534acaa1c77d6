package policy

import (
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

// riseSample is one sample of the stable arrival rate at a time.
type riseSample struct {
	at   time.Time
	rate float64
}

// levelRise is a sample's rate and its rise, and whether it is in the newer half.
type levelRise struct {
	rate, rise float64
	newer      bool
}

// riseTracker learns the headroom from the rises of the stable arrival rate.
type riseTracker struct {
	samples []riseSample // oldest first
	// rises are those of the recent samples whose rise is known; ok is set once they cover
	// riseMinHistory.
	rises   []levelRise
	ok      bool
	scratch []float64
}

// observe samples rate at now (at most once per riseStep) and relearns the rises: each
// sample's rise is the mean of the samples from horizon to horizon+span after it, less it.
func (t *riseTracker) observe(now time.Time, rate float64, horizon, span time.Duration) {
	if n := len(t.samples); n > 0 && now.Before(t.samples[n-1].at) {
		t.samples = t.samples[:0] // the clock went back: start over
	}
	if n := len(t.samples); n > 0 && now.Sub(t.samples[n-1].at) < riseStep {
		return
	}
	horizon += span // the newest sample whose rise is known is this far back
	keep := riseMemory + horizon + riseStep
	drop := 0
	for drop < len(t.samples) && now.Sub(t.samples[drop].at) > keep {
		drop++
	}
	t.samples = append(t.samples[:0], t.samples[drop:]...)
	t.samples = append(t.samples, riseSample{at: now, rate: rate})

	t.rises = t.rises[:0]
	var first time.Time
	last := now.Add(-horizon)
	for i, u := range t.samples {
		if last.Sub(u.at) > riseMemory || u.at.After(last) {
			continue
		}
		if first.IsZero() {
			first = u.at
		}
		// The rate a replica started at u met in its first span after it was ready.
		later, n := 0.0, 0
		for _, v := range t.samples[i+1:] {
			if d := v.at.Sub(u.at); d > horizon {
				break
			} else if d >= horizon-span {
				later, n = later+v.rate, n+1
			}
		}
		if n == 0 {
			later, n = u.rate, 1
		}
		t.rises = append(t.rises, levelRise{rate: u.rate, rise: later/float64(n) - u.rate})
	}
	t.ok = !first.IsZero() && last.Sub(first) >= riseMinHistory
	if !t.ok {
		return
	}
	mid := first.Add(last.Sub(first) / 2)
	j := 0
	for i := range t.samples {
		u := t.samples[i]
		if last.Sub(u.at) > riseMemory || u.at.After(last) {
			continue
		}
		t.rises[j].newer = u.at.After(mid)
		j++
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
	for _, newer := range []bool{false, true} {
		rates := t.scratch[:0]
		for _, r := range t.rises {
			if r.newer == newer {
				rates = append(rates, r.rate)
			}
		}
		if len(rates) == 0 {
			return 0, true
		}
		level := riseLevel * rate
		if len(rates) > riseLevelMin {
			slices.Sort(rates)
			level = min(level, rates[len(rates)-riseLevelMin])
		}
		xs := rates[:0]
		for _, r := range t.rises {
			if r.newer == newer && r.rate >= level {
				xs = append(xs, r.rise)
			}
		}
		t.scratch = xs
		extra = min(extra, quantileOf(xs, riseQuantile))
	}
	return max(extra, 0) / rate, true
}

// quantileOf is the q-quantile (nearest rank) of xs, which it sorts.
func quantileOf(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	slices.Sort(xs)
	i := min(int(q*float64(len(xs))), len(xs)-1)
	return xs[i]
}
