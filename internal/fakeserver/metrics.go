package fakeserver

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/llmscaler/llmscaler/internal/servermodel"
)

// Bucket boundaries as vLLM's own PrometheusStatLogger sets them
// (vllm/v1/metrics/loggers.py), so dashboards and quantiles read alike.
var (
	ttftBuckets = []float64{
		0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5,
		0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
	}
	tpotBuckets = []float64{
		0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
		1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
	}
	requestLatencyBuckets = []float64{
		0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0,
		40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
	}
)

// metrics are the server's series in its dialect, on a registry of their own. In the
// llamacpp dialect the latency histograms and the finished-request counter are observed but
// not exported, as llama-server exports none of them.
type metrics struct {
	reg *prometheus.Registry

	waiting, running, kvUsage prometheus.Gauge
	ttft, e2e, queue, tpot    prometheus.Observer
	promptTokens, genTokens   prometheus.Counter
	success                   prometheus.Counter

	last servermodel.Counters // engine counters already added
}

func newMetrics(model, dialect string) *metrics {
	if dialect == "llamacpp" {
		return newLlamaCppMetrics()
	}
	reg := prometheus.NewRegistry()
	labels := prometheus.Labels{"model_name": model}
	gauge := func(name, help string) prometheus.Gauge {
		g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help, ConstLabels: labels})
		reg.MustRegister(g)
		return g
	}
	histogram := func(name, help string, buckets []float64) prometheus.Observer {
		h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets, ConstLabels: labels})
		reg.MustRegister(h)
		return h
	}
	counter := func(name, help string, extra prometheus.Labels) prometheus.Counter {
		l := prometheus.Labels{"model_name": model}
		for k, v := range extra {
			l[k] = v
		}
		c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: l})
		reg.MustRegister(c)
		return c
	}
	return &metrics{
		reg:          reg,
		waiting:      gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed."),
		running:      gauge("vllm:num_requests_running", "Number of requests in model execution batches."),
		kvUsage:      gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage."),
		ttft:         histogram("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", ttftBuckets),
		tpot:         histogram("vllm:time_per_output_token_seconds", "Histogram of time per output token in seconds.", tpotBuckets),
		e2e:          histogram("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", requestLatencyBuckets),
		queue:        histogram("vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.", requestLatencyBuckets),
		promptTokens: counter("vllm:prompt_tokens_total", "Number of prefill tokens processed.", nil),
		genTokens:    counter("vllm:generation_tokens_total", "Number of generation tokens processed.", nil),
		// The fake server only ever stops at max_tokens.
		success: counter("vllm:request_success_total", "Count of successfully processed requests.", prometheus.Labels{"finished_reason": "length"}),
	}
}

// observeGauges copies the engine's queue, batch and KV state into the gauges. Only the
// engine goroutine calls it.
func (m *metrics) observeGauges(e *servermodel.Engine) {
	m.waiting.Set(float64(e.Waiting()))
	m.running.Set(float64(e.Running()))
	m.kvUsage.Set(e.KVUsage())
}

// addCounters adds the tokens the engine has counted since the last call. The engine counts
// an iteration's tokens when the iteration starts; the engine goroutine calls this when it
// ends and its tokens are delivered.
func (m *metrics) addCounters(e *servermodel.Engine) {
	c := e.Counters()
	m.promptTokens.Add(float64(c.PromptTokens - m.last.PromptTokens))
	m.genTokens.Add(float64(c.GenerationTokens - m.last.GenerationTokens))
	m.last = c
}

// newLlamaCppMetrics is llama-server's /metrics (tools/server, --metrics): the gauges and
// token counters it exports under its own names. What llama-server lacks (latency
// histograms, a finished-request counter) is kept off the registry.
func newLlamaCppMetrics() *metrics {
	reg := prometheus.NewRegistry()
	gauge := func(name, help string) prometheus.Gauge {
		g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
		reg.MustRegister(g)
		return g
	}
	counter := func(name, help string) prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
		reg.MustRegister(c)
		return c
	}
	unexported := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "unexported"})
	return &metrics{
		reg:          reg,
		waiting:      gauge("llamacpp:requests_deferred", "Number of requests deferred."),
		running:      gauge("llamacpp:requests_processing", "Number of requests processing."),
		kvUsage:      gauge("llamacpp:kv_cache_usage_ratio", "KV-cache usage. 1 means 100 percent usage."),
		promptTokens: counter("llamacpp:prompt_tokens_total", "Number of prompt tokens processed."),
		genTokens:    counter("llamacpp:tokens_predicted_total", "Number of generation tokens processed."),
		ttft:         unexported, tpot: unexported, e2e: unexported, queue: unexported,
		success: prometheus.NewCounter(prometheus.CounterOpts{Name: "unexported_total"}),
	}
}
