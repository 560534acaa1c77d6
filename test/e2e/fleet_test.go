//go:build linux

package e2e

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/llmscaler/llmscaler/internal/embedetcd"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

func nodeOf(t *testing.T, addr, id string) (*llmscalerv1.Node, error) {
	var resp llmscalerv1.ListNodesResponse
	if err := call(t, addr, "ListNodes", "", &resp); err != nil {
		return nil, err
	}
	for _, n := range resp.GetNodes() {
		if n.GetNodeId() == id {
			return n, nil
		}
	}
	return nil, fmt.Errorf("node %s not listed", id)
}

// TestControllerAndAgent follows the foundation's "done when" on one controller with its
// embedded etcd: grpcurl sees the services, an agent with 8 fake GPUs appears, bad input is
// refused with the field named, and a killed agent is shown lost.
func TestControllerAndAgent(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	grpcAddr, httpAddr := freePort(t), freePort(t)
	start(t, "controller", bin(t, "llmscaler-controller"),
		"--data-dir", t.TempDir(), "--grpc-addr", grpcAddr, "--http-addr", httpAddr,
		"--etcd-client-addr", freePort(t), "--etcd-peer-addr", freePort(t), "--node-grace", "2s", "--insecure")

	var services string
	eventually(t, 20*time.Second, "grpcurl list", func() error {
		var err error
		services, err = grpcurl(t, grpcAddr, "list")
		return err
	})
	for _, want := range []string{"llmscaler.v1.AdminService", "llmscaler.v1.AgentService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} {
		if !strings.Contains(services, want+"\n") {
			t.Errorf("grpcurl list does not show %s:\n%s", want, services)
		}
	}
	desc, err := grpcurl(t, grpcAddr, "describe", "llmscaler.v1.DeploymentSpec")
	if err != nil || !strings.Contains(desc, "gpus_per_replica") {
		t.Fatalf("describe DeploymentSpec: %v\n%s", err, desc)
	}
	if out, err := grpcurl(t, "-d", `{"service":"llmscaler.v1.AdminService"}`, grpcAddr, "grpc.health.v1.Health/Check"); err != nil || !strings.Contains(out, "SERVING") {
		t.Fatalf("health check: %v %s", err, out)
	}

	agentStarted := time.Now()
	ag := start(t, "agent", bin(t, "llmscaler-agent"), "--controller", grpcAddr, "--node-id", "n1",
		"--gpu-backend", "fake", "--fake-gpus", "8", "--data-dir", t.TempDir(), "--http-addr", freePort(t), "--insecure")
	var n *llmscalerv1.Node
	took := eventually(t, 5*time.Second, "n1 listed with 8 GPUs", func() error {
		var err error
		if n, err = nodeOf(t, grpcAddr, "n1"); err != nil {
			return err
		}
		if len(n.GetGpus()) != 8 || n.GetState() != llmscalerv1.NodeState_NODE_STATE_CONNECTED {
			return fmt.Errorf("node %v", n)
		}
		return nil
	})
	t.Logf("agent listed with 8 GPUs %v after its start (%v after the first poll)", time.Since(agentStarted).Round(time.Millisecond), took.Round(time.Millisecond))
	if n.GetGpuBackend() != "fake" || !strings.Contains(n.GetGpus()[0].GetName(), "Fake") {
		t.Errorf("fake GPUs are not named as fake: backend %q, name %q", n.GetGpuBackend(), n.GetGpus()[0].GetName())
	}

	// Bad input: InvalidArgument naming the field, nothing written.
	_, err = grpcurl(t, "-d", `{"deployment":{"name":"llama","profile":"p","min_replicas":5,"max_replicas":2}}`, grpcAddr, "llmscaler.v1.AdminService/ApplyDeployment")
	if err == nil || !strings.Contains(err.Error(), "InvalidArgument") || !strings.Contains(err.Error(), "deployment.min_replicas") {
		t.Fatalf("min > max: %v", err)
	}
	var list llmscalerv1.ListDeploymentsResponse
	if err := call(t, grpcAddr, "ListDeployments", "", &list); err != nil || len(list.GetDeployments()) != 0 {
		t.Fatalf("after a refused apply: %v %v", &list, err)
	}
	var applied llmscalerv1.ApplyDeploymentResponse
	if err := call(t, grpcAddr, "ApplyDeployment", `{"deployment":{"name":"llama","profile":"fake-llm","gpus_per_replica":1,"min_replicas":1,"max_replicas":3}}`, &applied); err != nil || !applied.GetCreated() {
		t.Fatalf("apply: %v %v", &applied, err)
	}

	// kill -9 the agent: disconnected at once, lost after the 2 s grace.
	ag.kill()
	killed := time.Now()
	eventually(t, 10*time.Second, "n1 lost", func() error {
		n, err := nodeOf(t, grpcAddr, "n1")
		if err != nil {
			return err
		}
		if n.GetState() != llmscalerv1.NodeState_NODE_STATE_LOST {
			return fmt.Errorf("state %v", n.GetState())
		}
		return nil
	})
	t.Logf("killed agent shown lost %v after the kill (grace 2s)", time.Since(killed).Round(time.Millisecond))
}

