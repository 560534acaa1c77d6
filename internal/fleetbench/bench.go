package fleetbench

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/llmscaler/llmscaler/internal/backoff"
	"github.com/llmscaler/llmscaler/internal/buildinfo"
)

// Bench is one run.
type Bench struct {
	cfg    Config
	log    hclog.Logger
	layout Layout
	ticks  float64
	res    *Result

	tmp    string // data of etcd and the controllers, removed at the end
	logs   string // the processes' logs
	etcd   *child
	ctrls  []*controllerProc
	agents *agentsProc
	lead   leadership
	phase  atomic.Value // string
	// victim is the controller killed by the failover, no longer to be asked anything.
	victim atomic.Pointer[controllerProc]
}

// New checks cfg.
func New(cfg Config, log hclog.Logger) (*Bench, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	l, err := NewLayout(cfg.Agents, cfg.GPUs, cfg.Instances, cfg.probes())
	if err != nil {
		return nil, err
	}
	b := &Bench{cfg: cfg, log: log.Named("bench"), layout: l}
	nctl := 1
	if cfg.Failover {
		nctl = 2
	}
	b.res = &Result{Version: buildinfo.Version(), Params: Params{
		Agents: cfg.Agents, GPUs: cfg.GPUs, Instances: cfg.Instances, Probes: cfg.Probes, Deployments: len(l.Fleet),
		Storm: cfg.Storm, Failover: cfg.Failover, RampPerSecond: cfg.RampPerSecond, AgentsCPUs: cfg.AgentsCPUs,
		DurationS: cfg.Duration.Seconds(), IntervalS: cfg.Interval.Seconds(), Controllers: nctl,
	}}
	if cfg.Storm {
		b.res.Params.RampPerSecond = 0
	}
	b.enter("start")
	return b, nil
}

// Run runs the bench and returns its result, partial when it failed; the error says what
// failed (a process that did not start, agents that did not connect, a failed check).
func (b *Bench) Run(ctx context.Context) (*Result, error) {
	res := b.res
	res.StartedAt = time.Now().UTC()
	b.ticks = ClockTicks()
	var err error
	if b.tmp, b.logs, err = workDirs("llmscaler-bench-", b.cfg.LogDir); err != nil {
		return res, err
	}
	defer b.cleanup()

	if n, err := RaiseFileLimit(); err != nil {
		b.note("open-file limit not raised: %v", err)
	} else if need := uint64(b.cfg.Agents) + 1000; n < need {
		return res, b.fatal(fmt.Errorf("open-file limit %d is below the %d that %d agents need (one socket each, and the controller needs as many)", n, need, b.cfg.Agents))
	}
	steps := []struct {
		phase string
		run   func(context.Context) error
	}{
		{"cluster", b.startCluster},
		{"deployments", b.applyDeployments},
		{"agents", b.startAgents},
	}
	for _, s := range steps {
		b.enter(s.phase)
		if err := s.run(ctx); err != nil {
			return res, b.fatal(err)
		}
	}

	bg, stopBG := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); b.pollLeadership(bg) }()
	go func() { defer wg.Done(); b.progress(bg) }()
	defer func() {
		stopBG()
		wg.Wait()
	}()
	if err := b.initLeadership(ctx); err != nil {
		return res, b.fatal(err)
	}
	defer func() {
		// A run that failed early still says whether the leader held: often the reason.
		if !b.lead.isClosed() {
			cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			b.closeLeadership(cctx)
		}
	}()

	b.enter("connect")
	if err := b.connect(ctx); err != nil {
		return res, b.fatal(err)
	}
	b.enter("steady")
	if err := b.steady(ctx); err != nil {
		return res, b.fatal(err)
	}
	b.enter("admin")
	if err := b.adminCalls(ctx); err != nil {
		return res, b.fatal(err)
	}
	b.enter("decisions")
	if err := b.decisions(ctx); err != nil {
		return res, b.fatal(err)
	}
	b.closeLeadership(ctx)
	if b.cfg.Failover {
		b.enter("failover")
		if err := b.failover(ctx); err != nil {
			return res, b.fatal(err)
		}
	}
	b.enter("final")
	if err := b.final(ctx); err != nil {
		return res, b.fatal(err)
	}
	return res, res.Failed()
}

