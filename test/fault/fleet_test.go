//go:build linux

package fault

import (
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/llmscaler/llmscaler/internal/embedetcd"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// roleEnv makes this test binary, re-executed on a host, run one etcd member (the same
// embedded server the controller uses by default) instead of the tests.
const roleEnv = "LLMSCALER_FAULT_ROLE"

func TestMain(m *testing.M) {
	switch os.Getenv(roleEnv) {
	case "etcd":
		os.Exit(runEtcdMember())
	case "etcd-move-leader":
		os.Exit(runMoveLeader())
	}
	os.Exit(m.Run())
}

// runEtcdMember serves one member of the test's etcd cluster until SIGTERM or SIGKILL.
func runEtcdMember() int {
	s, err := embedetcd.Start(embedetcd.Config{
		Dir: os.Getenv("ETCD_DIR"), Name: os.Getenv("ETCD_NAME"),
		ClientAddr: os.Getenv("ETCD_CLIENT"), PeerAddr: os.Getenv("ETCD_PEER"),
		InitialCluster: os.Getenv("ETCD_CLUSTER"), StartTimeout: time.Minute,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer s.Close()
	fmt.Println("etcd member serving at", s.Endpoint())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	select {
	case <-sig:
		return 0
	case err := <-s.Err():
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
}

// Ports on every host.
const (
	etcdClientPort = 2379
	etcdPeerPort   = 2380
	grpcPort       = 7400
	httpPort       = 7401
	routerPort     = 7410
)

// fleet is the suite's multi-host control plane: three etcd members, two controllers, three
// agents with simulated GPUs and a router, each on a host of its own (etcd members share the
// controllers' hosts, and the third has one to itself, unless fleetConfig.etcdApart gives
// each member a host).
type fleet struct {
	t           *testing.T
	net         *network
	etcd        []*host
	ctrlHosts   []*host
	controllers map[string]*proc // by controller id
	procs       map[string]*proc // every daemon by name: etcd-e1, controller-c1, agent-a1, router
	specs       map[string]spawnSpec
	agents      []*host
	router      *host
	model       string
}

// fakeCatalog runs the fakeserver on the agent's own address, so the router reaches it.
const fakeCatalog = `profiles:
  - name: fake-llm
    command: [%q, "fakeserver", "--host", "{host}", "--port", "{port}", "--model", "{deployment}", "--hardware", "cpu-tiny", "--cold-start", "1s"]
    dialect: vllm
    gpus: 1
    gpu_memory_mib: 1000
    startup_timeout: 60s
    drain_timeout: 20s
    stop_grace: 5s
    max_in_flight: 8
`

// fleetConfig is what a test changes in the fleet; the zero value is newFleet's.
type fleetConfig struct {
	// etcdApart puts the three etcd members on hosts of their own, so that cutting their
	// links cuts the controllers off etcd and nothing else.
	etcdApart bool
	// catalog is the agents' catalog, with %q where the llmscaler binary goes; default
	// fakeCatalog.
	catalog string
	// agentArgs are added to every agent's flags.
	agentArgs []string
}

func newFleet(t *testing.T, model string) *fleet {
	t.Helper()
	return newFleetWith(t, model, fleetConfig{})
}

func newFleetWith(t *testing.T, model string, cfg fleetConfig) *fleet {
	t.Helper()
	f := &fleet{t: t, net: newNetwork(t), controllers: map[string]*proc{}, procs: map[string]*proc{}, specs: map[string]spawnSpec{}, model: model}
	t.Cleanup(func() { killServers(model) })
	c1, c2 := f.net.host("c1"), f.net.host("c2")
	f.ctrlHosts = []*host{c1, c2}
	if cfg.etcdApart {
		f.etcd = []*host{f.net.host("e1"), f.net.host("e2"), f.net.host("e3")}
	} else {
		f.etcd = []*host{c1, c2, f.net.host("e3")}
	}
	for i := range 3 {
		f.agents = append(f.agents, f.net.host(fmt.Sprintf("a%d", i+1)))
	}
	f.router = f.net.host("r1")

	var cluster, endpoints []string
	for i, h := range f.etcd {
		cluster = append(cluster, fmt.Sprintf("e%d=http://%s", i+1, h.at(etcdPeerPort)))
		endpoints = append(endpoints, h.at(etcdClientPort))
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for i, h := range f.etcd {
		f.startEtcd(i, h, self, dir, strings.Join(cluster, ","))
	}
	for i, h := range f.ctrlHosts {
		id := fmt.Sprintf("c%d", i+1)
		f.controllers[id] = f.spawn("controller-"+id, h, nil, bin(t, "llmscaler-controller"), "--id", id,
			"--etcd-endpoints", strings.Join(endpoints, ","), "--grpc-addr", h.at(grpcPort),
			"--http-addr", h.at(httpPort), "--log-level", "debug", "--insecure", "--insecure-allow-remote")
	}
	catalog := filepath.Join(dir, "catalog.yaml")
	if cfg.catalog == "" {
		cfg.catalog = fakeCatalog
	}
	if err := os.WriteFile(catalog, []byte(fmt.Sprintf(cfg.catalog, bin(t, "llmscaler"))), 0o600); err != nil {
		t.Fatal(err)
	}
	ctrl := f.controllerAddrs()
	for i, h := range f.agents {
		id := fmt.Sprintf("a%d", i+1)
		args := append([]string{"--controller", strings.Join(ctrl, ","), "--node-id", id,
			"--gpu-backend", "fake", "--fake-gpus", "2", "--catalog", catalog, "--instance-host", h.addr,
			"--data-dir", filepath.Join(dir, id), "--http-addr", "", "--log-level", "debug", "--insecure", "--insecure-allow-remote"}, cfg.agentArgs...)
		f.spawn("agent-"+id, h, nil, bin(t, "llmscaler-agent"), args...)
	}
	f.spawn("router", f.router, nil, bin(t, "llmscaler-router"), "--controller", ctrl[0], "--listen", f.router.at(routerPort),
		"--router-id", "r1", "--log-level", "debug", "--insecure", "--insecure-allow-remote")
	eventually(t, 90*time.Second, "a leader with all three agents connected", func() error {
		_, err := f.leaderWithAgents()
		return err
	})
	return f
}

func (f *fleet) startEtcd(i int, h *host, self, dir, cluster string) {
	f.t.Helper()
	name := fmt.Sprintf("e%d", i+1)
	f.spawn("etcd-"+name, h, []string{roleEnv + "=etcd", "ETCD_NAME=" + name, "ETCD_DIR=" + filepath.Join(dir, name),
		"ETCD_CLIENT=" + h.at(etcdClientPort), "ETCD_PEER=" + h.at(etcdPeerPort), "ETCD_CLUSTER=" + cluster},
		self, "-test.run=^$")
}

// spawnSpec is how a daemon was started, so that it can be started again as it was.
type spawnSpec struct {
	h    *host
	env  []string
	bin  string
	args []string
}

// spawn starts a daemon on h and remembers how, for restart.
func (f *fleet) spawn(name string, h *host, env []string, bin string, args ...string) *proc {
	f.t.Helper()
	f.specs[name] = spawnSpec{h: h, env: env, bin: bin, args: args}
	p := h.startEnv(f.t, name, env, bin, args...)
	f.procs[name] = p
	return p
}

// restart starts a daemon again as it was first started (same data), after killing it if it
// still runs.
func (f *fleet) restart(name string) {
	f.t.Helper()
	f.procs[name].kill()
	s := f.specs[name]
	p := s.h.startEnv(f.t, name, s.env, s.bin, s.args...)
	f.procs[name] = p
	if id, ok := strings.CutPrefix(name, "controller-"); ok {
		f.controllers[id] = p
	}
}

func (f *fleet) controllerAddrs() []string {
	var out []string
	for _, h := range f.ctrlHosts {
		out = append(out, h.at(grpcPort))
	}
	return out
}

// leaderWithAgents asks each live controller for the cluster status and returns the id of
// the leader once a controller leads and sees all three agents connected.
func (f *fleet) leaderWithAgents() (string, error) {
	var last error
	for i, h := range f.ctrlHosts {
		id := fmt.Sprintf("c%d", i+1)
		if p := f.controllers[id]; p == nil || exited(p) {
			continue
		}
		var cs llmscalerv1.GetClusterStatusResponse
		if err := f.router.call(f.t, h.at(grpcPort), "GetClusterStatus", "", &cs); err != nil {
			last = err
			continue
		}
		if cs.GetLeader().GetId() == "" {
			last = fmt.Errorf("%s sees no leader", id)
			continue
		}
		var nodes llmscalerv1.ListNodesResponse
		if err := f.router.call(f.t, h.at(grpcPort), "ListNodes", "", &nodes); err != nil {
			last = err
			continue
		}
		connected := 0
		for _, n := range nodes.GetNodes() {
			if n.GetState() == llmscalerv1.NodeState_NODE_STATE_CONNECTED {
				connected++
			}
		}
		if connected != len(f.agents) {
			last = fmt.Errorf("leader %s sees %d of %d agents connected", cs.GetLeader().GetId(), connected, len(f.agents))
			continue
		}
		return cs.GetLeader().GetId(), nil
	}
	return "", last
}

func exited(p *proc) bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// readyInstances maps the deployment's READY instances to their nodes, through a controller.
func (f *fleet) readyInstances(addr string) (map[string]string, error) {
	ready, err := f.instances(addr, llmscalerv1.InstancePhase_INSTANCE_PHASE_READY)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, in := range ready {
		out[in.GetInstanceId()] = in.GetEndpoint()
	}
	return out, nil
}

// loadSummary is what `llmscaler load --json` writes, in part.
type loadSummary struct {
	Sent   int            `json:"sent"`
	OK     int            `json:"ok"`
	Errors int            `json:"errors"`
	ByKind map[string]int `json:"errors_by_kind"`
	TTFT   struct {
		P99 float64 `json:"p99_s"`
		Max float64 `json:"max_s"`
	} `json:"ttft"`
}

func readLoadSummary(t *testing.T, path string) loadSummary {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var s loadSummary
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return s
}

// deploy applies the fleet's deployment (fake-llm, one GPU a replica) at min to max replicas
// through addr, and waits for want READY instances, which it returns.
func (f *fleet) deploy(t *testing.T, addr string, min, max, want int) []*llmscalerv1.InstanceStatus {
	t.Helper()
	spec := fmt.Sprintf(`{"deployment":{"name":%q,"profile":"fake-llm","gpus_per_replica":1,"gpu_memory_mib":1000,"min_replicas":%d,"max_replicas":%d}}`, f.model, min, max)
	if err := f.router.call(t, addr, "ApplyDeployment", spec, nil); err != nil {
		t.Fatal(err)
	}
	var ready []*llmscalerv1.InstanceStatus
	eventually(t, 60*time.Second, fmt.Sprintf("%d READY instances", want), func() error {
		var err error
		if ready, err = f.instances(addr, llmscalerv1.InstancePhase_INSTANCE_PHASE_READY); err == nil && len(ready) != want {
			err = fmt.Errorf("%d READY", len(ready))
		}
		return err
	})
	return ready
}

// endLoad waits for a load run of loadFor to end and reads its summary.
func endLoad(t *testing.T, load *proc, loadFor time.Duration, summary string) loadSummary {
	t.Helper()
	select {
	case <-load.done:
	case <-time.After(loadFor + time.Minute):
		t.Fatal("the load did not end")
	}
	return readLoadSummary(t, summary)
}
