package scrape

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/types/known/timestamppb"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// DefaultMaxBodyBytes is the largest metrics body a Scraper reads when New is given 0.
// A vLLM server with a few engines prints well under 200 KiB.
const DefaultMaxBodyBytes = 4 << 20

// ErrBodyTooLarge is returned, wrapped, for a metrics body over the size limit.
var ErrBodyTooLarge = errors.New("metrics body too large")

// Scraper turns successive scrapes of one server instance into per-interval metrics. It keeps
// the cumulative counters and histograms of the last successful scrape. It is safe for
// concurrent use, though scrapes of one instance are meant to come one after another.
type Scraper struct {
	dialect  Dialect
	maxBytes int64

	mu   sync.Mutex
	prev *snapshot // nil until the first successful scrape
}

// snapshot is what one successful scrape said about the cumulative metrics a dialect reads,
// kept per label set so that one restarted engine among several is seen as a reset.
type snapshot struct {
	at time.Time
	// counters holds, for each source the body had, the value of each series by label set.
	counters map[source]map[string]float64
	// histograms holds, for each latency histogram the body had, each series by label set.
	histograms map[string]map[string]*histogram
}

// New returns a Scraper for a server of dialect d that refuses bodies over maxBodyBytes
// (0 or less: DefaultMaxBodyBytes).
func New(d Dialect, maxBodyBytes int64) *Scraper {
	if maxBodyBytes <= 0 {
		maxBodyBytes = DefaultMaxBodyBytes
	}
	return &Scraper{dialect: d, maxBytes: maxBodyBytes}
}

