package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/llmscaler/llmscaler/agent/catalog"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// Run is the watch loop: every Interval it checks health, scrapes, restarts and steps stops
// along, and it reacts at once to exits and stops. It returns nil when ctx ends and leaves
// every server running, for the next agent to adopt.
func (s *Supervisor) Run(ctx context.Context) error {
	if !s.ran.CompareAndSwap(false, true) {
		return errors.New("supervisor: Run was called twice")
	}
	defer s.http.CloseIdleConnections()
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	s.tick(ctx)
	for {
		select {
		case <-ctx.Done():
			s.mu.Lock()
			snap := s.snapshotLocked()
			s.mu.Unlock()
			_ = s.save(snap)
			return nil
		case <-s.exited:
			s.step()
		case <-s.kick:
			s.step()
		case <-t.C:
			s.tick(ctx)
		}
	}
}

// step does the work that needs no network: exits, restarts, timeouts, stops, retention.
func (s *Supervisor) step() {
	s.mu.Lock()
	s.advanceLocked(s.cfg.Now())
	snap := s.snapshotLocked()
	s.mu.Unlock()
	_ = s.save(snap)
}

// probe is one health check or scrape the tick makes outside the lock.
type probe struct {
	inst    *instance
	gen     uint64
	health  bool // a health check; else a scrape
	url     string
	dialect string
	at      time.Time

	err     error
	metrics *llmscalerv1.QueueMetrics
}

// tick is one period of the watch loop.
func (s *Supervisor) tick(ctx context.Context) {
	s.mu.Lock()
	now := s.cfg.Now()
	s.advanceLocked(now)
	var probes []*probe
	for _, inst := range s.instances {
		if !inst.Running {
			continue
		}
		base := "http://" + net.JoinHostPort(dialHost(s.cfg.Host), strconv.Itoa(inst.Port))
		ready := inst.Phase == llmscalerv1.InstancePhase_INSTANCE_PHASE_READY
		switch {
		case inst.Phase == llmscalerv1.InstancePhase_INSTANCE_PHASE_STARTING && !inst.Stopping, ready && inst.recheck:
			probes = append(probes, &probe{inst: inst, gen: inst.gen, health: true, url: base + inst.prof.HealthPath, at: now})
		case ready || inst.Phase == llmscalerv1.InstancePhase_INSTANCE_PHASE_DRAINING:
			if ready && !inst.Stopping && inst.hung == "" && now.Sub(inst.healthAt) >= s.cfg.HealthInterval {
				inst.healthAt = now
				probes = append(probes, &probe{inst: inst, gen: inst.gen, health: true, url: base + inst.prof.HealthPath, at: now})
			}
			if s.cfg.Metrics != nil && !inst.lostProfile {
				probes = append(probes, &probe{inst: inst, gen: inst.gen, url: base + inst.prof.MetricsPath,
					dialect: string(inst.prof.Dialect), at: now})
			}
		}
	}
	snap := s.snapshotLocked()
	s.mu.Unlock()
	_ = s.save(snap)

	if len(probes) > 0 {
		pctx, cancel := context.WithTimeout(ctx, min(max(s.cfg.Interval, time.Second), 10*time.Second))
		var wg sync.WaitGroup
		for _, p := range probes {
			wg.Go(func() {
				if p.health {
					p.err = s.checkHealth(pctx, p.url)
				} else {
					p.metrics, p.err = s.cfg.Metrics.Scrape(pctx, p.inst.InstanceID, p.dialect, p.url)
					if p.err == nil && p.metrics == nil {
						p.err = errors.New("scrape returned no metrics")
					}
				}
			})
		}
		wg.Wait()
		cancel()
		if ctx.Err() != nil {
			return // the agent is going away; a cancelled probe says nothing about a server
		}
	}

	s.mu.Lock()
	now = s.cfg.Now()
	// Scrapes first, so that a health check is judged with the scrape taken beside it: a
	// server that does not answer its health check while it works shows it in that scrape.
	for _, health := range []bool{false, true} {
		for _, p := range probes {
			if p.health == health && s.instances[p.inst.InstanceID] == p.inst && p.inst.gen == p.gen && p.inst.Running {
				s.applyLocked(p, now)
			}
		}
	}
	s.advanceLocked(now)
	snap = s.snapshotLocked()
	var logs []string
	for id, inst := range s.instances {
		if inst.Running {
			logs = append(logs, id)
		}
	}
	var known map[string]bool
	if now.Sub(s.sweptAt) >= logSweepEvery {
		s.sweptAt = now
		known = make(map[string]bool, len(s.instances))
		for id := range s.instances {
			known[id] = true
		}
	}
	s.mu.Unlock()
	_ = s.save(snap)
	if known != nil {
		s.sweepLogs(known, now)
	}

	for _, id := range logs {
		rotated, err := rotateLog(s.logPath(id), s.cfg.LogMaxBytes)
		if err != nil {
			s.log.Warn("cannot rotate log", "instance_id", id, "error", err)
		} else if rotated {
			s.log.Debug("log rotated", "instance_id", id)
		}
	}
}

