package fleetbench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/llmscaler/llmscaler/internal/backoff"
	"github.com/llmscaler/llmscaler/internal/buildinfo"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// AgentBenchConfig is one run of `llmscaler bench agent`: one real agent with GPUs fake GPUs
// running Instances READY fakeservers, measured over Duration.
type AgentBenchConfig struct {
	GPUs, Instances int
	// Duration is the steady window; Interval the report interval of the agent and the
	// controller (the agent's watch loop, which scrapes its servers, runs at it too).
	Duration, Interval time.Duration
	// Load is requests a second sent to the servers, spread over them; 0 sends none.
	Load float64
	// ReadyTimeout bounds the wait from the apply until every instance is READY.
	ReadyTimeout time.Duration
	// Pprof fetches the agent's CPU profile over the window, and its heap after, into PprofDir.
	Pprof    bool
	PprofDir string
	// Controller and Agent are the llmscaler-controller and llmscaler-agent binaries; Self the
	// llmscaler binary whose fakeserver the catalog runs.
	Controller, Agent, Self string
	// LogDir keeps the logs, the catalog and the agent's data (its servers' logs); empty keeps
	// them in a temporary directory removed at the end.
	LogDir string
}

// Defaults of `bench agent`'s flags.
const (
	DefaultAgentGPUs         = 8
	DefaultAgentInstances    = 4
	DefaultAgentDuration     = 60 * time.Second
	DefaultAgentLoad         = 2
	DefaultAgentReadyTimeout = 2 * time.Minute
	// maxAgentLoad keeps --load a trickle for the parsers: the bench measures the agent, not
	// the servers, and cpu-tiny serves 8 requests at once per server.
	maxAgentLoad = 1000
	// maxFakeGPUs is the agent's bound on --fake-gpus.
	maxFakeGPUs = 64
)

// Targets the issue sets for one agent with 8 GPUs and 4 instances.
const (
	AgentCPUTargetCores = 0.01
	AgentRSSTargetMiB   = 50
)

// Validate checks the parameters, naming the flag at fault.
func (c AgentBenchConfig) Validate() error {
	switch {
	case c.GPUs < 1 || c.GPUs > maxFakeGPUs:
		return fmt.Errorf("--gpus %d: want 1 to %d", c.GPUs, maxFakeGPUs)
	case c.Instances < 1 || c.Instances > c.GPUs:
		return fmt.Errorf("--instances %d: want 1 to --gpus (%d)", c.Instances, c.GPUs)
	case c.Duration < time.Second:
		return fmt.Errorf("--duration %v: at least 1s", c.Duration)
	case c.Interval < 100*time.Millisecond || c.Interval > time.Minute:
		return fmt.Errorf("--interval %v: want 100ms to 1m", c.Interval)
	case c.Load < 0 || c.Load > maxAgentLoad:
		return fmt.Errorf("--load %g: want 0 to %d requests/s", c.Load, maxAgentLoad)
	case c.ReadyTimeout <= 0:
		return fmt.Errorf("--ready-timeout %v: must be positive", c.ReadyTimeout)
	case c.Controller == "" || c.Agent == "" || c.Self == "":
		return errors.New("no controller, agent or llmscaler binary given")
	}
	return nil
}

// AgentBench is one run of the agent bench.
type AgentBench struct {
	cfg        AgentBenchConfig
	log        hclog.Logger
	ticks      float64
	res        *AgentBenchResult
	deployment string
	phase      string

	tmp, logs string
	ctrl      *controllerProc
	agent     *child
	// agentHTTP serves the agent's /metrics; agentPprof its profiles, with --pprof.
	agentHTTP, agentPprof string
	// servers are the pids of the model servers seen, killed at the end: they outlive the
	// agent by design.
	servers map[int]bool
}

// agentNodeID is the node id of the bench's agent.
const agentNodeID = "bench-agent"

