package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sync/errgroup"

	"github.com/llmscaler/llmscaler/agent/catalog"
	"github.com/llmscaler/llmscaler/agent/gpu"
	"github.com/llmscaler/llmscaler/agent/supervisor"
	"github.com/llmscaler/llmscaler/internal/backoff"
	"github.com/llmscaler/llmscaler/internal/names"
	"github.com/llmscaler/llmscaler/internal/transport"
)

// Config is what an agent needs to know to run. Field errors from New name the command-line
// flag of cmd/llmscaler-agent that sets the field.
type Config struct {
	// Controllers are controller gRPC addresses, tried in turn. Any of them will do: one
	// that is not the leader redirects the agent to the one that is.
	Controllers []string
	// NodeID names this host in the fleet. Required.
	NodeID string
	// Labels are matched against deployments' node selectors.
	Labels map[string]string
	// ReportInterval is how often the agent reports; 0 means 1 s. A welcome with a non-zero
	// report_interval overrides it, since the interval is a fleet-wide setting.
	ReportInterval time.Duration
	// DataDir holds the agent's state file. Required; created 0700 if missing.
	DataDir string
	// HTTPAddr is where /healthz and /metrics are served; "" serves nothing.
	HTTPAddr string
	// GPUBackend is "nvml" (real GPUs), "fake" (simulated GPUs) or "none" (CPU-only
	// servers); "" means "none".
	GPUBackend string
	// Catalog is the path of the catalog of model-server profiles; "" runs no servers.
	Catalog string
	// InstanceHost is the address model servers bind to, substituted for {host}; default 127.0.0.1.
	InstanceHost string
	// FakeGPUs is the number of simulated GPUs of the "fake" backend, 1 to 64.
	FakeGPUs int
	// ReportBuffer is the number of reports kept while no stream is up; 0 means 300 (five
	// minutes at the default interval). When it is full the oldest report is dropped.
	ReportBuffer int
	// HealthInterval is how often a READY server's health path is checked, and
	// UnhealthyChecks how many checks in a row without an answer or progress take it for hung;
	// 0 means the supervisor's defaults (10 s, 3).
	HealthInterval  time.Duration
	UnhealthyChecks int
	// Credentials secure the connection to the controllers; nil means transport.Plaintext.
	Credentials transport.Credentials
	// Backoff spaces retries after a failed connection; zero means DefaultBackoff.
	Backoff backoff.Config
}

// Defaults that New fills into a zero Config field.
const (
	DefaultReportInterval = time.Second
	DefaultReportBuffer   = 300
	// MaxFakeGPUs bounds the fake backend: more than a real host has would only hide bugs.
	MaxFakeGPUs = 64
)

// DefaultBackoff starts faster and caps lower than backoff.Default: an agent without a stream
// reports nothing, so a controller restart should cost it seconds, not minutes.
var DefaultBackoff = backoff.Config{Base: 500 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, Max: 30 * time.Second}

const (
	// welcomeTimeout bounds the wait for the controller's first reply.
	welcomeTimeout = 10 * time.Second
	// defaultHeartbeat is used when a welcome does not set heartbeat_interval.
	defaultHeartbeat = 5 * time.Second
	// silentHeartbeats is how many heartbeat intervals without a word from the controller
	// end a stream: the transport's keepalive cannot see a controller that is up but stuck.
	silentHeartbeats = 3
	// maxRedirects is how many NOT_LEADER redirects in a row are followed at once; the next
	// is a failure, so that two controllers that point at each other are not hammered.
	maxRedirects = 3
	// httpShutdownTimeout bounds the wait for HTTP requests in flight when Run ends.
	httpShutdownTimeout = 2 * time.Second
	// minInterval floors the intervals a welcome sets, so that a controller's mistake cannot
	// make the agent spin.
	minInterval = time.Millisecond
)