// sweepLogs deletes the logs (<id>.log and <id>.log.1) of instances the supervisor no longer
// knows once they are older than LogRetention. It leaves every other file alone.
func (s *Supervisor) sweepLogs(known map[string]bool, now time.Time) {
	entries, err := os.ReadDir(s.logDir)
	if err != nil {
		s.log.Warn("cannot read the logs directory", "error", err)
		return
	}
	for _, e := range entries {
		name := e.Name()
		id, ok := strings.CutSuffix(strings.TrimSuffix(name, ".1"), ".log")
		if !ok || id == "" || known[id] || !e.Type().IsRegular() {
			continue
		}
		info, err := e.Info()
		if err != nil || now.Sub(info.ModTime()) < LogRetention {
			continue
		}
		if err := os.Remove(filepath.Join(s.logDir, name)); err != nil {
			s.log.Warn("cannot delete an old log", "file", name, "error", err)
			continue
		}
		s.log.Debug("deleted the log of a forgotten instance", "file", name)
	}
}

// applyLocked records the outcome of a probe.
func (s *Supervisor) applyLocked(p *probe, now time.Time) {
	inst := p.inst
	if !p.health {
		if p.err != nil {
			if inst.metrics == nil {
				inst.metrics = &llmscalerv1.QueueMetrics{}
			}
			inst.metrics.ScrapeErrors++
			inst.log.Debug("scrape failed", "error", p.err)
			return
		}
		m := proto.Clone(p.metrics).(*llmscalerv1.QueueMetrics)
		m.ScrapeErrors = inst.metrics.GetScrapeErrors()
		if m.ScrapedAt == nil {
			m.ScrapedAt = timestamppb.New(p.at)
		}
		inst.metrics = m
		inst.scrapeAt = p.at
		inst.noteScrapeLocked(m)
		return
	}

	if inst.recheck {
		inst.recheck = false
		if inst.Phase != llmscalerv1.InstancePhase_INSTANCE_PHASE_READY || p.err == nil {
			return
		}
		// Not routable until it answers again, and stopped if it never does.
		inst.log.Warn("adopted instance is not healthy; treating it as starting", "error", p.err)
		inst.Message = "not healthy after the agent restarted: " + p.err.Error()
		inst.startupDeadline = now.Add(inst.prof.StartupTimeout)
		s.setPhaseLocked(inst, llmscalerv1.InstancePhase_INSTANCE_PHASE_STARTING)
		return
	}
	if inst.Phase == llmscalerv1.InstancePhase_INSTANCE_PHASE_READY && !inst.Stopping && inst.hung == "" {
		s.livenessLocked(inst, p.err)
		return
	}
	if inst.Phase != llmscalerv1.InstancePhase_INSTANCE_PHASE_STARTING || inst.Stopping {
		return
	}
	if p.err != nil {
		inst.log.Trace("not healthy yet", "error", p.err)
		return
	}
	if inst.ReadyAt.IsZero() {
		inst.ReadyAt = now
		inst.ColdStart = now.Sub(inst.StartedAt)
	}
	inst.Message = ""
	s.setPhaseLocked(inst, llmscalerv1.InstancePhase_INSTANCE_PHASE_READY)
	inst.log.Info("instance ready", "cold_start", inst.ColdStart)
}

