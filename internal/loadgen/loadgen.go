package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"

	"github.com/llmscaler/llmscaler/internal/trace"
	"github.com/llmscaler/llmscaler/internal/transport"
)

// Defaults of the Config fields left zero.
const (
	// DefaultPromptTokens is the prompt length of Poisson and schedule runs.
	DefaultPromptTokens = 256
	// DefaultOutputTokens is the output length of Poisson and schedule runs; the fake
	// server's default max_tokens too.
	DefaultOutputTokens = 128
	// DefaultMaxInFlight bounds the requests in flight.
	DefaultMaxInFlight = 4096
	// DefaultRequestTimeout bounds each request.
	DefaultRequestTimeout = 5 * time.Minute
	// DefaultDrainTimeout is how long requests may finish after sending stops.
	DefaultDrainTimeout = 30 * time.Second
	// DefaultRefreshInterval is how often a deployment's instances are listed.
	DefaultRefreshInterval = time.Second
	// DefaultProgressInterval is the time between progress lines.
	DefaultProgressInterval = 5 * time.Second
)

// Config configures a Generator. Exactly one workload (RPS, Schedule or TraceFile) and one
// kind of target (URL, Router, Controller with Deployment, or Targets) must be set; Router
// may come with a Controller, which it then makes unused.
type Config struct {
	// RPS is a constant Poisson arrival rate, in requests per second.
	RPS float64
	// Schedule is a Poisson arrival rate that changes over time, in the syntax of
	// ScheduleSyntax.
	Schedule string
	// TraceFile is a trace to replay (see package trace): a request trace gives the arrival
	// times and lengths; a rate series gives Poisson arrivals at its rates, window by window.
	TraceFile string
	// RateScale compresses a trace's time: gaps between arrivals are divided by it, so the
	// rate is multiplied by it. Zero means 1.
	RateScale float64
	// TraceStart skips the trace up to this offset (in trace time, before scaling).
	TraceStart time.Duration
	// PromptTokens and OutputTokens are the lengths of every request of a Poisson or
	// schedule run; for a trace, when set, they replace the trace's lengths.
	PromptTokens, OutputTokens int
	// Seed makes the random arrival times repeatable.
	Seed uint64
	// Duration bounds the time arrivals are sent; zero: until the trace ends or ctx does.
	Duration time.Duration
	// MaxInFlight caps the requests in flight; arrivals above it are dropped and counted, not
	// queued, so the generator stays open-loop and bounded. Zero means DefaultMaxInFlight.
	MaxInFlight int

	// URL is the base URL of a single server, such as http://127.0.0.1:8000.
	URL string
	// Router is the base URL of an OpenAI-compatible router (package router), such as
	// http://127.0.0.1:7410: every request goes there and the router picks the instance by
	// the request's model, so the model must be set (Model, or Deployment). The router's
	// own errors (503 with Retry-After when no instance was free in time, 429, 502) are
	// counted by status like any other answer; they are not retried, so the load stays
	// open-loop.
	Router string
	// Controller is the controller's gRPC address; the targets are the READY instances of
	// Deployment, refreshed every RefreshInterval. Unused when Router is set.
	Controller string
	// Credentials secure the connection to Controller; nil means transport.Plaintext. It
	// lists instances, so its identity needs read access (admin or readonly).
	Credentials transport.Credentials
	// Deployment is the deployment whose instances Controller lists; with Router, the
	// default model.
	Deployment string
	// Targets lists the targets instead of URL or Controller, for tests and embedding.
	Targets TargetLister
	// Model is the model field of each request; default Deployment, or none with URL (servers
	// that serve one model accept that). With Router it picks the deployment.
	Model string

	// RequestTimeout bounds each request. Zero means DefaultRequestTimeout.
	RequestTimeout time.Duration
	// DrainTimeout is how long requests in flight when arrivals stop may still finish; then
	// they are cancelled. Zero means DefaultDrainTimeout.
	DrainTimeout time.Duration
	// RefreshInterval is how often the targets are listed again. Zero means
	// DefaultRefreshInterval.
	RefreshInterval time.Duration
	// ProgressInterval is the time between progress lines. Zero means DefaultProgressInterval.
	ProgressInterval time.Duration
	// Progress receives the progress lines; nil: none.
	Progress io.Writer
	// Observe, when set, is called with every request that was sent or found no target,
	// as it ends, from the request's own goroutine: a live view or a per-request record
	// builds on it. Dropped arrivals (MaxInFlight) are not sent and not observed.
	Observe func(Result)
}

