package loadgen

import (
	"context"
	"net"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// The balancer picks the target with the fewest outstanding requests, in turn on ties.
func TestBalancer(t *testing.T) {
	type step struct {
		pick    string // want this target picked ("" for none)
		release string // or release this one
	}
	tests := []struct {
		name    string
		targets []string
		steps   []step
	}{
		{name: "none", targets: nil, steps: []step{{pick: ""}, {pick: ""}}},
		{name: "ties round robin", targets: []string{"b", "a", "c"}, steps: []step{
			{pick: "a"}, {pick: "b"}, {pick: "c"}, {pick: "a"}, {pick: "b"}, {pick: "c"}}},
		{name: "least outstanding", targets: []string{"a", "b"}, steps: []step{
			{pick: "a"}, {pick: "b"}, {pick: "a"}, // a 2, b 1
			{release: "b"}, {pick: "b"}, {pick: "b"}, // b 0 then 1: b, b
			{release: "a"}, {release: "a"}, // a 0, b 2
			{pick: "a"}, {pick: "a"}, // a 0 then 1, both fewer than b's 2
			{pick: "b"}, // a 2, b 2: a tie, and b's turn after a
			{pick: "a"}, // a 2, b 3
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := newBalancer()
			b.set(tc.targets)
			for i, s := range tc.steps {
				if s.release != "" {
					b.release(s.release)
					continue
				}
				got, ok := b.pick()
				if got != s.pick || ok != (s.pick != "") {
					t.Fatalf("step %d: picked %q, %v; want %q", i, got, ok, s.pick)
				}
			}
		})
	}
}

// A target that leaves keeps its outstanding count; one that comes back is not flooded.
func TestBalancerTargetsChange(t *testing.T) {
	b := newBalancer()
	b.set([]string{"a", "b"})
	b.pick() // a
	b.pick() // b
	b.pick() // a: a 2, b 1
	if !b.set([]string{"b"}) || b.set([]string{"b"}) {
		t.Fatal("set does not report changes")
	}
	if got, _ := b.pick(); got != "b" { // b 2
		t.Fatalf("picked %q, want b", got)
	}
	b.set([]string{"a", "b", "c"})
	for _, want := range []string{"c", "c"} { // a 2, b 2, c 0
		if got, _ := b.pick(); got != want {
			t.Fatalf("picked %q, want %s", got, want)
		}
	}
	if diff := cmp.Diff(map[string]int{"a": 2, "b": 2, "c": 2}, b.sentByTarget()); diff != "" {
		t.Errorf("sent by target (-want +got):\n%s", diff)
	}
}

// fakeAdmin answers ListInstances with fixed instances.
type fakeAdmin struct {
	llmscalerv1.UnimplementedAdminServiceServer
	instances []*llmscalerv1.Instance
	lastReq   chan *llmscalerv1.ListInstancesRequest
}

func (f *fakeAdmin) ListInstances(_ context.Context, req *llmscalerv1.ListInstancesRequest) (*llmscalerv1.ListInstancesResponse, error) {
	select {
	case f.lastReq <- req:
	default:
	}
	return &llmscalerv1.ListInstancesResponse{Instances: f.instances}, nil
}

func instance(deployment, endpoint string, phase llmscalerv1.InstancePhase) *llmscalerv1.Instance {
	return &llmscalerv1.Instance{NodeId: "n1", Status: &llmscalerv1.InstanceStatus{
		InstanceId: endpoint, Deployment: deployment, Phase: phase, Endpoint: endpoint}}
}

// serveAdmin serves admin on lis until the test ends.
func serveAdmin(t *testing.T, lis net.Listener, admin llmscalerv1.AdminServiceServer) {
	t.Helper()
	srv := grpc.NewServer()
	llmscalerv1.RegisterAdminServiceServer(srv, admin)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(); <-done })
}

// Only READY instances with an endpoint, of the deployment asked for, are targets.
func TestAdminTargets(t *testing.T) {
	admin := &fakeAdmin{lastReq: make(chan *llmscalerv1.ListInstancesRequest, 1), instances: []*llmscalerv1.Instance{
		instance("chat", "10.0.0.1:8000", llmscalerv1.InstancePhase_INSTANCE_PHASE_READY),
		instance("chat", "10.0.0.2:8000", llmscalerv1.InstancePhase_INSTANCE_PHASE_STARTING),
		instance("chat", "10.0.0.3:8000", llmscalerv1.InstancePhase_INSTANCE_PHASE_DRAINING),
		instance("chat", "10.0.0.4:8000", llmscalerv1.InstancePhase_INSTANCE_PHASE_FAILED),
		instance("chat", "", llmscalerv1.InstancePhase_INSTANCE_PHASE_READY),
		instance("other", "10.0.0.6:8000", llmscalerv1.InstancePhase_INSTANCE_PHASE_READY),
		instance("chat", "http://10.0.0.7:9000/", llmscalerv1.InstancePhase_INSTANCE_PHASE_READY),
	}}
	lis := bufconn.Listen(1 << 20)
	serveAdmin(t, lis, admin)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	got, err := NewAdminTargets(conn, "chat").Targets(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"http://10.0.0.1:8000", "http://10.0.0.7:9000"}, got); diff != "" {
		t.Errorf("targets (-want +got):\n%s", diff)
	}
	if req := <-admin.lastReq; req.GetDeployment() != "chat" {
		t.Errorf("listed deployment %q, want chat", req.GetDeployment())
	}
}
