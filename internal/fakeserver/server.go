package fakeserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/llmscaler/llmscaler/internal/servermodel"
)

const (
	// DefaultModel is the model id served when Config.Model is empty.
	DefaultModel = "fake-llm"
	// Fingerprint is the system_fingerprint of every response.
	Fingerprint = "llmscaler-fakeserver"
	// DefaultMaxTokens is the output length of a request without max_tokens.
	DefaultMaxTokens = 128
	// DefaultMaxBodyBytes caps request bodies when Config.MaxBodyBytes is zero.
	DefaultMaxBodyBytes = 1 << 20
	// DefaultShutdownTimeout is how long Run lets in-flight requests finish when
	// Config.ShutdownTimeout is zero.
	DefaultShutdownTimeout = 10 * time.Second
	// DefaultProfile is the hardware profile used when Config.Params is zero.
	DefaultProfile = "cpu-tiny"

	// displayName is what logs and /v1/models call this server, so no one mistakes it for a
	// real one.
	displayName = "llmscaler fakeserver (simulated)"
)

// Config configures a Server.
type Config struct {
	// Host is the address to listen on; default 127.0.0.1.
	Host string
	// Port is the port to listen on; 0 picks a free one (see Server.Addr).
	Port int
	// Model is the model id served; default DefaultModel.
	Model string
	// Params are the timing model; the zero value means the DefaultProfile profile.
	Params servermodel.Params
	// ColdStart is how long after Run starts the server turns healthy; zero means
	// Params.ColdStart.
	ColdStart time.Duration
	// ShutdownTimeout bounds how long Run waits for in-flight requests once its context
	// ends; zero means DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// MaxBodyBytes caps request bodies; zero means DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// HealthStallBusy models llama.cpp's llama-server, which stops answering /health in
	// time while it works through a long queue: while any generation request is in flight
	// (queued or running), GET /health answers only after this long, or not at all if the
	// client gives up first. Generation and /metrics go on as usual meanwhile. Zero: /health
	// always answers at once.
	HealthStallBusy time.Duration
	// Metrics is the dialect of /metrics: "vllm" (default: vLLM's names, latency histograms
	// and a finished-request counter) or "llamacpp" (llama.cpp's llama-server with
	// --metrics: queue and batch gauges, KV-cache use and token counters only, with no
	// latency histogram and no finished-request counter).
	Metrics string
}

// Server is a fake OpenAI-compatible LLM server whose timing comes from a
// servermodel.Engine.
type Server struct {
	cfg       Config
	coldStart time.Duration
	log       hclog.Logger
	ln        net.Listener
	http      *http.Server
	metrics   *metrics
	created   int64 // unix seconds, for "created" fields

	// engine belongs to the loop goroutine; handlers reach it through the channels.
	engine   *servermodel.Engine
	submitCh chan submission
	abortCh  chan uint64

	healthy  chan struct{} // closed when the cold start is over
	stopping chan struct{} // closed when Run's context ends
	loopDone chan struct{} // closed when the engine loop has stopped
	nextID   atomic.Uint64
	inFlight atomic.Int64 // generation requests between parsing and their answer
	ran      atomic.Bool
}

// submission is a request handed from a handler to the engine loop.
type submission struct {
	req servermodel.Request
	p   *pending
}

// pending is what a handler waits on: the loop updates it and pokes notify, never blocking,
// so a slow client cannot stall the engine and memory stays bounded whatever max_tokens is.
type pending struct {
	notify chan struct{} // capacity 1
	lastAt time.Time     // when the last token came; only the loop touches it

	mu     sync.Mutex
	tokens int
	done   bool
	err    error
}

func newPending() *pending { return &pending{notify: make(chan struct{}, 1)} }

func (p *pending) poke() {
	select {
	case p.notify <- struct{}{}:
	default:
	}
}

func (p *pending) setTokens(n int) {
	p.mu.Lock()
	p.tokens = n
	p.mu.Unlock()
	p.poke()
}

