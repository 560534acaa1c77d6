package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/llmscaler/llmscaler/agent"
	"github.com/llmscaler/llmscaler/controller"
	"github.com/llmscaler/llmscaler/internal/loadgen"
	"github.com/llmscaler/llmscaler/internal/logging"
	"github.com/llmscaler/llmscaler/internal/pki"
	"github.com/llmscaler/llmscaler/internal/router"
	"github.com/llmscaler/llmscaler/internal/routerlink"
	"github.com/llmscaler/llmscaler/internal/sim"
	"github.com/llmscaler/llmscaler/internal/transport"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// demoCatalog is examples/catalog-fake.yaml with the command pointed at this very binary, and
// the cold start of an 8B model on a GPU (80 s: weights, CUDA graphs) scaled by the demo's
// time compression, like the workload.
const demoCatalog = `profiles:
  - name: fake-llm
    command: [%s, "fakeserver", "--host", "{host}", "--port", "{port}", "--model", "{deployment}", "--hardware", "cpu-tiny", "--cold-start", %q]
    dialect: vllm
    gpus: 1
    gpu_memory_mib: 1000
    max_in_flight: 16
    startup_timeout: 60s
    drain_timeout: 20s
    stop_grace: 5s
`

// The demo deployment and its workload. The seed notebook's pattern (5 min low, a 10 min ramp,
// 5 min high, a 10 min decline) runs about ten times faster, at rates chosen so that cpu-tiny
// replicas (one holds about 3.5 requests/s of 128 tokens within a 2 s TTFT; 4.7 did not) need
// two at the low load and six or seven of the eight GPUs at the high one. The policy's prior
// capacity is set to what one replica serves, as an operator would set it from a benchmark of
// their engine; left at its default (2 req/s) the demo saturates at eight. A last stretch at the
// low rate lets the scale-down finish in view.
const (
	demoDeployment = "demo"
	demoLowRPS     = 4.0
	demoHighRPS    = 16.0
	demoPriorRPS   = 3.0
	demoSLO        = 2 * time.Second
	demoColdStart  = 8 * time.Second // 80 s / 10
)

// demoPhases are the workload's stretches, in demo time.
var demoPhases = []struct {
	name     string
	from, to time.Duration
	lo, hi   float64
}{
	{"low", 0, 20 * time.Second, demoLowRPS, demoLowRPS},
	{"ramp", 20 * time.Second, 70 * time.Second, demoLowRPS, demoHighRPS},
	{"high", 70 * time.Second, 100 * time.Second, demoHighRPS, demoHighRPS},
	{"decline", 100 * time.Second, 150 * time.Second, demoHighRPS, demoLowRPS},
	{"low again", 150 * time.Second, 170 * time.Second, demoLowRPS, demoLowRPS},
}

// demoSchedule is demoPhases in loadgen's schedule syntax.
func demoSchedule() (string, time.Duration) {
	s := ""
	for i, p := range demoPhases {
		if i > 0 {
			s += ","
		}
		if p.lo == p.hi {
			s += fmt.Sprintf("%s:%g", p.from, p.lo)
		} else {
			s += fmt.Sprintf("%s:%g->%g", p.from, p.lo, p.hi)
		}
	}
	return s, demoPhases[len(demoPhases)-1].to
}

// demoPhase names the stretch of the workload at t.
func demoPhase(t time.Duration) string {
	for _, p := range demoPhases {
		if t < p.to {
			return p.name
		}
	}
	return "done"
}

func demoSpec() *llmscalerv1.DeploymentSpec {
	return &llmscalerv1.DeploymentSpec{
		Name: demoDeployment, Profile: "fake-llm", GpusPerReplica: 1, GpuMemoryMib: 1000,
		MinReplicas: 1, MaxReplicas: 8,
		Policy: &llmscalerv1.Policy{
			Kind: &llmscalerv1.Policy_Slo{Slo: &llmscalerv1.SloPolicy{
				Target:                 durationpb.New(demoSLO),
				PriorRequestsPerSecond: proto.Float64(demoPriorRPS),
				ScaleDownDelay:         durationpb.New(15 * time.Second),
			}},
			StableWindow: durationpb.New(15 * time.Second),
		},
	}
}

