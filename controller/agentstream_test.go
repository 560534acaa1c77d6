package controller

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// rawAgent speaks the agent protocol by hand, so tests can send what a real agent never would.
type rawAgent struct {
	stream llmscalerv1.AgentService_ConnectClient
	cancel context.CancelFunc
}

func hello(node, run string, gpus int) *llmscalerv1.ConnectRequest {
	h := &llmscalerv1.Hello{NodeId: node, RunId: run, AgentVersion: "test", GpuBackend: "fake", Labels: map[string]string{"zone": "a"}}
	for i := range gpus {
		h.Gpus = append(h.Gpus, &llmscalerv1.Gpu{Index: uint32(i), Uuid: fmt.Sprintf("GPU-fake-%s-%d", node, i), Name: "Fake GPU", MemoryTotalMib: 81920})
	}
	return &llmscalerv1.ConnectRequest{Msg: &llmscalerv1.ConnectRequest_Hello{Hello: h}}
}

func connect(t *testing.T, addr string, first *llmscalerv1.ConnectRequest) (*rawAgent, *llmscalerv1.Welcome, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s, err := llmscalerv1.NewAgentServiceClient(dial(t, addr)).Connect(ctx)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	if err := s.Send(first); err != nil {
		cancel()
		return nil, nil, err
	}
	m, err := s.Recv()
	if err != nil {
		cancel()
		return nil, nil, err
	}
	if m.GetWelcome() == nil {
		cancel()
		return nil, nil, fmt.Errorf("first reply %v is not a welcome", m)
	}
	return &rawAgent{stream: s, cancel: cancel}, m.GetWelcome(), nil
}

// change is one thing a desired state asked of a fake agent: a start or a drain.
type change struct {
	start *llmscalerv1.StartInstance
	stop  *llmscalerv1.StopInstance
}

// applyDesired makes a fake agent's live instances follow a desired state as the real agent
// does (drains first, then starts of what it does not run; what is in neither list stays) and
// returns what changed. A drained instance is gone at once: these fakes have no drain.
func applyDesired(live map[string]*llmscalerv1.InstanceStatus, ds *llmscalerv1.DesiredState, run func(*llmscalerv1.StartInstance) *llmscalerv1.InstanceStatus) []change {
	var out []change
	for _, d := range ds.GetDrain() {
		if live[d.GetInstanceId()] != nil {
			delete(live, d.GetInstanceId())
			out = append(out, change{stop: d})
		}
	}
	for _, s := range ds.GetInstances() {
		if live[s.GetInstanceId()] == nil {
			live[s.GetInstanceId()] = run(s)
			out = append(out, change{start: s})
		}
	}
	return out
}

func nodeState(t *testing.T, cli llmscalerv1.AdminServiceClient, id string) llmscalerv1.NodeState {
	t.Helper()
	resp, err := cli.GetNode(ctxT(t), &llmscalerv1.GetNodeRequest{NodeId: id})
	if err != nil {
		return llmscalerv1.NodeState_NODE_STATE_UNSPECIFIED
	}
	return resp.GetNode().GetState()
}

