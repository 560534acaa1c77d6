package agent

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// metrics are one agent's Prometheus metrics. They live in a registry of the agent's own, not
// the global one, so that one test process can run several agents.
type metrics struct {
	registry *prometheus.Registry

	connected      prometheus.Gauge
	reportsSent    prometheus.Counter
	reportsDropped prometheus.Counter
	reconnects     prometheus.Counter
	desired        *prometheus.CounterVec
	rejections     prometheus.Counter

	gpuUtilization *prometheus.GaugeVec
	gpuMemoryUsed  *prometheus.GaugeVec
	gpuTemperature *prometheus.GaugeVec
	gpuPower       *prometheus.GaugeVec

	instances    *prometheus.GaugeVec
	scrapeErrors prometheus.Counter
}

func newMetrics() *metrics {
	gpuLabels := []string{"gpu_index", "gpu_uuid"}
	m := &metrics{
		registry: prometheus.NewRegistry(),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "llmscaler_agent_connected",
			Help: "1 while the agent has a welcomed stream to the leader, else 0.",
		}),
		reportsSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "llmscaler_agent_reports_sent_total",
			Help: "Reports sent to a controller.",
		}),
		reportsDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "llmscaler_agent_reports_dropped_total",
			Help: "Reports dropped unsent because the report buffer was full.",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "llmscaler_agent_reconnects_total",
			Help: "Attempts to open a stream after the first, redirects included.",
		}),
		desired: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "llmscaler_agent_desired_states_total",
			Help: "Desired states from the leader answered, by result.",
		}, []string{"result"}),
		rejections: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "llmscaler_agent_instance_rejections_total",
			Help: "Instances of a desired state this agent could not start or stop.",
		}),
		gpuUtilization: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "llmscaler_agent_gpu_utilization_percent",
			Help: "Share of time a kernel ran on the GPU over the last sample period.",
		}, gpuLabels),
		gpuMemoryUsed: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "llmscaler_agent_gpu_memory_used_mib",
			Help: "GPU memory in use, MiB.",
		}, gpuLabels),
		gpuTemperature: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "llmscaler_agent_gpu_temperature_celsius",
			Help: "GPU temperature.",
		}, gpuLabels),
		gpuPower: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "llmscaler_agent_gpu_power_watts",
			Help: "GPU power draw.",
		}, gpuLabels),
		instances: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "llmscaler_agent_instances",
			Help: "Model-server instances on this node, by phase.",
		}, []string{"phase"}),
		scrapeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "llmscaler_agent_scrape_errors_total",
			Help: "Failed scrapes of model servers' metrics endpoints.",
		}),
	}
	m.registry.MustRegister(
		m.instances, m.scrapeErrors,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.connected, m.reportsSent, m.reportsDropped, m.reconnects, m.desired, m.rejections,
		m.gpuUtilization, m.gpuMemoryUsed, m.gpuTemperature, m.gpuPower,
	)
	return m
}

// observeGPUs sets the GPU gauges from one sample. A value the backend could not read keeps
// its last reading rather than dropping to zero, which would look like an idle GPU.
func (m *metrics) observeGPUs(samples []*llmscalerv1.GpuSample) {
	for _, s := range samples {
		l := prometheus.Labels{"gpu_index": strconv.FormatUint(uint64(s.GetIndex()), 10), "gpu_uuid": s.GetUuid()}
		if s.UtilizationPercent != nil {
			m.gpuUtilization.With(l).Set(s.GetUtilizationPercent())
		}
		if s.MemoryUsedMib != nil {
			m.gpuMemoryUsed.With(l).Set(float64(s.GetMemoryUsedMib()))
		}
		if s.TemperatureCelsius != nil {
			m.gpuTemperature.With(l).Set(s.GetTemperatureCelsius())
		}
		if s.PowerWatts != nil {
			m.gpuPower.With(l).Set(s.GetPowerWatts())
		}
	}
}

// desiredAnswered counts an ack under a short label ("rejected" reads better in a query than
// "COMMAND_RESULT_REJECTED") and the instances it refused.
func (m *metrics) desiredAnswered(a *llmscalerv1.DesiredStateAck) {
	m.desired.WithLabelValues(strings.ToLower(strings.TrimPrefix(a.GetResult().String(), "COMMAND_RESULT_"))).Inc()
	m.rejections.Add(float64(len(a.GetRejected())))
}

func (a *Agent) httpHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.metrics.registry, promhttp.HandlerOpts{}))
	return mux
}

// observeInstances sets the instance gauges by phase.
func (m *metrics) observeInstances(ins []*llmscalerv1.InstanceStatus) {
	counts := map[llmscalerv1.InstancePhase]int{}
	for _, in := range ins {
		counts[in.GetPhase()]++
	}
	for v, name := range llmscalerv1.InstancePhase_name {
		if v == 0 {
			continue
		}
		m.instances.WithLabelValues(strings.ToLower(strings.TrimPrefix(name, "INSTANCE_PHASE_"))).Set(float64(counts[llmscalerv1.InstancePhase(v)]))
	}
}