// demoFlags are the demo's settings.
type demoFlags struct {
	grpcAddr, httpAddr, routerAddr, etcdAddr string
	dataDir, outDir                          string
	agents, gpus                             int
	stay                                     bool
	logLevel                                 string
}

// runDemo runs a whole fleet in this process: a controller on an embedded etcd in a temporary
// directory, agents with simulated GPUs whose catalog starts `llmscaler fakeserver` model
// servers as real child processes, and a router. It applies an slo deployment at min 1, sends
// the seed workload through the router while it draws a live view, and at the end prints a
// summary and writes the four-panel PNG of the run. Interrupted at any time, it deletes the
// deployment, waits for the servers to stop (kills any that will not) and exits.
func runDemo(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("llmscaler demo", flag.ContinueOnError)
	var f demoFlags
	fs.StringVar(&f.grpcAddr, "grpc-addr", "127.0.0.1:7400", "controller gRPC address (port 0: any free port)")
	fs.StringVar(&f.httpAddr, "http-addr", "127.0.0.1:7401", "controller HTTP address (/metrics, status page)")
	fs.StringVar(&f.routerAddr, "router-addr", "127.0.0.1:7410", "router address (the OpenAI API)")
	fs.StringVar(&f.etcdAddr, "etcd-client-addr", "127.0.0.1:0", "embedded etcd client address (port 0: any free port)")
	fs.StringVar(&f.dataDir, "data-dir", "", "data directory (default: a temporary directory removed at exit)")
	fs.StringVar(&f.outDir, "out", "demo-out", "directory for the run's PNG and summary.json")
	fs.IntVar(&f.agents, "agents", 2, "number of agents with simulated GPUs")
	fs.IntVar(&f.gpus, "fake-gpus", 4, "simulated GPUs per agent")
	fs.BoolVar(&f.stay, "stay", false, "keep the fleet running after the workload, until Ctrl-C")
	fs.StringVar(&f.logLevel, "log-level", "error", "log level of the controller, agents and router (their logs go to stderr)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if f.agents < 1 || f.agents > 16 {
		return fmt.Errorf("--agents %d: want 1 to 16", f.agents)
	}
	if f.gpus < 1 || f.gpus > 16 {
		return fmt.Errorf("--fake-gpus %d: want 1 to 16", f.gpus)
	}
	log, err := logging.New("llmscaler", f.logLevel, false, os.Stderr)
	if err != nil {
		return err
	}
	dir := f.dataDir
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
	if err := os.WriteFile(catPath, []byte(fmt.Sprintf(demoCatalog, strconv.Quote(self), demoColdStart.String())), 0o600); err != nil {
		return err
	}
	// The whole fleet speaks mutual TLS, with certificates made as `llmscaler certs` makes them.
	nodeIDs := make([]string, f.agents)
	for i := range nodeIDs {
		nodeIDs[i] = fmt.Sprintf("fake-node-%d", i+1)
	}
	tlsDir := filepath.Join(dir, "tls")
	var hosts []string
	if h, _, err := net.SplitHostPort(f.grpcAddr); err == nil && h != "" && !transport.IsLoopback(f.grpcAddr) {
		hosts = append(hosts, h)
	}
	if _, err := pki.Write(pki.Set{Dir: tlsDir, Nodes: nodeIDs, Hosts: hosts, Days: 1, Force: true}); err != nil {
		return fmt.Errorf("make the demo's certificates: %w", err)
	}
	creds := func(name string) (transport.Credentials, error) {
		c, _, err := transport.LoadMutualTLS(filepath.Join(tlsDir, pki.CAName+".crt"), filepath.Join(tlsDir, name+".crt"), filepath.Join(tlsDir, name+".key"))
		return c, err
	}
	ctlCreds, err := creds(pki.ControllerName)
	if err != nil {
		return err
	}
	routerLn, err := net.Listen("tcp", f.routerAddr)
	if err != nil {
		return fmt.Errorf("--router-addr %q: %w (another demo or router running? pass 127.0.0.1:0)", f.routerAddr, err)
	}
	c, err := controller.New(controller.Config{
		ID: "demo-controller", GRPCAddr: f.grpcAddr, HTTPAddr: f.httpAddr, DataDir: filepath.Join(dir, "controller"),
		EtcdClientAddr: f.etcdAddr, EtcdPeerAddr: "127.0.0.1:0", Credentials: ctlCreds,
	}, log)
	if err != nil {
		routerLn.Close()
		return fmt.Errorf("%w (another demo or controller running? pass --grpc-addr and --http-addr 127.0.0.1:0)", err)
	}
	dialAs := func(name string) (*grpc.ClientConn, error) {
		cr, err := creds(name)
		if err != nil {
			return nil, err
		}
		return grpc.NewClient(c.GRPCAddr(), transport.DialOptions(cr)...)
	}
	conn, err := dialAs(pki.AdminName)
	if err != nil {
		routerLn.Close()
		return err
	}
	defer conn.Close()
	routerConn, err := dialAs(pki.RouterName)
	if err != nil {
		routerLn.Close()
		return err
	}
	defer routerConn.Close()
	rt, err := router.New(router.Config{Logger: log})
	if err != nil {
		routerLn.Close()
		return err
	}
	defer rt.Close()
	link, err := routerlink.New(routerlink.Config{ID: "demo-router"}, routerConn, rt, log)
	if err != nil {
		routerLn.Close()
		return err
	}
	srv := router.NewServer(rt)

	// The fleet runs until the demo has cleaned up after an interrupt, not just until it.
	runCtx, stopAll := context.WithCancel(context.Background())
	defer stopAll()
	g, gctx := errgroup.WithContext(runCtx)
	g.Go(func() error { return c.Run(gctx) })
	for _, id := range nodeIDs {
		nodeCreds, err := creds(pki.NodeName(id))
		if err != nil {
			stopAll()
			_ = g.Wait()
			return err
		}
		a, err := agent.New(agent.Config{
			Controllers: []string{c.GRPCAddr()}, NodeID: id, DataDir: filepath.Join(dir, id),
			GPUBackend: "fake", FakeGPUs: f.gpus, Labels: map[string]string{"demo": "true"}, Catalog: catPath,
			Credentials: nodeCreds,
		}, log)
		if err != nil {
			stopAll()
			_ = g.Wait()
			return err
		}
		g.Go(func() error { return a.Run(gctx) })
	}
	g.Go(func() error { return link.Run(gctx) })
	g.Go(func() error {
		if err := srv.Serve(routerLn); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	})
	d := &demo{
		f: f, out: out, log: log, admin: llmscalerv1.NewAdminServiceClient(conn), rt: rt,
		grpcAddr: c.GRPCAddr(), httpAddr: c.HTTPAddr(), routerURL: "http://" + routerLn.Addr().String(),
		grpcurlTLS: fmt.Sprintf("-cacert %s -cert %s -key %s", filepath.Join(tlsDir, "ca.crt"), filepath.Join(tlsDir, "admin.crt"), filepath.Join(tlsDir, "admin.key")),
	}
	g.Go(func() error {
		defer stopAll()
		return d.run(ctx, runCtx)
	})
	return g.Wait()
}

