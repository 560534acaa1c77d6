package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/llmscaler/llmscaler/agent"
	"github.com/llmscaler/llmscaler/controller"
	"github.com/llmscaler/llmscaler/internal/logging"
	"github.com/llmscaler/llmscaler/internal/transport"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// demoCatalog is examples/catalog-fake.yaml with the command pointed at this very binary, so
// the demo runs from `go run` as well as from bin/.
const demoCatalog = `profiles:
  - name: fake-llm
    command: [%s, "fakeserver", "--host", "{host}", "--port", "{port}", "--model", "{deployment}", "--hardware", "cpu-tiny", "--cold-start", "2s"]
    dialect: vllm
    gpus: 1
    gpu_memory_mib: 1000
    startup_timeout: 60s
    drain_timeout: 10s
    stop_grace: 5s
`

// runDemo starts a controller on an embedded etcd and fake-GPU agents whose catalog runs the
// fake LLM server, all in this process; applies a deployment of two replicas; prints the fleet
// and the instances as the admin API shows them; and runs until interrupted, then deletes the
// deployment so that no server outlives the demo.
func runDemo(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("llmscaler demo", flag.ContinueOnError)
	grpcAddr := fs.String("grpc-addr", "127.0.0.1:7400", "controller gRPC address")
	httpAddr := fs.String("http-addr", "127.0.0.1:7401", "controller HTTP address (/metrics, /healthz)")
	etcdAddr := fs.String("etcd-client-addr", "127.0.0.1:0", "embedded etcd client address (port 0: any free port)")
	dataDir := fs.String("data-dir", "", "data directory (default: a temporary directory removed at exit)")
	agents := fs.Int("agents", 2, "number of fake-GPU agents")
	gpus := fs.Int("fake-gpus", 8, "simulated GPUs per agent")
	replicas := fs.Uint("replicas", 2, "replicas of the demo deployment (0: apply none)")
	exitAfter := fs.Duration("exit-after", 0, "stop after this long (0: run until interrupted)")
	logLevel := fs.String("log-level", "warn", "log level of the controller and agents")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *agents < 1 || *agents > 100 {
		return fmt.Errorf("--agents %d: want 1 to 100", *agents)
	}
	log, err := logging.New("llmscaler", *logLevel, false, os.Stderr)
	if err != nil {
		return err
	}
	dir := *dataDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "llmscaler-demo-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find this binary for the demo catalog: %w", err)
	}
	catPath := filepath.Join(dir, "catalog.yaml")
	if err := os.WriteFile(catPath, []byte(fmt.Sprintf(demoCatalog, strconv.Quote(self))), 0o600); err != nil {
		return err
	}
	if *exitAfter > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *exitAfter)
		defer cancel()
	}

	c, err := controller.New(controller.Config{
		ID: "demo-controller", GRPCAddr: *grpcAddr, HTTPAddr: *httpAddr, DataDir: filepath.Join(dir, "controller"),
		EtcdClientAddr: *etcdAddr, EtcdPeerAddr: "127.0.0.1:0",
	}, log)
	if err != nil {
		return err
	}
	// The components run until the demo has cleaned up after an interrupt, not just until it.
	runCtx, stopAll := context.WithCancel(context.Background())
	defer stopAll()
	g, gctx := errgroup.WithContext(runCtx)
	g.Go(func() error { return c.Run(gctx) })
	for i := range *agents {
		id := fmt.Sprintf("fake-node-%d", i+1)
		a, err := agent.New(agent.Config{
			Controllers: []string{c.GRPCAddr()}, NodeID: id, DataDir: filepath.Join(dir, id),
			GPUBackend: "fake", FakeGPUs: *gpus, Labels: map[string]string{"demo": "true"}, Catalog: catPath,
		}, log)
		if err != nil {
			return err
		}
		g.Go(func() error { return a.Run(gctx) })
	}
	g.Go(func() error {
		defer stopAll()
		return showDemo(ctx, gctx, c.GRPCAddr(), c.HTTPAddr(), *agents, uint32(*replicas), out)
	})
	return g.Wait()
}

