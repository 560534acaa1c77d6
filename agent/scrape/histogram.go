package scrape

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"

	dto "github.com/prometheus/client_model/go"
)

// histogram is one classic Prometheus histogram: cumulative bucket counts by upper bound,
// bounds ascending and the last one +Inf.
type histogram struct {
	bounds []float64
	cum    []float64
	count  float64
}

// newHistogram checks and normalises one histogram series as the text parser left it.
// A series without a +Inf bucket or a _count is taken for a body cut short; counts that are
// negative or not finite are malformed.
func newHistogram(h *dto.Histogram) (*histogram, error) {
	if h.SampleCount == nil && h.SampleCountFloat == nil {
		return nil, errors.New("no _count (truncated body?)")
	}
	count := h.GetSampleCountFloat()
	if h.SampleCountFloat == nil {
		count = float64(h.GetSampleCount())
	}
	if !finiteNonNegative(count) {
		return nil, fmt.Errorf("invalid _count %v", count)
	}
	type bucket struct{ le, cum float64 }
	buckets := make([]bucket, 0, len(h.GetBucket()))
	hasInf := false
	for _, b := range h.GetBucket() {
		le := b.GetUpperBound()
		if math.IsNaN(le) {
			continue
		}
		cum := b.GetCumulativeCountFloat()
		if b.CumulativeCountFloat == nil {
			cum = float64(b.GetCumulativeCount())
		}
		if !finiteNonNegative(cum) {
			return nil, fmt.Errorf("invalid count %v in bucket le=%v", cum, le)
		}
		hasInf = hasInf || math.IsInf(le, 1)
		buckets = append(buckets, bucket{le, cum})
	}
	if !hasInf {
		return nil, errors.New("no +Inf bucket (truncated body?)")
	}
	sort.SliceStable(buckets, func(i, j int) bool { return buckets[i].le < buckets[j].le })
	out := &histogram{count: count}
	for _, b := range buckets {
		if n := len(out.bounds); n > 0 && out.bounds[n-1] == b.le {
			// The same bound twice: keep the larger count.
			out.cum[n-1] = math.Max(out.cum[n-1], b.cum)
			continue
		}
		out.bounds = append(out.bounds, b.le)
		out.cum = append(out.cum, b.cum)
	}
	out.ensureMonotonic()
	return out, nil
}

// ensureMonotonic raises any bucket lower than the one before it, as Prometheus does for
// buckets scraped while observations were being added.
func (h *histogram) ensureMonotonic() {
	for i := 1; i < len(h.cum); i++ {
		if h.cum[i] < h.cum[i-1] {
			h.cum[i] = h.cum[i-1]
		}
	}
}

// since returns the observations h gained after prev, an earlier scrape of the same series.
// A smaller count, a smaller bucket, or a different bucket layout means the server restarted
// in between: then all of h is new.
func (h *histogram) since(prev *histogram) *histogram {
	if prev == nil || h.count < prev.count || !slices.Equal(h.bounds, prev.bounds) {
		return h
	}
	d := &histogram{
		bounds: h.bounds,
		cum:    make([]float64, len(h.cum)),
		count:  h.count - prev.count,
	}
	for i := range h.cum {
		if h.cum[i] < prev.cum[i] {
			return h
		}
		d.cum[i] = h.cum[i] - prev.cum[i]
	}
	return d
}

// at is the cumulative count of observations not above le, as far as the buckets tell:
// the count of the largest bound not above le.
func (h *histogram) at(le float64) float64 {
	i := sort.Search(len(h.bounds), func(i int) bool { return h.bounds[i] > le })
	if i == 0 {
		return 0
	}
	return h.cum[i-1]
}

// mergeHistograms adds series bucket-wise over the union of their bounds. Series of one
// metric normally share their buckets; where one lacks a bound it counts what it had at its
// next lower bound.
func mergeHistograms(hs []*histogram) *histogram {
	var bounds []float64
	for _, h := range hs {
		bounds = append(bounds, h.bounds...)
	}
	slices.Sort(bounds)
	bounds = slices.Compact(bounds)
	out := &histogram{bounds: bounds, cum: make([]float64, len(bounds))}
	for _, h := range hs {
		out.count += h.count
		for i, le := range bounds {
			out.cum[i] += h.at(le)
		}
	}
	out.ensureMonotonic()
	return out
}

// quantile estimates the q-quantile (0-1) of the observations in h the way Prometheus'
// histogram_quantile does: linear interpolation inside the bucket the rank falls in, 0 as
// the lower edge of the first bucket, and the largest finite bound when the rank falls in
// the +Inf bucket. It returns 0 when h holds no observations or nothing can be estimated.
func (h *histogram) quantile(q float64) float64 {
	n := len(h.cum)
	if n < 2 {
		return 0
	}
	total := h.cum[n-1]
	if total <= 0 {
		return 0
	}
	rank := q * total
	b := sort.SearchFloat64s(h.cum, rank)
	var v float64
	switch {
	case b >= n-1:
		v = h.bounds[n-2]
	case b == 0 && h.bounds[0] <= 0:
		v = h.bounds[0]
	default:
		start, end, count := 0.0, h.bounds[b], h.cum[b]
		if b > 0 {
			start = h.bounds[b-1]
			count -= h.cum[b-1]
			rank -= h.cum[b-1]
		}
		v = start + (end-start)*(rank/count)
	}
	return clean(v)
}

// finiteNonNegative reports whether v can be a count.
func finiteNonNegative(v float64) bool {
	return v >= 0 && !math.IsInf(v, 1)
}

// clean turns what cannot be a count, a rate or a latency (NaN, infinities, negatives) into 0.
func clean(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		return 0
	}
	return v
}

// toCount converts a non-negative float count to uint64, saturating.
func toCount(v float64) uint64 {
	v = math.Round(clean(v))
	if v >= math.MaxUint64 {
		return math.MaxUint64
	}
	return uint64(v)
}