// demo is one run of the demo's script against its fleet.
type demo struct {
	f                             demoFlags
	out                           io.Writer
	log                           hclog.Logger
	admin                         llmscalerv1.AdminServiceClient
	rt                            *router.Router
	grpcAddr, httpAddr, routerURL string
	// grpcurlTLS are grpcurl's flags for the demo's admin certificate.
	grpcurlTLS string

	mu      sync.Mutex
	results []loadgen.Result
}

// run waits for the fleet, applies the deployment, sends the workload with the live view
// on, prints the summary and writes the plots; then, or on an interrupt, cleans up.
func (d *demo) run(ctx, runCtx context.Context) error {
	fmt.Fprintf(d.out, "llmscaler demo: controller on %s (embedded etcd), %d agents with %d simulated GPUs each, router on %s\n",
		d.grpcAddr, d.f.agents, d.f.gpus, d.routerURL)
	fmt.Fprintf(d.out, "every gRPC connection is mutual TLS with certificates from `llmscaler certs`; as admin:\n  grpcurl %s %s llmscaler.v1.AdminService/GetClusterStatus\n",
		d.grpcurlTLS, d.grpcAddr)
	defer d.cleanup(runCtx)
	if !poll(ctx, func() bool { return d.connectedNodes(ctx) == d.f.agents }) {
		return nil
	}
	if _, err := d.admin.ApplyDeployment(ctx, &llmscalerv1.ApplyDeploymentRequest{Deployment: demoSpec()}); err != nil {
		return fmt.Errorf("apply the demo deployment: %w", err)
	}
	fmt.Fprintf(d.out, "applied deployment %q: policy slo (TTFT p95 <= %v), min 1, max 8 replicas of llmscaler fakeserver (simulated, cold start %v); waiting for its first replica...\n",
		demoDeployment, demoSLO, demoColdStart)
	if !poll(ctx, func() bool { return d.ready(ctx) >= 1 }) {
		return nil
	}

	schedule, length := demoSchedule()
	gen, err := loadgen.New(loadgen.Config{
		Router: d.routerURL, Model: demoDeployment, Schedule: schedule, Duration: length,
		Seed: 1, MaxInFlight: 2000, DrainTimeout: 30 * time.Second,
		Observe: func(r loadgen.Result) {
			d.mu.Lock()
			d.results = append(d.results, r)
			d.mu.Unlock()
		},
	}, d.log)
	if err != nil {
		return err
	}
	start := time.Now()
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	var samples []demoSample
	viewDone := make(chan struct{})
	go func() {
		defer close(viewDone)
		samples = d.watch(loadCtx, start, length)
	}()
	sum, err := gen.Run(loadCtx)
	stopLoad()
	<-viewDone
	if err != nil {
		return err
	}
	d.mu.Lock()
	results := append([]loadgen.Result(nil), d.results...)
	d.mu.Unlock()
	var decisions []decisionRecord
	// The journal keeps the latest 256 decisions a deployment; the demo makes fewer.
	if resp, err := d.admin.ListDecisions(runCtx, &llmscalerv1.ListDecisionsRequest{Deployment: demoDeployment, Limit: 256}); err != nil {
		fmt.Fprintf(d.out, "could not list the decisions: %v\n", err)
	} else {
		for _, dec := range resp.GetDecisions() {
			decisions = append(decisions, decisionRecord{Time: dec.GetTime().AsTime(), From: int(dec.GetFromReplicas()), To: int(dec.GetToReplicas()), Acted: dec.GetActed()})
		}
	}
	rep := summarise(start, samples, results, decisions, demoSLO)
	rep.Interrupted = ctx.Err() != nil
	rep.write(d.out, sum)
	if paths, err := d.writeOutputs(rep, samples, results, start); err != nil {
		fmt.Fprintf(d.out, "could not write the plots: %v\n", err)
	} else {
		fmt.Fprintf(d.out, "plot of the run: %s\n", paths[0])
	}
	if d.f.stay && ctx.Err() == nil {
		fmt.Fprintf(d.out, "\nThe fleet keeps running; try the commands above. Ctrl-C stops it.\n")
		<-ctx.Done()
	}
	return nil
}