// Agent is one running agent. Build it with New and run it with Run.
type Agent struct {
	cfg   Config
	log   hclog.Logger
	gpus  gpu.Backend
	runID string
	fence *fence
	queue *reportQueue
	exec  executor
	// applied is the desired state last applied; owned by the connection loop.
	applied appliedVersion
	metrics *metrics

	httpLn  net.Listener
	httpSrv *http.Server

	// intervals carries a report interval set by a welcome from the stream to the sampler;
	// it holds at most the latest value.
	intervals chan time.Duration
	// seq numbers reports; the first is 1.
	seq atomic.Uint64
	// liveSession is the number of the stream that has a welcome now, 0 when none: a report
	// made under another number is sent marked buffered.
	liveSession atomic.Uint64
	started     atomic.Bool

	// sessions numbers the welcomed streams; owned by the connection loop.
	sessions uint64

	// Hooks that tests replace.
	now  func() time.Time
	wait func(ctx context.Context, d time.Duration) error

	// catalog and sup are nil for an agent started without --catalog.
	catalog *catalog.Catalog
	sup     *supervisor.Supervisor

	mu   sync.Mutex
	conn connState
}

type connState struct {
	controllerID string
	epoch        int64
	ok           bool
}

// New checks cfg, builds the GPU backend, loads the agent's state from DataDir and binds the
// HTTP listener, so that a bad flag or a busy port fails before anything runs. The listener
// is released by Run; an Agent that is never run holds it until the process ends.
func New(cfg Config, log hclog.Logger) (*Agent, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if log == nil {
		log = hclog.NewNullLogger()
	}
	log = log.Named("agent").With("node_id", cfg.NodeID)

	var backend gpu.Backend
	switch cfg.GPUBackend {
	case "nvml":
		nv, err := gpu.NewNVML(log)
		if err != nil {
			return nil, fmt.Errorf("--gpu-backend nvml: %w", err)
		}
		backend = nv
	case "fake":
		backend = gpu.NewFake(cfg.NodeID, cfg.FakeGPUs)
	case "none":
		backend = gpu.NewNone()
	}
	var cat *catalog.Catalog
	if cfg.Catalog != "" {
		c, err := catalog.Load(cfg.Catalog)
		if err != nil {
			backend.Close()
			return nil, fmt.Errorf("--catalog: %w", err)
		}
		cat = c
	}

	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		backend.Close()
		return nil, fmt.Errorf("--data-dir: %w", err)
	}
	f, err := loadFence(cfg.DataDir)
	if err != nil {
		backend.Close()
		return nil, err
	}

	runID := make([]byte, 8)
	if _, err := rand.Read(runID); err != nil {
		return nil, fmt.Errorf("run id: %w", err)
	}

	// The caller keeps its map and slice; the agent reads its own copies while it runs.
	cfg.Labels = maps.Clone(cfg.Labels)
	cfg.Controllers = slices.Clone(cfg.Controllers)

	a := &Agent{
		cfg:       cfg,
		log:       log,
		gpus:      backend,
		runID:     hex.EncodeToString(runID),
		fence:     f,
		queue:     newReportQueue(cfg.ReportBuffer),
		exec:      noCatalog{},
		metrics:   newMetrics(),
		intervals: make(chan time.Duration, 1),
		now:       time.Now,
		wait:      backoff.Sleep,
		catalog:   cat,
	}
	if cat != nil {
		var indices []uint32
		for _, g := range backend.Inventory() {
			indices = append(indices, g.GetIndex())
		}
		sup, err := supervisor.New(supervisor.Config{
			DataDir:  cfg.DataDir,
			Catalog:  cat,
			Host:     cfg.InstanceHost,
			GPUs:     indices,
			Interval: cfg.ReportInterval,
			Metrics:  newScrapers(time.Now, func() { a.metrics.scrapeErrors.Inc() }),
			// 0: the supervisor's defaults (10 s, 3 checks).
			HealthInterval:  cfg.HealthInterval,
			UnhealthyChecks: cfg.UnhealthyChecks,
		}, log)
		if err != nil {
			backend.Close()
			return nil, err
		}
		a.sup = sup
		a.exec = supervised{sup}
	}

	if cfg.HTTPAddr != "" {
		ln, err := net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			return nil, fmt.Errorf("--http-addr: %w", err)
		}
		a.httpLn = ln
		a.httpSrv = &http.Server{Handler: a.httpHandler(), ReadHeaderTimeout: 10 * time.Second}
	}
	return a, nil
}