func (p *pending) finish(err error) {
	p.mu.Lock()
	p.done, p.err = true, err
	p.mu.Unlock()
	p.poke()
}

func (p *pending) state() (tokens int, done bool, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.tokens, p.done, p.err
}

// New checks cfg, fills in its defaults and binds the listener; Run serves.
func New(cfg Config, log hclog.Logger) (*Server, error) {
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.Port < 0 || cfg.Port > 65535 {
		return nil, fmt.Errorf("port %d: want 0 to 65535", cfg.Port)
	}
	if cfg.Model == "" {
		cfg.Model = DefaultModel
	}
	if cfg.Params == (servermodel.Params{}) {
		p, err := servermodel.Profile(DefaultProfile)
		if err != nil {
			return nil, err
		}
		cfg.Params = p
	}
	if err := cfg.Params.Validate(); err != nil {
		return nil, fmt.Errorf("params: %w", err)
	}
	if cfg.ColdStart < 0 {
		return nil, fmt.Errorf("cold start %s: must not be negative", cfg.ColdStart)
	}
	if cfg.HealthStallBusy < 0 {
		return nil, fmt.Errorf("health stall while busy %s: must not be negative", cfg.HealthStallBusy)
	}
	switch cfg.Metrics {
	case "":
		cfg.Metrics = "vllm"
	case "vllm", "llamacpp":
	default:
		return nil, fmt.Errorf("metrics dialect %q: want vllm or llamacpp", cfg.Metrics)
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	coldStart := cfg.ColdStart
	if coldStart == 0 {
		coldStart = cfg.Params.ColdStart
	}

	ln, err := net.Listen("tcp", net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port)))
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	s := &Server{
		cfg:       cfg,
		coldStart: coldStart,
		log:       log.Named("fakeserver").With("model", cfg.Model),
		ln:        ln,
		metrics:   newMetrics(cfg.Model, cfg.Metrics),
		created:   time.Now().Unix(),
		engine:    servermodel.NewEngine(cfg.Params),
		submitCh:  make(chan submission),
		abortCh:   make(chan uint64),
		healthy:   make(chan struct{}),
		stopping:  make(chan struct{}),
		loopDone:  make(chan struct{}),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", s.handleHealth)
	mux.HandleFunc("GET /v1/models", s.handleModels)
	mux.HandleFunc("POST /v1/completions", func(w http.ResponseWriter, r *http.Request) { s.handleGeneration(w, r, false) })
	mux.HandleFunc("POST /v1/chat/completions", func(w http.ResponseWriter, r *http.Request) { s.handleGeneration(w, r, true) })
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	return s, nil
}

// Addr returns the address the server listens on, with the port it got.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Run serves until ctx ends, then stops accepting connections, lets in-flight requests
// finish for up to Config.ShutdownTimeout, drops the rest and returns nil. It returns an
// error only if serving fails. Run may be called once.
func (s *Server) Run(ctx context.Context) error {
	if !s.ran.CompareAndSwap(false, true) {
		return errors.New("fakeserver: Run called twice")
	}
	// The engine outlives ctx: in-flight requests need it while the HTTP server drains.
	loopCtx, stopLoop := context.WithCancel(context.Background())
	defer stopLoop()
	if s.coldStart <= 0 {
		close(s.healthy)
	}
	go s.loop(loopCtx)
	serveErr := make(chan error, 1)
	go func() { serveErr <- s.http.Serve(s.ln) }()
	s.log.Info(displayName+" serving", "addr", s.Addr(), "cold_start", s.coldStart,
		"max_concurrency", s.cfg.Params.MaxConcurrency, "kv_cache_tokens", s.cfg.Params.KVCacheTokens,
		"health_stall_busy", s.cfg.HealthStallBusy)

	select {
	case <-ctx.Done():
	case err := <-serveErr:
		close(s.stopping)
		stopLoop()
		<-s.loopDone
		return fmt.Errorf("serve: %w", err)
	}
	close(s.stopping) // a stalled /health must not hold up the shutdown

	s.log.Info("shutting down, finishing in-flight requests", "timeout", s.cfg.ShutdownTimeout)
	shCtx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	if err := s.http.Shutdown(shCtx); err != nil {
		s.log.Warn("in-flight requests outlived the shutdown timeout, dropping them", "error", err)
	}
	// Handlers still waiting see loopDone and return; then drop their connections.
	stopLoop()
	<-s.loopDone
	if err := s.http.Close(); err != nil {
		s.log.Debug("close", "error", err)
	}
	<-serveErr
	s.log.Info("stopped")
	return nil
}