// watch samples the fleet every second until ctx ends, drawing the live view from each
// sample, and returns the samples.
func (d *demo) watch(ctx context.Context, start time.Time, length time.Duration) []demoSample {
	tty := isTerminal(d.out)
	var samples []demoSample
	tk := time.NewTicker(time.Second)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return samples
		case <-tk.C:
		}
		s := d.sample(ctx, start)
		samples = append(samples, s)
		d.mu.Lock()
		v := buildView(s, d.results, length, demoSLO)
		d.mu.Unlock()
		v.Commands = demoCommands(d.grpcurlTLS, d.grpcAddr, d.httpAddr, d.routerURL)
		if tty {
			fmt.Fprint(d.out, "\x1b[H\x1b[2J")
			v.render(d.out)
		} else if len(samples)%10 == 0 {
			v.line(d.out)
		}
	}
}

// sample reads the fleet through the admin API and the router.
func (d *demo) sample(ctx context.Context, start time.Time) demoSample {
	now := time.Now()
	s := demoSample{Time: now, At: now.Sub(start), Phase: demoPhase(now.Sub(start)), Nodes: map[string]*nodeSample{}, ReadyGPUUtil: math.NaN()}
	s.OfferedRPS = scheduleRate(now.Sub(start))
	s.Waiting, s.InFlight = d.rt.Queued(demoDeployment)
	if resp, err := d.admin.ListNodes(ctx, &llmscalerv1.ListNodesRequest{}); err == nil {
		for _, n := range resp.GetNodes() {
			ns := &nodeSample{}
			for _, g := range n.GetGpuSamples() {
				ns.GPUUtil = append(ns.GPUUtil, g.GetUtilizationPercent())
			}
			s.Nodes[n.GetNodeId()] = ns
		}
	}
	util, gpus := 0.0, 0
	if resp, err := d.admin.ListInstances(ctx, &llmscalerv1.ListInstancesRequest{Deployment: demoDeployment}); err == nil {
		for _, in := range resp.GetInstances() {
			ns := s.Nodes[in.GetNodeId()]
			if ns == nil {
				ns = &nodeSample{}
				s.Nodes[in.GetNodeId()] = ns
			}
			switch in.GetStatus().GetPhase() {
			case llmscalerv1.InstancePhase_INSTANCE_PHASE_STARTING:
				ns.Starting++
			case llmscalerv1.InstancePhase_INSTANCE_PHASE_READY:
				ns.Ready++
				for _, g := range in.GetStatus().GetGpuIndices() {
					if int(g) < len(ns.GPUUtil) {
						util += ns.GPUUtil[g]
						gpus++
					}
				}
			case llmscalerv1.InstancePhase_INSTANCE_PHASE_DRAINING:
				ns.Draining++
			}
		}
	}
	if gpus > 0 {
		s.ReadyGPUUtil = util / float64(gpus)
	}
	if resp, err := d.admin.GetDeployment(ctx, &llmscalerv1.GetDeploymentRequest{Name: demoDeployment}); err == nil {
		s.Desired = int(resp.GetDeployment().GetStatus().GetDesiredReplicas())
	}
	if resp, err := d.admin.ListDecisions(ctx, &llmscalerv1.ListDecisionsRequest{Deployment: demoDeployment, Limit: 1}); err == nil && len(resp.GetDecisions()) > 0 {
		dec := resp.GetDecisions()[0]
		s.Decision = &decisionSample{At: dec.GetTime().AsTime().Sub(start), From: int(dec.GetFromReplicas()), To: int(dec.GetToReplicas()), Reason: dec.GetReason()}
	}
	return s
}

