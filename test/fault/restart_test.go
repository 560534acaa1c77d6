//go:build linux

package fault

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// TestControlPlaneRestart kills every etcd member, controller and agent with SIGKILL while
// the load goes on through the router, and starts them all again on their data. The model
// servers are not part of the control plane: they must serve through it (the router keeps its
// last routing table), and afterwards the deployment must be as it was, its servers adopted
// by the restarted agents with the same instance ids and processes: none restarted.
func TestControlPlaneRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a nine-host fleet")
	}
	f := newFleet(t, "cp")
	addr := f.ctrlHosts[0].at(grpcPort)
	spec := fmt.Sprintf(`{"deployment":{"name":%q,"profile":"fake-llm","gpus_per_replica":1,"gpu_memory_mib":1000,"min_replicas":3,"max_replicas":3}}`, f.model)
	if err := f.router.call(t, addr, "ApplyDeployment", spec, nil); err != nil {
		t.Fatal(err)
	}
	pids := func() (map[string]int64, error) {
		ready, err := f.instances(addr, llmscalerv1.InstancePhase_INSTANCE_PHASE_READY)
		if err != nil {
			return nil, err
		}
		out := map[string]int64{}
		for _, in := range ready {
			out[in.GetInstanceId()] = in.GetPid()
		}
		return out, nil
	}
	var before map[string]int64
	eventually(t, 60*time.Second, "3 READY instances", func() error {
		var err error
		if before, err = pids(); err == nil && len(before) != 3 {
			err = fmt.Errorf("%d READY", len(before))
		}
		return err
	})

	const loadFor = 40 * time.Second
	summary := filepath.Join(t.TempDir(), "load.json")
	load := f.router.start(t, "load", bin(t, "llmscaler"), "load", "--router", "http://"+f.router.at(routerPort),
		"--deployment", f.model, "--rps", "10", "--duration", loadFor.String(), "--json", summary, "--progress-interval", "5s")
	time.Sleep(5 * time.Second)

	down := []string{"agent-a1", "agent-a2", "agent-a3", "controller-c1", "controller-c2", "etcd-e1", "etcd-e2", "etcd-e3"}
	for _, name := range down {
		f.procs[name].kill()
	}
	t.Logf("killed %v", down)
	time.Sleep(3 * time.Second)
	for pid := range before {
		if err := syscall.Kill(int(before[pid]), 0); err != nil {
			t.Errorf("server %s (pid %d) died with the control plane: %v", pid, before[pid], err)
		}
	}
	started := time.Now()
	for i := len(down) - 1; i >= 0; i-- { // etcd first, agents last
		f.restart(down[i])
	}
	eventually(t, 90*time.Second, "a leader with all three agents back", func() error {
		_, err := f.leaderWithAgents()
		return err
	})
	var after map[string]int64
	took := eventually(t, 60*time.Second, "the same 3 servers READY again", func() error {
		var err error
		if after, err = pids(); err != nil {
			return err
		}
		if len(after) != 3 {
			return fmt.Errorf("%d READY: %v", len(after), after)
		}
		return nil
	})
	t.Logf("control plane back with its 3 servers READY %v after the restart began", (time.Since(started) - took + took).Round(100*time.Millisecond))
	for id, pid := range before {
		if after[id] != pid {
			t.Errorf("instance %s: pid %d before, %d after: want the same server adopted", id, pid, after[id])
		}
	}
	var d llmscalerv1.GetDeploymentResponse
	if err := f.router.call(t, addr, "GetDeployment", fmt.Sprintf(`{"name":%q}`, f.model), &d); err != nil {
		t.Fatal(err)
	}
	if d.GetDeployment().GetSpec().GetMinReplicas() != 3 || d.GetDeployment().GetSpec().GetProfile() != "fake-llm" {
		t.Errorf("deployment after the restart: %v", d.GetDeployment().GetSpec())
	}

	s := endLoad(t, load, loadFor, summary)
	t.Logf("load through the router: %d sent, %d ok, errors %v", s.Sent, s.OK, s.ByKind)
	// What the router saw of the control plane's return, for a failure's reader.
	if b, err := os.ReadFile(f.procs["router"].log); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "endpoint watch") || strings.Contains(line, "deployment removed") || strings.Contains(line, "refused") {
				t.Log("router: " + line)
			}
		}
	}
	if s.Sent < 350 || s.OK != s.Sent {
		t.Errorf("load: %d sent, %d ok (%v): want every request answered while the control plane was down", s.Sent, s.OK, s.ByKind)
	}
}
