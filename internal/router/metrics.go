package router

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Buckets as vLLM's own PrometheusStatLogger sets them (vllm/v1/metrics/loggers.py), so
// the router's and the engines' histograms read alike.
var (
	ttftBuckets = []float64{
		0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5,
		0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
	}
	e2eBuckets = []float64{
		0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0,
		40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
	}
)

// noDeployment labels requests that never reached a deployment (bad body, unknown model).
const noDeployment = ""

// metrics are the router's Prometheus series, on a registry of its own.
type metrics struct {
	reg       *prometheus.Registry
	requests  *prometheus.CounterVec   // deployment, code
	ttft, e2e *prometheus.HistogramVec // deployment
	retries   *prometheus.CounterVec   // deployment
	ejections *prometheus.CounterVec   // deployment, instance
	tokens    *prometheus.CounterVec   // deployment
}

func newMetrics(r *Router) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "llmscaler_router_requests_total",
			Help: "Requests answered, by deployment and HTTP status (499: the client went away first).",
		}, []string{"deployment", "code"}),
		ttft: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "llmscaler_router_time_to_first_token_seconds",
			Help:    "Time from arrival to the first response byte (first SSE data event of a stream), of requests answered below 400.",
			Buckets: ttftBuckets,
		}, []string{"deployment"}),
		e2e: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "llmscaler_router_e2e_request_latency_seconds",
			Help:    "Time from arrival to the last response byte, of requests answered below 400.",
			Buckets: e2eBuckets,
		}, []string{"deployment"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "llmscaler_router_retries_total",
			Help: "Requests sent to a second instance after the first failed.",
		}, []string{"deployment"}),
		ejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "llmscaler_router_ejections_total",
			Help: "Times an instance was left out of balancing after failing.",
		}, []string{"deployment", "instance"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "llmscaler_router_completion_tokens_total",
			Help: "Output tokens: usage.completion_tokens, or SSE data events of streams without usage.",
		}, []string{"deployment"}),
	}
	m.reg.MustRegister(m.requests, m.ttft, m.e2e, m.retries, m.ejections, m.tokens, &gauges{r: r})
	return m
}

// forgetInstance drops the series of an instance the router no longer tracks.
func (m *metrics) forgetInstance(deployment, id string) {
	m.ejections.DeleteLabelValues(deployment, id)
}

// forgetDeployment drops the series of a deployment the router no longer tracks.
func (m *metrics) forgetDeployment(deployment string) {
	l := prometheus.Labels{"deployment": deployment}
	m.requests.DeletePartialMatch(l)
	m.ttft.DeletePartialMatch(l)
	m.e2e.DeletePartialMatch(l)
	m.retries.DeletePartialMatch(l)
	m.ejections.DeletePartialMatch(l)
	m.tokens.DeletePartialMatch(l)
}

var (
	queueDesc = prometheus.NewDesc("llmscaler_router_queue_length",
		"Requests waiting in the router for an instance.", []string{"deployment"}, nil)
	endpointsDesc = prometheus.NewDesc("llmscaler_router_endpoints",
		"Instances in the routing table.", []string{"deployment"}, nil)
	inFlightDesc = prometheus.NewDesc("llmscaler_router_instance_in_flight",
		"Requests sent to an instance and not finished.", []string{"deployment", "instance"}, nil)
)

// gauges reads the current queue and in-flight figures at scrape time, so a series
// disappears with its deployment or instance.
type gauges struct{ r *Router }

func (g *gauges) Describe(ch chan<- *prometheus.Desc) {
	ch <- queueDesc
	ch <- endpointsDesc
	ch <- inFlightDesc
}

func (g *gauges) Collect(ch chan<- prometheus.Metric) {
	g.r.mu.Lock()
	defer g.r.mu.Unlock()
	for _, d := range g.r.all {
		d.mu.Lock()
		ch <- prometheus.MustNewConstMetric(queueDesc, prometheus.GaugeValue, float64(d.queue.Len()), d.name)
		ch <- prometheus.MustNewConstMetric(endpointsDesc, prometheus.GaugeValue, float64(len(d.live)), d.name)
		for _, in := range d.byID {
			ch <- prometheus.MustNewConstMetric(inFlightDesc, prometheus.GaugeValue, float64(in.outstanding), d.name, in.id)
		}
		d.mu.Unlock()
	}
}
