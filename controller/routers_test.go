package controller

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// loopAgent is a raw agent that reports its instances every 50 ms, follows the desired
// states it receives and hands what they changed to a channel; instances it is told to start
// turn READY at once.
type loopAgent struct {
	a       *rawAgent
	mu      sync.Mutex
	seq     uint64
	live    map[string]*llmscalerv1.InstanceStatus
	changes chan change
	busy    bool // report work in flight (a replica with requests)
}

func startLoopAgent(t *testing.T, addr string) *loopAgent {
	t.Helper()
	h := hello("n1", "run-1", 4)
	h.GetHello().Profiles = []string{"p"}
	raw, _, err := connect(t, addr, h)
	if err != nil {
		t.Fatal(err)
	}
	la := &loopAgent{a: raw, live: map[string]*llmscalerv1.InstanceStatus{}, changes: make(chan change, 64)}
	go func() {
		for {
			m, err := raw.stream.Recv()
			if err != nil {
				close(la.changes)
				return
			}
			if ds := m.GetDesired(); ds != nil {
				la.mu.Lock()
				cs := applyDesired(la.live, ds, func(s *llmscalerv1.StartInstance) *llmscalerv1.InstanceStatus {
					return &llmscalerv1.InstanceStatus{InstanceId: s.GetInstanceId(), Deployment: s.GetDeployment(),
						Profile: s.GetProfile(), Phase: llmscalerv1.InstancePhase_INSTANCE_PHASE_READY, GpuIndices: s.GetGpuIndices(),
						Endpoint: "127.0.0.1:18000", MaxInFlight: 4, StartedAt: timestamppb.Now(), ColdStart: durationpb.New(time.Second)}
				})
				la.mu.Unlock()
				for _, c := range cs {
					la.changes <- c
				}
			}
		}
	}()
	go func() {
		tk := time.NewTicker(50 * time.Millisecond)
		defer tk.Stop()
		for range tk.C {
			la.mu.Lock()
			la.seq++
			r := &llmscalerv1.Report{Seq: la.seq, Time: timestamppb.Now()}
			for _, in := range la.live {
				in.Metrics = &llmscalerv1.QueueMetrics{ScrapedAt: timestamppb.Now(), Ttft: &llmscalerv1.LatencySummary{}, E2ELatency: &llmscalerv1.LatencySummary{}}
				if la.busy {
					in.Metrics.Running = 1
				}
				r.Instances = append(r.Instances, in)
			}
			la.mu.Unlock()
			if raw.stream.Send(&llmscalerv1.ConnectRequest{Msg: &llmscalerv1.ConnectRequest_Report{Report: r}}) != nil {
				return
			}
		}
	}()
	return la
}

func (la *loopAgent) next(t *testing.T, within time.Duration, want func(change) bool) *change {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case c, ok := <-la.changes:
			if !ok {
				t.Fatal("agent stream ended")
			}
			if want(c) {
				return &c
			}
		case <-deadline:
			return nil
		}
	}
}

