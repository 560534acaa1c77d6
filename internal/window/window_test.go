package window

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func at(sec float64) time.Time { return t0.Add(time.Duration(sec * float64(time.Second))) }

func near(got, want, tol float64) bool { return math.Abs(got-want) <= tol }

// feed observes the same sample for each id at time now and ticks.
func feed(d *Deployment, now time.Time, phase Phase, s Sample, ids ...string) {
	s.Time = now
	for _, id := range ids {
		d.Observe(id, phase, s)
	}
	d.Tick(now)
}

func TestRingWrapAround(t *testing.T) {
	d := NewDeployment(Config{ReportInterval: time.Second, Stable: 10 * time.Second, Panic: 2 * time.Second})
	size := len(d.ts)
	for i := 1; i <= 35; i++ {
		feed(d, at(float64(i)), Ready, Sample{Waiting: float64(i)}, "a")
	}
	if len(d.ts) != size {
		t.Fatalf("ring grew from %d to %d with one tick per interval", size, len(d.ts))
	}
	now := at(35)
	tests := []struct {
		name        string
		span        time.Duration
		wantCovered time.Duration
		wantWaiting float64
	}{
		// Last 10 ticks: 26..35, mean 30.5.
		{"stable", 10 * time.Second, 10 * time.Second, 30.5},
		{"panic", 2 * time.Second, 2 * time.Second, 34.5},
		// The ring holds 12 points, the oldest of them only as the base the totals of the
		// others are taken from, so a longer span is covered 11 s back: 25..35.
		{"beyond the ring", time.Hour, 11 * time.Second, 30},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := d.Values(now, tc.span)
			if v.Covered != tc.wantCovered || !near(v.Waiting, tc.wantWaiting, 1e-9) {
				t.Errorf("covered %v waiting %v, want %v and %v", v.Covered, v.Waiting, tc.wantCovered, tc.wantWaiting)
			}
		})
	}
}

func TestRingGrowsWhenTickedFasterThanReported(t *testing.T) {
	d := NewDeployment(Config{ReportInterval: time.Second, Stable: 10 * time.Second, Panic: 2 * time.Second})
	for i := 1; i <= 100; i++ {
		feed(d, at(float64(i)/4), Ready, Sample{Waiting: 1}, "a")
	}
	if v := d.Values(at(25), 10*time.Second); v.Covered != 10*time.Second {
		t.Errorf("covered %v at four ticks a second, want the whole 10 s window", v.Covered)
	}
}

func TestArrivalRate(t *testing.T) {
	tests := []struct {
		name string
		run  func(d *Deployment) Values
		want float64
	}{
		{"finished only", func(d *Deployment) Values {
			for i := 1; i <= 20; i++ {
				feed(d, at(float64(i)), Ready, Sample{Running: 4, FinishedPerSec: 5}, "a", "b")
			}
			return d.Values(at(20), 10*time.Second)
		}, 10},
		{"finished plus queue growth", func(d *Deployment) Values {
			// Each replica finishes 5/s while its queue grows by 2 a second: 7/s arrive.
			for i := 1; i <= 20; i++ {
				feed(d, at(float64(i)), Ready, Sample{Waiting: 2 * float64(i), Running: 8, FinishedPerSec: 5}, "a", "b")
			}
			return d.Values(at(20), 10*time.Second)
		}, 14},
		{"a draining queue lowers it", func(d *Deployment) Values {
			for i := 1; i <= 20; i++ {
				feed(d, at(float64(i)), Ready, Sample{Waiting: 40 - 2*float64(i), Running: 8, FinishedPerSec: 5}, "a")
			}
			return d.Values(at(20), 10*time.Second)
		}, 3},
		{"a replica joining or leaving is not load", func(d *Deployment) Values {
			for i := 1; i <= 20; i++ {
				now := at(float64(i))
				feed(d, now, Ready, Sample{Running: 4, FinishedPerSec: 5}, "a")
				if i == 12 {
					d.Observe("b", Ready, Sample{Time: now, Waiting: 30, Running: 20, FinishedPerSec: 0})
				}
				if i == 15 {
					d.Remove("b")
				}
			}
			return d.Values(at(20), 10*time.Second)
		}, 5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := tc.run(NewDeployment(Config{}))
			if !near(v.ArrivalRate, tc.want, 1e-9) {
				t.Errorf("arrival rate %v, want %v", v.ArrivalRate, tc.want)
			}
		})
	}
}