// scheduleRate is the workload's offered rate at t.
func scheduleRate(t time.Duration) float64 {
	for _, p := range demoPhases {
		if t < p.to {
			return p.lo + (p.hi-p.lo)*float64(t-p.from)/float64(p.to-p.from)
		}
	}
	return 0
}

func (d *demo) writeOutputs(rep demoReport, samples []demoSample, results []loadgen.Result, start time.Time) ([]string, error) {
	r := rep.simResult(samples, results, start)
	paths, err := sim.WritePlots(d.f.outDir, []*sim.Result{r}, sim.DefaultPlotThresholds(demoSLO))
	if err != nil {
		return paths, err
	}
	if err := rep.writeJSON(filepath.Join(d.f.outDir, "summary.json")); err != nil {
		return paths, err
	}
	return paths, nil
}

// cleanup deletes the deployment and waits for its servers to stop. A server that has not
// stopped in time is killed through its process group, so that none outlives the demo.
func (d *demo) cleanup(runCtx context.Context) {
	fmt.Fprintln(d.out, "\nstopping: deleting deployment demo and waiting for its servers to stop...")
	cctx, cancel := context.WithTimeout(runCtx, 30*time.Second)
	defer cancel()
	_, _ = d.admin.DeleteDeployment(cctx, &llmscalerv1.DeleteDeploymentRequest{Name: demoDeployment})
	var left []*llmscalerv1.Instance
	stopped := poll(cctx, func() bool {
		resp, err := d.admin.ListInstances(cctx, &llmscalerv1.ListInstancesRequest{Deployment: demoDeployment})
		if err != nil {
			return false
		}
		left = left[:0]
		for _, in := range resp.GetInstances() {
			if p := in.GetStatus().GetPhase(); p != llmscalerv1.InstancePhase_INSTANCE_PHASE_STOPPED && p != llmscalerv1.InstancePhase_INSTANCE_PHASE_FAILED {
				left = append(left, in)
			}
		}
		return len(left) == 0
	})
	if !stopped {
		for _, in := range left {
			if pid := int(in.GetStatus().GetPid()); pid > 0 {
				fmt.Fprintf(d.out, "killing %s (pid %d): it did not stop in time\n", in.GetStatus().GetInstanceId(), pid)
				_ = syscall.Kill(-pid, syscall.SIGKILL)
			}
		}
	}
}

