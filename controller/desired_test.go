package controller

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// describe is a node's desired state in short: "v3 run[a b] drain[c]".
func describe(nd *nodeDesired) string {
	ds := nd.state(1)
	var drain []string
	for _, d := range ds.GetDrain() {
		drain = append(drain, d.GetInstanceId())
	}
	return fmt.Sprintf("v%d run%v drain%v", ds.GetVersion(), instanceIDs(ds), drain)
}

func TestAdoptTakesOverWhatANodeRuns(t *testing.T) {
	nd := newNodeDesired()
	nd.place(&llmscalerv1.StartInstance{InstanceId: "placed", Deployment: "d"}, t0)
	changed := nd.adopt([]*llmscalerv1.InstanceStatus{
		inst("placed", "d", starting, []uint32{0}, 0), inst("running", "d", ready, []uint32{1}, 0),
		inst("broken", "d", failed, []uint32{2}, 0), inst("leaving", "d", draining, []uint32{3}, 0),
	}, t0)
	if got, want := describe(nd), "v3 run[broken placed running] drain[leaving]"; !changed || got != want {
		t.Fatalf("after adopt: %s (changed %v), want %s", got, changed, want)
	}
	for id, di := range nd.instances {
		if !di.seen {
			t.Errorf("%s reported but not seen", id)
		}
	}
	if nd.adopt([]*llmscalerv1.InstanceStatus{inst("running", "d", ready, []uint32{1}, 0)}, t0) || describe(nd) != "v3 run[broken placed running] drain[leaving]" {
		t.Fatalf("adopting what is known changed the state: %s", describe(nd))
	}
}

func TestSyncNodeFollowsReports(t *testing.T) {
	start := func(id string) *llmscalerv1.StartInstance {
		return &llmscalerv1.StartInstance{InstanceId: id, Deployment: "d", Profile: "p", GpuIndices: []uint32{0}}
	}
	connected := snode("a", 4)
	tests := []struct {
		name    string
		node    *llmscalerv1.Node
		reports []*llmscalerv1.InstanceStatus
		setup   func(nd *nodeDesired)
		want    string // describe after the sync; "gone" when the state was dropped
	}{
		{
			name:    "a reported start is no longer pending",
			node:    connected,
			reports: []*llmscalerv1.InstanceStatus{inst("s", "d", starting, []uint32{0}, 0)},
			setup:   func(nd *nodeDesired) { nd.place(start("s"), t0.Add(-time.Minute)) },
			want:    "v2 run[s] drain[]",
		},
		{
			name:  "a start unreported for pendingTimeout on a connected node is drained and given up",
			node:  connected,
			setup: func(nd *nodeDesired) { nd.place(start("s"), t0.Add(-pendingTimeout-time.Second)) },
			want:  "v3 run[] drain[s]",
		},
		{
			name:  "a young pending start waits",
			node:  connected,
			setup: func(nd *nodeDesired) { nd.place(start("s"), t0.Add(-time.Second)) },
			want:  "v2 run[s] drain[]",
		},
		{
			name: "a disconnected node keeps its pending starts however old",
			node: snode("a", 4, func(n *llmscalerv1.Node) { n.State = llmscalerv1.NodeState_NODE_STATE_DISCONNECTED }),
			setup: func(nd *nodeDesired) {
				nd.place(start("s"), t0.Add(-time.Hour))
			},
			want: "v2 run[s] drain[]",
		},
		{
			name: "an instance seen once and no longer reported is forgotten",
			node: connected,
			setup: func(nd *nodeDesired) {
				nd.place(start("s"), t0)
				nd.instances["s"].seen = true
			},
			want: "v3 run[] drain[]",
		},
		{
			name:    "a drained instance leaves the list once gone",
			node:    connected,
			reports: []*llmscalerv1.InstanceStatus{inst("still", "d", draining, []uint32{1}, 0)},
			setup: func(nd *nodeDesired) {
				nd.stop("still", "scale down", true, t0)
				nd.stop("gone", "scale down", true, t0)
				nd.stop("late", "start not reported", false, t0.Add(-time.Second))
				nd.stop("never", "start not reported", false, t0.Add(-pendingTimeout-time.Second))
			},
			want: "v7 run[] drain[late still]",
		},
		{
			name:  "a lost node's state is dropped",
			node:  snode("a", 4, func(n *llmscalerv1.Node) { n.State = llmscalerv1.NodeState_NODE_STATE_LOST }),
			setup: func(nd *nodeDesired) { nd.place(start("s"), t0) },
			want:  "gone",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &reconciler{log: hclog.NewNullLogger(), st: newReconcileState()}
			tc.setup(r.st.desire("a"))
			r.syncNodeLocked(nodeSnapshot{node: tc.node, instances: tc.reports}, t0)
			got := "gone"
			if nd := r.st.nodes["a"]; nd != nil {
				got = describe(nd)
			}
			if got != tc.want {
				t.Fatalf("after sync: %s, want %s", got, tc.want)
			}
			if got != "gone" && strings.Contains(tc.want, "drain[s]") && !strings.Contains(r.st.nodes["a"].drain["s"].stop.GetReason(), "placed again") {
				t.Errorf("drain reason %q", r.st.nodes["a"].drain["s"].stop.GetReason())
			}
		})
	}
}
