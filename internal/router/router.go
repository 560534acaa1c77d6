package router

import (
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Router routes OpenAI API requests to the instances of the deployment that serves their
// model. It is an http.Handler; see the package documentation for what it serves.
type Router struct {
	cfg     Config
	log     hclog.Logger
	rt      http.RoundTripper
	own     *http.Transport // the transport New made; nil when Config.Transport was given
	metrics *metrics

	table atomic.Pointer[table] // read by every request without a lock

	// mu serialises table updates, Stats and scrapes; it is taken before any
	// deployment's mu.
	mu          sync.Mutex
	all         map[string]*deployment // by name: those in the table and removed ones still draining
	statsSince  time.Time
	statsCalled atomic.Bool
}

// table is one version of the routing table.
type table struct {
	byModel map[string]*deployment
	models  []modelEntry // sorted by id
}

type modelEntry struct {
	id         string
	deployment string
	created    int64
}

// New returns a Router with an empty table.
func New(cfg Config) (*Router, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	r := &Router{
		cfg:        cfg,
		log:        cfg.Logger.Named("router"),
		all:        map[string]*deployment{},
		statsSince: cfg.Now(),
	}
	r.rt = cfg.Transport
	if r.rt == nil {
		r.own = &http.Transport{
			Proxy: nil, // instances are local; a proxy from the environment must not apply
			DialContext: (&net.Dialer{
				Timeout:   cfg.DialTimeout,
				KeepAlive: 30 * time.Second,
			}).DialContext,
			MaxIdleConns:        0,
			MaxIdleConnsPerHost: 1024,
			IdleConnTimeout:     90 * time.Second,
			// Pass the client's Accept-Encoding and the engine's encoding through untouched.
			DisableCompression: true,
		}
		r.rt = r.own
	}
	r.metrics = newMetrics(r)
	r.table.Store(&table{byModel: map[string]*deployment{}})
	return r, nil
}

// Close releases the idle connections of the router's own transport. Requests in flight
// are not affected; the router stays usable.
func (r *Router) Close() {
	if r.own != nil {
		r.own.CloseIdleConnections()
	}
}

// SetDeployments replaces the whole routing table. It checks the table first and, if any
// entry is invalid, changes nothing and returns an error wrapping ErrInvalid.
//
// Counts, queues and in-flight requests carry over by deployment name and endpoint ID. A
// removed endpoint gets no new request from the moment the call returns, while those in
// flight on it finish (drain). A removed deployment's waiting requests are answered 404;
// its in-flight ones finish. Requests waiting for capacity are dispatched at once to
// endpoints the table adds.
func (r *Router) SetDeployments(ds []Deployment) error {
	if err := validateTable(ds); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	next := &table{byModel: map[string]*deployment{}}
	listed := map[string]bool{}
	for _, dep := range ds {
		d := r.all[dep.Name]
		if d == nil {
			d = newDeployment(r, dep.Name)
			r.all[dep.Name] = d
		}
		d.update(dep)
		listed[dep.Name] = true
		for _, m := range dep.Models {
			next.byModel[m] = d
			next.models = append(next.models, modelEntry{id: m, deployment: d.name, created: d.created})
		}
	}
	slices.SortFunc(next.models, func(a, b modelEntry) int { return strings.Compare(a.id, b.id) })
	for name, d := range r.all {
		if listed[name] {
			continue
		}
		d.remove()
		d.mu.Lock()
		if d.drainedLocked() && !r.statsCalled.Load() {
			r.forgetLocked(d)
		}
		d.mu.Unlock()
	}
	r.table.Store(next)
	return nil
}

// forgetLocked drops a drained, removed deployment. r.mu is held.
func (r *Router) forgetLocked(d *deployment) {
	delete(r.all, d.name)
	r.metrics.forgetDeployment(d.name)
}

// MetricsHandler serves the router's Prometheus metrics, from a registry of its own:
//
//	llmscaler_router_requests_total{deployment,code}             counter
//	llmscaler_router_time_to_first_token_seconds{deployment}     histogram
//	llmscaler_router_e2e_request_latency_seconds{deployment}     histogram
//	llmscaler_router_completion_tokens_total{deployment}         counter
//	llmscaler_router_retries_total{deployment}                   counter
//	llmscaler_router_ejections_total{deployment,instance}        counter
//	llmscaler_router_queue_length{deployment}                    gauge
//	llmscaler_router_endpoints{deployment}                       gauge
//	llmscaler_router_instance_in_flight{deployment,instance}     gauge
func (r *Router) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(r.metrics.reg, promhttp.HandlerOpts{})
}

// ServeHTTP serves the OpenAI API routes the router knows.
func (r *Router) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	switch req.URL.Path {
	case "/v1/completions", "/v1/chat/completions":
		if req.Method != http.MethodPost {
			r.methodNotAllowed(w, http.MethodPost)
			return
		}
		r.serveGeneration(w, req)
	case "/v1/models":
		if req.Method != http.MethodGet && req.Method != http.MethodHead {
			r.methodNotAllowed(w, http.MethodGet)
			return
		}
		r.serveModels(w)
	default:
		r.answer(w, noDeployment, invalidRequest(http.StatusNotFound, "unknown_url", "",
			"unknown request URL: %s %s", req.Method, req.URL.Path))
	}
}

func (r *Router) methodNotAllowed(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	r.answer(w, noDeployment, invalidRequest(http.StatusMethodNotAllowed, "method_not_allowed", "",
		"method not allowed; use %s", allow))
}

// answer writes an error the router made and counts it.
func (r *Router) answer(w http.ResponseWriter, deployment string, e *apiError) {
	writeError(w, e)
	r.metrics.requests.WithLabelValues(deployment, statusLabel(e.status)).Inc()
}

// serveModels lists the models of every deployment in OpenAI's shape.
func (r *Router) serveModels(w http.ResponseWriter) {
	t := r.table.Load()
	data := make([]map[string]any, 0, len(t.models))
	for _, m := range t.models {
		data = append(data, map[string]any{
			"id":       m.id,
			"object":   "model",
			"created":  m.created,
			"owned_by": m.deployment,
		})
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": data})
}
