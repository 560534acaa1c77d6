package sim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// ShapeNames are the synthetic workloads Shape makes, each a load whose right answer is known
// in advance.
var ShapeNames = []string{"onoff", "flash", "diurnal", "ramp", "idle", "heavytail"}

// ShapeBaseRPS is the base rate the command gives Shape before --rate-scale: the seed
// workload's low rate, about 2 replicas of the default hardware with 512/128-token requests.
const ShapeBaseRPS = SeedLowRPS

// Shape timings.
const (
	// OnOffLow and OnOffHigh are the two phases of onoff's cycle; OnOffCycles of them.
	OnOffLow    = 3 * time.Minute
	OnOffHigh   = 2 * time.Minute
	OnOffCycles = 12
	// OnOffFactor is onoff's high rate over its low (base) rate.
	OnOffFactor = 5.0

	// FlashStart is when flash's crowd starts arriving; FlashRise is how long its rate takes
	// to reach FlashFactor x base, and to fall back; FlashHold is how long it stays there.
	FlashStart  = 10 * time.Minute
	FlashRise   = 10 * time.Second
	FlashHold   = 5 * time.Minute
	FlashFactor = 10.0
	// FlashDuration is flash's length.
	FlashDuration = 40 * time.Minute

	// DiurnalPeriod is diurnal's length and the period of its cycle; DiurnalFactor is its
	// peak rate over its trough (base) rate.
	DiurnalPeriod = 24 * time.Hour
	DiurnalFactor = 4.0

	// RampFlat is how long ramp stays at base before its ramp and at RampFactor x base
	// after; RampRise is how long the ramp takes.
	RampFlat   = 5 * time.Minute
	RampRise   = time.Hour
	RampFactor = 5.0

	// IdleLoadBefore, IdleGap and IdleLoadAfter are idle's three stretches: base, nothing,
	// base.
	IdleLoadBefore = 20 * time.Minute
	IdleGap        = 30 * time.Minute
	IdleLoadAfter  = 10 * time.Minute

	// HeavyTailDuration is heavytail's length.
	HeavyTailDuration = 30 * time.Minute
)

// Heavytail's lengths: lognormal, clamped to [1, max]. The prompt's median is
// HeavyTailPromptMedian and its log has standard deviation HeavyTailPromptSigma: p90 is
// about 2,700 tokens, p99 about 13,000 and 0.2 % of prompts are clamped to
// HeavyTailMaxPrompt; the mean is about 1,200 tokens. Outputs have median
// HeavyTailOutputMedian, log standard deviation HeavyTailOutputSigma, at most
// HeavyTailMaxOutput.
const (
	HeavyTailPromptMedian = 400
	HeavyTailPromptSigma  = 1.5
	HeavyTailMaxPrompt    = 32768
	HeavyTailOutputMedian = 128
	HeavyTailOutputSigma  = 0.7
	HeavyTailMaxOutput    = 2048
)

// Shape makes the synthetic workload name (one of ShapeNames) around the base rate baseRPS,
// in requests per second. Arrivals are Poisson at the shape's rate; lengths come from l,
// except for heavytail. Times below are offsets from the start:
//
//   - onoff: OnOffCycles (12) cycles of OnOffLow (3 min) at base then OnOffHigh (2 min) at
//     OnOffFactor (5) x base, switching at once: 60 minutes, ending after a high phase.
//   - flash: a flash crowd. base until FlashStart (10 min); a linear rise to FlashFactor (10)
//     x base over FlashRise (10 s); FlashHold (5 min) there; a linear fall back to base over
//     FlashRise; base to FlashDuration (40 min).
//   - diurnal: a day, DiurnalPeriod (24 h), whose rate is the sinusoid
//     base x (1 + (F-1)/2 x (1 - cos(2 pi t / 24 h))) with F = DiurnalFactor (4): the trough,
//     base, at 0 h and 24 h; the peak, 4 x base, at 12 h; the mean 2.5 x base. (Drawn as
//     one-minute linear pieces, within 1e-5 of the sinusoid.)
//   - ramp: base for RampFlat (5 min), a linear ramp to RampFactor (5) x base over RampRise
//     (60 min), that rate for RampFlat (5 min): 70 minutes.
//   - idle: base for IdleLoadBefore (20 min), nothing for IdleGap (30 min), base for
//     IdleLoadAfter (10 min): 60 minutes.
//   - heavytail: base for HeavyTailDuration (30 min), with heavy-tailed lognormal prompt
//     lengths (see HeavyTailPromptMedian) and output lengths, both ignoring l.
//
// The workload lasts until its last arrival, just before the length given.
func Shape(name string, baseRPS float64, l Lengths, seed uint64) (*Workload, error) {
	if !(baseRPS > 0) || math.IsInf(baseRPS, 0) {
		return nil, fmt.Errorf("base rate %v: want a positive number of requests/s", baseRPS)
	}
	segs, desc, ok := shapeSegments(name, baseRPS)
	if !ok {
		return nil, fmt.Errorf("unknown workload shape %q: want one of %s", name, strings.Join(ShapeNames, ", "))
	}
	if name != "heavytail" {
		return &Workload{Name: desc + ", Poisson", Requests: poisson(segs, l, seed)}, nil
	}
	reqs := poisson(segs, FixedLengths(0, 0), seed)
	rng := rand.New(rand.NewPCG(seed, 0xbf58476d1ce4e5b9))
	for i := range reqs {
		reqs[i].PromptTokens = lognormalTokens(rng, HeavyTailPromptMedian, HeavyTailPromptSigma, HeavyTailMaxPrompt)
		reqs[i].OutputTokens = lognormalTokens(rng, HeavyTailOutputMedian, HeavyTailOutputSigma, HeavyTailMaxOutput)
	}
	return &Workload{Name: desc + ", Poisson", Requests: reqs}, nil
}