// Result is one request as Config.Observe sees it.
type Result struct {
	// Sent is when the request left.
	Sent time.Time
	// Kind is "" for a request answered in full, else why it failed (the Kind constants,
	// or "http NNN").
	Kind string
	// TTFT and E2E are its time to first token and to the end of its stream (OK only).
	TTFT, E2E time.Duration
	// Tokens counts its output tokens (OK only).
	Tokens int
}

// Generator sends an open-loop workload to LLM servers and measures their answers.
type Generator struct {
	cfg       Config
	log       hclog.Logger
	newSource func() source
	workload  string
	ran       atomic.Bool
}

// New checks cfg, fills in its defaults and loads the trace, if any; Run sends.
func New(cfg Config, log hclog.Logger) (*Generator, error) {
	if cfg.MaxInFlight == 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = DefaultDrainTimeout
	}
	if cfg.RefreshInterval == 0 {
		cfg.RefreshInterval = DefaultRefreshInterval
	}
	if cfg.ProgressInterval == 0 {
		cfg.ProgressInterval = DefaultProgressInterval
	}
	if cfg.RateScale == 0 {
		cfg.RateScale = 1
	}
	switch {
	case cfg.MaxInFlight < 1:
		return nil, fmt.Errorf("max in flight %d: want at least 1", cfg.MaxInFlight)
	case cfg.RequestTimeout < 0, cfg.DrainTimeout < 0, cfg.RefreshInterval < 0, cfg.ProgressInterval < 0, cfg.Duration < 0:
		return nil, errors.New("durations must not be negative")
	case !(cfg.RateScale > 0) || math.IsInf(cfg.RateScale, 0):
		return nil, fmt.Errorf("rate scale %g: want more than 0", cfg.RateScale)
	case cfg.PromptTokens < 0 || cfg.OutputTokens < 0:
		return nil, errors.New("token counts must not be negative")
	case cfg.TraceStart < 0:
		return nil, fmt.Errorf("trace start %s: must not be negative", cfg.TraceStart)
	}
	g := &Generator{cfg: cfg, log: log.Named("loadgen")}
	if err := g.workloadSource(); err != nil {
		return nil, err
	}
	if err := g.checkTargets(); err != nil {
		return nil, err
	}
	return g, nil
}

