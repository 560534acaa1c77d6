package scrape

import (
	"bytes"
	"math"
	"testing"
	"time"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// FuzzUpdate feeds a dialect's scraper (dialect picks which) two arbitrary bodies, then the
// first again (a restart, as far as counters go). It must never panic, and whatever metrics
// it returns must be finite and non-negative, with the KV-cache usage in 0-1. The seed
// corpus in testdata/fuzz/FuzzUpdate holds excerpts of the captured scrapes, one per
// dialect, and some broken bodies. The seeds are kept to a few KB: minimising a new input
// costs a run per subset of its bytes, and larger ones ate the whole fuzz time.
func FuzzUpdate(f *testing.F) {
	f.Fuzz(func(t *testing.T, dialect uint8, first, second []byte) {
		d := dialects[int(dialect)%len(dialects)]
		s := New(d, 1<<20)
		for i, body := range [][]byte{first, second, first} {
			m, err := s.Update(bytes.NewReader(body), t0.Add(time.Duration(i)*10*time.Second))
			if err != nil {
				if m != nil {
					t.Fatalf("%s: metrics returned with error %v", d, err)
				}
				continue
			}
			checkSane(t, d, m)
		}
	})
}

func checkSane(t *testing.T, d Dialect, m *llmscalerv1.QueueMetrics) {
	t.Helper()
	values := map[string]float64{
		"waiting":          m.GetWaiting(),
		"running":          m.GetRunning(),
		"ttft p50":         m.GetTtft().GetP50Seconds(),
		"ttft p95":         m.GetTtft().GetP95Seconds(),
		"e2e p50":          m.GetE2ELatency().GetP50Seconds(),
		"e2e p95":          m.GetE2ELatency().GetP95Seconds(),
		"prompt tokens/s":  m.GetPromptTokensPerSecond(),
		"gen tokens/s":     m.GetGenerationTokensPerSecond(),
		"finished reqs/s":  m.GetFinishedRequestsPerSecond(),
		"kv cache (unset)": m.GetKvCacheUsage(),
	}
	for name, v := range values {
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			t.Fatalf("%s: %s = %v", d, name, v)
		}
	}
	if m.KvCacheUsage != nil && m.GetKvCacheUsage() > 1 {
		t.Fatalf("%s: kv cache usage %v above 1", d, m.GetKvCacheUsage())
	}
	if m.GetTtft() == nil || m.GetE2ELatency() == nil || m.GetScrapedAt() == nil {
		t.Fatalf("%s: nil summary or timestamp in %v", d, m)
	}
}
