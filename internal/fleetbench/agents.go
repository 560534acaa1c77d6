package fleetbench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/llmscaler/llmscaler/internal/backoff"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// AgentBackoff is the real agent's reconnect backoff (agent.DefaultBackoff): it starts
// faster and caps lower than backoff.Default.
var AgentBackoff = backoff.Config{Base: 500 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, Max: 30 * time.Second}

// AgentsConfig is what the agents process simulates.
type AgentsConfig struct {
	Layout Layout
	// Controllers are the addresses agents try in turn, as the real agent's --controller list.
	Controllers []string
	// Storm: every agent dials at once after a barrier; else RampPerSecond agents start a second.
	Storm         bool
	RampPerSecond float64
	// Backoff paces reconnects; zero is AgentBackoff.
	Backoff backoff.Config
	// TrialTimeout bounds the wait for a probe's start; StatsInterval spaces stats lines.
	TrialTimeout  time.Duration
	StatsInterval time.Duration
}

// Agents is the agents process: every simulated agent, and the JSON-lines link to the bench.
type Agents struct {
	cfg    AgentsConfig
	log    hclog.Logger
	agents []*simConn

	dials, welcomes, refused, redirects, disconnects   atomic.Int64
	reports, heartbeats, skipped                       atomic.Int64
	desiredN, desiredChanges, starts, drains, rejected atomic.Int64
	connected, reporting, firstDial, allReportingAt    atomic.Int64

	mu           sync.Mutex
	byController map[string]int
	allOn        map[string]int64
	trials       map[string]*pendingTrial
	lastErrors   []string

	outMu sync.Mutex
	out   *json.Encoder
}

type pendingTrial struct {
	Trial
	requested time.Time
	timeout   time.Duration
}

// NewAgents checks the configuration.
func NewAgents(cfg AgentsConfig, log hclog.Logger) (*Agents, error) {
	if len(cfg.Controllers) == 0 {
		return nil, errors.New("agents: no controller address")
	}
	if !cfg.Storm && cfg.RampPerSecond <= 0 {
		return nil, fmt.Errorf("agents: ramp %g agents/s: must be positive (or use the storm)", cfg.RampPerSecond)
	}
	if cfg.Backoff == (backoff.Config{}) {
		cfg.Backoff = AgentBackoff
	}
	if cfg.TrialTimeout <= 0 {
		cfg.TrialTimeout = 10 * time.Second
	}
	if cfg.StatsInterval <= 0 {
		cfg.StatsInterval = 500 * time.Millisecond
	}
	return &Agents{cfg: cfg, log: log.Named("agents"), byController: map[string]int{}, allOn: map[string]int64{}, trials: map[string]*pendingTrial{}}, nil
}

// Run answers the bench's commands on in with events on out until a quit, the end of in,
// or ctx. The agents dial only after the connect command, so that the bench's clock and
// theirs start together.
func (a *Agents) Run(ctx context.Context, in io.Reader, out io.Writer) error {
	a.out = json.NewEncoder(out)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmds := make(chan command)
	go func() {
		// Ends with in: the bench closing stdin (or dying) is a quit.
		defer close(cmds)
		sc := bufio.NewScanner(in)
		for sc.Scan() {
			var c command
			if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
				a.log.Warn("bad command", "line", sc.Text(), "error", err)
				continue
			}
			select {
			case cmds <- c:
			case <-ctx.Done():
				return
			}
		}
	}()
	now := time.Now()
	a.agents = make([]*simConn, a.cfg.Layout.Agents)
	for i := range a.agents {
		a.agents[i] = newSimConn(a, i, now)
	}
	a.emit(event{Event: evReady})

	var wg sync.WaitGroup
	started := false
	stats := time.NewTicker(a.cfg.StatsInterval)
	defer stats.Stop()
	for {
		select {
		case <-ctx.Done():
			return a.finish(cancel, &wg)
		case <-stats.C:
			a.sweepTrials(time.Now())
			a.emit(event{Event: evStats, Stats: a.stats()})
		case c, ok := <-cmds:
			if !ok {
				return a.finish(cancel, &wg)
			}
			switch c.Cmd {
			case cmdConnect:
				if !started {
					started = true
					a.start(ctx, &wg)
				}
			case cmdOverload:
				a.overload(c.Deployment, time.Duration(c.TimeoutMs)*time.Millisecond)
			case cmdQuit:
				return a.finish(cancel, &wg)
			default:
				a.log.Warn("unknown command", "cmd", c.Cmd)
			}
		}
	}
}

// finish ends every stream and sends the last stats.
func (a *Agents) finish(cancel context.CancelFunc, wg *sync.WaitGroup) error {
	cancel()
	wg.Wait()
	a.emit(event{Event: evStats, Stats: a.stats()})
	return nil
}

// start runs the schedule, its workers and every agent's connection loop.
func (a *Agents) start(ctx context.Context, wg *sync.WaitGroup) {
	workers := max(8, 4*runtime.GOMAXPROCS(0))
	sched := newSchedule(a.agents, time.Now(), func(c *simConn) time.Duration { return time.Duration(c.interval.Load()) }, workers)
	wg.Add(1)
	go func() {
		defer wg.Done()
		sched.run(ctx)
	}()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range sched.work {
				c.report()
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.launch(ctx, wg)
	}()
}