// Update parses one metrics body (Prometheus text format) scraped at now. Gauges are taken
// as they are; latencies and rates come from the difference to the previous successful
// scrape, so the first scrape gives gauges only, with zero rates and counts. A metric the
// body lacks leaves its value zero (KV-cache usage unset). A malformed, truncated or too
// large body returns an error and leaves the previous state untouched; the caller counts it
// in ScrapeErrors, which Update leaves 0.
func (s *Scraper) Update(body io.Reader, now time.Time) (*llmscalerv1.QueueMetrics, error) {
	sp, ok := specs[s.dialect]
	if !ok {
		_, err := ParseDialect(string(s.dialect))
		return nil, err
	}
	raw, err := readLimited(body, s.maxBytes)
	if err != nil {
		return nil, err
	}
	families, err := parse(raw)
	if err != nil {
		return nil, err
	}
	cur, err := takeSnapshot(sp, families, now)
	if err != nil {
		return nil, err
	}

	m := &llmscalerv1.QueueMetrics{
		Waiting:    clean(gaugeSum(families[sp.waiting])),
		Running:    clean(gaugeSum(families[sp.running])),
		Ttft:       &llmscalerv1.LatencySummary{},
		E2ELatency: &llmscalerv1.LatencySummary{},
		ScrapedAt:  timestamppb.New(now),
	}
	for _, name := range sp.kvCache {
		if v, ok := gaugeMean(families[name]); ok {
			v = math.Min(clean(v), 1)
			m.KvCacheUsage = &v
			break
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if prev := s.prev; prev != nil {
		m.Ttft = latency(prev, cur, sp.ttft)
		m.E2ELatency = latency(prev, cur, sp.e2e)
		if secs := now.Sub(prev.at).Seconds(); secs > 0 {
			m.PromptTokensPerSecond = clean(increase(prev, cur, sp.prompt) / secs)
			m.GenerationTokensPerSecond = clean(increase(prev, cur, sp.generation) / secs)
			m.FinishedRequestsPerSecond = clean(increase(prev, cur, sp.finished) / secs)
		}
	}
	s.prev = cur
	return m, nil
}

// readLimited reads all of r, refusing more than maxBytes.
func readLimited(r io.Reader, maxBytes int64) ([]byte, error) {
	limit := maxBytes
	if limit < math.MaxInt64 {
		limit++
	}
	b, err := io.ReadAll(io.LimitReader(r, limit))
	if err != nil {
		return nil, fmt.Errorf("read metrics body: %w", err)
	}
	if int64(len(b)) > maxBytes {
		return nil, fmt.Errorf("%w: over %d bytes", ErrBodyTooLarge, maxBytes)
	}
	return b, nil
}

// parse reads the Prometheus text format. Names are checked as UTF-8 rather than against the
// legacy character set, so that a server adding a metric with a newer-style name does not
// make every scrape fail; the names read here (vllm:..., with colons) are legacy-valid anyway.
func parse(raw []byte) (map[string]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("parse metrics: %w", err)
	}
	return families, nil
}

// takeSnapshot picks the cumulative metrics sp reads out of families.
func takeSnapshot(sp spec, families map[string]*dto.MetricFamily, now time.Time) (*snapshot, error) {
	snap := &snapshot{
		at:         now,
		counters:   map[source]map[string]float64{},
		histograms: map[string]map[string]*histogram{},
	}
	for _, list := range [][]source{sp.prompt, sp.generation, sp.finished} {
		for _, src := range list {
			if _, done := snap.counters[src]; done {
				continue
			}
			series, err := cumulative(src, families[src.name])
			if err != nil {
				return nil, fmt.Errorf("metric %s: %w", src.name, err)
			}
			if series != nil {
				snap.counters[src] = series
			}
		}
	}
	for _, name := range []string{sp.ttft, sp.e2e} {
		if name == "" {
			continue
		}
		if _, done := snap.histograms[name]; done {
			continue
		}
		series, err := histograms(families[name])
		if err != nil {
			return nil, fmt.Errorf("metric %s: %w", name, err)
		}
		if series != nil {
			snap.histograms[name] = series
		}
	}
	return snap, nil
}

// cumulative returns the value src reads from each series of mf by label set, or nil when
// mf is missing or of another type. A negative or non-finite count is malformed.
func cumulative(src source, mf *dto.MetricFamily) (map[string]float64, error) {
	if mf == nil || len(mf.GetMetric()) == 0 {
		return nil, nil
	}
	typ := mf.GetType()
	switch src.kind {
	case sampleValue:
		if typ != dto.MetricType_COUNTER && typ != dto.MetricType_UNTYPED && typ != dto.MetricType_GAUGE {
			return nil, nil
		}
	default:
		if typ != dto.MetricType_HISTOGRAM {
			return nil, nil
		}
	}
	out := make(map[string]float64, len(mf.GetMetric()))
	for _, m := range mf.GetMetric() {
		var v float64
		switch src.kind {
		case sampleValue:
			switch typ {
			case dto.MetricType_COUNTER:
				v = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				v = m.GetGauge().GetValue()
			default:
				v = m.GetUntyped().GetValue()
			}
		case histogramSum:
			h := m.GetHistogram()
			if h.SampleSum == nil {
				return nil, errors.New("no _sum (truncated body?)")
			}
			v = h.GetSampleSum()
		case histogramCount:
			h, err := newHistogram(m.GetHistogram())
			if err != nil {
				return nil, err
			}
			v = h.count
		}
		if !finiteNonNegative(v) {
			return nil, fmt.Errorf("invalid cumulative value %v", v)
		}
		out[labelKey(m)] += v
	}
	return out, nil
}

// histograms returns each series of the histogram mf by label set, or nil when mf is missing
// or not a histogram.
func histograms(mf *dto.MetricFamily) (map[string]*histogram, error) {
	if mf == nil || len(mf.GetMetric()) == 0 || mf.GetType() != dto.MetricType_HISTOGRAM {
		return nil, nil
	}
	out := make(map[string]*histogram, len(mf.GetMetric()))
	for _, m := range mf.GetMetric() {
		h, err := newHistogram(m.GetHistogram())
		if err != nil {
			return nil, err
		}
		key := labelKey(m)
		if dup, ok := out[key]; ok {
			// The same label set twice is not valid exposition; count both rather than guess.
			h = mergeHistograms([]*histogram{dup, h})
		}
		out[key] = h
	}
	return out, nil
}

// labelKey identifies a series within its family by its sorted label pairs.
func labelKey(m *dto.Metric) string {
	pairs := make([]string, 0, len(m.GetLabel()))
	for _, l := range m.GetLabel() {
		pairs = append(pairs, l.GetName()+"\xff"+l.GetValue())
	}
	slices.Sort(pairs)
	return strings.Join(pairs, "\xfe")
}

// gaugeValues returns the finite values of the series of a gauge (or untyped) family.
func gaugeValues(mf *dto.MetricFamily) []float64 {
	if mf == nil {
		return nil
	}
	var out []float64
	for _, m := range mf.GetMetric() {
		var v float64
		switch mf.GetType() {
		case dto.MetricType_GAUGE:
			v = m.GetGauge().GetValue()
		case dto.MetricType_UNTYPED:
			v = m.GetUntyped().GetValue()
		default:
			return nil
		}
		if math.IsNaN(v) || math.IsInf(v, 0) {
			continue
		}
		out = append(out, v)
	}
	return out
}

// gaugeSum adds a gauge over its label sets; 0 when the body lacks it.
func gaugeSum(mf *dto.MetricFamily) float64 {
	var sum float64
	for _, v := range gaugeValues(mf) {
		sum += v
	}
	return sum
}

// gaugeMean averages a gauge over its label sets; false when the body lacks it.
func gaugeMean(mf *dto.MetricFamily) (float64, bool) {
	vs := gaugeValues(mf)
	if len(vs) == 0 {
		return 0, false
	}
	var sum float64
	for _, v := range vs {
		sum += v
	}
	return sum / float64(len(vs)), true
}

// increase is how much the first of srcs present in both snapshots grew between them, 0 when
// none is. A series lower than before was reset (the server restarted), and a series new
// since prev started from zero: either way its whole value is new.
func increase(prev, cur *snapshot, srcs []source) float64 {
	for _, src := range srcs {
		before, ok1 := prev.counters[src]
		now, ok2 := cur.counters[src]
		if !ok1 || !ok2 {
			continue
		}
		var sum float64
		for _, key := range sortedKeys(now) {
			v := now[key]
			if p, ok := before[key]; ok && v >= p {
				v -= p
			}
			sum += v
		}
		return sum
	}
	return 0
}

// latency summarises the observations histogram name gained between prev and cur. It is
// empty when either snapshot lacks the histogram or nothing was observed.
func latency(prev, cur *snapshot, name string) *llmscalerv1.LatencySummary {
	out := &llmscalerv1.LatencySummary{}
	if name == "" {
		return out
	}
	before, ok1 := prev.histograms[name]
	now, ok2 := cur.histograms[name]
	if !ok1 || !ok2 {
		return out
	}
	deltas := make([]*histogram, 0, len(now))
	for _, key := range sortedKeys(now) {
		deltas = append(deltas, now[key].since(before[key]))
	}
	d := mergeHistograms(deltas)
	out.Count = toCount(d.count)
	if out.Count == 0 {
		return out
	}
	out.P50Seconds = d.quantile(0.5)
	out.P95Seconds = d.quantile(0.95)
	return out
}

// sortedKeys returns the keys of m in order, so that sums do not depend on map order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
