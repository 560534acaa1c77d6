package fleetbench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// agentsProc is the bench's handle on the agents process: commands in, events out.
type agentsProc struct {
	*child
	in     io.WriteCloser
	inMu   sync.Mutex
	stats  atomic.Pointer[AgentsStats]
	trials chan Trial
	ready  chan struct{}
	// ended is closed when its stdout ends: the process is gone or going.
	ended chan struct{}
}

// agentsArgs are the hidden `llmscaler bench agents` flags for the bench's parameters.
func agentsArgs(cfg Config, controllers []string) []string {
	args := []string{"bench", "agents",
		"--agents", strconv.Itoa(cfg.Agents), "--gpus", strconv.Itoa(cfg.GPUs), "--instances", strconv.Itoa(cfg.Instances),
		"--probes", strconv.Itoa(cfg.probes()), "--controllers", strings.Join(controllers, ","),
		"--ramp", strconv.FormatFloat(cfg.RampPerSecond, 'g', -1, 64), "--trial-timeout", cfg.TrialTimeout.String(),
	}
	if cfg.Storm {
		args = append(args, "--storm")
	}
	return args
}

func startAgents(dir string, cfg Config, controllers []string) (*agentsProc, error) {
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, err
	}
	// GOMAXPROCS caps the agents process's share of the machine, so that the controller it
	// measures is not starved by the simulation.
	c, err := startChild(dir, "agents", cfg.Self, agentsArgs(cfg, controllers), inR, outW, fmt.Sprintf("GOMAXPROCS=%d", cfg.AgentsCPUs))
	if err != nil {
		inW.Close()
		outR.Close()
		return nil, err
	}
	p := &agentsProc{child: c, in: inW, trials: make(chan Trial, 1024), ready: make(chan struct{}), ended: make(chan struct{})}
	go func() {
		p.read(outR)
		outR.Close()
	}()
	return p, nil
}

// read takes the agents process's events until its stdout ends.
func (p *agentsProc) read(r io.Reader) {
	defer close(p.ended)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	readyOnce := sync.Once{}
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			continue // not an event: nothing else writes to stdout, but be lenient
		}
		switch e.Event {
		case evReady:
			readyOnce.Do(func() { close(p.ready) })
		case evStats:
			if e.Stats != nil {
				p.stats.Store(e.Stats)
			}
		case evTrial:
			if e.Trial != nil {
				select {
				case p.trials <- *e.Trial:
				default: // nobody is waiting for more than a thousand trials
				}
			}
		}
	}
}

func (p *agentsProc) send(c command) error {
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	p.inMu.Lock()
	defer p.inMu.Unlock()
	if _, err := p.in.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("agents process: %w", err)
	}
	return nil
}

// latest is the newest stats line, the zero stats before the first.
func (p *agentsProc) latest() AgentsStats {
	if s := p.stats.Load(); s != nil {
		return *s
	}
	return AgentsStats{}
}

// waitReady waits for the ready line.
func (p *agentsProc) waitReady(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.ready:
		return nil
	case <-p.ended:
		return p.exitError()
	case <-t.C:
		return fmt.Errorf("agents process not ready within %v", d)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// quit asks for a last stats line and waits for the process to end, killing it after grace.
func (p *agentsProc) quit(grace time.Duration) {
	if err := p.send(command{Cmd: cmdQuit}); err != nil {
		p.kill()
		<-p.ended
		return
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		p.kill()
	}
	<-p.ended
	p.in.Close()
}

// startAgents starts the agents process, which waits for the connect command.
func (b *Bench) startAgents(ctx context.Context) error {
	addrs := make([]string, len(b.ctrls))
	for i, cp := range b.ctrls {
		addrs[i] = cp.grpcAddr
	}
	p, err := startAgents(b.logs, b.cfg, addrs)
	if err != nil {
		return err
	}
	b.agents = p
	return p.waitReady(ctx, 60*time.Second)
}