// enter starts a phase: the progress lines and the failures name it.
func (b *Bench) enter(phase string) {
	b.phase.Store(phase)
	b.log.Debug("phase", "phase", phase)
}

// fatal records err as the run's failure and returns it, with what the processes logged.
func (b *Bench) fatal(err error) error {
	b.res.Failures = append(b.res.Failures, fmt.Sprintf("%s: %v", b.phase.Load(), err))
	return fmt.Errorf("%s: %w", b.phase.Load(), err)
}

func (b *Bench) fail(format string, args ...any) {
	b.res.Failures = append(b.res.Failures, fmt.Sprintf(format, args...))
}

func (b *Bench) note(format string, args ...any) {
	b.res.Notes = append(b.res.Notes, fmt.Sprintf(format, args...))
}

// cleanup ends every child, the agents first (so that they do not watch the controller
// go), and removes the temporary directory.
func (b *Bench) cleanup() {
	if b.agents != nil {
		b.agents.quit(10 * time.Second)
	}
	for _, c := range b.ctrls {
		c.close()
	}
	if b.etcd != nil {
		b.etcd.stop(5 * time.Second)
	}
	if b.tmp != "" {
		os.RemoveAll(b.tmp)
	}
}

// waitFor polls cond every step until it holds, fails, or d passes. Polling is all there is:
// the figures live in other processes.
func (b *Bench) waitFor(ctx context.Context, d, step time.Duration, what string, cond func() (bool, error)) error {
	return waitFor(ctx, d, step, what, cond)
}

// workDirs makes a run's temporary directory and picks its log directory: logDir, made if
// need be, or else the temporary one.
func workDirs(prefix, logDir string) (tmp, logs string, err error) {
	tmp, err = os.MkdirTemp("", prefix)
	if err != nil {
		return "", "", err
	}
	if logDir == "" {
		return tmp, tmp, nil
	}
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		os.RemoveAll(tmp)
		return "", "", fmt.Errorf("--log-dir: %w", err)
	}
	return tmp, logDir, nil
}

// waitFor is Bench.waitFor, for the agent bench too.
func waitFor(ctx context.Context, d, step time.Duration, what string, cond func() (bool, error)) error {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	t := time.NewTicker(step)
	defer t.Stop()
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return fmt.Errorf("%s: not within %v", what, d)
		case <-t.C:
		}
	}
}

// alive fails when a process of the bench has died on its own.
func (b *Bench) alive() error {
	for _, cp := range b.ctrls {
		if cp != b.victim.Load() && cp.exited() {
			return cp.exitError()
		}
	}
	if b.etcd != nil && b.etcd.exited() {
		return b.etcd.exitError()
	}
	if b.agents != nil && b.agents.exited() {
		return b.agents.exitError()
	}
	return nil
}

// final records the fleet at the end: every agent should still be connected.
func (b *Bench) final(ctx context.Context) error {
	if err := backoff.Sleep(ctx, statsLag); err != nil {
		return err
	}
	if err := b.alive(); err != nil {
		return err
	}
	s := b.agents.latest()
	b.res.Final = FinalResult{
		Connected: s.Connected, Disconnected: b.cfg.Agents - s.Connected,
		Welcomes: s.Welcomes, Disconnects: s.Disconnects, Reports: s.Reports,
	}
	if s.Connected < b.cfg.Agents {
		b.fail("%d of %d agents are not connected at the end", b.cfg.Agents-s.Connected, b.cfg.Agents)
	}
	return nil
}