// TestFailoverAfterKill9 runs two controllers on one etcd and an agent that knows both; kill -9
// of the leader makes the other lead, and the agent follows it.
func TestFailoverAfterKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	addrs, procs := twoControllers(t, "--log-level", "debug")
	st := campaigning(t, addrs["c2"])
	leader := st.GetLeader().GetId()
	other := map[string]string{"c1": "c2", "c2": "c1"}[leader]
	oldEpoch := st.GetEpoch()

	start(t, "agent", bin(t, "llmscaler-agent"), "--controller", addrs["c1"]+","+addrs["c2"], "--node-id", "n1",
		"--gpu-backend", "fake", "--fake-gpus", "4", "--data-dir", t.TempDir(), "--http-addr", "", "--log-level", "debug", "--insecure")
	eventually(t, 10*time.Second, "n1 connected to the leader", func() error {
		n, err := nodeOf(t, addrs[other], "n1") // through the follower, forwarded to the leader
		if err != nil {
			return err
		}
		if n.GetState() != llmscalerv1.NodeState_NODE_STATE_CONNECTED {
			return fmt.Errorf("state %v", n.GetState())
		}
		return nil
	})

	procs[leader].kill()
	killed := time.Now()
	var leadTook time.Duration
	took := eventually(t, 15*time.Second, "the other controller leads and n1 is connected to it", func() error {
		var st llmscalerv1.GetClusterStatusResponse
		if err := call(t, addrs[other], "GetClusterStatus", "", &st); err != nil {
			return err
		}
		if st.GetLeader().GetId() != other || st.GetEpoch() <= oldEpoch {
			return fmt.Errorf("leader %s at epoch %d", st.GetLeader().GetId(), st.GetEpoch())
		}
		if leadTook == 0 {
			leadTook = time.Since(killed)
		}
		n, err := nodeOf(t, addrs[other], "n1")
		if err != nil {
			return err
		}
		if n.GetState() != llmscalerv1.NodeState_NODE_STATE_CONNECTED || n.GetConnectedAt().AsTime().Before(killed) {
			return fmt.Errorf("n1 %v since %v", n.GetState(), n.GetConnectedAt().AsTime())
		}
		return nil
	})
	t.Logf("FAILOVER: kill -9 of leader %s -> %s leads after %v, agent connected to it after %v (session TTL 3s default)",
		leader, other, leadTook.Round(time.Millisecond), took.Round(time.Millisecond))
	if took > 5*time.Second {
		t.Errorf("failover took %v, want within 5s", took)
	}
	if b, _ := os.ReadFile(procs[other].log); !strings.Contains(string(b), "elected leader") {
		t.Errorf("the new leader's log does not say it was elected")
	}
}

// TestSigtermHandsOver stops the leader with SIGTERM: it resigns, so the other controller
// leads at once instead of after the lease expires, and the stopped one exits cleanly.
func TestSigtermHandsOver(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	addrs, procs := twoControllers(t, "--session-ttl", "10s")
	st := campaigning(t, addrs["c1"])
	leader := st.GetLeader().GetId()
	other := map[string]string{"c1": "c2", "c2": "c1"}[leader]

	killedAt := time.Now()
	if err := procs[leader].cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	took := eventually(t, 8*time.Second, "the other controller leads", func() error {
		var st llmscalerv1.GetClusterStatusResponse
		if err := call(t, addrs[other], "GetClusterStatus", "", &st); err != nil {
			return err
		}
		if st.GetLeader().GetId() != other {
			return fmt.Errorf("leader %s", st.GetLeader().GetId())
		}
		return nil
	})
	t.Logf("HANDOVER: SIGTERM of leader %s -> %s leads after %v (session TTL 10s: the resign, not the lease, handed over)", leader, other, took.Round(time.Millisecond))
	select {
	case <-procs[leader].done:
	case <-time.After(15 * time.Second):
		t.Fatal("the stopped controller did not exit")
	}
	t.Logf("stopped controller exited after %v", time.Since(killedAt))
	if code := procs[leader].cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("stopped controller exited %d, want 0", code)
	}
	if took > 5*time.Second {
		t.Errorf("handover took %v: longer than a resign should", took)
	}
}

// twoControllers starts controllers c1 and c2 on one etcd member of the test's own, with extra
// flags, and returns their addresses and processes by id.
func twoControllers(t *testing.T, extra ...string) (map[string]string, map[string]*proc) {
	t.Helper()
	etcd, err := embedetcd.Start(embedetcd.Config{Dir: t.TempDir(), ClientAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(etcd.Close) // after the controllers are killed (cleanups run last-in first-out)
	addrs := map[string]string{"c1": freePort(t), "c2": freePort(t)}
	procs := map[string]*proc{}
	for _, id := range []string{"c1", "c2"} {
		args := append([]string{"--id", id, "--etcd-endpoints", etcd.Endpoint(), "--grpc-addr", addrs[id], "--http-addr", "-", "--insecure"}, extra...)
		procs[id] = start(t, id, bin(t, "llmscaler-controller"), args...)
	}
	return addrs, procs
}

// campaigning waits until both controllers campaign and one leads, as the controller at addr
// sees it, and returns its cluster status.
func campaigning(t *testing.T, addr string) *llmscalerv1.GetClusterStatusResponse {
	t.Helper()
	st := &llmscalerv1.GetClusterStatusResponse{}
	eventually(t, 20*time.Second, "a leader", func() error {
		if err := call(t, addr, "GetClusterStatus", "", st); err != nil {
			return err
		}
		if st.GetLeader().GetId() == "" || len(st.GetControllers()) != 2 {
			return fmt.Errorf("status %v", st)
		}
		return nil
	})
	return st
}