func TestStale(t *testing.T) {
	d := NewDeployment(Config{})
	for i := 1; i <= 20; i++ {
		now := at(float64(i))
		feed(d, now, Ready, Sample{Waiting: 3, KVCache: 0.5, HasKVCache: true}, "a")
		if i <= 10 {
			d.Observe("b", Ready, Sample{Time: now, Waiting: 100, KVCache: 0.9, HasKVCache: true})
		}
		d.Observe("c", Starting, Sample{Time: now})
		d.Tick(now)
	}
	tests := []struct {
		name                   string
		now                    time.Time
		ready, starting, stale int
	}{
		{"fresh within three intervals", at(13), 2, 1, 0},
		{"stale after three intervals", at(13.5), 1, 1, 1},
		{"everyone stale when reports stop", at(30), 0, 0, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := d.Values(tc.now, 6*time.Second)
			if v.Ready != tc.ready || v.Starting != tc.starting || v.Stale != tc.stale {
				t.Errorf("ready/starting/stale = %d/%d/%d, want %d/%d/%d", v.Ready, v.Starting, v.Stale, tc.ready, tc.starting, tc.stale)
			}
		})
	}
	t.Run("stale data is not used", func(t *testing.T) {
		v := d.Values(at(20), 6*time.Second)
		if !near(v.Waiting, 3, 1e-9) || !near(v.KVCache, 0.5, 1e-9) {
			t.Errorf("waiting %v kv %v, want only the fresh replica's 3 and 0.5", v.Waiting, v.KVCache)
		}
	})
	t.Run("no ticks, no coverage", func(t *testing.T) {
		if v := d.Values(at(100), 60*time.Second); v.Covered != 0 || v.Waiting != 0 {
			t.Errorf("covered %v waiting %v long after the last tick, want 0", v.Covered, v.Waiting)
		}
	})
}

func TestMeansAndSaturation(t *testing.T) {
	d := NewDeployment(Config{})
	for i := 1; i <= 10; i++ {
		now := at(float64(i))
		d.Observe("busy", Ready, Sample{Time: now, Waiting: 4, Running: 16, FinishedPerSec: 8, GenerationTPS: 800, GPUUtil: 90, HasGPUUtil: true, KVCache: 0.8, HasKVCache: true})
		d.Observe("idle", Ready, Sample{Time: now, Running: 2, FinishedPerSec: 1, GenerationTPS: 50, GPUUtil: 30, HasGPUUtil: true})
		d.Observe("loading", Starting, Sample{Time: now, GPUUtil: 100, HasGPUUtil: true, KVCache: 1, HasKVCache: true})
		d.Tick(now)
	}
	v := d.Values(at(10), 6*time.Second)
	if !near(v.GPUUtil, 60, 1e-9) || !near(v.KVCache, 0.8, 1e-9) {
		t.Errorf("gpu %v kv %v: want means over ready replicas that report them, 60 and 0.8", v.GPUUtil, v.KVCache)
	}
	if !near(v.SaturatedFinishedPerReplica, 8, 1e-9) {
		t.Errorf("saturated finished per replica %v, want the busy replica's 8", v.SaturatedFinishedPerReplica)
	}
	if !near(v.SaturatedGenerationTPSPerReplica, 800, 1e-9) {
		t.Errorf("saturated generation per replica %v, want the busy replica's 800", v.SaturatedGenerationTPSPerReplica)
	}
	if !near(v.FinishedPerSec, 9, 1e-9) || !near(v.Waiting, 4, 1e-9) || !near(v.Running, 18, 1e-9) {
		t.Errorf("finished %v waiting %v running %v, want totals 9, 4, 18", v.FinishedPerSec, v.Waiting, v.Running)
	}
}