// NewAgentBench checks cfg.
func NewAgentBench(cfg AgentBenchConfig, log hclog.Logger) (*AgentBench, error) {
	if cfg.PprofDir == "" {
		cfg.PprofDir = "bench-out"
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// A name of its own, so that the servers of this run, and only they, are found by their
	// command line (`--model <deployment>`) when the bench cleans up.
	var suffix [4]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		return nil, err
	}
	dep := "agentbench-" + hex.EncodeToString(suffix[:])
	b := &AgentBench{cfg: cfg, log: log.Named("bench"), deployment: dep, servers: map[int]bool{}}
	b.res = &AgentBenchResult{Version: buildinfo.Version(), Params: AgentBenchParams{
		GPUs: cfg.GPUs, Instances: cfg.Instances, DurationS: cfg.Duration.Seconds(), IntervalS: cfg.Interval.Seconds(),
		LoadPerSecond: cfg.Load, Deployment: dep, Profiled: cfg.Pprof,
	}}
	return b, nil
}

// Run runs the bench and returns its result, partial when it failed. Every process it
// started, the agent's servers included, is gone when it returns, also when ctx ends.
func (b *AgentBench) Run(ctx context.Context) (*AgentBenchResult, error) {
	res := b.res
	res.StartedAt = time.Now().UTC()
	b.ticks = ClockTicks()
	var err error
	if b.tmp, b.logs, err = workDirs("llmscaler-bench-agent-", b.cfg.LogDir); err != nil {
		return res, err
	}
	defer b.cleanup()

	steps := []struct {
		phase string
		run   func(context.Context) error
	}{
		{"controller", b.startController},
		{"agent", b.startAgent},
		{"ready", b.deploy},
		{"steady", b.steady},
	}
	for _, s := range steps {
		b.phase = s.phase
		b.log.Debug("phase", "phase", s.phase)
		if err := s.run(ctx); err != nil {
			res.Failures = append(res.Failures, fmt.Sprintf("%s: %v", s.phase, err))
			return res, fmt.Errorf("%s: %w", s.phase, err)
		}
	}
	return res, res.Failed()
}

func (b *AgentBench) note(format string, args ...any) {
	b.res.Notes = append(b.res.Notes, fmt.Sprintf(format, args...))
}

// startController runs llmscaler-controller on its embedded etcd and waits until it leads.
func (b *AgentBench) startController(ctx context.Context) error {
	cp, err := startController(b.tmp, b.logs, b.cfg.Controller, 0, "", b.cfg.Interval, false)
	if err != nil {
		return err
	}
	b.ctrl = cp
	return waitFor(ctx, 60*time.Second, 200*time.Millisecond, "the controller leads", func() (bool, error) {
		if cp.exited() {
			return false, cp.exitError()
		}
		st, err := cp.status(ctx)
		if err != nil {
			return false, nil
		}
		return st.GetLeader().GetId() != "", nil
	})
}

// startAgent writes the catalog, runs llmscaler-agent with fake GPUs and waits until the
// controller lists it connected, with its GPUs and the profile.
func (b *AgentBench) startAgent(ctx context.Context) error {
	catPath := filepath.Join(b.logs, "catalog.yaml")
	cat, err := AgentBenchCatalog(b.cfg.Self)
	if err != nil {
		return err
	}
	if err := os.WriteFile(catPath, cat, 0o644); err != nil {
		return err
	}
	// The agent keeps its state and its servers' logs here; a run before this one left
	// instances.json behind, and the agent must not try to adopt its servers.
	dataDir := filepath.Join(b.logs, "agent-data")
	if err := os.RemoveAll(dataDir); err != nil {
		return err
	}
	if b.agentHTTP, err = freeAddr(); err != nil {
		return err
	}
	args := []string{"--controller", b.ctrl.grpcAddr, "--node-id", agentNodeID,
		"--gpu-backend", "fake", "--fake-gpus", strconv.Itoa(b.cfg.GPUs), "--catalog", catPath,
		"--data-dir", dataDir, "--http-addr", b.agentHTTP, "--report-interval", b.cfg.Interval.String(), "--insecure"}
	if b.cfg.Pprof {
		help, err := controllerFlags(b.cfg.Agent)
		switch {
		case err != nil:
			return err
		case !hasFlag(help, "pprof-addr"):
			b.note("--pprof: %s has no --pprof-addr flag; no profiles taken", b.cfg.Agent)
		default:
			if b.agentPprof, err = freeAddr(); err != nil {
				return err
			}
			args = append(args, "--pprof-addr", b.agentPprof)
		}
	}
	if b.agent, err = startChild(b.logs, "agent", b.cfg.Agent, args, nil, nil); err != nil {
		return err
	}
	return waitFor(ctx, 30*time.Second, 200*time.Millisecond, "the agent connected with its GPUs and profile", func() (bool, error) {
		if err := b.alive(); err != nil {
			return false, err
		}
		n, err := b.node(ctx)
		if err != nil || n == nil {
			return false, nil
		}
		b.res.Ready.GPUs = len(n.GetGpus())
		return n.GetState() == llmscalerv1.NodeState_NODE_STATE_CONNECTED && len(n.GetGpus()) == b.cfg.GPUs &&
			slices.Contains(n.GetProfiles(), AgentBenchProfile), nil
	})
}

