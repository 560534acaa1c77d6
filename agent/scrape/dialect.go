package scrape

import (
	"fmt"
	"strings"
)

// Dialect names the model server whose metric names a Scraper reads.
type Dialect string

// The model servers whose metrics a Scraper understands.
const (
	// VLLM is vLLM's OpenAI-compatible server.
	VLLM Dialect = "vllm"
	// TGI is Hugging Face text-generation-inference.
	TGI Dialect = "tgi"
	// LlamaCpp is llama.cpp's llama-server started with --metrics.
	LlamaCpp Dialect = "llamacpp"
	// SGLang is SGLang's server started with --enable-metrics.
	SGLang Dialect = "sglang"
)

// dialects lists the known dialects in the order error messages name them.
var dialects = []Dialect{VLLM, TGI, LlamaCpp, SGLang}

// ParseDialect returns the Dialect named s, as written in a profile ("vllm", "tgi",
// "llamacpp", "sglang"; case and surrounding space do not matter).
func ParseDialect(s string) (Dialect, error) {
	want := Dialect(strings.ToLower(strings.TrimSpace(s)))
	for _, d := range dialects {
		if d == want {
			return d, nil
		}
	}
	valid := make([]string, len(dialects))
	for i, d := range dialects {
		valid[i] = string(d)
	}
	return "", fmt.Errorf("unknown metrics dialect %q: want one of %s", s, strings.Join(valid, ", "))
}

// sourceKind says which number of a metric family a cumulative source reads.
type sourceKind int

const (
	// sampleValue is the value of a counter (or untyped) sample.
	sampleValue sourceKind = iota
	// histogramSum is the _sum of a histogram.
	histogramSum
	// histogramCount is the _count of a histogram.
	histogramCount
)

// source is one cumulative number a server exports: it only grows until the server restarts.
type source struct {
	name string
	kind sourceKind
}

func counter(name string) source   { return source{name: name, kind: sampleValue} }
func histSum(name string) source   { return source{name: name, kind: histogramSum} }
func histCount(name string) source { return source{name: name, kind: histogramCount} }

// spec says where one dialect keeps each value of QueueMetrics. Where a list names several
// metrics, the first one the server exports wins: newer names come first, older ones after.
type spec struct {
	// waiting and running are gauges, summed over label sets.
	waiting, running string
	// kvCache are gauges of the used share of the KV cache, 0-1, averaged over label sets
	// (one per engine or data-parallel rank, each with its own cache). None: left unset.
	kvCache []string
	// ttft and e2e are latency histograms in seconds; "" when the server has none.
	ttft, e2e string
	// prompt, generation and finished are cumulative token and request counts; the first
	// source present in both scrapes of an interval gives its rate.
	prompt, generation, finished []source
}

// specs holds each dialect's metric names. Each was checked against the server's own source,
// named per entry; the names are those the text exposition prints (prometheus_client appends
// _total to counters itself, the Rust metrics exporter TGI uses does not).
var specs = map[Dialect]spec{
	// vllm-project/vllm vllm/v1/metrics/loggers.py (PrometheusStatLogger); every series is
	// labelled model_name and engine, request_success also finished_reason.
	VLLM: {
		waiting: "vllm:num_requests_waiting",
		running: "vllm:num_requests_running",
		// gpu_cache_usage_perc is the name before 0.9, deprecated since and hidden in
		// later releases.
		kvCache:    []string{"vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"},
		ttft:       "vllm:time_to_first_token_seconds",
		e2e:        "vllm:e2e_request_latency_seconds",
		prompt:     []source{counter("vllm:prompt_tokens_total")},
		generation: []source{counter("vllm:generation_tokens_total")},
		finished: []source{
			counter("vllm:request_success_total"),
			histCount("vllm:e2e_request_latency_seconds"),
		},
	},
	// huggingface/text-generation-inference: tgi_queue_size in backends/v3/src/queue.rs,
	// tgi_batch_current_size in backends/v3/src/backend.rs, tgi_request_success and the
	// request histograms in router/src/server.rs (buckets set there too),
	// tgi_request_input_length in router/src/validation.rs.
	TGI: {
		waiting: "tgi_queue_size",
		running: "tgi_batch_current_size",
		// TGI exports no KV-cache usage.
		// TGI exports no time to first token. tgi_request_queue_duration, the time from
		// being queued to joining a batch, stands in for it: it leaves out the prefill, so
		// it under-counts TTFT, by the most on long prompts.
		ttft: "tgi_request_queue_duration",
		e2e:  "tgi_request_duration",
		// tgi_request_input_length is recorded when a request passes validation,
		// tgi_request_generated_tokens when it finishes: both are per-request histograms,
		// and their sums are the token counts.
		prompt:     []source{histSum("tgi_request_input_length")},
		generation: []source{histSum("tgi_request_generated_tokens")},
		finished: []source{
			counter("tgi_request_success"),
			histCount("tgi_request_duration"),
		},
	},
	// ggml-org/llama.cpp tools/server (the get_metrics handler, server.cpp and in newer
	// trees server-context.cpp). kv_cache_usage_ratio is only printed by older builds
	// (examples/server/server.cpp); newer ones have no KV gauge, and then it stays unset.
	// llama-server has no latency histograms and no finished-requests counter.
	LlamaCpp: {
		waiting:    "llamacpp:requests_deferred",
		running:    "llamacpp:requests_processing",
		kvCache:    []string{"llamacpp:kv_cache_usage_ratio"},
		prompt:     []source{counter("llamacpp:prompt_tokens_total")},
		generation: []source{counter("llamacpp:tokens_predicted_total")},
	},
	// sgl-project/sglang python/sglang/srt/metrics/collector.py: the gauges in
	// SchedulerMetricsCollector, the counters and histograms in TokenizerMetricsCollector.
	// num_requests_total is counted once per finished request.
	SGLang: {
		waiting:    "sglang:num_queue_reqs",
		running:    "sglang:num_running_reqs",
		kvCache:    []string{"sglang:token_usage"},
		ttft:       "sglang:time_to_first_token_seconds",
		e2e:        "sglang:e2e_request_latency_seconds",
		prompt:     []source{counter("sglang:prompt_tokens_total")},
		generation: []source{counter("sglang:generation_tokens_total")},
		finished: []source{
			counter("sglang:num_requests_total"),
			histCount("sglang:e2e_request_latency_seconds"),
		},
	},
}
