package fleetbench

import (
	"fmt"
	"io"
	"math"
	"sort"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Metrics is one scrape of a /metrics page.
type Metrics map[string]*dto.MetricFamily

// ParseMetrics reads the Prometheus text format.
func ParseMetrics(r io.Reader) (Metrics, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parse metrics: %w", err)
	}
	return Metrics(fams), nil
}

// Value is the sum of the counter, gauge or untyped series of name whose labels include
// every one of match (a label may be given under either of two names, see LabelAny). It
// reports false when no series matches.
func (m Metrics) Value(name string, match ...LabelAny) (float64, bool) {
	f := m[name]
	if f == nil {
		return 0, false
	}
	var sum float64
	found := false
	for _, s := range f.GetMetric() {
		if !matches(s, match) {
			continue
		}
		switch {
		case s.Counter != nil:
			sum += s.GetCounter().GetValue()
		case s.Gauge != nil:
			sum += s.GetGauge().GetValue()
		case s.Untyped != nil:
			sum += s.GetUntyped().GetValue()
		default:
			continue
		}
		found = true
	}
	return sum, found
}

// LabelAny matches a series that has any of Names with Value. It exists because a label is
// sometimes renamed ("type" and "kind" of the message counter) and the bench should read
// both.
type LabelAny struct {
	Names []string
	Value string
}

func matches(s *dto.Metric, match []LabelAny) bool {
	for _, want := range match {
		ok := false
		for _, lp := range s.GetLabel() {
			for _, n := range want.Names {
				if lp.GetName() == n && lp.GetValue() == want.Value {
					ok = true
				}
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// Histogram is a Prometheus histogram summed over its series: cumulative bucket counts by
// upper bound, ascending, the last one +Inf.
type Histogram struct {
	Bounds []float64
	Counts []float64
	Count  float64
	Sum    float64
}

// Histogram returns name's histogram summed over all its series, false when absent.
func (m Metrics) Histogram(name string) (Histogram, bool) {
	f := m[name]
	if f == nil || f.GetType() != dto.MetricType_HISTOGRAM {
		return Histogram{}, false
	}
	byBound := map[float64]float64{}
	var h Histogram
	for _, s := range f.GetMetric() {
		sh := s.GetHistogram()
		count := float64(sh.GetSampleCount())
		if sh.SampleCountFloat != nil {
			count = sh.GetSampleCountFloat()
		}
		h.Count += count
		h.Sum += sh.GetSampleSum()
		for _, b := range sh.GetBucket() {
			c := float64(b.GetCumulativeCount())
			if b.CumulativeCountFloat != nil {
				c = b.GetCumulativeCountFloat()
			}
			if !math.IsInf(b.GetUpperBound(), 1) {
				byBound[b.GetUpperBound()] += c
			}
		}
	}
	// The +Inf bucket is the sample count, whether or not the text listed it.
	byBound[math.Inf(1)] = h.Count
	for b := range byBound {
		h.Bounds = append(h.Bounds, b)
	}
	sort.Float64s(h.Bounds)
	h.Counts = make([]float64, len(h.Bounds))
	for i, b := range h.Bounds {
		h.Counts[i] = byBound[b]
	}
	return h, true
}

// Since is h less an earlier scrape of the same histogram: the observations in between. A
// bound the earlier scrape lacks takes its count at the next lower bound it has, which is
// exact for a cumulative histogram whose new bucket was empty before.
func (h Histogram) Since(earlier Histogram) Histogram {
	d := Histogram{Bounds: h.Bounds, Counts: make([]float64, len(h.Counts)), Count: h.Count - earlier.Count, Sum: h.Sum - earlier.Sum}
	j, prev := 0, 0.0
	for i, b := range h.Bounds {
		for j < len(earlier.Bounds) && earlier.Bounds[j] <= b {
			prev = earlier.Counts[j]
			j++
		}
		d.Counts[i] = h.Counts[i] - prev
	}
	return d
}

// Quantile estimates the q-quantile (0-1) as Prometheus's histogram_quantile does: find the
// bucket that holds the rank and interpolate linearly inside it; a rank in the +Inf bucket
// gives the highest finite bound. It reports false when the histogram is empty.
func (h Histogram) Quantile(q float64) (float64, bool) {
	n := len(h.Counts)
	if n == 0 || h.Counts[n-1] <= 0 || math.IsNaN(q) {
		return 0, false
	}
	q = min(max(q, 0), 1)
	rank := q * h.Counts[n-1]
	i := sort.Search(n, func(i int) bool { return h.Counts[i] >= rank })
	if i >= n-1 {
		if n < 2 {
			return 0, false // only the +Inf bucket: nothing to interpolate in
		}
		return h.Bounds[n-2], true
	}
	lo, below := 0.0, 0.0
	if i > 0 {
		lo, below = h.Bounds[i-1], h.Counts[i-1]
	} else if h.Bounds[0] <= 0 {
		return h.Bounds[0], true
	}
	in := h.Counts[i] - below
	if in <= 0 {
		return h.Bounds[i], true
	}
	return lo + (h.Bounds[i]-lo)*(rank-below)/in, true
}