func TestSaturationNeedsAQueueAtBothEnds(t *testing.T) {
	d := NewDeployment(Config{})
	d.Observe("a", Ready, Sample{Time: at(1), FinishedPerSec: 3})
	d.Tick(at(1))
	d.Observe("a", Ready, Sample{Time: at(2), Waiting: 2, FinishedPerSec: 3})
	d.Tick(at(2))
	if v := d.Values(at(2), 6*time.Second); v.SaturatedFinishedPerReplica != 0 {
		t.Errorf("a queue that just formed counted as saturation: %v", v.SaturatedFinishedPerReplica)
	}
}

func TestSetConfigChangesWindows(t *testing.T) {
	d := NewDeployment(Config{Stable: 10 * time.Second, Panic: 2 * time.Second})
	for i := 1; i <= 10; i++ {
		feed(d, at(float64(i)), Ready, Sample{Waiting: 1}, "a")
	}
	d.SetConfig(Config{Stable: 30 * time.Second, Panic: 5 * time.Second})
	for i := 11; i <= 40; i++ {
		feed(d, at(float64(i)), Ready, Sample{Waiting: 1}, "a")
	}
	if v := d.Values(at(40), 30*time.Second); v.Covered != 30*time.Second {
		t.Errorf("covered %v of the new 30 s stable window", v.Covered)
	}
	d.SetConfig(Config{ReportInterval: 10 * time.Second})
	d.Observe("b", Ready, Sample{Time: at(40), Waiting: 5})
	if v := d.Values(at(60), time.Minute); v.Stale != 0 {
		t.Errorf("stale %d 20 s after the last report with a 10 s report interval", v.Stale)
	}
}

func TestTickIgnoresRepeatsAndBridgesGaps(t *testing.T) {
	d := NewDeployment(Config{})
	feed(d, at(1), Ready, Sample{Running: 1, FinishedPerSec: 2}, "a")
	feed(d, at(1), Ready, Sample{Running: 1, FinishedPerSec: 2}, "a")
	feed(d, at(0.5), Ready, Sample{Running: 1, FinishedPerSec: 2}, "a")
	if d.pushed != 1 {
		t.Fatalf("%d points after three ticks at or before the first, want 1", d.n)
	}
	// After a minute without ticks, a point claims at most three report intervals, and the
	// change of the queue across the gap is not taken for arrivals.
	feed(d, at(61), Ready, Sample{Waiting: 500, Running: 1, FinishedPerSec: 2}, "a")
	v := d.Values(at(61), time.Minute)
	if v.Covered != 3*time.Second || !near(v.ArrivalRate, 2, 1e-9) {
		t.Errorf("covered %v arrival %v after a gap, want 3s and 2", v.Covered, v.ArrivalRate)
	}
}

func TestRemoveAndReorder(t *testing.T) {
	d := NewDeployment(Config{})
	for _, id := range []string{"a", "b", "c"} {
		d.Observe(id, Ready, Sample{Time: at(1)})
	}
	d.Remove("a")
	d.Remove("nope")
	d.Observe("c", Starting, Sample{Time: at(2)})
	v := d.Values(at(2), time.Minute)
	if d.Replicas() != 2 || v.Ready != 1 || v.Starting != 1 {
		t.Errorf("replicas %d ready %d starting %d, want 2, 1, 1", d.Replicas(), v.Ready, v.Starting)
	}
	// An older report than the one held is ignored.
	d.Observe("c", Ready, Sample{Time: at(1.5), Waiting: 9})
	d.Tick(at(2))
	if v := d.Values(at(2), time.Minute); v.Waiting != 0 {
		t.Errorf("waiting %v from an out-of-order report", v.Waiting)
	}
}

