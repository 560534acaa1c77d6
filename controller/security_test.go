package controller

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/llmscaler/llmscaler/internal/pki"
	"github.com/llmscaler/llmscaler/internal/transport"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// tlsSet is a development certificate set for one test.
type tlsSet struct{ dir string }

func newTLSSet(t *testing.T, nodes ...string) tlsSet {
	t.Helper()
	dir := t.TempDir()
	if _, err := pki.Write(pki.Set{Dir: dir, Nodes: nodes}); err != nil {
		t.Fatal(err)
	}
	return tlsSet{dir}
}

// creds are the credentials of one file pair of the set ("admin", "node-n1", ...).
func (s tlsSet) creds(t *testing.T, name string) transport.Credentials {
	t.Helper()
	c, _, err := transport.LoadMutualTLS(filepath.Join(s.dir, "ca.crt"), filepath.Join(s.dir, name+".crt"), filepath.Join(s.dir, name+".key"))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// issue signs a certificate with the set's CA: expired ones and the like.
func (s tlsSet) issue(t *testing.T, l pki.Leaf) transport.Credentials {
	t.Helper()
	ca, err := pki.LoadAuthority(filepath.Join(s.dir, "ca.crt"), filepath.Join(s.dir, "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.IssueTLS(l)
	if err != nil {
		t.Fatal(err)
	}
	return transport.MutualTLS(ca.Pool(), cert)
}

// foreign is a client certificate of another CA named caName that trusts this set's
// controller, so that the controller is the one to refuse.
func (s tlsSet) foreign(t *testing.T, caName string, id transport.Identity) transport.Credentials {
	t.Helper()
	other, err := pki.NewAuthority(caName, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := other.IssueTLS(pki.Leaf{Identity: id, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadAuthority(filepath.Join(s.dir, "ca.crt"), filepath.Join(s.dir, "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	return transport.MutualTLS(ca.Pool(), cert)
}

// helloAs opens an agent stream on conn and sends a hello naming node.
func helloAs(t *testing.T, ctx context.Context, conn *grpc.ClientConn, node string) (*grpc.ClientConn, llmscalerv1.AgentService_ConnectClient) {
	t.Helper()
	s, err := llmscalerv1.NewAgentServiceClient(conn).Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(hello(node, "run-1", 2)); err != nil {
		t.Fatal(err)
	}
	return conn, s
}

func dialWith(t *testing.T, addr string, creds transport.Credentials, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, append(transport.DialOptions(creds), opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func adminWith(t *testing.T, addr string, creds transport.Credentials) llmscalerv1.AdminServiceClient {
	return llmscalerv1.NewAdminServiceClient(dialWith(t, addr, creds))
}

// startTLSController starts a leading controller with mutual TLS from set.
func startTLSController(t *testing.T, set tlsSet, ep string, mod func(*Config)) *running {
	t.Helper()
	cfg := testConfig(ep)
	cfg.Credentials = set.creds(t, "controller")
	if mod != nil {
		mod(&cfg)
	}
	return startController(t, cfg)
}

// wantRefused checks a refusal's code and exact message.
func wantRefused(t *testing.T, what string, err error, code codes.Code, msg string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != code || st.Message() != msg {
		t.Errorf("%s: %v\nwant %v: %s", what, err, code, msg)
	}
}

// deploymentNames lists the stored deployments, as admin.
func deploymentNames(t *testing.T, cli llmscalerv1.AdminServiceClient) []string {
	t.Helper()
	resp, err := cli.ListDeployments(ctxT(t), &llmscalerv1.ListDeploymentsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range resp.GetDeployments() {
		out = append(out, d.GetSpec().GetName())
	}
	return out
}

// TestTLSRefusals: with mutual TLS, each caller may do what its identity allows and nothing
// else, and every refusal leaves the desired state as it was.
func TestTLSRefusals(t *testing.T) {
	set := newTLSSet(t, "n1", "n2")
	r := startTLSController(t, set, startEtcd(t), nil)
	waitLeader(t, r)
	addr := r.GRPCAddr()
	adm := adminWith(t, addr, set.creds(t, "admin"))
	ro := adminWith(t, addr, set.creds(t, "readonly"))
	ctx := ctxT(t)

	if _, err := adm.ApplyDeployment(ctx, &llmscalerv1.ApplyDeploymentRequest{Deployment: goodSpec()}); err != nil {
		t.Fatalf("admin apply: %v", err)
	}

	t.Run("readonly applies", func(t *testing.T) {
		spec := goodSpec()
		spec.Name = "sneaky"
		_, err := ro.ApplyDeployment(ctx, &llmscalerv1.ApplyDeploymentRequest{Deployment: spec})
		wantRefused(t, "readonly apply", err, codes.PermissionDenied, "readonly may not call llmscaler.v1.AdminService/ApplyDeployment: it needs admin")
		_, err = ro.DeleteDeployment(ctx, &llmscalerv1.DeleteDeploymentRequest{Name: "llama-8b"})
		wantRefused(t, "readonly delete", err, codes.PermissionDenied, "readonly may not call llmscaler.v1.AdminService/DeleteDeployment: it needs admin")
		_, err = ro.ScaleDeployment(ctx, &llmscalerv1.ScaleDeploymentRequest{Name: "llama-8b", Replicas: proto.Uint32(0)})
		wantRefused(t, "readonly scale", err, codes.PermissionDenied, "readonly may not call llmscaler.v1.AdminService/ScaleDeployment: it needs admin")
		_, err = ro.DrainNode(ctx, &llmscalerv1.DrainNodeRequest{NodeId: "n1"})
		wantRefused(t, "readonly drain", err, codes.PermissionDenied, "readonly may not call llmscaler.v1.AdminService/DrainNode: it needs admin")
		// It may read: the deployment is there as admin left it.
		got, err := ro.GetDeployment(ctx, &llmscalerv1.GetDeploymentRequest{Name: "llama-8b"})
		if err != nil {
			t.Fatalf("readonly get: %v", err)
		}
		if got.GetDeployment().GetGeneration() != 1 || got.GetDeployment().GetScale().ManualReplicas != nil || got.GetDeployment().GetUpdatedBy() != "admin" {
			t.Errorf("deployment changed: %v", got.GetDeployment())
		}
		if names := deploymentNames(t, ro); fmt.Sprint(names) != "[llama-8b]" {
			t.Errorf("deployments %v, want [llama-8b]", names)
		}
	})

	t.Run("readonly claims to be forwarded for admin", func(t *testing.T) {
		// Only a controller's certificate makes the leader believe the caller metadata.
		fctx := metadata.AppendToOutgoingContext(ctx, callerKey, "spiffe://llmscaler/admin")
		_, err := ro.DeleteDeployment(fctx, &llmscalerv1.DeleteDeploymentRequest{Name: "llama-8b"})
		wantRefused(t, "readonly with admin metadata", err, codes.PermissionDenied, "readonly may not call llmscaler.v1.AdminService/DeleteDeployment: it needs admin")
		if names := deploymentNames(t, adm); fmt.Sprint(names) != "[llama-8b]" {
			t.Errorf("deployments %v, want [llama-8b]", names)
		}
	})

	t.Run("an agent impersonates another node", func(t *testing.T) {
		sctx, cancel := context.WithCancel(ctx)
		defer cancel()
		_, s := helloAs(t, sctx, dialWith(t, addr, set.creds(t, "node-n1")), "n2")
		_, err := s.Recv()
		wantRefused(t, "hello as n2 with n1's certificate", err, codes.PermissionDenied,
			`hello.node_id "n2" is not this agent's node: its certificate is for node "n1"`)
		nodes, err := ro.ListNodes(ctx, &llmscalerv1.ListNodesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if len(nodes.GetNodes()) != 0 {
			t.Errorf("nodes registered: %v", nodes.GetNodes())
		}
		// Admin is no agent either.
		s, err = llmscalerv1.NewAgentServiceClient(dialWith(t, addr, set.creds(t, "admin"))).Connect(sctx)
		if err != nil {
			t.Fatal(err)
		}
		_ = s.Send(hello("n1", "run-1", 2))
		_, err = s.Recv()
		wantRefused(t, "admin as an agent", err, codes.PermissionDenied, "admin may not call llmscaler.v1.AgentService/Connect: it needs a node identity")
	})

	t.Run("an agent as itself", func(t *testing.T) {
		sctx, cancel := context.WithCancel(ctx)
		defer cancel()
		conn, s := helloAs(t, sctx, dialWith(t, addr, set.creds(t, "node-n1")), "n1")
		if m, err := s.Recv(); err != nil || m.GetWelcome() == nil {
			t.Fatalf("n1 as itself: %v, %v", m, err)
		}
		waitFor(t, 10*time.Second, "n1 connected", func() bool {
			return nodeState(t, ro, "n1") == llmscalerv1.NodeState_NODE_STATE_CONNECTED
		})
		// A node may not read the admin API.
		_, err := llmscalerv1.NewAdminServiceClient(conn).ListNodes(ctx, &llmscalerv1.ListNodesRequest{})
		wantRefused(t, "node reads", err, codes.PermissionDenied, "node/n1 may not call llmscaler.v1.AdminService/ListNodes: it needs admin or readonly")
	})

	t.Run("routers' calls", func(t *testing.T) {
		router := dialWith(t, addr, set.creds(t, "router"))
		if _, err := llmscalerv1.NewRouterServiceClient(router).ReportRouter(ctx, &llmscalerv1.ReportRouterRequest{RouterId: "r1", Interval: durationpb.New(time.Second)}); err != nil {
			t.Errorf("router report: %v", err)
		}
		_, err := llmscalerv1.NewRouterServiceClient(dialWith(t, addr, set.creds(t, "readonly"))).ReportRouter(ctx, &llmscalerv1.ReportRouterRequest{RouterId: "r1"})
		wantRefused(t, "readonly report", err, codes.PermissionDenied, "readonly may not call llmscaler.v1.RouterService/ReportRouter: it needs router or admin")
		_, err = llmscalerv1.NewAdminServiceClient(router).ApplyDeployment(ctx, &llmscalerv1.ApplyDeploymentRequest{Deployment: goodSpec()})
		wantRefused(t, "router apply", err, codes.PermissionDenied, "router may not call llmscaler.v1.AdminService/ApplyDeployment: it needs admin")
	})

	t.Run("health is open to any certificate", func(t *testing.T) {
		for _, name := range []string{"node-n2", "router", "readonly"} {
			if _, err := healthpb.NewHealthClient(dialWith(t, addr, set.creds(t, name))).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
				t.Errorf("%s health: %v", name, err)
			}
		}
	})

	// Clients the handshake refuses: the controller answers nothing at all.
	spec := goodSpec()
	spec.Name = "intruder"
	for _, tc := range []struct {
		name  string
		creds transport.Credentials
		want  string
	}{
		// Another `llmscaler certs` run: its CA has the same name, so the client offers its
		// certificate and the controller finds the signature is not its CA's.
		{"wrong CA", set.foreign(t, "llmscaler development CA", transport.Identity{Role: transport.RoleAdmin}),
			`connection error: desc = "error reading server preface: remote error: tls: unknown certificate authority"`},
		// A CA of another name: the client finds no certificate the controller asks for.
		{"wrong CA of another name", set.foreign(t, "another CA", transport.Identity{Role: transport.RoleAdmin}),
			`connection error: desc = "error reading server preface: remote error: tls: certificate required"`},
		{"expired certificate", set.issue(t, pki.Leaf{Identity: transport.Identity{Role: transport.RoleAdmin},
			NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)}),
			`connection error: desc = "error reading server preface: remote error: tls: expired certificate"`},
		{"plaintext client on the TLS port", transport.Plaintext, `connection error: desc = "error reading server preface: `},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			// In TLS 1.3 the client's handshake ends before the server has checked its
			// certificate, so a call can fail writing (broken pipe) before the server's alert
			// is read; then it is tried again on a new connection.
			for range 10 {
				cli := adminWith(t, addr, tc.creds)
				if _, err = cli.ApplyDeployment(ctx, &llmscalerv1.ApplyDeploymentRequest{Deployment: spec}); err == nil || !strings.Contains(err.Error(), "write: ") {
					break
				}
			}
			if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), tc.want) {
				t.Errorf("apply: %v\nwant Unavailable: %s", err, tc.want)
			}
			if names := deploymentNames(t, adm); fmt.Sprint(names) != "[llama-8b]" {
				t.Errorf("deployments %v, want [llama-8b]", names)
			}
		})
	}

	t.Run("oversized message", func(t *testing.T) {
		big := goodSpec()
		big.Name = "big"
		big.ServedModels = []string{strings.Repeat("m", transport.MaxMessageBytes)}
		// This side's own limit stops it before it is sent...
		_, err := adm.ApplyDeployment(ctx, &llmscalerv1.ApplyDeploymentRequest{Deployment: big})
		size := proto.Size(&llmscalerv1.ApplyDeploymentRequest{Deployment: big})
		wantRefused(t, "oversized apply, sent", err, codes.ResourceExhausted,
			fmt.Sprintf("trying to send message larger than max (%d vs. %d)", size, transport.MaxMessageBytes))
		// ...and a client without that limit is stopped by the controller's.
		loose := llmscalerv1.NewAdminServiceClient(dialWith(t, addr, set.creds(t, "admin"),
			grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(4*transport.MaxMessageBytes))))
		_, err = loose.ApplyDeployment(ctx, &llmscalerv1.ApplyDeploymentRequest{Deployment: big})
		wantRefused(t, "oversized apply, received", err, codes.ResourceExhausted,
			fmt.Sprintf("grpc: received message larger than max (%d vs. %d)", size, transport.MaxMessageBytes))
		if names := deploymentNames(t, adm); fmt.Sprint(names) != "[llama-8b]" {
			t.Errorf("deployments %v, want [llama-8b]", names)
		}
	})
}

// TestAdminRateLimit: changing calls beyond a caller's rate are refused, and change nothing;
// reads and other callers go on.
func TestAdminRateLimit(t *testing.T) {
	set := newTLSSet(t)
	r := startTLSController(t, set, startEtcd(t), func(c *Config) { c.AdminRate, c.AdminBurst = 0.001, 3 })
	waitLeader(t, r)
	adm := adminWith(t, r.GRPCAddr(), set.creds(t, "admin"))
	ctx := ctxT(t)
	for i := range 3 {
		spec := goodSpec()
		spec.Name = fmt.Sprintf("d%d", i)
		if _, err := adm.ApplyDeployment(ctx, &llmscalerv1.ApplyDeploymentRequest{Deployment: spec}); err != nil {
			t.Fatalf("apply %d: %v", i, err)
		}
	}
	spec := goodSpec()
	spec.Name = "d3"
	_, err := adm.ApplyDeployment(ctx, &llmscalerv1.ApplyDeploymentRequest{Deployment: spec})
	wantRefused(t, "fourth apply", err, codes.ResourceExhausted, "admin made more than 0.001 changing admin calls a second (bursts of 3): slow down and retry")
	if names := deploymentNames(t, adm); fmt.Sprint(names) != "[d0 d1 d2]" {
		t.Errorf("deployments %v, want [d0 d1 d2]", names)
	}
}

// TestActorsInTheJournal: who scaled, applied, deleted, cordoned and uncordoned is in the
// decision journal and the events, as the short form of the caller's identity.
func TestActorsInTheJournal(t *testing.T) {
	set := newTLSSet(t, "n1")
	r := startTLSController(t, set, startEtcd(t), nil)
	waitLeader(t, r)
	adm := adminWith(t, r.GRPCAddr(), set.creds(t, "admin"))
	ctx := ctxT(t)
	events, err := adm.WatchEvents(ctx, &llmscalerv1.WatchEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := events.Header(); err != nil {
		t.Fatal(err)
	}
	// A node must be known for cordons to have events.
	conn := dialWith(t, r.GRPCAddr(), set.creds(t, "node-n1"))
	s, err := llmscalerv1.NewAgentServiceClient(conn).Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(hello("n1", "run-1", 2)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}

	if _, err := adm.ApplyDeployment(ctx, &llmscalerv1.ApplyDeploymentRequest{Deployment: goodSpec()}); err != nil {
		t.Fatal(err)
	}
	if _, err := adm.ScaleDeployment(ctx, &llmscalerv1.ScaleDeploymentRequest{Name: "llama-8b", Replicas: proto.Uint32(2), Autoscaling: llmscalerv1.AutoscalingAction_AUTOSCALING_ACTION_PAUSE}); err != nil {
		t.Fatal(err)
	}
	if _, err := adm.CordonNode(ctx, &llmscalerv1.CordonNodeRequest{NodeId: "n1", Reason: "fan"}); err != nil {
		t.Fatal(err)
	}
	if _, err := adm.UncordonNode(ctx, &llmscalerv1.UncordonNodeRequest{NodeId: "n1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := adm.DrainNode(ctx, &llmscalerv1.DrainNodeRequest{NodeId: "n1"}); err != nil {
		t.Fatal(err)
	}

	want := map[llmscalerv1.EventType]bool{
		llmscalerv1.EventType_EVENT_TYPE_DEPLOYMENT_APPLIED: true, llmscalerv1.EventType_EVENT_TYPE_DECISION: true,
		llmscalerv1.EventType_EVENT_TYPE_NODE_CORDONED: true, llmscalerv1.EventType_EVENT_TYPE_NODE_UNCORDONED: true,
	}
	var decision *llmscalerv1.Decision
	for len(want) > 0 {
		resp, err := events.Recv()
		if err != nil {
			t.Fatalf("events: %v (still waiting for %v)", err, want)
		}
		e := resp.GetEvent()
		if !want[e.GetType()] {
			continue
		}
		if e.GetType() == llmscalerv1.EventType_EVENT_TYPE_DECISION {
			if e.GetDecision().GetActor() == "" {
				continue // the autoscaler's own
			}
			decision = e.GetDecision()
		}
		if e.GetActor() != "admin" || !strings.HasSuffix(e.GetMessage(), ", by admin") && e.GetDecision() == nil {
			t.Errorf("%v event: actor %q, message %q; want admin", e.GetType(), e.GetActor(), e.GetMessage())
		}
		delete(want, e.GetType())
	}
	if decision.GetReason() != "scaled by hand by admin: held at 2 replicas, autoscaling paused" || decision.GetToReplicas() != 2 {
		t.Errorf("decision %v", decision)
	}
	ds, err := adm.ListDecisions(ctx, &llmscalerv1.ListDecisionsRequest{Deployment: "llama-8b"})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, d := range ds.GetDecisions() {
		found = found || d.GetActor() == "admin" && strings.HasPrefix(d.GetReason(), "scaled by hand by admin")
	}
	if !found {
		t.Errorf("no decision by admin in the journal: %v", ds.GetDecisions())
	}

	if _, err := adm.DeleteDeployment(ctx, &llmscalerv1.DeleteDeploymentRequest{Name: "llama-8b"}); err != nil {
		t.Fatal(err)
	}
	for {
		resp, err := events.Recv()
		if err != nil {
			t.Fatalf("events: %v, want the delete", err)
		}
		if e := resp.GetEvent(); e.GetType() == llmscalerv1.EventType_EVENT_TYPE_DEPLOYMENT_DELETED {
			if e.GetActor() != "admin" || e.GetMessage() != "deployment llama-8b deleted, by admin" {
				t.Errorf("delete event: actor %q, message %q", e.GetActor(), e.GetMessage())
			}
			break
		}
	}
}

// TestForwardedIdentity: a follower forwards a call as its caller, and the leader decides it
// as that caller: readonly may read through the follower, not watch endpoints, and the
// follower itself refuses before forwarding.
func TestForwardedIdentity(t *testing.T) {
	set := newTLSSet(t)
	ep := startEtcd(t)
	a := startTLSController(t, set, ep, nil)
	waitLeader(t, a)
	b := startTLSController(t, set, ep, nil)
	waitFollowing(t, a, b)
	ro := adminWith(t, b.GRPCAddr(), set.creds(t, "readonly"))
	ctx := ctxT(t)
	cs, err := ro.GetClusterStatus(ctx, &llmscalerv1.GetClusterStatusRequest{})
	if err != nil {
		t.Fatalf("readonly via the follower: %v", err)
	}
	if cs.GetAnsweredBy().GetId() != a.ID() {
		t.Errorf("answered by %s, want the leader %s", cs.GetAnsweredBy().GetId(), a.ID())
	}
	w, err := ro.WatchEndpoints(ctx, &llmscalerv1.WatchEndpointsRequest{})
	if err == nil {
		_, err = w.Recv()
	}
	wantRefused(t, "readonly watches endpoints via the follower", err, codes.PermissionDenied,
		"readonly may not call llmscaler.v1.AdminService/WatchEndpoints: it needs router or admin")

	// The leader checks again, as the forwarded caller: a controller's certificate forwarding
	// for readonly may not do what readonly may not.
	ctl := llmscalerv1.NewAdminServiceClient(dialWith(t, a.GRPCAddr(), set.creds(t, "controller")))
	fctx := metadata.AppendToOutgoingContext(ctx, callerKey, "spiffe://llmscaler/readonly")
	_, err = ctl.ApplyDeployment(fctx, &llmscalerv1.ApplyDeploymentRequest{Deployment: goodSpec()})
	wantRefused(t, "controller forwarding for readonly", err, codes.PermissionDenied,
		"readonly (forwarded by a controller) may not call llmscaler.v1.AdminService/ApplyDeployment: it needs admin")
	_, err = ctl.ListNodes(ctx, &llmscalerv1.ListNodesRequest{})
	wantRefused(t, "controller for itself", err, codes.PermissionDenied,
		"controller may not call llmscaler.v1.AdminService/ListNodes: it needs admin or readonly")
	if _, err := ctl.ListNodes(fctx, &llmscalerv1.ListNodesRequest{}); err != nil {
		t.Errorf("controller forwarding readonly's read: %v", err)
	}
	if names := deploymentNames(t, adminWith(t, a.GRPCAddr(), set.creds(t, "admin"))); len(names) != 0 {
		t.Errorf("deployments %v, want none", names)
	}
}