// check validates cfg and fills in its defaults.
func (cfg *Config) check() error {
	if len(cfg.Controllers) == 0 {
		return errors.New("--controller: at least one controller address is required")
	}
	for i, c := range cfg.Controllers {
		if c == "" {
			return fmt.Errorf("--controller: address %d is empty", i)
		}
	}
	if err := names.NodeID(cfg.NodeID); err != nil {
		return fmt.Errorf("--node-id: %w", err)
	}
	if err := names.Labels(cfg.Labels); err != nil {
		return fmt.Errorf("--labels: %w", err)
	}
	switch {
	case cfg.ReportInterval < 0:
		return fmt.Errorf("--report-interval: %v is negative", cfg.ReportInterval)
	case cfg.ReportInterval == 0:
		cfg.ReportInterval = DefaultReportInterval
	}
	if cfg.DataDir == "" {
		return errors.New("--data-dir: is empty; the agent keeps the leader epoch it has accepted there")
	}
	switch cfg.GPUBackend {
	case "", "none":
		cfg.GPUBackend = "none"
	case "fake":
		if cfg.FakeGPUs < 1 || cfg.FakeGPUs > MaxFakeGPUs {
			return fmt.Errorf("--fake-gpus: %d, want 1 to %d with --gpu-backend fake", cfg.FakeGPUs, MaxFakeGPUs)
		}
	case "nvml":
	default:
		return fmt.Errorf("--gpu-backend: %q, want nvml, fake or none", cfg.GPUBackend)
	}
	switch {
	case cfg.ReportBuffer < 0:
		return fmt.Errorf("--report-buffer: %d is negative", cfg.ReportBuffer)
	case cfg.ReportBuffer == 0:
		cfg.ReportBuffer = DefaultReportBuffer
	}
	if cfg.Credentials == nil {
		cfg.Credentials = transport.Plaintext
	}
	if cfg.Backoff == (backoff.Config{}) {
		cfg.Backoff = DefaultBackoff
	}
	return nil
}

// Run reports and keeps a stream to the leader until ctx ends, then returns nil. It returns an
// error only when the agent cannot go on, such as when its HTTP server fails. Run may be
// called once.
func (a *Agent) Run(ctx context.Context) error {
	if !a.started.CompareAndSwap(false, true) {
		return errors.New("agent: Run called more than once")
	}
	defer func() {
		if err := a.gpus.Close(); err != nil {
			a.log.Warn("closing gpu backend failed", "error", err)
		}
	}()

	g, ctx := errgroup.WithContext(ctx)
	if a.sup != nil {
		// Stopping the agent leaves the model servers running: the next agent re-adopts them.
		g.Go(func() error { return a.sup.Run(ctx) })
	}
	g.Go(func() error { return a.sample(ctx) })
	g.Go(func() error { return a.connect(ctx) })
	if a.httpSrv != nil {
		g.Go(func() error {
			a.log.Info("serving http", "address", a.httpLn.Addr().String())
			if err := a.httpSrv.Serve(a.httpLn); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("http server: %w", err)
			}
			return nil
		})
		g.Go(func() error {
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), httpShutdownTimeout)
			defer cancel()
			if err := a.httpSrv.Shutdown(sctx); err != nil {
				// Requests still running are cut off: Run must return once ctx ends.
				a.log.Warn("http shutdown timed out", "error", err)
				_ = a.httpSrv.Close()
			}
			return nil
		})
	}
	return g.Wait()
}

// HTTPAddr is the address the HTTP server is bound to, "" when there is none. With an
// HTTPAddr of "127.0.0.1:0" it tells tests and the demo which port was picked.
func (a *Agent) HTTPAddr() string {
	if a.httpLn == nil {
		return ""
	}
	return a.httpLn.Addr().String()
}

// Connected tells whether the agent has a welcomed stream now, to which controller, and
// under which leader epoch.
func (a *Agent) Connected() (controllerID string, epoch int64, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.conn.controllerID, a.conn.epoch, a.conn.ok
}

func (a *Agent) setConnected(s connState) {
	a.mu.Lock()
	a.conn = s
	a.mu.Unlock()
	if s.ok {
		a.metrics.connected.Set(1)
	} else {
		a.metrics.connected.Set(0)
	}
}