// showDemo waits for the agents, applies the deployment, prints what the admin API shows and
// what to try, and at the end deletes the deployment and waits for its servers to stop.
func showDemo(ctx, runCtx context.Context, addr, httpAddr string, agents int, replicas uint32, out io.Writer) error {
	conn, err := grpc.NewClient(addr, transport.DialOptions(transport.Plaintext)...)
	if err != nil {
		return err
	}
	defer conn.Close()
	cli := llmscalerv1.NewAdminServiceClient(conn)
	fmt.Fprintf(out, "llmscaler demo: controller on %s (embedded etcd), %d agents with simulated GPUs starting...\n", addr, agents)

	var nodes []*llmscalerv1.Node
	if !poll(ctx, func() bool {
		resp, err := cli.ListNodes(ctx, &llmscalerv1.ListNodesRequest{})
		if err != nil {
			return false
		}
		nodes = resp.GetNodes()
		n := 0
		for _, nd := range nodes {
			if nd.GetState() == llmscalerv1.NodeState_NODE_STATE_CONNECTED && len(nd.GetGpuSamples()) > 0 {
				n++
			}
		}
		return n == agents
	}) {
		return nil
	}
	printNodes(out, nodes)

	if replicas > 0 {
		spec := &llmscalerv1.DeploymentSpec{Name: "demo", Profile: "fake-llm", GpusPerReplica: 1, GpuMemoryMib: 1000,
			MinReplicas: replicas, MaxReplicas: max(replicas, 4)}
		if _, err := cli.ApplyDeployment(ctx, &llmscalerv1.ApplyDeploymentRequest{Deployment: spec}); err != nil {
			return fmt.Errorf("apply the demo deployment: %w", err)
		}
		fmt.Fprintf(out, "\nApplied deployment \"demo\": %d replicas of profile fake-llm (llmscaler fakeserver, simulated)...\n", replicas)
		var ins []*llmscalerv1.Instance
		if poll(ctx, func() bool {
			resp, err := cli.ListInstances(ctx, &llmscalerv1.ListInstancesRequest{Deployment: "demo"})
			if err != nil {
				return false
			}
			ins = resp.GetInstances()
			ready := 0
			for _, in := range ins {
				if in.GetStatus().GetPhase() == llmscalerv1.InstancePhase_INSTANCE_PHASE_READY {
					ready++
				}
			}
			return ready == int(replicas)
		}) {
			printInstances(out, ins)
		}
	}
	fmt.Fprintf(out, `
The GPUs are simulated (--gpu-backend fake) and the servers are llmscaler fakeserver. Try:
  grpcurl -plaintext %[1]s list
  grpcurl -plaintext %[1]s llmscaler.v1.AdminService/ListNodes
  grpcurl -plaintext -d '{"deployment":"demo"}' %[1]s llmscaler.v1.AdminService/ListInstances
  grpcurl -plaintext -d '{"name":"demo","replicas":3}' %[1]s llmscaler.v1.AdminService/ScaleDeployment
  grpcurl -plaintext %[1]s llmscaler.v1.AdminService/WatchEvents
  curl -s http://<endpoint>/v1/completions -d '{"model":"demo","prompt":"hi","max_tokens":64}'
  curl -s http://%[2]s/metrics | grep llmscaler_
Press Ctrl-C to stop (the demo deletes its deployment and stops the servers first).
`, addr, httpAddr)
	<-ctx.Done()
	if replicas == 0 {
		return nil
	}
	fmt.Fprintln(out, "\nstopping: deleting deployment demo and waiting for its servers to stop...")
	cctx, cancel := context.WithTimeout(runCtx, 30*time.Second)
	defer cancel()
	if _, err := cli.DeleteDeployment(cctx, &llmscalerv1.DeleteDeploymentRequest{Name: "demo"}); err != nil {
		return fmt.Errorf("delete the demo deployment: %w", err)
	}
	poll(cctx, func() bool {
		resp, err := cli.ListInstances(cctx, &llmscalerv1.ListInstancesRequest{Deployment: "demo"})
		if err != nil {
			return false
		}
		for _, in := range resp.GetInstances() {
			if p := in.GetStatus().GetPhase(); p != llmscalerv1.InstancePhase_INSTANCE_PHASE_STOPPED && p != llmscalerv1.InstancePhase_INSTANCE_PHASE_FAILED {
				return false
			}
		}
		return true
	})
	return nil
}

// poll calls cond every 200 ms until it holds (true) or ctx ends (false).
func poll(ctx context.Context, cond func() bool) bool {
	tk := time.NewTicker(200 * time.Millisecond)
	defer tk.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return false
		case <-tk.C:
		}
	}
	return true
}

func printNodes(out io.Writer, nodes []*llmscalerv1.Node) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nNODE\tSTATE\tBACKEND\tGPUS\tGPU MODEL\tPROFILES")
	for _, n := range nodes {
		model := ""
		if len(n.GetGpus()) > 0 {
			model = n.GetGpus()[0].GetName()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", n.GetNodeId(), strings.TrimPrefix(n.GetState().String(), "NODE_STATE_"),
			n.GetGpuBackend(), len(n.GetGpus()), model, strings.Join(n.GetProfiles(), ","))
	}
	tw.Flush()
}

func printInstances(out io.Writer, ins []*llmscalerv1.Instance) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nINSTANCE\tNODE\tPHASE\tGPUS\tENDPOINT\tPID\tCOLD START")
	for _, in := range ins {
		s := in.GetStatus()
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%s\t%d\t%v\n", s.GetInstanceId(), in.GetNodeId(), strings.TrimPrefix(s.GetPhase().String(), "INSTANCE_PHASE_"),
			s.GetGpuIndices(), s.GetEndpoint(), s.GetPid(), s.GetColdStart().AsDuration().Round(time.Millisecond))
	}
	tw.Flush()
}