// workloadSource sets up the arrivals of the configured workload.
func (g *Generator) workloadSource() error {
	cfg := &g.cfg
	n := 0
	for _, set := range []bool{cfg.RPS != 0, cfg.Schedule != "", cfg.TraceFile != ""} {
		if set {
			n++
		}
	}
	if n != 1 {
		return errors.New("set exactly one workload: a rate, a schedule or a trace")
	}
	prompt, output := cfg.PromptTokens, cfg.OutputTokens
	fixed := func() {
		if prompt == 0 {
			prompt = DefaultPromptTokens
		}
		if output == 0 {
			output = DefaultOutputTokens
		}
	}
	poisson := func(s Schedule) {
		g.newSource = func() source { return newPoissonSource(s, cfg.Seed, prompt, output) }
	}
	switch {
	case cfg.RPS != 0:
		if !(cfg.RPS > 0) || math.IsInf(cfg.RPS, 0) {
			return fmt.Errorf("rate %g: want more than 0 requests per second", cfg.RPS)
		}
		fixed()
		poisson(ConstantRate(cfg.RPS))
		g.workload = fmt.Sprintf("poisson %g rps", cfg.RPS)
	case cfg.Schedule != "":
		s, err := ParseSchedule(cfg.Schedule, cfg.Duration)
		if err != nil {
			return fmt.Errorf("schedule: %w", err)
		}
		fixed()
		poisson(s)
		g.workload = "poisson, schedule " + s.String()
	default:
		format, err := trace.DetectFormat(cfg.TraceFile)
		if err != nil {
			return err
		}
		scale := fmt.Sprintf(" at rate scale %g (gaps divided by %g)", cfg.RateScale, cfg.RateScale)
		if cfg.TraceStart > 0 {
			scale += fmt.Sprintf(" from %s", cfg.TraceStart)
		}
		if format == trace.FormatRates {
			pts, err := trace.LoadRates(cfg.TraceFile)
			if err != nil {
				return err
			}
			if last := pts[len(pts)-1].Start; cfg.TraceStart > last {
				return fmt.Errorf("trace start %s is after the last window (%s)", cfg.TraceStart, last)
			}
			fixed()
			poisson(RateSeriesSchedule(pts, cfg.RateScale, cfg.TraceStart))
			g.workload = "poisson, rate series " + cfg.TraceFile + scale
			break
		}
		reqs, err := trace.LoadRequests(cfg.TraceFile)
		if err != nil {
			return err
		}
		arrivals := TraceArrivals(reqs, cfg.RateScale, cfg.TraceStart)
		if len(arrivals) == 0 {
			return fmt.Errorf("trace start %s is after the last request (%s)", cfg.TraceStart, reqs[len(reqs)-1].At)
		}
		for i := range arrivals {
			if prompt > 0 {
				arrivals[i].PromptTokens = prompt
			}
			if output > 0 {
				arrivals[i].OutputTokens = output
			}
		}
		g.newSource = func() source { return &replaySource{arrivals: arrivals} }
		g.workload = "replay " + cfg.TraceFile + scale
	}
	return nil
}

// checkTargets checks that exactly one kind of target is set. A router makes a controller
// unneeded, so the two may come together: the router is used.
func (g *Generator) checkTargets() error {
	cfg := &g.cfg
	n := 0
	for _, set := range []bool{cfg.URL != "", cfg.Router != "", cfg.Controller != "" && cfg.Router == "", cfg.Targets != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return errors.New("set exactly one target: a server URL (--url), a router URL (--router), or a controller and a deployment (--controller, --deployment)")
	}
	switch {
	case cfg.URL != "":
		u, err := checkBaseURL(cfg.URL)
		if err != nil {
			return fmt.Errorf("url %q: %w", cfg.URL, err)
		}
		cfg.URL = u
	case cfg.Router != "":
		u, err := checkBaseURL(cfg.Router)
		if err != nil {
			return fmt.Errorf("router %q: %w", cfg.Router, err)
		}
		cfg.Router = u
		if cfg.Model == "" {
			cfg.Model = cfg.Deployment
		}
		if cfg.Model == "" {
			return errors.New("a router needs a model to route by: set a deployment (--deployment) or a model (--model)")
		}
	case cfg.Controller != "":
		if cfg.Deployment == "" {
			return errors.New("a controller needs a deployment")
		}
		if cfg.Model == "" {
			cfg.Model = cfg.Deployment
		}
	}
	return nil
}

// checkBaseURL checks that s is an http(s) base URL and returns it without a trailing slash.
func checkBaseURL(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", errors.New("want http://host:port")
	}
	return strings.TrimRight(s, "/"), nil
}

