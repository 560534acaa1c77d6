package controller

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// TestShallowNodeCopiesEveryField fails when Node gains a field that shallowNode does not
// copy: the literal below must set every field (checked through the descriptor), and the
// copy must equal it.
func TestShallowNodeCopiesEveryField(t *testing.T) {
	u := 5.0
	n := &llmscalerv1.Node{
		NodeId: "n1", Labels: map[string]string{"a": "b"}, AgentVersion: "v", GpuBackend: "fake",
		Gpus: []*llmscalerv1.Gpu{{Index: 1}}, Profiles: []string{"p"}, State: llmscalerv1.NodeState_NODE_STATE_CONNECTED,
		Cordoned: true, CordonReason: "r", Address: "x:1", ConnectedAt: timestamppb.New(t0), LastSeen: timestamppb.New(t0),
		DisconnectedAt: timestamppb.New(t0), GpuSamples: []*llmscalerv1.GpuSample{{Index: 1, UtilizationPercent: &u}},
		InstanceCount: 3, Draining: true,
	}
	m := n.ProtoReflect()
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		if fd := fields.Get(i); !m.Has(fd) {
			t.Errorf("the test's node does not set %s: set it here and copy it in shallowNode", fd.Name())
		}
	}
	if c := shallowNode(n); !proto.Equal(c, n) {
		t.Errorf("shallowNode lost fields:\n got %v\nwant %v", c, n)
	}
}

// TestSnapshotFollowsChanges checks that a snapshot's shared views are rebuilt after each kind
// of change and stay as they were for a snapshot already taken.
func TestSnapshotFollowsChanges(t *testing.T) {
	now := t0
	f := newFleet(func() time.Time { return now }, time.Minute, func(*llmscalerv1.Event) {})
	h := benchHello(1)
	c, _, err := f.attach(h, "127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	id := h.GetNodeId()
	first := f.snapshot()
	if len(first) != 1 || len(first[0].instances) != 2 || len(first[0].replicas) != 2 {
		t.Fatalf("first snapshot: %+v", first)
	}
	if again := f.snapshot(); again[0].node != first[0].node {
		t.Error("an unchanged node was copied again")
	}

	r := benchReport(1, 1)
	r.Instances = r.Instances[:1]
	f.report(id, r)
	second := f.snapshot()
	if len(second[0].instances) != 1 || len(second[0].replicas) != 1 || len(second[0].node.GetGpuSamples()) != benchGPUs {
		t.Errorf("after a report with one instance: %d instances, %d replicas, %d GPU samples", len(second[0].instances), len(second[0].replicas), len(second[0].node.GetGpuSamples()))
	}
	if len(first[0].instances) != 2 || first[0].node.GetGpuSamples() != nil {
		t.Error("the report changed a snapshot taken before it")
	}
	if busy := busyGPUs(second[0]); busy != 1 {
		t.Errorf("%d GPUs busy for placement after the report, want 1", busy)
	}

	f.setCordon(id, &cordon{Reason: "maintenance", Drain: true}, "alice")
	if s := f.snapshot(); !s[0].node.GetCordoned() || !s[0].place.Cordoned || !s[0].node.GetDraining() {
		t.Errorf("cordon not in the snapshot: %v", s[0].node)
	}
	f.detach(c, nil)
	if s := f.snapshot(); s[0].node.GetState() != llmscalerv1.NodeState_NODE_STATE_DISCONNECTED || s[0].place.Connected {
		t.Errorf("detach not in the snapshot: %v", s[0].node.GetState())
	}
	now = now.Add(2 * time.Minute)
	f.expire()
	if s := f.snapshot(); s[0].node.GetState() != llmscalerv1.NodeState_NODE_STATE_LOST || len(s[0].instances) != 0 {
		t.Errorf("loss not in the snapshot: %v with %d instances", s[0].node.GetState(), len(s[0].instances))
	}
	if _, _, err := f.attach(benchHello(2), "127.0.0.1:2"); err != nil {
		t.Fatal(err)
	}
	if s := f.snapshot(); len(s) != 2 || s[1].node.GetNodeId() != "bench-00002" {
		t.Errorf("a new node is not in the snapshot: %d nodes", len(s))
	}
}

func busyGPUs(ns nodeSnapshot) int {
	n := 0
	for _, g := range ns.place.GPUs {
		if g.Busy {
			n++
		}
	}
	return n
}

// TestSnapshotWhileReporting takes snapshots while reports arrive (run it with -race): a
// view built outside the lock from an older report is never kept over a newer one, so the
// snapshot after the last report shows it.
func TestSnapshotWhileReporting(t *testing.T) {
	f := newFleet(func() time.Time { return t0 }, time.Minute, func(*llmscalerv1.Event) {})
	for i := range 50 {
		if _, _, err := f.attach(benchHello(i), "127.0.0.1:1"); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 200 {
			f.snapshot()
		}
	}()
	last := map[string]float64{}
	for round := range 200 {
		for i := range 50 {
			r := benchReport(i, uint64(round))
			w := float64(round)
			r.Instances[0].Metrics.Waiting = w
			f.report(benchHello(i).GetNodeId(), r)
			last[benchHello(i).GetNodeId()] = w
		}
	}
	<-done
	for _, ns := range f.snapshot() {
		if got := ns.instances[0].GetMetrics().GetWaiting(); got != last[ns.node.GetNodeId()] {
			t.Errorf("node %s: snapshot shows waiting %v, last report said %v", ns.node.GetNodeId(), got, last[ns.node.GetNodeId()])
		}
	}
}
