package scrape

import (
	"bytes"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

var t0 = time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// withoutLines drops the lines of body that contain any of substrs.
func withoutLines(body []byte, substrs ...string) []byte {
	var out bytes.Buffer
	for _, line := range strings.SplitAfter(string(body), "\n") {
		keep := true
		for _, s := range substrs {
			if strings.Contains(line, s) {
				keep = false
			}
		}
		if keep {
			out.WriteString(line)
		}
	}
	return out.Bytes()
}

func ptr(v float64) *float64 { return &v }

func summary(p50, p95 float64, count uint64) *llmscalerv1.LatencySummary {
	return &llmscalerv1.LatencySummary{P50Seconds: p50, P95Seconds: p95, Count: count}
}

func empty() *llmscalerv1.LatencySummary { return &llmscalerv1.LatencySummary{} }

// mustUpdate runs one scrape and fails the test on error.
func mustUpdate(t *testing.T, s *Scraper, body []byte, at time.Time) *llmscalerv1.QueueMetrics {
	t.Helper()
	m, err := s.Update(bytes.NewReader(body), at)
	if err != nil {
		t.Fatalf("Update at %v: %v", at.Sub(t0), err)
	}
	return m
}

func diff(want, got *llmscalerv1.QueueMetrics) string {
	return cmp.Diff(want, got, protocmp.Transform(), cmpopts.EquateApprox(0, 1e-9))
}

// TestUpdateCapturedScrapes feeds two captured scrapes of each server and checks every value.
// Expected latencies are worked out from the bucket deltas written into the captures
// (interval deltas, merged over label sets, cumulative):
//
// vLLM TTFT, 40 requests: le 0.06: 8, 0.08: 18, 0.1: 32, 0.25: 37, 0.5: 40.
// p50: rank 20 in (0.08, 0.1], 2 of 14 in: 0.08 + 0.02*2/14. p95: rank 38 in (0.25, 0.5],
// 1 of 3 in: 0.25 + 0.25/3.
// vLLM e2e, 36 requests: le 2: 4, 2.5: 12, 5: 28, 10: 34, 15: 36. p50: rank 18 in (2.5, 5],
// 6 of 16: 2.5 + 2.5*6/16 = 3.4375. p95: rank 34.2 in (10, 15], 0.2 of 2: 10.5.
//
// TGI buckets are 0.0001*1.5^k (router/src/server.rs); b_k below is the k-th.
// Queue time, 20 requests: b12: 6, b13: 12, b14: 16, b15: 18, b20: 20. p50: rank 10 in
// (b12, b13], 4 of 6. p95: rank 19 in (b19, b20], 1 of 2.
// Request duration, 20 requests: b24: 4, b25: 12, b26: 18, b27: 20. p50: rank 10 in
// (b24, b25], 6 of 8. p95: rank 19 in (b26, b27], 1 of 2.
//
// SGLang TTFT, 30 requests: le 0.2: 4, 0.4: 16, 0.6: 24, 0.8: 27, 1: 29, 2: 30. p50: rank
// 15 in (0.2, 0.4], 11 of 12. p95: rank 28.5 in (0.8, 1], 1.5 of 2: 0.95.
// SGLang e2e, 28 requests: le 4: 6, 6: 16, 8: 24, 10: 27, 40: 28. p50: rank 14 in (4, 6],
// 8 of 10: 5.6. p95: rank 26.6 in (8, 10], 2.6 of 3.
func TestUpdateCapturedScrapes(t *testing.T) {
	const (
		b12 = 0.0129746337890625
		b13 = 0.01946195068359375
		b19 = 0.22168378200531003
		b20 = 0.33252567300796504
		b24 = 1.683411219602823
		b25 = 2.5251168294042348
		b26 = 3.787675244106352
		b27 = 5.681512866159528
	)
	tests := []struct {
		dialect  Dialect
		interval time.Duration
		first    *llmscalerv1.QueueMetrics
		second   *llmscalerv1.QueueMetrics
	}{
		{
			dialect:  VLLM,
			interval: 15 * time.Second,
			first: &llmscalerv1.QueueMetrics{
				Waiting:      1,
				Running:      14,
				KvCacheUsage: ptr((0.31 + 0.27) / 2),
				Ttft:         empty(),
				E2ELatency:   empty(),
			},
			second: &llmscalerv1.QueueMetrics{
				Waiting:                   5,
				Running:                   22,
				KvCacheUsage:              ptr((0.62 + 0.48) / 2),
				Ttft:                      summary(0.08+0.02*2/14, 0.25+0.25/3, 40),
				E2ELatency:                summary(3.4375, 10.5, 36),
				PromptTokensPerSecond:     (24000 + 16500) / 15.0,
				GenerationTokensPerSecond: (9000 + 6000) / 15.0,
				FinishedRequestsPerSecond: 36 / 15.0,
			},
		},
		{
			dialect:  TGI,
			interval: 10 * time.Second,
			first: &llmscalerv1.QueueMetrics{
				Waiting:    0,
				Running:    2,
				Ttft:       empty(),
				E2ELatency: empty(),
			},
			second: &llmscalerv1.QueueMetrics{
				Waiting:                   4,
				Running:                   8,
				Ttft:                      summary(b12+(b13-b12)*4/6, b19+(b20-b19)/2, 20),
				E2ELatency:                summary(b24+(b25-b24)*6/8, b26+(b27-b26)/2, 20),
				PromptTokensPerSecond:     10240 / 10.0,
				GenerationTokensPerSecond: 5000 / 10.0,
				FinishedRequestsPerSecond: 20 / 10.0,
			},
		},
		{
			dialect:  LlamaCpp,
			interval: 20 * time.Second,
			first: &llmscalerv1.QueueMetrics{
				Waiting:      0,
				Running:      1,
				KvCacheUsage: ptr(0.215),
				Ttft:         empty(),
				E2ELatency:   empty(),
			},
			second: &llmscalerv1.QueueMetrics{
				Waiting:                   2,
				Running:                   4,
				KvCacheUsage:              ptr(0.734),
				Ttft:                      empty(),
				E2ELatency:                empty(),
				PromptTokensPerSecond:     6000 / 20.0,
				GenerationTokensPerSecond: 2400 / 20.0,
			},
		},
		{
			dialect:  SGLang,
			interval: 30 * time.Second,
			first: &llmscalerv1.QueueMetrics{
				Waiting:      0,
				Running:      9,
				KvCacheUsage: ptr(0.3),
				Ttft:         empty(),
				E2ELatency:   empty(),
			},
			second: &llmscalerv1.QueueMetrics{
				Waiting:                   7,
				Running:                   24,
				KvCacheUsage:              ptr(0.81),
				Ttft:                      summary(0.2+0.2*11/12, 0.95, 30),
				E2ELatency:                summary(5.6, 8+2*2.6/3, 28),
				PromptTokensPerSecond:     36000 / 30.0,
				GenerationTokensPerSecond: 9000 / 30.0,
				FinishedRequestsPerSecond: 28 / 30.0,
			},
		},
	}
	for _, tc := range tests {
		t.Run(string(tc.dialect), func(t *testing.T) {
			s := New(tc.dialect, 0)
			t1 := t0.Add(tc.interval)

			got := mustUpdate(t, s, readTestdata(t, string(tc.dialect)+"_1.txt"), t0)
			tc.first.ScrapedAt = timestamppb.New(t0)
			if d := diff(tc.first, got); d != "" {
				t.Errorf("first scrape (-want +got):\n%s", d)
			}

			got = mustUpdate(t, s, readTestdata(t, string(tc.dialect)+"_2.txt"), t1)
			tc.second.ScrapedAt = timestamppb.New(t1)
			if d := diff(tc.second, got); d != "" {
				t.Errorf("second scrape (-want +got):\n%s", d)
			}
		})
	}
}

func TestUpdateFallbacks(t *testing.T) {
	tests := []struct {
		name    string
		dialect Dialect
		drop    []string // lines dropped from both captures
		check   func(t *testing.T, m *llmscalerv1.QueueMetrics)
	}{
		{
			name:    "vllm before 0.9 has only gpu_cache_usage_perc",
			dialect: VLLM,
			drop:    []string{"vllm:kv_cache_usage_perc"},
			check: func(t *testing.T, m *llmscalerv1.QueueMetrics) {
				if m.KvCacheUsage == nil || math.Abs(m.GetKvCacheUsage()-0.55) > 1e-9 {
					t.Errorf("kv cache usage = %v, want 0.55 from vllm:gpu_cache_usage_perc", m.KvCacheUsage)
				}
			},
		},
		{
			name:    "vllm without request_success counts finished requests from e2e histogram",
			dialect: VLLM,
			drop:    []string{"vllm:request_success"},
			check: func(t *testing.T, m *llmscalerv1.QueueMetrics) {
				if got, want := m.GetFinishedRequestsPerSecond(), 36/15.0; math.Abs(got-want) > 1e-9 {
					t.Errorf("finished requests/s = %v, want %v", got, want)
				}
			},
		},
		{
			name:    "tgi without tgi_request_success counts finished requests from tgi_request_duration",
			dialect: TGI,
			drop:    []string{"tgi_request_success"},
			check: func(t *testing.T, m *llmscalerv1.QueueMetrics) {
				if got := m.GetFinishedRequestsPerSecond(); math.Abs(got-2) > 1e-9 {
					t.Errorf("finished requests/s = %v, want 2", got)
				}
			},
		},
		{
			name:    "sglang without num_requests_total counts finished requests from e2e histogram",
			dialect: SGLang,
			drop:    []string{"sglang:num_requests_total"},
			check: func(t *testing.T, m *llmscalerv1.QueueMetrics) {
				if got, want := m.GetFinishedRequestsPerSecond(), 28/30.0; math.Abs(got-want) > 1e-9 {
					t.Errorf("finished requests/s = %v, want %v", got, want)
				}
			},
		},
		{
			name:    "newer llama.cpp has no kv gauge",
			dialect: LlamaCpp,
			drop:    []string{"llamacpp:kv_cache_"},
			check: func(t *testing.T, m *llmscalerv1.QueueMetrics) {
				if m.KvCacheUsage != nil {
					t.Errorf("kv cache usage = %v, want unset", m.GetKvCacheUsage())
				}
				if m.GetRunning() != 4 || m.GetPromptTokensPerSecond() != 300 {
					t.Errorf("running %v, prompt tokens/s %v; want 4 and 300", m.GetRunning(), m.GetPromptTokensPerSecond())
				}
			},
		},
		{
			name:    "vllm without latency histograms",
			dialect: VLLM,
			drop:    []string{"vllm:time_to_first_token_seconds", "vllm:e2e_request_latency_seconds"},
			check: func(t *testing.T, m *llmscalerv1.QueueMetrics) {
				if d := diff(&llmscalerv1.QueueMetrics{Ttft: empty(), E2ELatency: empty()},
					&llmscalerv1.QueueMetrics{Ttft: m.GetTtft(), E2ELatency: m.GetE2ELatency()}); d != "" {
					t.Errorf("latencies (-want +got):\n%s", d)
				}
				if m.GetWaiting() != 5 || m.GetFinishedRequestsPerSecond() == 0 {
					t.Errorf("waiting %v, finished/s %v; want 5 and the counter's rate", m.GetWaiting(), m.GetFinishedRequestsPerSecond())
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := New(tc.dialect, 0)
			intervals := map[Dialect]time.Duration{VLLM: 15 * time.Second, TGI: 10 * time.Second, LlamaCpp: 20 * time.Second, SGLang: 30 * time.Second}
			mustUpdate(t, s, withoutLines(readTestdata(t, string(tc.dialect)+"_1.txt"), tc.drop...), t0)
			m := mustUpdate(t, s, withoutLines(readTestdata(t, string(tc.dialect)+"_2.txt"), tc.drop...), t0.Add(intervals[tc.dialect]))
			tc.check(t, m)
		})
	}
}

func TestUpdateMissingMetrics(t *testing.T) {
	for _, d := range dialects {
		t.Run(string(d), func(t *testing.T) {
			s := New(d, 0)
			for i, body := range []string{
				"",
				"# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n" +
					"# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 12.5\n",
			} {
				at := t0.Add(time.Duration(i) * 10 * time.Second)
				got := mustUpdate(t, s, []byte(body), at)
				want := &llmscalerv1.QueueMetrics{Ttft: empty(), E2ELatency: empty(), ScrapedAt: timestamppb.New(at)}
				if d := diff(want, got); d != "" {
					t.Errorf("scrape %d (-want +got):\n%s", i, d)
				}
			}
		})
	}
}

// vllmBody prints a small vLLM scrape with one TTFT histogram series per engine, the given
// counters summed into prompt_tokens_total per engine, and per-engine waiting gauges.
func vllmBody(waiting []float64, prompt []float64, ttftBuckets [][]float64) []byte {
	var b strings.Builder
	b.WriteString("# TYPE vllm:num_requests_waiting gauge\n")
	for i, w := range waiting {
		b.WriteString(fmtLine("vllm:num_requests_waiting", i, "", w))
	}
	b.WriteString("# TYPE vllm:prompt_tokens_total counter\n")
	for i, p := range prompt {
		b.WriteString(fmtLine("vllm:prompt_tokens_total", i, "", p))
	}
	b.WriteString("# TYPE vllm:time_to_first_token_seconds histogram\n")
	bounds := []string{"0.1", "0.5", "1.0", "+Inf"}
	for i, cum := range ttftBuckets {
		for j, le := range bounds {
			b.WriteString(fmtLine("vllm:time_to_first_token_seconds_bucket", i, le, cum[j]))
		}
		b.WriteString(fmtLine("vllm:time_to_first_token_seconds_count", i, "", cum[len(cum)-1]))
		b.WriteString(fmtLine("vllm:time_to_first_token_seconds_sum", i, "", cum[len(cum)-1]*0.3))
	}
	return []byte(b.String())
}

func fmtLine(name string, engine int, le string, v float64) string {
	labels := `model_name="m",engine="` + string(rune('0'+engine)) + `"`
	if le != "" {
		labels += `,le="` + le + `"`
	}
	return name + "{" + labels + "} " + strconv.FormatFloat(v, 'g', -1, 64) + "\n"
}

func TestUpdateLabelSetsAndResets(t *testing.T) {
	tests := []struct {
		name   string
		bodies [][]byte
		want   *llmscalerv1.QueueMetrics // for the last scrape, 10 s after the one before
	}{
		{
			name: "label sets are summed",
			bodies: [][]byte{
				vllmBody([]float64{1, 2}, []float64{1000, 2000}, [][]float64{{1, 2, 3, 3}, {0, 1, 1, 1}}),
				vllmBody([]float64{3, 4}, []float64{1500, 2600}, [][]float64{{3, 5, 7, 7}, {2, 4, 5, 5}}),
			},
			// TTFT deltas: engine 0 le 0.1: 2, 0.5: 3, 1: 4; engine 1: 2, 3, 4. Merged 4, 6, 8.
			// p50 rank 4 at le 0.1: 0.1. p95 rank 7.6 in (0.5, 1], 1.6 of 2: 0.9.
			want: &llmscalerv1.QueueMetrics{
				Waiting:               7,
				Ttft:                  summary(0.1, 0.9, 8),
				E2ELatency:            empty(),
				PromptTokensPerSecond: (500 + 600) / 10.0,
			},
		},
		{
			name: "a restarted server counts its new totals",
			bodies: [][]byte{
				vllmBody([]float64{1}, []float64{900000}, [][]float64{{100, 200, 300, 310}}),
				vllmBody([]float64{0}, []float64{700}, [][]float64{{1, 2, 2, 2}}),
			},
			// Everything is lower: the delta is the new value. TTFT le 0.1: 1, 0.5: 2.
			// p50 rank 1 at le 0.1: 0.1. p95 rank 1.9 in (0.1, 0.5], 0.9 of 1: 0.46.
			want: &llmscalerv1.QueueMetrics{
				Ttft:                  summary(0.1, 0.1+0.4*0.9, 2),
				E2ELatency:            empty(),
				PromptTokensPerSecond: 700 / 10.0,
			},
		},
		{
			name: "one of two engines restarted",
			bodies: [][]byte{
				vllmBody([]float64{0, 0}, []float64{5000, 8000}, [][]float64{{10, 10, 10, 10}, {4, 8, 8, 8}}),
				vllmBody([]float64{0, 0}, []float64{5400, 300}, [][]float64{{11, 11, 11, 11}, {0, 1, 1, 1}}),
			},
			// Prompt tokens: 400 from engine 0, 300 from the restarted engine 1 (the sum
			// 13000 -> 5700 alone would hide engine 0's growth).
			// TTFT: engine 0 +1 at le 0.1, engine 1 restarted with 1 in (0.1, 0.5].
			// p50 rank 1 at le 0.1: 0.1. p95 rank 1.9 in (0.1, 0.5], 0.9 of 1: 0.46.
			want: &llmscalerv1.QueueMetrics{
				Ttft:                  summary(0.1, 0.1+0.4*0.9, 2),
				E2ELatency:            empty(),
				PromptTokensPerSecond: 700 / 10.0,
			},
		},
		{
			name: "an engine that appears counts from zero",
			bodies: [][]byte{
				vllmBody([]float64{0}, []float64{5000}, [][]float64{{10, 10, 10, 10}}),
				vllmBody([]float64{0, 0}, []float64{5100, 200}, [][]float64{{10, 10, 10, 10}, {0, 0, 2, 2}}),
			},
			// p50 and p95 in (0.5, 1]: 0.5 + 0.5*1/2 and 0.5 + 0.5*1.9/2.
			want: &llmscalerv1.QueueMetrics{
				Ttft:                  summary(0.75, 0.5+0.5*1.9/2, 2),
				E2ELatency:            empty(),
				PromptTokensPerSecond: 300 / 10.0,
			},
		},
		{
			name: "no requests in the interval",
			bodies: [][]byte{
				vllmBody([]float64{2}, []float64{5000}, [][]float64{{10, 12, 13, 13}}),
				vllmBody([]float64{2}, []float64{5000}, [][]float64{{10, 12, 13, 13}}),
			},
			want: &llmscalerv1.QueueMetrics{Waiting: 2, Ttft: empty(), E2ELatency: empty()},
		},
		{
			name: "rank in the +Inf bucket gives the largest finite bound",
			bodies: [][]byte{
				vllmBody([]float64{0}, []float64{0}, [][]float64{{0, 0, 0, 0}}),
				vllmBody([]float64{0}, []float64{0}, [][]float64{{0, 0, 1, 4}}),
			},
			want: &llmscalerv1.QueueMetrics{Ttft: summary(1, 1, 4), E2ELatency: empty()},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := New(VLLM, 0)
			var got *llmscalerv1.QueueMetrics
			at := t0
			for i, body := range tc.bodies {
				if i > 0 {
					at = at.Add(10 * time.Second)
				}
				got = mustUpdate(t, s, body, at)
			}
			want := proto.CloneOf(tc.want)
			want.ScrapedAt = timestamppb.New(at)
			if d := diff(want, got); d != "" {
				t.Errorf("last scrape (-want +got):\n%s", d)
			}
		})
	}
}

func TestUpdateBadBodyKeepsState(t *testing.T) {
	first := readTestdata(t, "vllm_1.txt")
	second := readTestdata(t, "vllm_2.txt")

	// A cut inside a line (the parser sees a line without its value or newline).
	mid := bytes.Index(second, []byte("vllm:e2e_request_latency_seconds_bucket"))
	cutMidLine := second[:mid+len("vllm:e2e_request_latency_seconds_bucket{model_name=")]
	// A cut between lines in the middle of a histogram: no +Inf bucket, no _count.
	cutAtLine := second[:bytes.IndexByte(second[mid:], '\n')+mid+1]

	tests := []struct {
		name    string
		body    []byte
		max     int64
		wantErr error
	}{
		{name: "malformed", body: []byte("vllm:num_requests_waiting{model_name=\"m\" 3\n")},
		{name: "not a number", body: []byte("vllm:num_requests_waiting{model_name=\"m\"} three\n")},
		{name: "cut mid-line", body: cutMidLine},
		{name: "cut inside a histogram", body: cutAtLine},
		{name: "negative counter", body: []byte("# TYPE vllm:prompt_tokens_total counter\nvllm:prompt_tokens_total -4\n")},
		{name: "over the size limit", body: append(bytes.Clone(second), "# one more line\n"...), max: int64(len(second)), wantErr: ErrBodyTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := New(VLLM, tc.max)
			mustUpdate(t, s, first, t0)

			m, err := s.Update(bytes.NewReader(tc.body), t0.Add(5*time.Second))
			if err == nil {
				t.Fatalf("Update returned %v, want an error", m)
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("error %v, want %v", err, tc.wantErr)
			}
			if m != nil {
				t.Errorf("metrics %v returned with the error", m)
			}

			// The next good scrape is compared with the first one, 15 s before it.
			got := mustUpdate(t, s, second, t0.Add(15*time.Second))
			if gotRate, want := got.GetPromptTokensPerSecond(), (24000+16500)/15.0; math.Abs(gotRate-want) > 1e-9 {
				t.Errorf("prompt tokens/s after the bad scrape = %v, want %v", gotRate, want)
			}
			if got.GetE2ELatency().GetCount() != 36 {
				t.Errorf("e2e count after the bad scrape = %d, want 36", got.GetE2ELatency().GetCount())
			}
		})
	}
}