func (d *demo) connectedNodes(ctx context.Context) int {
	resp, err := d.admin.ListNodes(ctx, &llmscalerv1.ListNodesRequest{})
	if err != nil {
		return 0
	}
	n := 0
	for _, nd := range resp.GetNodes() {
		if nd.GetState() == llmscalerv1.NodeState_NODE_STATE_CONNECTED && len(nd.GetGpuSamples()) > 0 {
			n++
		}
	}
	return n
}

func (d *demo) ready(ctx context.Context) int {
	resp, err := d.admin.ListInstances(ctx, &llmscalerv1.ListInstancesRequest{Deployment: demoDeployment})
	if err != nil {
		return 0
	}
	n := 0
	for _, in := range resp.GetInstances() {
		if in.GetStatus().GetPhase() == llmscalerv1.InstancePhase_INSTANCE_PHASE_READY {
			n++
		}
	}
	return n
}

// demoCommands are the commands that inspect the live system; tls are grpcurl's flags for
// the admin certificate.
func demoCommands(tls, grpcAddr, httpAddr, routerURL string) []string {
	return []string{
		fmt.Sprintf(`grpcurl %s -d '{"deployment":"demo","limit":5}' %s llmscaler.v1.AdminService/ListDecisions`, tls, grpcAddr),
		fmt.Sprintf(`grpcurl %s -d '{"deployment":"demo"}' %s llmscaler.v1.AdminService/ListInstances`, tls, grpcAddr),
		fmt.Sprintf(`grpcurl %s %s llmscaler.v1.AdminService/GetClusterStatus`, tls, grpcAddr),
		fmt.Sprintf(`curl -s %s/v1/completions -d '{"model":"demo","prompt":"hi","max_tokens":16}'`, routerURL),
		fmt.Sprintf(`curl -s http://%s/metrics | grep llmscaler_`, httpAddr),
	}
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

// isTerminal reports whether w is a terminal, where the live view redraws in place.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