// Run sends the workload until it ends, Config.Duration passes or ctx ends, waits for the
// requests in flight (up to Config.DrainTimeout; at once when ctx ends, it cancels them),
// and returns what happened. An interrupted run still returns its summary, with a nil error;
// Run fails only when it cannot start: the first listing of targets fails. Run may be called
// once.
func (g *Generator) Run(ctx context.Context) (Summary, error) {
	if !g.ran.CompareAndSwap(false, true) {
		return Summary{}, errors.New("loadgen: Run called twice")
	}
	cfg := g.cfg
	lister := cfg.Targets
	switch {
	case cfg.URL != "":
		lister = staticTargets{cfg.URL}
	case cfg.Router != "":
		lister = staticTargets{cfg.Router}
		if cfg.Controller != "" {
			g.log.Info("sending through the router, the controller is not used", "router", cfg.Router, "controller", cfg.Controller)
		}
	case cfg.Controller != "":
		creds := cfg.Credentials
		if creds == nil {
			creds = transport.Plaintext
		}
		conn, err := grpc.NewClient(cfg.Controller, transport.DialOptions(creds)...)
		if err != nil {
			return Summary{}, fmt.Errorf("controller %s: %w", cfg.Controller, err)
		}
		defer conn.Close()
		lister = NewAdminTargets(conn, cfg.Deployment)
	}
	bal := newBalancer()
	if err := g.refresh(ctx, lister, bal); err != nil {
		return Summary{}, err
	}

	client := &http.Client{Transport: &http.Transport{
		// No proxy from the environment: a proxy would be measured along with the server.
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: cfg.MaxInFlight,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true, // compressed SSE would arrive in bursts
	}}
	defer client.CloseIdleConnections()

	rec := newRecorder()
	src := g.newSource()
	start := time.Now()
	var sendingEnd atomic.Int64 // nanoseconds after start; 0 while sending

	// Background work: refreshing the targets and the progress lines, until the run is over.
	bgCtx, stopBg := context.WithCancel(ctx)
	var bg sync.WaitGroup
	defer bg.Wait()
	defer stopBg()
	if _, static := lister.(staticTargets); !static {
		bg.Go(func() { g.refreshLoop(bgCtx, lister, bal) })
	}
	if cfg.Progress != nil {
		bg.Go(func() { g.progressLoop(bgCtx, start, &sendingEnd, src, rec, bal) })
	}

	// Requests live until the drain ends, or ctx does.
	reqCtx, cancelReqs := context.WithCancel(ctx)
	defer cancelReqs()
	var inflight sync.WaitGroup
	g.dispatch(ctx, start, src, func(a Arrival, lag time.Duration) {
		if !rec.admit(cfg.MaxInFlight, lag) {
			return
		}
		target, ok := bal.pick()
		if !ok {
			g.observe(time.Now(), outcome{kind: KindNoTarget})
			if rec.finish(outcome{kind: KindNoTarget}) {
				g.log.Warn("no ready instance, counting requests as errors until one is")
			}
			return
		}
		inflight.Go(func() {
			sent := time.Now()
			o := send(reqCtx, client, target, cfg.Model, a, cfg.RequestTimeout)
			bal.release(target)
			g.observe(sent, o)
			if rec.finish(o) && o.kind != KindCancelled {
				g.log.Warn("request failed", "kind", o.kind, "target", target, "error", o.msg)
			}
		})
	})
	sending := time.Since(start)
	sendingEnd.Store(int64(sending))

	done := make(chan struct{})
	go func() { inflight.Wait(); close(done) }()
	drain := time.NewTimer(cfg.DrainTimeout)
	defer drain.Stop()
	select {
	case <-done:
	case <-ctx.Done():
	case <-drain.C:
		g.log.Warn("drain timeout passed, cancelling requests in flight", "timeout", cfg.DrainTimeout)
	}
	cancelReqs()
	<-done
	elapsed := time.Since(start)
	stopBg()
	bg.Wait()

	return g.summary(rec, bal, src, sending, elapsed), nil
}

// observe hands one request's outcome to Config.Observe, if set.
func (g *Generator) observe(sent time.Time, o outcome) {
	if g.cfg.Observe != nil {
		g.cfg.Observe(Result{Sent: sent, Kind: o.kind, TTFT: o.ttft, E2E: o.e2e, Tokens: o.tokens})
	}
}

// dispatch walks the arrivals and calls send for each at its time, until they end,
// Config.Duration passes or ctx ends. It never waits for responses: late arrivals go at once.
func (g *Generator) dispatch(ctx context.Context, start time.Time, src source, send func(Arrival, time.Duration)) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	wait := func(at time.Duration) bool {
		d := time.Until(start.Add(at))
		if d <= 0 {
			return ctx.Err() == nil
		}
		timer.Reset(d)
		select {
		case <-ctx.Done():
			return false
		case <-timer.C:
			return true
		}
	}
	_, random := src.(*poissonSource)
	for {
		a, ok := src.next()
		if !ok {
			if random && g.cfg.Duration > 0 {
				wait(g.cfg.Duration) // a schedule that falls to zero still lasts its duration
			}
			return
		}
		if g.cfg.Duration > 0 && a.At >= g.cfg.Duration {
			wait(g.cfg.Duration) // the run lasts its duration even when the last gap is long
			return
		}
		if !wait(a.At) {
			return
		}
		send(a, time.Since(start.Add(a.At)))
	}
}