// launch starts the connection loops: behind one barrier for a storm, so that every agent
// dials within the same instant, or at the ramp rate.
func (a *Agents) launch(ctx context.Context, wg *sync.WaitGroup) {
	if a.cfg.Storm {
		gate := make(chan struct{})
		for _, c := range a.agents {
			wg.Add(1)
			go func() {
				defer wg.Done()
				select {
				case <-gate:
				case <-ctx.Done():
					return
				}
				c.run(ctx)
			}()
		}
		close(gate)
		return
	}
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	began := time.Now()
	next := 0
	for next < len(a.agents) {
		due := min(len(a.agents), int(time.Since(began).Seconds()*a.cfg.RampPerSecond)+1)
		for ; next < due; next++ {
			c := a.agents[next]
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.run(ctx)
			}()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (a *Agents) emit(e event) {
	a.outMu.Lock()
	defer a.outMu.Unlock()
	if err := a.out.Encode(e); err != nil {
		a.log.Debug("event not written", "error", err)
	}
}

func (a *Agents) dialed() {
	a.dials.Add(1)
	a.firstDial.CompareAndSwap(0, time.Now().UnixNano())
}

func (a *Agents) welcomed(controllerID string) {
	a.welcomes.Add(1)
	a.connected.Add(1)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.byController[controllerID]++
	if a.byController[controllerID] == len(a.agents) {
		if _, ok := a.allOn[controllerID]; !ok {
			a.allOn[controllerID] = time.Now().UnixNano()
		}
	}
}

func (a *Agents) left(controllerID string, reported bool) {
	a.connected.Add(-1)
	if reported {
		a.reporting.Add(-1)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.byController[controllerID]--; a.byController[controllerID] <= 0 {
		delete(a.byController, controllerID)
	}
}

func (a *Agents) firstReport() {
	if a.reporting.Add(1) == int64(len(a.agents)) {
		a.allReportingAt.CompareAndSwap(0, time.Now().UnixNano())
	}
}

func (a *Agents) applied(ap Applied) {
	a.desiredN.Add(1)
	if ap.Changed() {
		a.desiredChanges.Add(1)
	}
	a.starts.Add(int64(len(ap.Started)))
	a.drains.Add(int64(len(ap.Drained)))
	a.rejected.Add(int64(len(ap.Ack.GetRejected())))
}

const keptErrors = 5

func (a *Agents) noteError(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.lastErrors = append(a.lastErrors, err.Error())
	if len(a.lastErrors) > keptErrors {
		a.lastErrors = a.lastErrors[len(a.lastErrors)-keptErrors:]
	}
}

// overload starts a trial: the probe's agent reports it overloaded from its next report on.
func (a *Agents) overload(dep string, timeout time.Duration) {
	i, ok := a.cfg.Layout.ProbeAgent(dep)
	if !ok {
		a.log.Warn("overload of a deployment that is not a probe", "deployment", dep)
		return
	}
	if timeout <= 0 {
		timeout = a.cfg.TrialTimeout
	}
	a.mu.Lock()
	a.trials[dep] = &pendingTrial{Trial: Trial{Deployment: dep}, requested: time.Now(), timeout: timeout}
	a.mu.Unlock()
	c := a.agents[i]
	c.mu.Lock()
	c.sim.SetOverload(dep, true)
	c.mu.Unlock()
}

// overloadSent stamps t0 of the trials whose first overloaded report just went out.
func (a *Agents) overloadSent(deps []string, at time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, d := range deps {
		if t := a.trials[d]; t != nil && t.T0 == 0 {
			t.T0 = at.UnixNano()
		}
	}
}

// startArrived ends the trial of the start's deployment, if one waits for it.
func (a *Agents) startArrived(s *llmscalerv1.StartInstance, controllerID string, at time.Time) {
	a.mu.Lock()
	t := a.trials[s.GetDeployment()]
	if t == nil || t.T0 == 0 {
		a.mu.Unlock()
		return
	}
	delete(a.trials, s.GetDeployment())
	a.mu.Unlock()
	t.T1, t.ControllerID, t.InstanceID = at.UnixNano(), controllerID, s.GetInstanceId()
	a.endTrial(t)
}

// sweepTrials ends the trials whose start did not come in time.
func (a *Agents) sweepTrials(now time.Time) {
	a.mu.Lock()
	var done []*pendingTrial
	for d, t := range a.trials {
		since := t.requested
		if t.T0 != 0 {
			since = time.Unix(0, t.T0)
		}
		if now.Sub(since) > t.timeout {
			done = append(done, t)
			delete(a.trials, d)
		}
	}
	a.mu.Unlock()
	for _, t := range done {
		a.endTrial(t)
	}
}

func (a *Agents) endTrial(t *pendingTrial) {
	if i, ok := a.cfg.Layout.ProbeAgent(t.Deployment); ok {
		c := a.agents[i]
		c.mu.Lock()
		c.sim.SetOverload(t.Deployment, false)
		c.mu.Unlock()
	}
	tr := t.Trial
	a.emit(event{Event: evTrial, Trial: &tr})
}

func (a *Agents) stats() *AgentsStats {
	s := &AgentsStats{
		Time: time.Now().UnixNano(), Connected: int(a.connected.Load()), Reporting: int(a.reporting.Load()),
		AllReportingAt: a.allReportingAt.Load(), FirstDial: a.firstDial.Load(),
		Dials: a.dials.Load(), Welcomes: a.welcomes.Load(), Refused: a.refused.Load(), Redirects: a.redirects.Load(),
		Disconnects: a.disconnects.Load(), Reports: a.reports.Load(), Heartbeats: a.heartbeats.Load(),
		SkippedReports: a.skipped.Load(), Desired: a.desiredN.Load(), DesiredChanges: a.desiredChanges.Load(),
		Starts: a.starts.Load(), Drains: a.drains.Load(), Rejected: a.rejected.Load(),
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	s.ByController = maps.Clone(a.byController)
	s.AllOn = maps.Clone(a.allOn)
	s.LastErrors = append([]string(nil), a.lastErrors...)
	return s
}
