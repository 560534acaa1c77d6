package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
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

// runDemo starts a controller on an embedded etcd and fake-GPU agents, all in this process,
// prints the fleet as the admin API shows it, and runs until interrupted.
func runDemo(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("llmscaler demo", flag.ContinueOnError)
	grpcAddr := fs.String("grpc-addr", "127.0.0.1:7400", "controller gRPC address")
	httpAddr := fs.String("http-addr", "127.0.0.1:7401", "controller HTTP address (/metrics, /healthz)")
	etcdAddr := fs.String("etcd-client-addr", "127.0.0.1:0", "embedded etcd client address (port 0: any free port)")
	dataDir := fs.String("data-dir", "", "data directory (default: a temporary directory removed at exit)")
	agents := fs.Int("agents", 2, "number of fake-GPU agents")
	gpus := fs.Int("fake-gpus", 8, "simulated GPUs per agent")
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
	if *exitAfter > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *exitAfter)
		defer cancel()
	}

	c, err := controller.New(controller.Config{
		ID: "demo-controller", GRPCAddr: *grpcAddr, HTTPAddr: *httpAddr, DataDir: dir + "/controller",
		EtcdClientAddr: *etcdAddr, EtcdPeerAddr: "127.0.0.1:0",
	}, log)
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return c.Run(gctx) })
	for i := range *agents {
		id := fmt.Sprintf("fake-node-%d", i+1)
		a, err := agent.New(agent.Config{
			Controllers: []string{c.GRPCAddr()}, NodeID: id, DataDir: dir + "/" + id,
			GPUBackend: "fake", FakeGPUs: *gpus, Labels: map[string]string{"demo": "true"},
		}, log)
		if err != nil {
			return err
		}
		g.Go(func() error { return a.Run(gctx) })
	}
	g.Go(func() error { return showFleet(gctx, c.GRPCAddr(), c.HTTPAddr(), *agents, out) })
	return g.Wait()
}

// showFleet waits until every agent is connected, then prints the fleet and what to try.
func showFleet(ctx context.Context, addr, httpAddr string, want int, out io.Writer) error {
	conn, err := grpc.NewClient(addr, transport.DialOptions(transport.Plaintext)...)
	if err != nil {
		return err
	}
	defer conn.Close()
	cli := llmscalerv1.NewAdminServiceClient(conn)
	fmt.Fprintf(out, "llmscaler demo: controller on %s (embedded etcd), %d fake-GPU agents starting...\n", addr, want)
	tk := time.NewTicker(200 * time.Millisecond)
	defer tk.Stop()
	var nodes []*llmscalerv1.Node
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tk.C:
		}
		resp, err := cli.ListNodes(ctx, &llmscalerv1.ListNodesRequest{})
		if err != nil {
			continue // no leader yet
		}
		nodes = resp.GetNodes()
		connected := 0
		for _, n := range nodes {
			if n.GetState() == llmscalerv1.NodeState_NODE_STATE_CONNECTED && len(n.GetGpuSamples()) > 0 {
				connected++
			}
		}
		if connected == want {
			break
		}
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nNODE\tSTATE\tBACKEND\tGPUS\tGPU MODEL\tTEMP C\tPOWER W")
	for _, n := range nodes {
		model := ""
		if len(n.GetGpus()) > 0 {
			model = n.GetGpus()[0].GetName()
		}
		var temp, power float64
		for _, s := range n.GetGpuSamples() {
			temp += s.GetTemperatureCelsius() / float64(len(n.GetGpuSamples()))
			power += s.GetPowerWatts()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%.0f\t%.0f\n", n.GetNodeId(), strings.TrimPrefix(n.GetState().String(), "NODE_STATE_"),
			n.GetGpuBackend(), len(n.GetGpus()), model, temp, power)
	}
	tw.Flush()
	fmt.Fprintf(out, `
The GPUs above are simulated (--gpu-backend fake). Try, in another terminal:
  grpcurl -plaintext %[1]s list
  grpcurl -plaintext %[1]s llmscaler.v1.AdminService/ListNodes
  grpcurl -plaintext %[1]s llmscaler.v1.AdminService/GetClusterStatus
  grpcurl -plaintext -d '{"deployment":{"name":"demo","profile":"fake-llm","gpus_per_replica":1,"min_replicas":1,"max_replicas":4}}' %[1]s llmscaler.v1.AdminService/ApplyDeployment
  grpcurl -plaintext %[1]s llmscaler.v1.AdminService/WatchEvents
  curl -s http://%[2]s/metrics | grep llmscaler_
Press Ctrl-C to stop.
`, addr, httpAddr)
	<-ctx.Done()
	return nil
}
