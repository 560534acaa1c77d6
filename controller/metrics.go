package controller

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/llmscaler/llmscaler/internal/policy"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// metrics are the controller's Prometheus metrics, on a registry of its own so that several
// controllers can run in one test process.
type metrics struct {
	reg           *prometheus.Registry
	isLeader      prometheus.Gauge
	epoch         prometheus.Gauge
	leaderChanges prometheus.Counter
	streams       prometheus.Gauge
	// admitWaiting counts agent streams waiting for admission (maxAdmitting).
	admitWaiting prometheus.Gauge
	messages     *prometheus.CounterVec
	desiredSent  prometheus.Counter
	forwarded    prometheus.Counter
	// ingest is the time from a report's timestamp (the agent's clock) to the leader's
	// fleet view holding it, which the next evaluation reads.
	ingest prometheus.Histogram
	// refused counts calls refused by authorization or the rate limit, by gRPC code.
	refused *prometheus.CounterVec
	// endpointUpdates counts routing tables sent to routers; routerReports the reports
	// routers sent.
	endpointUpdates prometheus.Counter
	routerReports   prometheus.Counter

	desired   *prometheus.GaugeVec
	current   *prometheus.GaugeVec
	decisions *prometheus.CounterVec
}

func newMetrics(c *Controller) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		isLeader: prometheus.NewGauge(prometheus.GaugeOpts{Name: "llmscaler_controller_is_leader",
			Help: "1 while this controller leads."}),
		epoch: prometheus.NewGauge(prometheus.GaugeOpts{Name: "llmscaler_controller_leader_epoch",
			Help: "Epoch of this controller's last term as leader."}),
		leaderChanges: prometheus.NewCounter(prometheus.CounterOpts{Name: "llmscaler_controller_terms_total",
			Help: "Leadership terms this controller has won."}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{Name: "llmscaler_controller_agent_streams",
			Help: "Agent streams this controller serves."}),
		admitWaiting: prometheus.NewGauge(prometheus.GaugeOpts{Name: "llmscaler_controller_agent_streams_waiting",
			Help: "Agent streams that sent their hello and wait for admission (at most 64 are admitted at once)."}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "llmscaler_controller_agent_messages_total",
			Help: "Messages received from agents, by type."}, []string{"type"}),
		desiredSent: prometheus.NewCounter(prometheus.CounterOpts{Name: "llmscaler_controller_desired_states_sent_total",
			Help: "Desired states sent to agents."}),
		ingest: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "llmscaler_controller_report_ingest_seconds",
			Help:    "Time from an agent's report (its timestamp, so agent and controller clocks must agree) to the leader's fleet view holding it.",
			Buckets: []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}}),
		forwarded: prometheus.NewCounter(prometheus.CounterOpts{Name: "llmscaler_controller_admin_forwarded_total",
			Help: "Admin calls this follower forwarded to the leader."}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "llmscaler_controller_calls_refused_total",
			Help: "gRPC calls refused before their handler: by authorization (PermissionDenied, Unauthenticated) or the admin rate limit (ResourceExhausted)."}, []string{"code"}),
		endpointUpdates: prometheus.NewCounter(prometheus.CounterOpts{Name: "llmscaler_controller_endpoint_updates_total",
			Help: "Routing tables sent to routers' WatchEndpoints."}),
		routerReports: prometheus.NewCounter(prometheus.CounterOpts{Name: "llmscaler_controller_router_reports_total",
			Help: "Reports received from routers."}),
		desired: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "llmscaler_deployment_desired_replicas",
			Help: "Replicas the autoscaler wants, per deployment (leader only)."}, []string{"deployment"}),
		current: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "llmscaler_deployment_current_replicas",
			Help: "Replicas ready or starting when the policy last ran, per deployment (leader only)."}, []string{"deployment"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "llmscaler_deployment_decisions_total",
			Help: "Policy evaluations by deployment and kind: scale_up, scale_down, hold (a recommended change that clamps held back), dry_run."}, []string{"deployment", "kind"}),
	}
	m.reg.MustRegister(m.desired, m.current, m.decisions, m.isLeader, m.epoch, m.leaderChanges, m.streams, m.admitWaiting, m.messages, m.desiredSent, m.ingest, m.forwarded, m.refused, m.endpointUpdates, m.routerReports,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		nodeCollector{c})
	return m
}

// nodeCollector reports the leader's fleet at scrape time.
type nodeCollector struct{ c *Controller }

var (
	nodesDesc = prometheus.NewDesc("llmscaler_controller_nodes", "Nodes known to the leader, by state.", []string{"state"}, nil)
	gpusDesc  = prometheus.NewDesc("llmscaler_controller_gpus", "GPUs on connected nodes.", nil, nil)
)

func (n nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- nodesDesc
	ch <- gpusDesc
}

func (n nodeCollector) Collect(ch chan<- prometheus.Metric) {
	t := n.c.currentTerm()
	if t == nil {
		return
	}
	fc := t.fleet.counts()
	for _, s := range []llmscalerv1.NodeState{llmscalerv1.NodeState_NODE_STATE_CONNECTED, llmscalerv1.NodeState_NODE_STATE_DISCONNECTED, llmscalerv1.NodeState_NODE_STATE_LOST} {
		ch <- prometheus.MustNewConstMetric(nodesDesc, prometheus.GaugeValue, float64(fc.byState[s]), stateName(s))
	}
	ch <- prometheus.MustNewConstMetric(gpusDesc, prometheus.GaugeValue, float64(fc.gpus))
}

func stateName(s llmscalerv1.NodeState) string {
	const pfx = "NODE_STATE_"
	str := s.String()
	if len(str) > len(pfx) {
		return str[len(pfx):]
	}
	return str
}

// forgetDeployment drops a deleted deployment's series, so that /metrics no longer shows
// replicas of a deployment that is gone.
func (m *metrics) forgetDeployment(dep string) {
	m.desired.DeleteLabelValues(dep)
	m.current.DeleteLabelValues(dep)
	m.decisions.DeletePartialMatch(prometheus.Labels{"deployment": dep})
}

// observeDecision updates the per-deployment metrics after one evaluation.
func (m *metrics) observeDecision(dep string, d policy.Decision, acted bool) {
	m.desired.WithLabelValues(dep).Set(float64(d.Desired))
	m.current.WithLabelValues(dep).Set(float64(d.Current))
	switch {
	case d.DryRun && d.Recommended != d.Current:
		m.decisions.WithLabelValues(dep, "dry_run").Inc()
	case acted && d.Desired > d.Current:
		m.decisions.WithLabelValues(dep, "scale_up").Inc()
	case acted && d.Desired < d.Current:
		m.decisions.WithLabelValues(dep, "scale_down").Inc()
	case d.Recommended != d.Current:
		m.decisions.WithLabelValues(dep, "hold").Inc()
	}
}