func TestUpdateSizeLimit(t *testing.T) {
	body := readTestdata(t, "llamacpp_1.txt")
	if _, err := New(LlamaCpp, int64(len(body))).Update(bytes.NewReader(body), t0); err != nil {
		t.Errorf("body of exactly the limit: %v", err)
	}
	_, err := New(LlamaCpp, int64(len(body))-1).Update(bytes.NewReader(body), t0)
	if !errors.Is(err, ErrBodyTooLarge) {
		t.Errorf("body one byte over the limit: error %v, want ErrBodyTooLarge", err)
	}
}

func TestUpdateUnknownDialect(t *testing.T) {
	_, err := New("triton", 0).Update(strings.NewReader(""), t0)
	if err == nil || !strings.Contains(err.Error(), "vllm, tgi, llamacpp, sglang") {
		t.Errorf("error %v, want one listing the dialects", err)
	}
}

func TestUpdateClockNotAdvancing(t *testing.T) {
	s := New(SGLang, 0)
	mustUpdate(t, s, readTestdata(t, "sglang_1.txt"), t0)
	got := mustUpdate(t, s, readTestdata(t, "sglang_2.txt"), t0)
	if got.GetPromptTokensPerSecond() != 0 || got.GetFinishedRequestsPerSecond() != 0 {
		t.Errorf("rates over a zero interval: %v, %v; want 0", got.GetPromptTokensPerSecond(), got.GetFinishedRequestsPerSecond())
	}
	if got.GetE2ELatency().GetCount() != 28 {
		t.Errorf("e2e count = %d, want 28: latencies need no interval length", got.GetE2ELatency().GetCount())
	}
}

func TestUpdateConcurrent(t *testing.T) {
	s := New(VLLM, 0)
	body := readTestdata(t, "vllm_2.txt")
	done := make(chan error)
	for i := range 4 {
		go func() {
			_, err := s.Update(bytes.NewReader(body), t0.Add(time.Duration(i)*time.Second))
			done <- err
		}()
	}
	for range 4 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

func TestParseDialect(t *testing.T) {
	tests := []struct {
		in      string
		want    Dialect
		wantErr bool
	}{
		{in: "vllm", want: VLLM},
		{in: "tgi", want: TGI},
		{in: "llamacpp", want: LlamaCpp},
		{in: " SGLang ", want: SGLang},
		{in: "llama.cpp", wantErr: true},
		{in: "", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseDialect(tc.in)
			if tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), "vllm, tgi, llamacpp, sglang") {
					t.Errorf("ParseDialect(%q) = %q, %v; want an error listing the dialects", tc.in, got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("ParseDialect(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
}