// node is the bench's agent as the controller lists it; nil when it is not listed.
func (b *AgentBench) node(ctx context.Context) (*llmscalerv1.Node, error) {
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	resp, err := b.ctrl.admin.GetNode(cctx, &llmscalerv1.GetNodeRequest{NodeId: agentNodeID})
	if err != nil {
		return nil, err
	}
	return resp.GetNode(), nil
}

// alive fails when the controller or the agent has died on its own.
func (b *AgentBench) alive() error {
	if b.ctrl != nil && b.ctrl.exited() {
		return b.ctrl.exitError()
	}
	if b.agent != nil && b.agent.exited() {
		return b.agent.exitError()
	}
	return nil
}

// deploy applies a deployment that holds Instances replicas of the profile and waits until
// all of them are READY.
func (b *AgentBench) deploy(ctx context.Context) error {
	spec := AgentBenchDeployment(b.deployment, b.cfg.Instances)
	applied := time.Now()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	_, err := b.ctrl.admin.ApplyDeployment(cctx, &llmscalerv1.ApplyDeploymentRequest{Deployment: spec})
	cancel()
	if err != nil {
		return fmt.Errorf("apply deployment %s: %w", b.deployment, err)
	}
	var last InstanceCounts
	err = waitFor(ctx, b.cfg.ReadyTimeout, 250*time.Millisecond, fmt.Sprintf("%d READY instances", b.cfg.Instances), func() (bool, error) {
		if err := b.alive(); err != nil {
			return false, err
		}
		ins, err := b.instances(ctx)
		if err != nil {
			return false, nil
		}
		last = CountInstances(ins)
		if last.Failed > 0 {
			return false, fmt.Errorf("an instance FAILED: %s", last.FailedMessage)
		}
		return last.Ready == b.cfg.Instances && last.Busy == 0, nil
	})
	if err != nil {
		return fmt.Errorf("%w (%d READY, %d starting or draining)", err, last.Ready, last.Busy)
	}
	b.res.Ready.Instances = last.Ready
	b.res.Ready.Seconds = time.Since(applied).Seconds()
	b.log.Info("instances ready", "deployment", b.deployment, "instances", last.Ready, "seconds", fmt.Sprintf("%.1f", b.res.Ready.Seconds))
	return nil
}

// instances lists the deployment's instances and remembers their servers' pids.
func (b *AgentBench) instances(ctx context.Context) ([]*llmscalerv1.Instance, error) {
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	resp, err := b.ctrl.admin.ListInstances(cctx, &llmscalerv1.ListInstancesRequest{Deployment: b.deployment})
	if err != nil {
		return nil, err
	}
	for _, in := range resp.GetInstances() {
		if pid := int(in.GetStatus().GetPid()); pid > 0 {
			b.servers[pid] = true
		}
	}
	return resp.GetInstances(), nil
}

// Metrics the agent bench reads.
const (
	agentReportsMetric      = "llmscaler_agent_reports_sent_total"
	agentScrapeErrorsMetric = "llmscaler_agent_scrape_errors_total"
)

// agentWindow is what the bench reads at each end of the steady window.
type agentWindow struct {
	at                           time.Time
	agent                        ProcSample
	servers                      map[int]ProcSample
	reports, received, scrapeErr float64
	haveReports, haveReceived    bool
	load                         LoadCounts
}