// TestScaleFromZeroThroughRouters drives a min_replicas 0 deployment through a router's
// reports and watches its routing table: no replica without demand; a request waiting in
// a router starts one, which gets into the table once READY; with the demand gone the
// deployment goes back to zero after its idle period, and the instance leaves the table as
// soon as its stop is sent.
func TestScaleFromZeroThroughRouters(t *testing.T) {
	r := startController(t, testConfig(startEtcd(t)))
	waitLeader(t, r)
	ctx := ctxT(t)
	cli := admin(t, r)
	routers := llmscalerv1.NewRouterServiceClient(dial(t, r.GRPCAddr()))
	ag := startLoopAgent(t, r.GRPCAddr())

	spec := &llmscalerv1.DeploymentSpec{Name: "d", Profile: "p", MinReplicas: 0, MaxReplicas: 3,
		ServedModels: []string{"llama-3-8b"}, IdleToZero: durationpb.New(time.Second), ColdStartWait: durationpb.New(time.Minute),
		Policy: &llmscalerv1.Policy{Kind: &llmscalerv1.Policy_Slo{Slo: &llmscalerv1.SloPolicy{ScaleDownDelay: durationpb.New(time.Second)}},
			StableWindow: durationpb.New(2 * time.Second), PanicWindow: durationpb.New(500 * time.Millisecond)}}
	if _, err := cli.ApplyDeployment(ctx, &llmscalerv1.ApplyDeploymentRequest{Deployment: spec}); err != nil {
		t.Fatal(err)
	}

	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watch, err := cli.WatchEndpoints(wctx, &llmscalerv1.WatchEndpointsRequest{Deployments: []string{"d"}})
	if err != nil {
		t.Fatal(err)
	}
	tables := make(chan *llmscalerv1.WatchEndpointsResponse, 64)
	go func() {
		for {
			m, err := watch.Recv()
			if err != nil {
				close(tables)
				return
			}
			tables <- m
		}
	}()
	nextTable := func(within time.Duration, want func([]*llmscalerv1.Endpoint) bool) *llmscalerv1.DeploymentEndpoints {
		t.Helper()
		deadline := time.After(within)
		for {
			select {
			case m, ok := <-tables:
				if !ok {
					t.Fatal("endpoint watch ended")
				}
				for _, d := range m.GetDeployments() {
					if d.GetDeployment() == "d" && want(d.GetEndpoints()) {
						return d
					}
				}
			case <-deadline:
				return nil
			}
		}
	}
	first := nextTable(5*time.Second, func(eps []*llmscalerv1.Endpoint) bool { return len(eps) == 0 })
	if first == nil || first.GetServedModels()[0] != "llama-3-8b" || first.GetColdStartWait().AsDuration() != time.Minute {
		t.Fatalf("first table %v, want d with no endpoint, its served model and wait", first)
	}
	isStart := func(c change) bool { return c.start != nil }
	if c := ag.next(t, time.Second, isStart); c != nil {
		t.Fatalf("started %v without any demand at min_replicas 0", c)
	}

	report := func(waiting uint32, arrivals uint64) {
		t.Helper()
		_, err := routers.ReportRouter(ctx, &llmscalerv1.ReportRouterRequest{RouterId: "router-1", Time: timestamppb.Now(),
			Interval:    durationpb.New(100 * time.Millisecond),
			Deployments: []*llmscalerv1.RouterDeploymentStats{{Deployment: "d", Waiting: waiting, Arrivals: arrivals}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	report(1, 1)
	demandAt := time.Now()
	if c := ag.next(t, 5*time.Second, isStart); c == nil {
		t.Fatal("no start after a request waited in a router")
	}
	withOne := nextTable(5*time.Second, func(eps []*llmscalerv1.Endpoint) bool { return len(eps) == 1 })
	if withOne == nil || withOne.GetEndpoints()[0].GetAddress() != "127.0.0.1:18000" || withOne.GetEndpoints()[0].GetMaxInFlight() != 4 {
		t.Fatalf("table %v, want the READY instance with its address and in-flight cap", withOne)
	}
	// The decision is journaled once its reconcile pass is done, which may be after the
	// start it sent has come up: wait for it.
	var decs *llmscalerv1.ListDecisionsResponse
	explained := func() bool {
		var err error
		if decs, err = cli.ListDecisions(ctx, &llmscalerv1.ListDecisionsRequest{Deployment: "d"}); err != nil {
			t.Fatal(err)
		}
		for _, d := range decs.GetDecisions() {
			if strings.Contains(d.GetReason(), "scale from zero: 1 requests waiting in routers") {
				return true
			}
		}
		return false
	}
	for deadline := time.Now().Add(5 * time.Second); !explained(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no decision explains the start from zero: %v", decs.GetDecisions())
		}
	}

	// The request is served (the router's queue empties), then nothing arrives.
	report(0, 0)
	stop := ag.next(t, 10*time.Second, func(c change) bool { return c.stop != nil })
	if stop == nil {
		decs, _ := cli.ListDecisions(ctx, &llmscalerv1.ListDecisionsRequest{Deployment: "d"})
		var rs []string
		for _, d := range decs.GetDecisions() {
			rs = append(rs, d.GetReason())
		}
		t.Fatalf("never went back to zero after the idle period; decisions:\n%s", strings.Join(rs, "\n"))
	}
	if idle := time.Since(demandAt); idle < time.Second {
		t.Fatalf("stopped %v after the last request, before the 1 s idle period", idle)
	}
	if empty := nextTable(2*time.Second, func(eps []*llmscalerv1.Endpoint) bool { return len(eps) == 0 }); empty == nil {
		t.Fatal("the stopped instance stayed in the routing table")
	}
}

func TestReportRouterRefusesBadInput(t *testing.T) {
	r := startController(t, testConfig(startEtcd(t)))
	waitLeader(t, r)
	routers := llmscalerv1.NewRouterServiceClient(dial(t, r.GRPCAddr()))
	good := func() *llmscalerv1.ReportRouterRequest {
		return &llmscalerv1.ReportRouterRequest{RouterId: "r1", Interval: durationpb.New(time.Second),
			Deployments: []*llmscalerv1.RouterDeploymentStats{{Deployment: "d", Instances: []*llmscalerv1.RouterInstanceStats{{InstanceId: "d-1"}}}}}
	}
	tests := []struct {
		name  string
		mod   func(*llmscalerv1.ReportRouterRequest)
		field string
	}{
		{"no router id", func(r *llmscalerv1.ReportRouterRequest) { r.RouterId = "" }, "router_id"},
		{"no interval", func(r *llmscalerv1.ReportRouterRequest) { r.Interval = nil }, "interval"},
		{"interval too long", func(r *llmscalerv1.ReportRouterRequest) { r.Interval = durationpb.New(time.Hour) }, "interval"},
		{"bad deployment", func(r *llmscalerv1.ReportRouterRequest) { r.Deployments[0].Deployment = "Bad_Name" }, "deployments[0].deployment"},
		{"empty instance", func(r *llmscalerv1.ReportRouterRequest) { r.Deployments[0].Instances[0].InstanceId = "" }, "deployments[0].instances[0].instance_id"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := good()
			tc.mod(req)
			_, err := routers.ReportRouter(ctxT(t), req)
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tc.field) {
				t.Fatalf("got %v, want InvalidArgument naming %s", err, tc.field)
			}
		})
	}
	if _, err := routers.ReportRouter(ctxT(t), good()); err != nil {
		t.Fatalf("a good report: %v", err)
	}
}
