//go:build linux

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/llmscaler/llmscaler/internal/fleetbench"
)

// benchAgent starts `llmscaler bench agent` with its logs, catalog and the agent's data (its
// servers' logs) in logDir; its table goes to out, its log lines to the file errPath.
func benchAgent(t *testing.T, ctx context.Context, logDir string, args ...string) (cmd *exec.Cmd, out *bytes.Buffer, errPath string) {
	t.Helper()
	args = append([]string{"bench", "agent", "--bin", filepath.Dir(bin(t, "llmscaler-agent")), "--log-dir", logDir}, args...)
	cmd = exec.CommandContext(ctx, bin(t, "llmscaler"), args...)
	errPath = filepath.Join(t.TempDir(), "bench.log")
	f, err := os.Create(errPath)
	if err != nil {
		t.Fatal(err)
	}
	out = &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = out, f
	err = cmd.Start()
	f.Close() // the child holds its own copy
	if err != nil {
		t.Fatal(err)
	}
	return cmd, out, errPath
}

func fileText(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// holders are the processes with a file open under dir, as "pid cmdline": the bench's
// controller and agent write their logs there and the servers theirs, so none may be left.
func holders(dir string) []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		fds, _ := os.ReadDir(filepath.Join("/proc", e.Name(), "fd"))
		for _, fd := range fds {
			if l, err := os.Readlink(filepath.Join("/proc", e.Name(), "fd", fd.Name())); err == nil && strings.HasPrefix(l, dir+"/") {
				cl, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
				out = append(out, fmt.Sprintf("%d %s", pid, bytes.ReplaceAll(cl, []byte{0}, []byte{' '})))
				break
			}
		}
	}
	return out
}

// noneLeft fails the test unless every process the bench started is gone, and kills what is
// left.
func noneLeft(t *testing.T, logDir, deployment string) {
	t.Helper()
	if left := holders(logDir); len(left) > 0 {
		t.Errorf("processes of the bench left running:\n  %s", strings.Join(left, "\n  "))
		for _, h := range left {
			if pid, err := strconv.Atoi(strings.Fields(h)[0]); err == nil {
				_ = syscall.Kill(-pid, syscall.SIGKILL)
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	if deployment != "" {
		if pids := serversOf(deployment); len(pids) > 0 {
			t.Errorf("fakeservers of %s left running: %v", deployment, pids)
			killServers(deployment)
		}
	}
}

// TestAgentBench runs `llmscaler bench agent` for 10 s with 2 instances: the agent's own CPU
// and memory are measured, its reports counted, the servers' CPU kept apart, and nothing it
// started outlives it.
func TestAgentBench(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	logDir := t.TempDir()
	jsonPath := filepath.Join(t.TempDir(), "agent.json")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd, out, errPath := benchAgent(t, ctx, logDir, "--gpus", "8", "--instances", "2", "--duration", "10s", "--load", "2", "--json", jsonPath)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("bench agent: %v\n%s\n%s", err, out, fileText(errPath))
	}
	t.Logf("bench agent:\n%s", out)
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var res fleetbench.AgentBenchResult
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	s := res.Steady
	switch {
	case res.Ready.Instances != 2 || s.ReadyMin != 2 || s.ReadyEnd != 2:
		t.Errorf("READY instances: %d at the start, at least %d in the window, %d at the end; want 2", res.Ready.Instances, s.ReadyMin, s.ReadyEnd)
	case res.Ready.GPUs != 8:
		t.Errorf("the controller lists the agent with %d GPUs, want 8", res.Ready.GPUs)
	case s.WindowS < 10:
		t.Errorf("window %.1f s, want at least the 10 s asked", s.WindowS)
	case s.Agent.CPUCores <= 0 || s.Agent.CPUCores > 1:
		t.Errorf("agent CPU %g cores: want some, and less than a core", s.Agent.CPUCores)
	case s.Agent.RSSMiB <= 0 || s.Agent.PeakRSSMiB <= 0:
		t.Errorf("agent RSS %g MiB, peak %g MiB: want both positive", s.Agent.RSSMiB, s.Agent.PeakRSSMiB)
	case s.ReportsPerSecond < 0.5 || s.ReportsPerSecond > 2:
		t.Errorf("%.2f reports/s at a 1 s interval, want about 1", s.ReportsPerSecond)
	case s.Servers.Processes != 2 || s.Servers.CPUCores <= 0:
		t.Errorf("servers: %d processes, %g cores; want 2, some CPU", s.Servers.Processes, s.Servers.CPUCores)
	case s.Load == nil || s.Load.OK == 0:
		t.Errorf("load %+v: want requests answered", s.Load)
	}
	noneLeft(t, logDir, res.Params.Deployment)
}

// TestAgentBenchInterrupted interrupts the bench once both servers run, as Ctrl-C would: it
// exits soon, and the controller, the agent and the servers (which outlive an agent by
// design) go with it.
func TestAgentBenchInterrupted(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	logDir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd, out, errPath := benchAgent(t, ctx, logDir, "--instances", "2", "--duration", "5m")
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	eventually(t, 60*time.Second, "the bench measuring, with load on both servers", func() error {
		select {
		case err := <-done:
			t.Fatalf("bench agent ended early: %v\n%s", err, fileText(errPath))
		default:
		}
		if !strings.Contains(fileText(errPath), "measuring the agent") {
			return fmt.Errorf("not measuring yet")
		}
		return nil
	})
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("bench agent did not exit within 30 s of the interrupt:\n%s", fileText(errPath))
	}
	t.Logf("bench agent, interrupted:\n%s%s", fileText(errPath), out)
	noneLeft(t, logDir, "")
}