// readWindow samples the agent and the servers from /proc first, then scrapes the agent's
// and the controller's /metrics (whose own cost to the agent is one scrape per end).
func (b *AgentBench) readWindow(ctx context.Context, pids []int, ld *loadGen) (agentWindow, error) {
	w := agentWindow{at: time.Now(), servers: map[int]ProcSample{}}
	var err error
	if w.agent, err = ReadProc(b.agent.pid()); err != nil {
		return w, fmt.Errorf("agent: %w", err)
	}
	for _, pid := range pids {
		if p, err := ReadProc(pid); err == nil {
			w.servers[pid] = p
		}
	}
	w.load = ld.counts()
	mctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	am, err := getMetrics(mctx, "http://"+b.agentHTTP+"/metrics")
	if err != nil {
		return w, fmt.Errorf("agent metrics: %w", err)
	}
	w.reports, w.haveReports = am.Value(agentReportsMetric)
	w.scrapeErr, _ = am.Value(agentScrapeErrorsMetric)
	cm, err := b.ctrl.metrics(ctx)
	if err != nil {
		return w, fmt.Errorf("controller metrics: %w", err)
	}
	w.received, w.haveReceived = cm.Value(messagesMetric, reportSeries)
	return w, nil
}

// steady drives the load, lets the agent settle for two report intervals and a second, and
// measures the window: the agent's CPU and memory, its reports, and the servers' CPU.
func (b *AgentBench) steady(ctx context.Context) error {
	ins, err := b.instances(ctx)
	if err != nil {
		return err
	}
	var endpoints []string
	var pids []int
	for _, in := range ins {
		st := in.GetStatus()
		if st.GetPhase() == llmscalerv1.InstancePhase_INSTANCE_PHASE_READY {
			endpoints = append(endpoints, st.GetEndpoint())
			pids = append(pids, int(st.GetPid()))
		}
	}
	ld := newLoadGen(b.cfg.Load, endpoints, b.deployment)
	lctx, stopLoad := context.WithCancel(ctx)
	go ld.run(lctx)
	defer func() {
		stopLoad()
		ld.wait()
	}()

	if err := backoff.Sleep(ctx, 2*b.cfg.Interval+time.Second); err != nil {
		return err
	}
	w0, err := b.readWindow(ctx, pids, ld)
	if err != nil {
		return err
	}
	b.log.Info("measuring the agent", "agent_pid", b.agent.pid(), "window", b.cfg.Duration)
	profiles := b.startProfiles(ctx)
	maxRSS := w0.agent.RSSKiB
	minReady := b.cfg.Instances
	err = sampleEverySecond(ctx, b.cfg.Duration, b.alive, func() {
		if p, err := ReadProc(b.agent.pid()); err == nil {
			maxRSS = max(maxRSS, p.RSSKiB)
		}
		if ins, err := b.instances(ctx); err == nil {
			minReady = min(minReady, CountInstances(ins).Ready)
		}
	})
	if err != nil {
		return err
	}
	w1, err := b.readWindow(ctx, pids, ld)
	if err != nil {
		return err
	}
	ins, err = b.instances(ctx)
	if err != nil {
		return err
	}
	endReady := CountInstances(ins).Ready
	b.res.Profiles = append(b.res.Profiles, profiles()...)

	s := &b.res.Steady
	wall := w1.at.Sub(w0.at).Seconds()
	s.WindowS = wall
	s.Agent = procResult(w0.agent, w1.agent, maxRSS, b.ticks)
	s.ReadyMin, s.ReadyEnd = min(minReady, endReady), endReady
	if w0.haveReports && w1.haveReports && wall > 0 {
		s.ReportsPerSecond = (w1.reports - w0.reports) / wall
	} else {
		b.note("%s missing from the agent's /metrics: reports/s sent unknown", agentReportsMetric)
	}
	if w0.haveReceived && w1.haveReceived && wall > 0 {
		s.ReceivedPerSecond = (w1.received - w0.received) / wall
	}
	s.ScrapeErrors = w1.scrapeErr - w0.scrapeErr
	var sv ServersResult
	var ticks uint64
	for _, pid := range pids {
		a, ok0 := w0.servers[pid]
		z, ok1 := w1.servers[pid]
		if !ok0 || !ok1 || z.CPUTicks < a.CPUTicks {
			b.note("server pid %d was not there at both ends of the window: left out of the servers' CPU", pid)
			continue
		}
		sv.Processes++
		ticks += z.CPUTicks - a.CPUTicks
		sv.RSSMiB += float64(z.RSSKiB) / 1024
	}
	if wall > 0 && b.ticks > 0 {
		sv.CPUCores = float64(ticks) / b.ticks / wall
	}
	s.Servers = sv
	if b.cfg.Load > 0 {
		s.Load = w1.load.Since(w0.load, wall)
	}
	if s.ReadyMin < b.cfg.Instances {
		b.res.Failures = append(b.res.Failures, fmt.Sprintf("steady: only %d of %d instances READY at one point of the window (%d at the end)", s.ReadyMin, b.cfg.Instances, endReady))
	}
	return nil
}