func (s *Supervisor) checkHealth(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// advanceLocked moves every instance along: exits, restarts that are due, startup timeouts,
// stops and forgetting ended instances.
func (s *Supervisor) advanceLocked(now time.Time) {
	for _, id := range slices.Sorted(maps.Keys(s.instances)) {
		inst := s.instances[id]
		if inst.child != nil {
			select {
			case <-inst.child.done:
				s.reapLocked(inst, now)
			default:
			}
		} else if inst.Running && !processAlive(inst.PID, inst.StartTime) {
			if !inst.Stopping {
				killLeftovers(inst)
			}
			s.exitedLocked(inst, -1, fmt.Sprintf("process %d exited; its exit code is unknown because it was adopted from an earlier agent", inst.PID), now)
		}

		if !inst.Running && !inst.Stopping && !inst.RestartAt.IsZero() && !now.Before(inst.RestartAt) {
			inst.RestartAt = time.Time{}
			if err := s.spawnLocked(inst, now); err != nil {
				inst.log.Error("cannot restart instance", "error", err)
				s.exitedLocked(inst, -1, "could not restart: "+err.Error(), now)
			}
		}

		if inst.Phase == llmscalerv1.InstancePhase_INSTANCE_PHASE_STARTING && inst.Running && !inst.Stopping &&
			now.After(inst.startupDeadline) {
			msg := fmt.Sprintf("not healthy within startup_timeout %s", inst.prof.StartupTimeout)
			inst.log.Warn("instance not healthy in time; stopping it", "startup_timeout", inst.prof.StartupTimeout)
			inst.Stopping = true
			inst.SkipDrain = true
			inst.DrainStart, inst.DrainDeadline = now, now
			inst.FailOnExit = msg
			inst.Message = msg + "; stopping it"
			s.setPhaseLocked(inst, llmscalerv1.InstancePhase_INSTANCE_PHASE_DRAINING)
		}

		if inst.Stopping && live(inst.Phase) {
			s.stopStepLocked(inst, now)
		}

		if (inst.Phase == llmscalerv1.InstancePhase_INSTANCE_PHASE_STOPPED && now.Sub(inst.EndedAt) >= StoppedRetention) ||
			(inst.Phase == llmscalerv1.InstancePhase_INSTANCE_PHASE_FAILED && now.Sub(inst.EndedAt) >= FailedRetention) {
			inst.log.Debug("forgetting instance", "phase", inst.Phase.String())
			delete(s.instances, id)
			s.dirty = true
		}
	}
}

// reapLocked handles the exit of a child whose wait goroutine has finished.
func (s *Supervisor) reapLocked(inst *instance, now time.Time) {
	c := inst.child
	inst.child = nil
	code, words := int32(-1), fmt.Sprintf("wait failed: %v", c.err)
	if c.state != nil {
		code, words = exitStatus(c.state)
	}
	if !inst.Stopping {
		killLeftovers(inst)
	}
	s.exitedLocked(inst, code, words, now)
}

// killLeftovers kills what is left of the process group of a server that exited by itself:
// what it forked may live on and hold GPU memory, and it goes with the server.
func killLeftovers(inst *instance) {
	if !inst.watched {
		return
	}
	if err := signalGroup(inst.PID, syscall.SIGKILL); err != nil {
		inst.log.Warn("cannot kill what is left of the process group", "error", err)
	}
}

// exitedLocked handles the end of an instance's process: part of a stop, or a crash that is
// restarted or ends in FAILED.
func (s *Supervisor) exitedLocked(inst *instance, code int32, why string, now time.Time) {
	inst.Running = false
	inst.ExitCode = code
	s.dirty = true
	if inst.Stopping {
		inst.log.Info("process exited", "pid", inst.PID, "exit", why)
		return
	}
	inst.watched = false // killLeftovers has killed what was left of the group
	if inst.hung != "" {
		why = inst.hung + "; killed, " + why
	}
	inst.log.Warn("instance exited unexpectedly", "pid", inst.PID, "exit", why, "restarts", inst.Restarts)
	if inst.lostProfile || int(inst.Restarts) >= inst.prof.MaxRestarts {
		msg := fmt.Sprintf("%s after %d restarts", why, inst.Restarts)
		if inst.lostProfile {
			msg = fmt.Sprintf("%s; profile %q is no longer in the catalog, so it was not restarted", why, inst.Profile)
		}
		inst.Message = withLogTail(msg, s.logPath(inst.InstanceID))
		inst.EndedAt = now
		s.setPhaseLocked(inst, llmscalerv1.InstancePhase_INSTANCE_PHASE_FAILED)
		inst.log.Error("instance failed", "exit_code", code, "restarts", inst.Restarts)
		return
	}
	inst.Restarts++
	delay := s.cfg.RestartBackoff.Delay(int(inst.Restarts) - 1)
	inst.RestartAt = now.Add(delay)
	inst.Message = fmt.Sprintf("%s; restart %d of %d in %s", why, inst.Restarts, inst.prof.MaxRestarts, delay.Round(time.Millisecond))
	s.setPhaseLocked(inst, llmscalerv1.InstancePhase_INSTANCE_PHASE_STARTING)
	s.notify() // restarts changed even when the phase did not
	inst.log.Info("restarting instance", "restarts", inst.Restarts, "delay", delay)
}

// stopStepLocked takes one step of a stop: drain, signal, kill, done.
func (s *Supervisor) stopStepLocked(inst *instance, now time.Time) {
	if !inst.Running {
		// The leader is gone; wait for the rest of its group.
		if inst.watched && groupAlive(inst.PID) {
			if !inst.Killed {
				inst.log.Info("killing what is left of the process group", "pid", inst.PID)
				_ = signalGroup(inst.PID, syscall.SIGKILL)
				inst.Killed = true
				s.dirty = true
			}
			return
		}
		s.finishStopLocked(inst, now)
		return
	}
	if inst.SignalledAt.IsZero() {
		if !s.drainedLocked(inst, now) {
			return
		}
		if err := signalGroup(inst.PID, inst.prof.StopSignal); err != nil {
			inst.log.Error("cannot signal instance", "error", err)
		}
		inst.log.Info("sent stop signal", "signal", inst.prof.StopSignal.String(), "pid", inst.PID)
		inst.SignalledAt = now
		s.dirty = true
	}
	if !inst.Killed && !now.Before(inst.SignalledAt.Add(inst.prof.StopGrace)) {
		inst.log.Warn("instance did not stop within stop_grace; killing its process group", "stop_grace", inst.prof.StopGrace)
		if err := signalGroup(inst.PID, syscall.SIGKILL); err != nil {
			inst.log.Error("cannot kill instance", "error", err)
		}
		inst.Killed = true
		s.dirty = true
	}
}

// drainedLocked reports whether a stopping instance may be signalled: it was not to be
// drained, its drain timed out, or a scrape started after the drain began saw it idle.
func (s *Supervisor) drainedLocked(inst *instance, now time.Time) bool {
	if inst.SkipDrain || !now.Before(inst.DrainDeadline) {
		return true
	}
	m := inst.metrics
	return m != nil && !inst.scrapeAt.Before(inst.DrainStart) && m.GetRunning()+m.GetWaiting() == 0
}

// finishStopLocked ends a stop whose processes are all gone.
func (s *Supervisor) finishStopLocked(inst *instance, now time.Time) {
	inst.Running = false
	inst.watched = false
	inst.RestartAt = time.Time{}
	inst.EndedAt = now
	s.dirty = true
	if inst.FailOnExit != "" {
		inst.Message = withLogTail(inst.FailOnExit, s.logPath(inst.InstanceID))
		s.setPhaseLocked(inst, llmscalerv1.InstancePhase_INSTANCE_PHASE_FAILED)
		inst.log.Error("instance failed", "error", inst.FailOnExit)
		return
	}
	if rest, ok := strings.CutPrefix(inst.Message, "stopping"); ok {
		inst.Message = "stopped" + rest
	}
	s.setPhaseLocked(inst, llmscalerv1.InstancePhase_INSTANCE_PHASE_STOPPED)
	inst.log.Info("instance stopped")
}

func withLogTail(msg, logPath string) string {
	if tail := logTail(logPath, tailLines); tail != "" {
		return msg + "; last lines of its log:\n" + tail
	}
	return msg
}

// spawnLocked starts a process for inst on a fresh port.
func (s *Supervisor) spawnLocked(inst *instance, now time.Time) error {
	if inst.lostProfile || len(inst.prof.Command) == 0 {
		return fmt.Errorf("profile %q is not in the catalog", inst.Profile)
	}
	port, err := freePort(s.cfg.Host)
	if err != nil {
		return err
	}
	argv, env := inst.prof.Expand(catalog.Vars{
		Port: port, Host: s.cfg.Host, GPUs: inst.GPUs, InstanceID: inst.InstanceID, Deployment: inst.Deployment,
	})
	logf, err := os.OpenFile(s.logPath(inst.InstanceID), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	defer logf.Close() // the child has its own copy
	fmt.Fprintf(logf, "--- %s llmscaler: starting instance %s: %q\n", now.UTC().Format(time.RFC3339), inst.InstanceID, argv)

	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(environ(), env...)
	cmd.Dir = inst.prof.Dir
	// The log file itself, not a pipe: the server must not depend on the agent to write.
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(logf, "--- llmscaler: cannot start: %v\n", err)
		return err
	}
	pid := cmd.Process.Pid
	st, err := readProcStat(pid)
	if err != nil {
		// Without its start time the process could not be told from a reused pid later.
		_ = signalGroup(pid, syscall.SIGKILL)
		_ = cmd.Wait()
		return fmt.Errorf("read start time of pid %d: %w", pid, err)
	}
	c := &child{done: make(chan struct{})}
	s.waiters.Add(1)
	go func() {
		defer s.waiters.Done()
		err := cmd.Wait()
		c.state, c.err = cmd.ProcessState, err
		close(c.done)
		select {
		case s.exited <- struct{}{}:
		default:
		}
	}()

	inst.child = c
	inst.PID = pid
	inst.StartTime = st.startTime
	inst.Running = true
	inst.watched = true
	inst.Port = port
	inst.gen++
	inst.StartedAt = now
	inst.startupDeadline = now.Add(inst.prof.StartupTimeout)
	inst.ReadyAt, inst.ColdStart = time.Time{}, 0
	inst.recheck, inst.Killed, inst.SignalledAt = false, false, time.Time{}
	inst.healthAt, inst.unhealthy, inst.hung = time.Time{}, 0, ""
	inst.busyChecks, inst.progress, inst.lastScrape = 0, progressWindow{}, nil
	s.dirty = true
	inst.log.Info("instance started", "pid", pid, "port", port, "profile", inst.Profile, "gpus", inst.GPUs)
	if s.onSpawn != nil {
		s.onSpawn(pid)
	}
	return nil
}

// environ is the agent's environment less what the supervisor sets itself.
func environ() []string {
	env := os.Environ()
	return slices.DeleteFunc(env, func(kv string) bool {
		return strings.HasPrefix(kv, catalog.CUDAVisibleDevices+"=")
	})
}

// dialHost is the address to reach a server bound to host: loopback for a wildcard.
func dialHost(host string) string {
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		if ip.To4() != nil {
			return "127.0.0.1"
		}
		return "::1"
	}
	return host
}