func TestWindowLatencyMerge(t *testing.T) {
	d := NewDeployment(Config{})
	// One replica: five ticks fast, then five slow with as many requests. Each tick passes its
	// replica's summary through unchanged, so the window is the exact mixture of the two.
	for i := 1; i <= 10; i++ {
		s := Summary{P50: 1, P95: 2, Count: 10}
		if i > 5 {
			s = Summary{P50: 100, P95: 200, Count: 10}
		}
		d.Observe("a", Ready, Sample{Time: at(float64(i)), E2E: s, TTFT: s})
		d.Tick(at(float64(i)))
	}
	v := d.Values(at(10), 10*time.Second)
	if v.Requests != 100 {
		t.Errorf("requests %d, want 100", v.Requests)
	}
	// Half the requests are fast and end at 1*2^2 = 4 s, the slow half start at 100/2^2 =
	// 25 s: the median is the least latency with half below, 4 s. p95 is the slow half's
	// 90th percentile: 100*2^(0.4/0.45).
	if !near(v.E2EP50/4, 1, 1e-6) || !near(v.E2EP95/(100*math.Pow(2, 0.4/0.45)), 1, 1e-6) {
		t.Errorf("e2e p50 %v p95 %v", v.E2EP50, v.E2EP95)
	}
	wantMean := (meanOf(Summary{P50: 1, P95: 2}) + meanOf(Summary{P50: 100, P95: 200})) / 2
	if !near(v.E2EMean, wantMean, 1e-9) {
		t.Errorf("e2e mean %v, want %v", v.E2EMean, wantMean)
	}
	// Only new samples count: ticking again without a new report adds no requests.
	d.Tick(at(11))
	if v := d.Values(at(11), 10*time.Second); v.Requests != 90 {
		t.Errorf("requests %d after a tick without reports, want 90 (the oldest tick left)", v.Requests)
	}
}

// TestWindowAgainstPooledTruth runs the whole two-level merge (replicas into ticks, ticks
// into a window) on summaries of sampled latencies and compares it with the percentiles of
// all the samples pooled.
func TestWindowAgainstPooledTruth(t *testing.T) {
	tests := []struct {
		name   string
		median func(replica, tick int) float64
	}{
		{"steady", func(int, int) float64 { return 0.4 }},
		{"one replica overloaded", func(r, _ int) float64 {
			if r == 0 {
				return 6
			}
			return 0.4
		}},
		{"latency climbing", func(_, tick int) float64 { return 0.2 * math.Pow(1.15, float64(tick)) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(5, 6))
			d := NewDeployment(Config{})
			var pooled []float64
			for tick := 1; tick <= 30; tick++ {
				now := at(float64(tick))
				for r := range 10 {
					xs := lognormal(rng, 200, tc.median(r, tick), 0.35)
					pooled = append(pooled, xs...)
					d.Observe(string(rune('a'+r)), Ready, Sample{Time: now, TTFT: Summary{P50: pct(xs, 0.5), P95: pct(xs, 0.95), Count: 200}})
				}
				d.Tick(now)
			}
			v := d.Values(at(30), time.Minute)
			want50, want95 := pct(pooled, 0.5), pct(pooled, 0.95)
			if math.Abs(v.TTFTP50/want50-1) > 0.1 || math.Abs(v.TTFTP95/want95-1) > 0.1 {
				t.Errorf("window p50 %.3f p95 %.3f, pooled truth %.3f %.3f", v.TTFTP50, v.TTFTP95, want50, want95)
			}
		})
	}
}