// startProfiles fetches the agent's CPU profile over the window and its heap after. The
// returned func waits for them; failures become notes, since profiles are an extra.
func (b *AgentBench) startProfiles(ctx context.Context) func() []ProfileFile {
	if b.agentPprof == "" {
		return func() []ProfileFile { return nil }
	}
	if err := os.MkdirAll(b.cfg.PprofDir, 0o755); err != nil {
		b.note("--pprof-dir %s: %v", b.cfg.PprofDir, err)
		return func() []ProfileFile { return nil }
	}
	// The whole window: an agent that uses a percent of a core gives 100 samples a minute.
	secs := max(1, int(b.cfg.Duration.Seconds()))
	done := make(chan struct{})
	var out []ProfileFile
	var notes []string
	go func() {
		defer close(done)
		for _, p := range []struct{ kind, path string }{
			{"cpu", fmt.Sprintf("/debug/pprof/profile?seconds=%d", secs)},
			// The heap after the CPU profile, so that its own cost is not in it.
			{"heap", "/debug/pprof/heap"},
		} {
			file := filepath.Join(b.cfg.PprofDir, fmt.Sprintf("agent-%s.pprof", p.kind))
			if err := download(ctx, "http://"+b.agentPprof+p.path, file, time.Duration(secs+30)*time.Second); err != nil {
				notes = append(notes, fmt.Sprintf("pprof %s: %v", p.kind, err))
				continue
			}
			out = append(out, ProfileFile{Kind: p.kind, Path: file, Command: fmt.Sprintf("go tool pprof -top %s %s", b.cfg.Agent, file)})
		}
	}()
	return func() []ProfileFile {
		<-done
		for _, n := range notes {
			b.note("%s", n)
		}
		return out
	}
}

// cleanup stops the agent, then kills its servers (which outlive it by design, and which
// no agent is left to restart), then stops the controller and removes the temporary
// directory.
func (b *AgentBench) cleanup() {
	if b.agent != nil {
		for _, pid := range childPIDs(b.agent.pid()) {
			b.servers[pid] = true
		}
		b.agent.stop(5 * time.Second)
	}
	left := b.killServers()
	if len(left) > 0 {
		b.log.Warn("model servers left running", "deployment", b.deployment, "pids", fmt.Sprint(left))
	}
	if b.ctrl != nil {
		b.ctrl.close()
	}
	if b.tmp != "" {
		os.RemoveAll(b.tmp)
	}
}

// killServers kills the process groups of this run's servers, those seen and any other
// whose command line names the deployment, and waits up to 5 s until none is left; it
// returns the pids that still run.
func (b *AgentBench) killServers() []int {
	live := func() []int {
		var out []int
		for pid := range b.servers {
			// A pid seen earlier may be gone and taken by another process: only one whose
			// command line is this run's server is killed.
			if IsServerOf(cmdline(pid), b.deployment) {
				out = append(out, pid)
			}
		}
		for _, pid := range serverPIDs(b.deployment) {
			if !slices.Contains(out, pid) {
				out = append(out, pid)
			}
		}
		return out
	}
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		pids := live()
		if len(pids) == 0 {
			return nil
		}
		for _, pid := range pids {
			// Each server leads its own process group (the supervisor's Setpgid), so the
			// group takes any worker it forked; the pid itself in case it does not.
			killGroup(pid)
			if p, err := os.FindProcess(pid); err == nil {
				_ = p.Kill()
			}
		}
		select {
		case <-deadline.C:
			return live()
		case <-t.C:
		}
	}
}
