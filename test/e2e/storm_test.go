//go:build linux

package e2e

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/llmscaler/llmscaler/internal/fleetbench"
)

// TestConnectStorm is the fleet issue's storm at CI size: 2,000 agents of 8 GPUs and 2
// instances dial one real controller at the same instant (`llmscaler bench fleet --storm`).
// Every agent must be welcomed and reporting within 60 s, the leader must hold its term
// (same leader, same epoch, no new term) through the storm, the controller must take the
// reports at the rate they are sent, no agent may be left disconnected, and the quiet fleet
// must get no start or stop. Five decision trials instead of twenty keep it under a minute.
func TestConnectStorm(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	const agents = 2000
	dir := t.TempDir()
	out := filepath.Join(dir, "storm.json")
	began := time.Now()
	p := start(t, "bench", bin(t, "llmscaler"), "bench", "fleet",
		"--agents", "2000", "--gpus", "8", "--instances", "2", "--storm", "--duration", "10s", "--probes", "5",
		"--connect-timeout", "60s", "--bin", filepath.Dir(bin(t, "llmscaler-controller")),
		"--json", out, "--log-dir", filepath.Join(dir, "logs"), "--progress-interval", "5s")
	select {
	case <-p.done:
	case <-time.After(150 * time.Second):
		t.Fatal("bench fleet still running after 150 s")
	}
	t.Logf("bench fleet ran %v", time.Since(began).Round(time.Second))
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("no JSON from the bench (exit %d): %v", p.cmd.ProcessState.ExitCode(), err)
	}
	var r fleetbench.Result
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("bench JSON: %v\n%s", err, b)
	}
	for _, f := range r.Failures {
		t.Errorf("bench failure: %s", f)
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("bench exited %d", code)
	}

	c := r.Connect
	t.Logf("storm: %d agents reporting %.1f s after the first dial, %d dials, %d refused", c.Connected, c.Seconds, c.Dials, c.Refused)
	if !c.AllConnected || c.Reporting != agents {
		t.Fatalf("connect: %d of %d agents reporting (all connected: %v); errors %v", c.Reporting, agents, c.AllConnected, c.Errors)
	}
	if c.Seconds > 60 {
		t.Errorf("all agents reporting %.1f s after the first dial, want within 60 s", c.Seconds)
	}

	l := r.Leadership
	if !l.Held || l.Changes != 0 || l.LeaderBefore != l.LeaderAfter || l.EpochBefore != l.EpochAfter || l.TermsDelta != 0 {
		t.Errorf("leadership not held through the storm: %s epoch %d before, %s epoch %d after, %d changes, %v new terms",
			l.LeaderBefore, l.EpochBefore, l.LeaderAfter, l.EpochAfter, l.Changes, l.TermsDelta)
	}

	s := r.Steady
	t.Logf("steady: %.0f reports/s received, controller %s", s.ReportsPerSecond, s.Controller)
	if math.Abs(s.ReportsPerSecond-agents) > 0.2*agents {
		t.Errorf("controller took %.0f reports/s, want %d ± 20%%", s.ReportsPerSecond, agents)
	}
	if s.DesiredChanges != 0 {
		t.Errorf("the steady state sent %d desired states that started or stopped instances, want none", s.DesiredChanges)
	}
	if s.Disconnects != 0 {
		t.Errorf("%d agents disconnected in the steady window", s.Disconnects)
	}

	if r.Final.Connected != agents || r.Final.Disconnected != 0 {
		t.Errorf("at the end %d agents connected, %d disconnected; want all %d connected", r.Final.Connected, r.Final.Disconnected, agents)
	}
}