// ShapeRate is the rate of shape name around base at offset t, in requests per second (0
// after the shape ends), as Shape draws it; ok is false for an unknown name.
func ShapeRate(name string, baseRPS float64, t time.Duration) (rps float64, ok bool) {
	segs, _, ok := shapeSegments(name, baseRPS)
	if !ok {
		return 0, false
	}
	i, found := slices.BinarySearchFunc(segs, t, func(s segment, t time.Duration) int {
		switch {
		case s.end <= t:
			return -1
		case s.start > t:
			return 1
		}
		return 0
	})
	if !found {
		return 0, true
	}
	s := segs[i]
	return s.from + (s.to-s.from)*float64(t-s.start)/float64(s.end-s.start), true
}

// shapeSegments lays out a shape's rate, and describes it for the workload's name.
func shapeSegments(name string, base float64) ([]segment, string, bool) {
	flat := func(start, end time.Duration, r float64) segment { return segment{start, end, r, r} }
	switch name {
	case "onoff":
		hi := OnOffFactor * base
		var segs []segment
		for c := range OnOffCycles {
			t := time.Duration(c) * (OnOffLow + OnOffHigh)
			segs = append(segs, flat(t, t+OnOffLow, base), flat(t+OnOffLow, t+OnOffLow+OnOffHigh, hi))
		}
		return segs, fmt.Sprintf("onoff (%s at %g rps, %s at %g rps, x%d)", OnOffLow, base, OnOffHigh, hi, OnOffCycles), true
	case "flash":
		hi := FlashFactor * base
		t1 := FlashStart + FlashRise
		t2 := t1 + FlashHold
		t3 := t2 + FlashRise
		return []segment{
			flat(0, FlashStart, base), {FlashStart, t1, base, hi}, flat(t1, t2, hi), {t2, t3, hi, base}, flat(t3, FlashDuration, base),
		}, fmt.Sprintf("flash (%g rps, x%g within %s at %s for %s)", base, FlashFactor, FlashRise, FlashStart, FlashHold), true
	case "diurnal":
		rate := func(t time.Duration) float64 {
			return base * (1 + (DiurnalFactor-1)/2*(1-math.Cos(2*math.Pi*float64(t)/float64(DiurnalPeriod))))
		}
		segs := make([]segment, 0, int(DiurnalPeriod/time.Minute))
		for t := time.Duration(0); t < DiurnalPeriod; t += time.Minute {
			segs = append(segs, segment{t, t + time.Minute, rate(t), rate(t + time.Minute)})
		}
		return segs, fmt.Sprintf("diurnal (%g to %g rps, sinusoid over %s)", base, DiurnalFactor*base, DiurnalPeriod), true
	case "ramp":
		hi := RampFactor * base
		return []segment{
			flat(0, RampFlat, base), {RampFlat, RampFlat + RampRise, base, hi}, flat(RampFlat+RampRise, 2*RampFlat+RampRise, hi),
		}, fmt.Sprintf("ramp (%g to %g rps over %s)", base, hi, RampRise), true
	case "idle":
		t1 := IdleLoadBefore + IdleGap
		return []segment{
			flat(0, IdleLoadBefore, base), flat(IdleLoadBefore, t1, 0), flat(t1, t1+IdleLoadAfter, base),
		}, fmt.Sprintf("idle (%g rps for %s, none for %s, %g rps for %s)", base, IdleLoadBefore, IdleGap, base, IdleLoadAfter), true
	case "heavytail":
		return []segment{flat(0, HeavyTailDuration, base)},
			fmt.Sprintf("heavytail (%g rps, lognormal prompts median %d up to %d tokens)", base, HeavyTailPromptMedian, HeavyTailMaxPrompt), true
	}
	return nil, "", false
}

// lognormalTokens draws a lognormal token count with the given median and log standard
// deviation, rounded and clamped to [1, most].
func lognormalTokens(rng *rand.Rand, median, sigma float64, most int) int {
	v := math.Round(median * math.Exp(sigma*rng.NormFloat64()))
	return int(min(max(v, 1), float64(most)))
}