// refresh lists the targets once and hands them to the balancer.
func (g *Generator) refresh(ctx context.Context, lister TargetLister, bal *balancer) error {
	ctx, cancel := context.WithTimeout(ctx, max(5*time.Second, 2*g.cfg.RefreshInterval))
	defer cancel()
	targets, err := lister.Targets(ctx)
	if err != nil {
		return err
	}
	if bal.set(targets) {
		g.log.Info("targets", "count", len(targets), "targets", strings.Join(targets, ","))
	}
	return nil
}

// refreshLoop lists the targets every RefreshInterval. A failed listing keeps the last list.
func (g *Generator) refreshLoop(ctx context.Context, lister TargetLister, bal *balancer) {
	tk := time.NewTicker(g.cfg.RefreshInterval)
	defer tk.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
		err := g.refresh(ctx, lister, bal)
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			g.log.Warn("listing targets failed, keeping the last list", "error", err)
			failing = true
		case err == nil && failing:
			g.log.Info("listing targets works again")
			failing = false
		}
	}
}

// progressLoop writes a progress line every ProgressInterval.
func (g *Generator) progressLoop(ctx context.Context, start time.Time, sendingEnd *atomic.Int64, src source, rec *recorder, bal *balancer) {
	tk := time.NewTicker(g.cfg.ProgressInterval)
	defer tk.Stop()
	var last time.Duration
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
		now := time.Since(start)
		to := now
		if end := time.Duration(sendingEnd.Load()); end > 0 {
			to = min(now, end)
		}
		target := 0.0
		if to > last {
			target = src.meanRate(last, to)
		}
		p := rec.interval()
		ttft := "-"
		if p.ttft.Count > 0 {
			ttft = fmt.Sprintf("p50 %s p95 %s", fmtDur(p.ttft.P50), fmtDur(p.ttft.P95))
		}
		targets := ""
		if g.cfg.URL == "" && g.cfg.Router == "" {
			targets = fmt.Sprintf(" | %d ready", bal.count())
		}
		fmt.Fprintf(g.cfg.Progress, "[%6s] target %.1f rps | sent %d ok %d err %d drop %d | in flight %d%s | ttft %s\n",
			now.Round(time.Second), target, p.sent, p.ok, p.errors, p.dropped, p.inFlight, targets, ttft)
		last = now
	}
}

// summary puts the run's figures together.
func (g *Generator) summary(rec *recorder, bal *balancer, src source, sending, elapsed time.Duration) Summary {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	s := Summary{
		Workload: g.workload, Sending: sending, Elapsed: elapsed,
		Arrivals: rec.arrivals, Sent: rec.arrivals - rec.dropped, OK: rec.ok, Dropped: rec.dropped,
		Errors: rec.errors, TTFT: latencyOf(rec.ttfts), E2E: latencyOf(rec.e2es),
		OutputTokens: rec.outputTokens, ByTarget: bal.sentByTarget(), MaxLag: rec.maxLag,
	}
	if _, random := src.(*poissonSource); random {
		s.Seed = g.cfg.Seed
	}
	if sending > 0 {
		s.TargetRPS = src.meanRate(0, sending)
		s.AchievedRPS = float64(s.Sent) / sending.Seconds()
	}
	if elapsed > 0 {
		s.OutputTokensPerSec = float64(s.OutputTokens) / elapsed.Seconds()
	}
	return s
}

// Workload describes the arrivals, as the summary does.
func (g *Generator) Workload() string { return g.workload }

// Target describes where the requests go.
func (g *Generator) Target() string {
	cfg := g.cfg
	switch {
	case cfg.URL != "":
		return cfg.URL
	case cfg.Router != "":
		return fmt.Sprintf("model %q via router %s", cfg.Model, cfg.Router)
	case cfg.Controller != "":
		return fmt.Sprintf("deployment %q via controller %s", cfg.Deployment, cfg.Controller)
	}
	return "the listed targets"
}
