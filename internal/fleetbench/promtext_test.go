package fleetbench

import (
	"math"
	"strings"
	"testing"
)

const scrape0 = `# HELP llmscaler_controller_agent_messages_total Messages received from agents, by type.
# TYPE llmscaler_controller_agent_messages_total counter
llmscaler_controller_agent_messages_total{type="heartbeat"} 40
llmscaler_controller_agent_messages_total{type="report"} 1000
# HELP llmscaler_controller_terms_total Terms.
# TYPE llmscaler_controller_terms_total counter
llmscaler_controller_terms_total 1
# HELP llmscaler_controller_report_ingest_seconds Ingest.
# TYPE llmscaler_controller_report_ingest_seconds histogram
llmscaler_controller_report_ingest_seconds_bucket{le="0.001"} 100
llmscaler_controller_report_ingest_seconds_bucket{le="0.01"} 900
llmscaler_controller_report_ingest_seconds_bucket{le="0.1"} 1000
llmscaler_controller_report_ingest_seconds_bucket{le="+Inf"} 1000
llmscaler_controller_report_ingest_seconds_sum 5
llmscaler_controller_report_ingest_seconds_count 1000
`

// scrape1 is scrape0 after 1000 more reports, every one of them slow, and a counter whose
// label is spelled "kind".
const scrape1 = `# TYPE llmscaler_controller_agent_messages_total counter
llmscaler_controller_agent_messages_total{kind="report"} 2000
# TYPE llmscaler_controller_report_ingest_seconds histogram
llmscaler_controller_report_ingest_seconds_bucket{le="0.001"} 100
llmscaler_controller_report_ingest_seconds_bucket{le="0.01"} 900
llmscaler_controller_report_ingest_seconds_bucket{le="0.1"} 1500
llmscaler_controller_report_ingest_seconds_bucket{le="1"} 1900
llmscaler_controller_report_ingest_seconds_bucket{le="+Inf"} 2000
llmscaler_controller_report_ingest_seconds_sum 400
llmscaler_controller_report_ingest_seconds_count 2000
`

func parse(t *testing.T, s string) Metrics {
	t.Helper()
	m, err := ParseMetrics(strings.NewReader(s))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestValueMatchesEitherLabelName(t *testing.T) {
	m0, m1 := parse(t, scrape0), parse(t, scrape1)
	if v, ok := m0.Value(messagesMetric, reportSeries); !ok || v != 1000 {
		t.Errorf("reports in scrape0 = %v, %v; want 1000", v, ok)
	}
	if v, ok := m1.Value(messagesMetric, reportSeries); !ok || v != 2000 {
		t.Errorf("reports in scrape1 (label kind) = %v, %v; want 2000", v, ok)
	}
	if v, ok := m0.Value(messagesMetric); !ok || v != 1040 {
		t.Errorf("all messages = %v, %v; want the sum 1040", v, ok)
	}
	if _, ok := m0.Value(messagesMetric, LabelAny{Names: []string{"type"}, Value: "desired_ack"}); ok {
		t.Error("a series that does not exist was found")
	}
	if _, ok := m1.Value(termsMetric); ok {
		t.Error("a metric absent from the scrape was found")
	}
}

func TestHistogramQuantileInterpolatesInTheBucket(t *testing.T) {
	h, ok := parse(t, scrape0).Histogram(ingestMetric)
	if !ok {
		t.Fatal("histogram not found")
	}
	for _, tc := range []struct {
		q, want float64
	}{
		// rank 500: in (0.001, 0.01], 400 of its 800 -> halfway.
		{0.5, 0.001 + 0.009*0.5},
		// rank 50: half of the first bucket, which starts at 0.
		{0.05, 0.0005},
		// rank 990: in (0.01, 0.1], 90 of its 100.
		{0.99, 0.01 + 0.09*0.9},
	} {
		got, ok := h.Quantile(tc.q)
		if !ok || math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("Quantile(%v) = %v, %v; want %v", tc.q, got, ok, tc.want)
		}
	}
}

func TestHistogramSinceIsTheWindowOnly(t *testing.T) {
	h0, _ := parse(t, scrape0).Histogram(ingestMetric)
	h1, _ := parse(t, scrape1).Histogram(ingestMetric)
	d := h1.Since(h0)
	if d.Count != 1000 || d.Sum != 395 {
		t.Fatalf("window count %v sum %v, want 1000 and 395", d.Count, d.Sum)
	}
	// In the window no report was faster than 10 ms: rank 500 is the top of the 500 in
	// (0.01, 0.1] (the 1 s bucket, new in scrape1, was empty before: 1000 of the 1000).
	if p50, ok := d.Quantile(0.5); !ok || math.Abs(p50-0.1) > 1e-12 {
		t.Errorf("window p50 = %v, %v; want 0.1", p50, ok)
	}
	// Rank 990 is among the 100 beyond 1 s: the highest finite bound.
	if p99, ok := d.Quantile(0.99); !ok || p99 != 1 {
		t.Errorf("window p99 = %v, %v; want 1 (the +Inf bucket gives the highest finite bound)", p99, ok)
	}
	// Over the whole life the median is still fast.
	if p50, _ := h1.Quantile(0.5); p50 > 0.1 {
		t.Errorf("lifetime p50 = %v, should be at most 0.1", p50)
	}
}

func TestEmptyHistogramHasNoQuantile(t *testing.T) {
	h0, _ := parse(t, scrape0).Histogram(ingestMetric)
	if _, ok := h0.Since(h0).Quantile(0.5); ok {
		t.Error("a window without observations gave a quantile")
	}
	if _, ok := parse(t, scrape0).Histogram("nope"); ok {
		t.Error("a missing histogram was found")
	}
	if _, ok := parse(t, scrape0).Histogram(termsMetric); ok {
		t.Error("a counter was taken for a histogram")
	}
}

func TestParseMetricsRefusesGarbage(t *testing.T) {
	if _, err := ParseMetrics(strings.NewReader("this is { not metrics\n")); err == nil {
		t.Error("garbage parsed")
	}
}