// loop owns the engine: it admits submissions, runs iterations on a timer set to the end of
// each, and hands each iteration's events to the waiting handlers when it ends.
func (s *Server) loop(ctx context.Context) {
	defer close(s.loopDone)
	var healthC <-chan time.Time
	if s.coldStart > 0 {
		health := time.NewTimer(s.coldStart)
		defer health.Stop()
		healthC = health.C
	}
	step := time.NewTimer(time.Hour)
	step.Stop()
	defer step.Stop()

	live := map[uint64]*pending{}
	var events []servermodel.Event // the current iteration's; the engine reuses the slice
	stepping := false
	kick := func() {
		if stepping || !s.engine.Busy() {
			return
		}
		now := time.Now()
		var end time.Time
		end, events = s.engine.Step(now)
		stepping = true
		step.Reset(end.Sub(now))
		s.metrics.observeGauges(s.engine)
	}

	for {
		select {
		case <-ctx.Done():
			for _, p := range live {
				p.finish(errStopped)
			}
			return
		case <-healthC:
			healthC = nil
			close(s.healthy)
			s.log.Info(displayName + " healthy")
		case sub := <-s.submitCh:
			if err := s.engine.Submit(sub.req); err != nil {
				sub.p.finish(err)
				continue
			}
			live[sub.req.ID] = sub.p
			s.metrics.observeGauges(s.engine)
			kick()
		case id := <-s.abortCh:
			if s.engine.Abort(id) {
				s.log.Debug("request aborted", "request_id", id)
			}
			delete(live, id)
			s.metrics.observeGauges(s.engine)
		case <-step.C:
			stepping = false
			// Count first: a client that has its last token may scrape at once and must
			// see it counted, as a real server's counters are updated with the iteration.
			s.metrics.addCounters(s.engine)
			s.deliver(events, live)
			s.metrics.observeGauges(s.engine)
			kick()
		}
	}
}

// deliver hands an iteration's events to their handlers and records their latencies.
func (s *Server) deliver(events []servermodel.Event, live map[uint64]*pending) {
	for i := range events {
		ev := &events[i]
		p := live[ev.ID]
		if p == nil {
			continue // aborted mid-iteration
		}
		switch ev.Kind {
		case servermodel.EventFirstToken:
			s.metrics.ttft.Observe(ev.Time.Sub(ev.Arrival).Seconds())
			p.lastAt = ev.Time
			p.setTokens(ev.Tokens)
		case servermodel.EventToken:
			// Like vLLM V1, one observation per inter-token gap.
			s.metrics.tpot.Observe(ev.Time.Sub(p.lastAt).Seconds())
			p.lastAt = ev.Time
			p.setTokens(ev.Tokens)
		case servermodel.EventDone:
			s.metrics.e2e.Observe(ev.Time.Sub(ev.Arrival).Seconds())
			s.metrics.queue.Observe(ev.Start.Sub(ev.Arrival).Seconds())
			s.metrics.success.Inc()
			delete(live, ev.ID)
			p.finish(nil)
		}
	}
}

// errStopped is what a handler gets when the engine stops under it.
var errStopped = errors.New("server stopped")

func (s *Server) isHealthy() bool {
	select {
	case <-s.healthy:
		return true
	default:
		return false
	}
}