func TestAgentStreamLifecycle(t *testing.T) {
	r := startController(t, testConfig(startEtcd(t)))
	waitLeader(t, r)
	cli := admin(t, r)
	ctx := ctxT(t)
	events, err := cli.WatchEvents(ctx, &llmscalerv1.WatchEventsRequest{NodeId: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := events.Header(); err != nil { // subscribed
		t.Fatal(err)
	}

	a, w, err := connect(t, r.GRPCAddr(), hello("n1", "run-1", 8))
	if err != nil {
		t.Fatal(err)
	}
	if w.GetEpoch() <= 0 || w.GetControllerId() != r.ID() || w.GetReportInterval().AsDuration() != 100*time.Millisecond {
		t.Fatalf("welcome %v", w)
	}
	util := 42.0
	err = a.stream.Send(&llmscalerv1.ConnectRequest{Msg: &llmscalerv1.ConnectRequest_Report{Report: &llmscalerv1.Report{
		Seq: 1, Time: timestamppb.Now(),
		Gpus:      []*llmscalerv1.GpuSample{{Index: 0, Uuid: "GPU-fake-n1-0", UtilizationPercent: &util}},
		Instances: []*llmscalerv1.InstanceStatus{{InstanceId: "i-1", Deployment: "llama-8b", Phase: llmscalerv1.InstancePhase_INSTANCE_PHASE_READY}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	var node *llmscalerv1.GetNodeResponse
	waitFor(t, 5*time.Second, "the report to show", func() bool {
		node, err = cli.GetNode(ctx, &llmscalerv1.GetNodeRequest{NodeId: "n1"})
		return err == nil && len(node.GetNode().GetGpuSamples()) == 1
	})
	n := node.GetNode()
	if n.GetState() != llmscalerv1.NodeState_NODE_STATE_CONNECTED || len(n.GetGpus()) != 8 || n.GetGpuSamples()[0].GetUtilizationPercent() != 42 || n.GetLabels()["zone"] != "a" {
		t.Fatalf("node %v", n)
	}
	if len(node.GetInstances()) != 1 || node.GetInstances()[0].GetInstanceId() != "i-1" {
		t.Fatalf("instances %v", node.GetInstances())
	}
	inst, err := cli.ListInstances(ctx, &llmscalerv1.ListInstancesRequest{Deployment: "llama-8b"})
	if err != nil || len(inst.GetInstances()) != 1 || inst.GetInstances()[0].GetNodeId() != "n1" {
		t.Fatalf("ListInstances: %v %v", inst, err)
	}
	cs, err := cli.GetClusterStatus(ctx, &llmscalerv1.GetClusterStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if cs.GetNodesConnected() != 1 || cs.GetGpus() != 8 || cs.GetInstances() != 1 || cs.GetLeader().GetId() != r.ID() || cs.GetEpoch() != w.GetEpoch() || len(cs.GetEtcdMembers()) != 1 ||
		!cs.GetEtcdMembers()[0].GetIsLeader() || !cs.GetEtcdMembers()[0].GetReachable() {
		t.Fatalf("cluster status %v", cs)
	}

	// The agent goes away: the node is disconnected at once and lost after the grace period.
	a.cancel()
	waitFor(t, 5*time.Second, "node lost", func() bool { return nodeState(t, cli, "n1") == llmscalerv1.NodeState_NODE_STATE_LOST })

	want := []llmscalerv1.EventType{
		llmscalerv1.EventType_EVENT_TYPE_NODE_CONNECTED,
		llmscalerv1.EventType_EVENT_TYPE_INSTANCE_PHASE,
		llmscalerv1.EventType_EVENT_TYPE_NODE_DISCONNECTED,
		llmscalerv1.EventType_EVENT_TYPE_NODE_LOST,
	}
	for _, typ := range want {
		e, err := events.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if e.GetEvent().GetType() != typ || e.GetEvent().GetNodeId() != "n1" || e.GetEvent().GetMessage() == "" {
			t.Fatalf("event %v, want %v", e.GetEvent(), typ)
		}
	}

	// A lost node is stored as lost: the next leader starts from that.
	waitFor(t, 5*time.Second, "the lost state stored", func() bool {
		rec, err := r.store.node(ctx, "n1")
		return err == nil && rec.GetState() == llmscalerv1.NodeState_NODE_STATE_LOST && len(rec.GetGpus()) == 8
	})
}

func TestAgentStreamRefusals(t *testing.T) {
	r := startController(t, testConfig(startEtcd(t)))
	waitLeader(t, r)

	t.Run("first message not a hello", func(t *testing.T) {
		_, _, err := connect(t, r.GRPCAddr(), &llmscalerv1.ConnectRequest{Msg: &llmscalerv1.ConnectRequest_Report{Report: &llmscalerv1.Report{Seq: 1}}})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "first message must be a hello") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("bad node id", func(t *testing.T) {
		_, _, err := connect(t, r.GRPCAddr(), hello("bad node", "r", 1))
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "hello.node_id") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("node id held by another process", func(t *testing.T) {
		if _, _, err := connect(t, r.GRPCAddr(), hello("n2", "run-a", 1)); err != nil {
			t.Fatal(err)
		}
		_, _, err := connect(t, r.GRPCAddr(), hello("n2", "run-b", 1))
		if status.Code(err) != codes.AlreadyExists || !strings.Contains(err.Error(), `node "n2" is held by another agent process`) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("same process reconnecting replaces its stream", func(t *testing.T) {
		old, _, err := connect(t, r.GRPCAddr(), hello("n3", "run-a", 1))
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := connect(t, r.GRPCAddr(), hello("n3", "run-a", 1)); err != nil {
			t.Fatalf("reconnect refused: %v", err)
		}
		for {
			_, err := old.stream.Recv()
			if err == nil {
				continue // a heartbeat sent before the replacement
			}
			if status.Code(err) != codes.Aborted {
				t.Fatalf("old stream ended with %v, want Aborted", err)
			}
			break
		}
		if got := nodeState(t, admin(t, r), "n3"); got != llmscalerv1.NodeState_NODE_STATE_CONNECTED {
			t.Fatalf("node state %v after replacement, want connected", got)
		}
	})
	t.Run("silent agent is cut off", func(t *testing.T) {
		a, _, err := connect(t, r.GRPCAddr(), hello("n4", "run-a", 1))
		if err != nil {
			t.Fatal(err)
		}
		for {
			_, err := a.stream.Recv()
			if err == nil {
				continue
			}
			if status.Code(err) != codes.DeadlineExceeded || !strings.Contains(err.Error(), "agent silent") {
				t.Fatalf("silent agent's stream ended with %v", err)
			}
			break
		}
	})
}

// nextDesired receives until a desired state comes, answering nothing.
func nextDesired(t *testing.T, a *rawAgent) *llmscalerv1.DesiredState {
	t.Helper()
	for {
		m, err := a.stream.Recv()
		if err != nil {
			t.Fatalf("waiting for a desired state: %v", err)
		}
		if ds := m.GetDesired(); ds != nil {
			return ds
		}
	}
}

func instanceIDs(ds *llmscalerv1.DesiredState) []string {
	var ids []string
	for _, s := range ds.GetInstances() {
		ids = append(ids, s.GetInstanceId())
	}
	return ids
}

// TestDesiredStateSurvivesStreams: a node's desired state goes out whole on every stream, so
// starts placed on a stream that then broke reach the agent on the next one, unchanged (not
// lost, not placed again); a start the agent refuses is given up at once and placed anew.
func TestDesiredStateSurvivesStreams(t *testing.T) {
	r := startController(t, testConfig(startEtcd(t)))
	waitLeader(t, r)
	ctx := ctxT(t)
	h := hello("n1", "run-1", 2)
	h.GetHello().Profiles = []string{"p"}
	a, w, err := connect(t, r.GRPCAddr(), h)
	if err != nil {
		t.Fatal(err)
	}
	first := nextDesired(t, a)
	if first.GetEpoch() != w.GetEpoch() || len(first.GetInstances())+len(first.GetDrain()) != 0 {
		t.Fatalf("first desired state %v, want an empty one at epoch %d", first, w.GetEpoch())
	}

	spec := &llmscalerv1.DeploymentSpec{Name: "d", Profile: "p", MinReplicas: 2, MaxReplicas: 2}
	if _, err := admin(t, r).ApplyDeployment(ctx, &llmscalerv1.ApplyDeploymentRequest{Deployment: spec}); err != nil {
		t.Fatal(err)
	}
	var placed *llmscalerv1.DesiredState
	for placed == nil || len(placed.GetInstances()) < 2 {
		placed = nextDesired(t, a)
		if placed.GetVersion() <= first.GetVersion() {
			t.Fatalf("version %d after %d", placed.GetVersion(), first.GetVersion())
		}
	}

	// The stream breaks before the agent did anything; its next stream gets the same state.
	a.cancel()
	a, _, err = connect(t, r.GRPCAddr(), h)
	if err != nil {
		t.Fatal(err)
	}
	again := nextDesired(t, a)
	if !proto.Equal(again, placed) {
		t.Fatalf("after a new stream the desired state is\n%v\nwant the one the broken stream carried\n%v", again, placed)
	}

	// The agent refuses one start: it leaves the node's state and a new replica is placed.
	refused := placed.GetInstances()[0].GetInstanceId()
	ack := &llmscalerv1.DesiredStateAck{Epoch: again.GetEpoch(), Version: again.GetVersion(), Result: llmscalerv1.CommandResult_COMMAND_RESULT_ACCEPTED,
		Rejected: []*llmscalerv1.InstanceRejection{{InstanceId: refused, Message: "GPU 0 is used by instance x"}}}
	if err := a.stream.Send(&llmscalerv1.ConnectRequest{Msg: &llmscalerv1.ConnectRequest_DesiredAck{DesiredAck: ack}}); err != nil {
		t.Fatal(err)
	}
	for {
		ds := nextDesired(t, a)
		ids := instanceIDs(ds)
		if slices.Contains(ids, refused) {
			continue
		}
		if len(ids) == 2 && slices.Contains(ids, placed.GetInstances()[1].GetInstanceId()) {
			break
		}
	}
}

func TestFollowerRedirectsAndForwards(t *testing.T) {
	ep := startEtcd(t)
	a := startController(t, testConfig(ep))
	waitLeader(t, a)
	b := startController(t, testConfig(ep))
	waitFollowing(t, a, b)
	if b.IsLeader() {
		t.Fatal("two leaders")
	}

	// An agent that reaches the follower is told where the leader is.
	_, _, err := connect(t, b.GRPCAddr(), hello("n1", "run-1", 2))
	st := status.Convert(err)
	if st.Code() != codes.FailedPrecondition {
		t.Fatalf("follower answered %v, want FailedPrecondition", err)
	}
	var info *errdetails.ErrorInfo
	for _, d := range st.Details() {
		if e, ok := d.(*errdetails.ErrorInfo); ok {
			info = e
		}
	}
	if info.GetReason() != "NOT_LEADER" || info.GetMetadata()["leader_address"] != a.GRPCAddr() || info.GetMetadata()["leader_id"] != a.ID() {
		t.Fatalf("ErrorInfo %v", info)
	}

	// The agent goes to the leader; the follower answers admin reads from the leader's view.
	if _, _, err := connect(t, a.GRPCAddr(), hello("n1", "run-1", 2)); err != nil {
		t.Fatal(err)
	}
	nodes, err := admin(t, b).ListNodes(ctxT(t), &llmscalerv1.ListNodesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes.GetNodes()) != 1 || nodes.GetNodes()[0].GetNodeId() != "n1" {
		t.Fatalf("follower's ListNodes: %v", nodes)
	}
	cs, err := admin(t, b).GetClusterStatus(ctxT(t), &llmscalerv1.GetClusterStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if cs.GetAnsweredBy().GetId() != a.ID() || len(cs.GetControllers()) != 2 {
		t.Fatalf("cluster status via follower: %v", cs)
	}
}

func TestLeaderStopHandsOverAndFencesOldWrites(t *testing.T) {
	ep := startEtcd(t)
	a := startController(t, testConfig(ep))
	waitLeader(t, a)
	b := startController(t, testConfig(ep))
	waitFollowing(t, a, b)
	oldTerm := a.currentTerm()
	oldFence := oldTerm.fence

	ra, _, err := connect(t, a.GRPCAddr(), hello("n1", "run-1", 1))
	if err != nil {
		t.Fatal(err)
	}
	a.stop(t)
	// The old leader's stream is closed as its term ends.
	for {
		if _, err := ra.stream.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				t.Fatal("stream ended without an error")
			}
			break
		}
	}
	waitLeader(t, b)
	if b.currentTerm().epoch <= oldTerm.epoch {
		t.Fatalf("new epoch %d not above old %d", b.currentTerm().epoch, oldTerm.epoch)
	}
	// A write under the old leader's fence fails now.
	oldFence.cli = b.store.cli // a's client is closed with a
	w := newNodeWriter(b.store, oldFence)
	go func() { _ = w.run(ctxT(t)) }()
	err = w.put(ctxT(t), &llmscalerv1.Node{NodeId: "n1"})
	if !errors.Is(err, errFenced) {
		t.Fatalf("write under the old fence: %v, want errFenced", err)
	}
	// The node is known to the new leader from the stored record, disconnected until it returns.
	if got := nodeState(t, admin(t, b), "n1"); got != llmscalerv1.NodeState_NODE_STATE_DISCONNECTED && got != llmscalerv1.NodeState_NODE_STATE_LOST {
		t.Fatalf("node state on the new leader %v", got)
	}
}