func TestAllocationFreeSteadyState(t *testing.T) {
	d := NewDeployment(Config{})
	ids := []string{"r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9"}
	sec := 0
	step := func() {
		sec++
		now := at(float64(sec))
		for i, id := range ids {
			d.Observe(id, Ready, Sample{Time: now, Waiting: float64(i % 3), Running: 10, FinishedPerSec: 3,
				TTFT: Summary{P50: 0.2, P95: 0.5 + float64(i)/10, Count: 3}, E2E: Summary{P50: 2, P95: 4, Count: 3}})
		}
		d.Tick(now)
		_ = d.Values(now, time.Minute)
		_ = d.Values(now, 6*time.Second)
	}
	for range 100 {
		step()
	}
	if n := testing.AllocsPerRun(100, step); n != 0 {
		t.Errorf("%v allocations per tick in steady state", n)
	}
}

// lognormal draws n latencies with the given median and log-space sigma.
func lognormal(rng *rand.Rand, n int, median, sigma float64) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = median * math.Exp(sigma*rng.NormFloat64())
	}
	return out
}

func pct(xs []float64, q float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[int(q*float64(len(s)-1))]
}

// TestMergeAgainstPooledTruth checks the merge on what it is for: replicas report p50 and p95
// of their own requests, and the window must come close to the percentiles of all requests
// pooled, which the count-weighted average of percentiles does not.
func TestMergeAgainstPooledTruth(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	tests := []struct {
		name   string
		groups [][]float64
	}{
		{"equal replicas", [][]float64{lognormal(rng, 2000, 0.5, 0.4), lognormal(rng, 2000, 0.5, 0.4), lognormal(rng, 2000, 0.5, 0.4)}},
		{"one overloaded replica of ten", append(
			[][]float64{lognormal(rng, 1000, 5, 0.3)},
			lognormal(rng, 1000, 0.5, 0.3), lognormal(rng, 1000, 0.5, 0.3), lognormal(rng, 1000, 0.5, 0.3),
			lognormal(rng, 1000, 0.5, 0.3), lognormal(rng, 1000, 0.5, 0.3), lognormal(rng, 1000, 0.5, 0.3),
			lognormal(rng, 1000, 0.5, 0.3), lognormal(rng, 1000, 0.5, 0.3), lognormal(rng, 1000, 0.5, 0.3))},
		{"unequal counts and spreads", [][]float64{lognormal(rng, 5000, 0.2, 0.2), lognormal(rng, 500, 1, 0.8), lognormal(rng, 100, 3, 0.5)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var pooled []float64
			var cs []comp
			var naive, n float64
			for _, g := range tc.groups {
				pooled = append(pooled, g...)
				s := Summary{P50: pct(g, 0.5), P95: pct(g, 0.95), Count: uint64(len(g))}
				c, _ := toComp(s)
				cs = append(cs, c)
				naive += s.P95 * float64(len(g))
				n += float64(len(g))
			}
			naive /= n
			u50, _ := mixQuantile(cs, nil, 0.5)
			got50 := math.Exp(u50)
			u95, _ := mixQuantile(cs, nil, 0.95)
			got95 := math.Exp(u95)
			want50, want95 := pct(pooled, 0.5), pct(pooled, 0.95)
			if math.Abs(got50/want50-1) > 0.1 || math.Abs(got95/want95-1) > 0.1 {
				t.Errorf("merged p50 %.3f p95 %.3f, pooled truth %.3f %.3f (naive p95 %.3f)", got50, got95, want50, want95, naive)
			}
		})
	}
}

// bruteQuantile finds the mixture quantile by bisection on the CDF written out directly.
func bruteQuantile(cs []comp, q float64) float64 {
	cdf := func(u float64) float64 {
		var f, w float64
		for _, c := range cs {
			w += float64(c.w)
			var k [5]float64
			for i := range k {
				k[i] = float64(c.k[i])
			}
			p := 0.0
			switch {
			case u >= k[4]:
				p = 1
			case u >= k[0]:
				for i := 0; i < 4; i++ {
					if u < k[i+1] {
						p = cum[i] + mass[i]*(u-k[i])/(k[i+1]-k[i])
						break
					}
				}
			}
			f += float64(c.w) * p
		}
		return f / w
	}
	lo, hi := -50.0, 50.0
	for range 200 {
		m := (lo + hi) / 2
		if cdf(m) >= q {
			hi = m
		} else {
			lo = m
		}
	}
	return hi
}

func TestMixQuantileMatchesBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for trial := range 500 {
		n := 1 + rng.IntN(60)
		cs := make([]comp, n)
		for i := range cs {
			p50 := math.Exp(rng.NormFloat64())
			p95 := p50 * math.Exp(rng.ExpFloat64()*0.5)
			if rng.IntN(10) == 0 {
				p95 = p50 // point masses too
			}
			cs[i], _ = toComp(Summary{P50: p50, P95: p95, Count: uint64(1 + rng.IntN(100))})
		}
		if rng.IntN(2) == 0 {
			// Merged, skewed components as ticks hold them.
			for i := range cs {
				j := min(i+1+rng.IntN(5), len(cs))
				cs[i] = merge(slices.Clone(cs[i:j]))
			}
		}
		for _, q := range []float64{0.01, 0.5, 0.9, 0.95, 0.99} {
			got, _ := mixQuantile(cs[:len(cs)/2], cs[len(cs)/2:], q)
			want := bruteQuantile(cs, q)
			if !near(got, want, 1e-6) {
				t.Fatalf("trial %d q %v: got %v want %v", trial, q, got, want)
			}
		}
		var knots [3]float64
		mixKnots(cs[:len(cs)/3], cs[len(cs)/3:], want05|want50|want95, &knots)
		for i, q := range []float64{0.05, 0.5, 0.95} {
			if want := bruteQuantile(cs, q); !near(knots[i], want, 1e-6) {
				t.Fatalf("trial %d knot quantile %v: got %v want %v", trial, q, knots[i], want)
			}
		}
	}
}

func TestSummaryQuantile(t *testing.T) {
	s := Summary{P50: 1, P95: 4, Count: 10}
	tests := []struct {
		q, want float64
	}{
		{0.5, 1}, {0.95, 4}, {1, 16}, {0.05, 0.25}, {0, 1.0 / 16},
		{0.725, 2}, // halfway between p50 and p95 in log space
	}
	for _, tc := range tests {
		if got := s.Quantile(tc.q); !near(got, tc.want, 1e-9) {
			t.Errorf("Quantile(%v) = %v, want %v", tc.q, got, tc.want)
		}
	}
	if got := (Summary{}).Quantile(0.99); got != 0 {
		t.Errorf("empty summary quantile %v, want 0", got)
	}
}

func TestTotalsIsValuesWithoutPercentiles(t *testing.T) {
	d := NewDeployment(Config{History: 2 * time.Minute})
	for i := 1; i <= 150; i++ {
		now := at(float64(i))
		d.Observe("r1", Ready, Sample{Time: now, Waiting: float64(i % 3), Running: 10, FinishedPerSec: 4, GenerationTPS: 400,
			TTFT: Summary{P50: 0.1, P95: 0.3, Count: 4}, E2E: Summary{P50: 2, P95: 3, Count: 4}})
		d.Tick(now)
	}
	v, tot := d.Values(at(150), 2*time.Minute), d.Totals(at(150), 2*time.Minute)
	if tot.TTFTP95 != 0 || tot.E2EP50 != 0 {
		t.Errorf("Totals has percentiles: %+v", tot)
	}
	if v.TTFTP95 == 0 {
		t.Fatalf("Values has no TTFT p95: %+v", v)
	}
	if v.Covered < 110*time.Second {
		t.Errorf("a 2 min read covers %v: the ring must hold History", v.Covered)
	}
	v.TTFTP50, v.TTFTP95, v.E2EP50, v.E2EP95 = 0, 0, 0, 0
	if v != tot {
		t.Errorf("Totals %+v, want Values without percentiles %+v", tot, v)
	}
}
