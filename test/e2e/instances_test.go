//go:build linux

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// repoFile reads a file of the repository (the test runs in test/e2e).
func repoFile(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func instances(t *testing.T, addr, deployment string) ([]*llmscalerv1.Instance, error) {
	var resp llmscalerv1.ListInstancesResponse
	if err := call(t, addr, "ListInstances", fmt.Sprintf(`{"deployment":%q}`, deployment), &resp); err != nil {
		return nil, err
	}
	return resp.GetInstances(), nil
}

func byPhase(ins []*llmscalerv1.Instance, p llmscalerv1.InstancePhase) []*llmscalerv1.InstanceStatus {
	var out []*llmscalerv1.InstanceStatus
	for _, in := range ins {
		if in.GetStatus().GetPhase() == p {
			out = append(out, in.GetStatus())
		}
	}
	return out
}

func alive(pid int64) bool { return syscall.Kill(int(pid), 0) == nil }

// waitReady waits until exactly n instances of the deployment are READY and none is starting
// or draining, and returns them.
func waitReady(t *testing.T, addr, dep string, n int, d time.Duration) []*llmscalerv1.InstanceStatus {
	t.Helper()
	var ready []*llmscalerv1.InstanceStatus
	eventually(t, d, fmt.Sprintf("%d READY instances of %s", n, dep), func() error {
		ins, err := instances(t, addr, dep)
		if err != nil {
			return err
		}
		ready = byPhase(ins, llmscalerv1.InstancePhase_INSTANCE_PHASE_READY)
		busy := len(byPhase(ins, llmscalerv1.InstancePhase_INSTANCE_PHASE_STARTING)) + len(byPhase(ins, llmscalerv1.InstancePhase_INSTANCE_PHASE_DRAINING))
		if len(ready) != n || busy != 0 {
			return fmt.Errorf("%d ready, %d starting or draining", len(ready), busy)
		}
		return nil
	})
	return ready
}

// TestDeploymentRunsServers follows the agent issue's "done when" with real processes: a
// controller, an agent with 4 fake GPUs and the example catalog, and fakeserver instances.
func TestDeploymentRunsServers(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	dir := t.TempDir()
	// The example catalog, with its relative binary path pointed at the binary under test.
	cat := strings.ReplaceAll(repoFile(t, "examples/catalog-fake.yaml"), `"../bin/llmscaler"`, strconv.Quote(bin(t, "llmscaler")))
	catPath := filepath.Join(dir, "catalog.yaml")
	if err := os.WriteFile(catPath, []byte(cat), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freePort(t)
	start(t, "controller", bin(t, "llmscaler-controller"), "--data-dir", filepath.Join(dir, "c"), "--grpc-addr", addr,
		"--http-addr", "-", "--etcd-client-addr", freePort(t), "--etcd-peer-addr", freePort(t), "--insecure")
	agentArgs := []string{"--controller", addr, "--node-id", "n1", "--gpu-backend", "fake", "--fake-gpus", "4",
		"--catalog", catPath, "--data-dir", filepath.Join(dir, "agent"), "--http-addr", "", "--log-level", "debug", "--insecure"}
	ag := start(t, "agent", bin(t, "llmscaler-agent"), agentArgs...)
	var pids []int64
	t.Cleanup(func() {
		for _, p := range pids {
			_ = syscall.Kill(int(-p), syscall.SIGKILL)
		}
	})

	eventually(t, 20*time.Second, "n1 offers fake-llm", func() error {
		n, err := nodeOf(t, addr, "n1")
		if err != nil {
			return err
		}
		if len(n.GetProfiles()) != 1 || n.GetProfiles()[0] != "fake-llm" {
			return fmt.Errorf("profiles %v", n.GetProfiles())
		}
		return nil
	})
	if _, err := grpcurl(t, "-d", repoFile(t, "examples/deployment-fake.json"), addr, "llmscaler.v1.AdminService/ApplyDeployment"); err != nil {
		t.Fatal(err)
	}

	// Two READY servers on different GPUs and ports.
	ready := waitReady(t, addr, "fake", 2, 30*time.Second)
	if ready[0].GetEndpoint() == ready[1].GetEndpoint() || ready[0].GetGpuIndices()[0] == ready[1].GetGpuIndices()[0] {
		t.Fatalf("instances share a port or GPU: %v / %v", ready[0], ready[1])
	}
	for _, r := range ready {
		pids = append(pids, r.GetPid())
		if r.GetColdStart().AsDuration() < 2*time.Second {
			t.Errorf("cold start %v is shorter than the fake server's 2s", r.GetColdStart().AsDuration())
		}
	}

	// Queue metrics rise under load.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 24 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+ready[0].GetEndpoint()+"/v1/completions",
				strings.NewReader(`{"model":"fake","prompt":"hello","max_tokens":400}`))
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		}()
	}
	eventually(t, 10*time.Second, "queue metrics under load", func() error {
		ins, err := instances(t, addr, "fake")
		if err != nil {
			return err
		}
		for _, in := range ins {
			if in.GetStatus().GetInstanceId() == ready[0].GetInstanceId() {
				m := in.GetStatus().GetMetrics()
				if m.GetWaiting() > 0 && m.GetRunning() > 0 && m.GetKvCacheUsage() > 0 {
					return nil
				}
				return fmt.Errorf("metrics %v", m)
			}
		}
		return fmt.Errorf("instance gone")
	})
	cancel()
	wg.Wait()

	// Scale to 3 starts one; scale to 1 drains two.
	if _, err := grpcurl(t, "-d", `{"name":"fake","replicas":3}`, addr, "llmscaler.v1.AdminService/ScaleDeployment"); err != nil {
		t.Fatal(err)
	}
	three := waitReady(t, addr, "fake", 3, 30*time.Second)
	for _, r := range three {
		if !alive(r.GetPid()) {
			t.Fatalf("instance %s pid %d is not running", r.GetInstanceId(), r.GetPid())
		}
		pids = append(pids, r.GetPid())
	}
	if _, err := grpcurl(t, "-d", `{"name":"fake","replicas":1}`, addr, "llmscaler.v1.AdminService/ScaleDeployment"); err != nil {
		t.Fatal(err)
	}
	one := waitReady(t, addr, "fake", 1, 60*time.Second)
	eventually(t, 30*time.Second, "two stopped", func() error {
		ins, err := instances(t, addr, "fake")
		if err != nil {
			return err
		}
		if n := len(byPhase(ins, llmscalerv1.InstancePhase_INSTANCE_PHASE_STOPPED)); n < 2 {
			return fmt.Errorf("%d stopped", n)
		}
		return nil
	})
	for _, r := range three {
		if r.GetInstanceId() != one[0].GetInstanceId() && alive(r.GetPid()) {
			t.Errorf("scaled-down instance %s (pid %d) still runs", r.GetInstanceId(), r.GetPid())
		}
	}

	// kill -9 of the agent, then a restart: the running server is re-adopted, not restarted.
	survivor := one[0]
	ag.kill()
	if !alive(survivor.GetPid()) {
		t.Fatal("the server died with its agent")
	}
	start(t, "agent-2", bin(t, "llmscaler-agent"), agentArgs...)
	eventually(t, 20*time.Second, "survivor re-adopted", func() error {
		n, err := nodeOf(t, addr, "n1")
		if err != nil {
			return err
		}
		if n.GetState() != llmscalerv1.NodeState_NODE_STATE_CONNECTED {
			return fmt.Errorf("n1 %v", n.GetState())
		}
		r := waitReady(t, addr, "fake", 1, 10*time.Second)[0]
		if r.GetInstanceId() != survivor.GetInstanceId() || r.GetPid() != survivor.GetPid() || r.GetRestarts() != 0 {
			return fmt.Errorf("after the agent restart: %v, want %s pid %d not restarted", r, survivor.GetInstanceId(), survivor.GetPid())
		}
		return nil
	})

	// A server killed from outside is reported and brought back.
	if err := syscall.Kill(int(survivor.GetPid()), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the killed server replaced", func() error {
		r := waitReady(t, addr, "fake", 1, 20*time.Second)[0]
		if r.GetPid() == survivor.GetPid() {
			return fmt.Errorf("still pid %d", r.GetPid())
		}
		if r.GetInstanceId() == survivor.GetInstanceId() && r.GetRestarts() < 1 {
			return fmt.Errorf("restarted without counting it: %v", r)
		}
		pids = append(pids, r.GetPid())
		return nil
	})

	// DeleteDeployment leaves no server process.
	if _, err := grpcurl(t, "-d", `{"name":"fake"}`, addr, "llmscaler.v1.AdminService/DeleteDeployment"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "no server process left", func() error {
		for _, p := range pids {
			if alive(p) {
				return fmt.Errorf("pid %d still runs", p)
			}
		}
		ins, err := instances(t, addr, "fake")
		if err != nil {
			return err
		}
		for _, in := range ins {
			if ph := in.GetStatus().GetPhase(); ph != llmscalerv1.InstancePhase_INSTANCE_PHASE_STOPPED {
				return fmt.Errorf("%s is %v", in.GetStatus().GetInstanceId(), ph)
			}
		}
		return nil
	})
}
