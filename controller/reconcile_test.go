package controller

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

var t0 = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

func snode(id string, gpus int, mods ...func(*llmscalerv1.Node)) *llmscalerv1.Node {
	n := &llmscalerv1.Node{NodeId: id, State: llmscalerv1.NodeState_NODE_STATE_CONNECTED, Profiles: []string{"fake-llm"}}
	for i := range gpus {
		n.Gpus = append(n.Gpus, &llmscalerv1.Gpu{Index: uint32(i), MemoryTotalMib: 81920})
	}
	for _, m := range mods {
		m(n)
	}
	return n
}

func inst(id, dep string, phase llmscalerv1.InstancePhase, gpus []uint32, inflight float64) *llmscalerv1.InstanceStatus {
	return &llmscalerv1.InstanceStatus{InstanceId: id, Deployment: dep, Profile: "fake-llm", Phase: phase, GpuIndices: gpus,
		StartedAt: timestamppb.New(t0), Metrics: &llmscalerv1.QueueMetrics{Running: inflight}}
}

func dep(name string, min, max uint32, manual *uint32) *llmscalerv1.Deployment {
	return &llmscalerv1.Deployment{
		Spec:  &llmscalerv1.DeploymentSpec{Name: name, Profile: "fake-llm", GpusPerReplica: 1, GpuMemoryMib: 1000, MinReplicas: min, MaxReplicas: max},
		Scale: &llmscalerv1.ScaleState{ManualReplicas: manual},
	}
}

func idGen() func(string) string {
	n := 0
	return func(d string) string {
		n++
		return fmt.Sprintf("%s-%d", d, n)
	}
}

const (
	starting = llmscalerv1.InstancePhase_INSTANCE_PHASE_STARTING
	ready    = llmscalerv1.InstancePhase_INSTANCE_PHASE_READY
	failed   = llmscalerv1.InstancePhase_INSTANCE_PHASE_FAILED
	draining = llmscalerv1.InstancePhase_INSTANCE_PHASE_DRAINING
)

func startsOn(starts []startAction) []string {
	var out []string
	for _, s := range starts {
		out = append(out, fmt.Sprintf("%s:%s%v", s.nodeID, s.start.GetDeployment(), s.start.GetGpuIndices()))
	}
	sort.Strings(out)
	return out
}

func stopped(stops []stopAction) []string {
	var out []string
	for _, s := range stops {
		out = append(out, s.instanceID)
	}
	sort.Strings(out)
	return out
}

func TestPlan(t *testing.T) {
	tests := []struct {
		name       string
		deps       []*llmscalerv1.Deployment
		nodes      []nodeSnapshot
		state      func(*reconcileState)
		wantStarts []string
		wantStops  []string
		wantMsg    string
	}{
		{
			name:       "scale up spreads across nodes",
			deps:       []*llmscalerv1.Deployment{dep("d", 2, 4, nil)},
			nodes:      []nodeSnapshot{{node: snode("a", 2)}, {node: snode("b", 2)}},
			wantStarts: []string{"a:d[0]", "b:d[0]"},
		},
		{
			// A new leader's first pass: node b is known from etcd, its agent has not
			// reconnected yet, and its servers may be running; no replacement is started.
			name:    "no start while a node known from etcd has not reported",
			deps:    []*llmscalerv1.Deployment{dep("d", 2, 4, nil)},
			nodes:   []nodeSnapshot{{node: snode("a", 2)}, {node: snode("b", 2), unreported: true}},
			wantMsg: "waiting for b to report their instances to the new leader",
		},
		{
			name:       "manual count wins over min",
			deps:       []*llmscalerv1.Deployment{dep("d", 1, 4, proto.Uint32(3))},
			nodes:      []nodeSnapshot{{node: snode("a", 4)}},
			wantStarts: []string{"a:d[0]", "a:d[1]", "a:d[2]"},
		},
		{
			name:  "a pending start is not sent again",
			deps:  []*llmscalerv1.Deployment{dep("d", 1, 4, nil)},
			nodes: []nodeSnapshot{{node: snode("a", 2)}},
			state: func(s *reconcileState) {
				s.desire("a").place(&llmscalerv1.StartInstance{InstanceId: "d-x", Deployment: "d", Profile: "p", GpuIndices: []uint32{0}}, t0.Add(-time.Second))
			},
		},
		{
			name:  "a pending start holds its GPU",
			deps:  []*llmscalerv1.Deployment{dep("d", 2, 4, nil)},
			nodes: []nodeSnapshot{{node: snode("a", 2)}},
			state: func(s *reconcileState) {
				s.desire("a").place(&llmscalerv1.StartInstance{InstanceId: "d-x", Deployment: "d", Profile: "p", GpuIndices: []uint32{0}}, t0.Add(-time.Second))
			},
			wantStarts: []string{"a:d[1]"},
		},
		{
			name: "scale down stops starting first then the least busy",
			deps: []*llmscalerv1.Deployment{dep("d", 1, 4, nil)},
			nodes: []nodeSnapshot{{node: snode("a", 4), instances: []*llmscalerv1.InstanceStatus{
				inst("busy", "d", ready, []uint32{0}, 9), inst("idle", "d", ready, []uint32{1}, 0), inst("new", "d", starting, []uint32{2}, 0),
			}}},
			wantStops: []string{"idle", "new"},
		},
		{
			name: "already stopping is not stopped again nor counted",
			deps: []*llmscalerv1.Deployment{dep("d", 1, 4, nil)},
			nodes: []nodeSnapshot{{node: snode("a", 4), instances: []*llmscalerv1.InstanceStatus{
				inst("keep", "d", ready, []uint32{0}, 1), inst("going", "d", ready, []uint32{1}, 0), inst("gone", "d", draining, []uint32{2}, 0),
			}}},
			state:     func(s *reconcileState) { s.desire("a").stop("going", "scale down to 1", true, t0) },
			wantStops: nil,
		},
		{
			name: "deleted deployment is stopped",
			nodes: []nodeSnapshot{{node: snode("a", 2), instances: []*llmscalerv1.InstanceStatus{
				inst("orphan", "old", ready, []uint32{0}, 0),
			}}},
			wantStops: []string{"orphan"},
		},
		{
			name: "failed instance is cleaned up and replaced elsewhere when its node keeps failing",
			deps: []*llmscalerv1.Deployment{dep("d", 1, 4, nil)},
			nodes: []nodeSnapshot{
				{node: snode("a", 2), instances: []*llmscalerv1.InstanceStatus{inst("bad", "d", failed, []uint32{0}, 0)}},
				{node: snode("b", 2, func(n *llmscalerv1.Node) { n.Gpus = n.Gpus[:1] })},
			},
			state: func(s *reconcileState) {
				s.recordFailure("d", "a", t0.Add(-time.Minute))
				s.recordFailure("d", "a", t0)
			},
			wantStarts: []string{"b:d[0]"},
			wantStops:  []string{"bad"},
		},
		{
			name: "draining node: replacement first, old one kept until it is ready",
			deps: []*llmscalerv1.Deployment{dep("d", 1, 4, nil)},
			nodes: []nodeSnapshot{
				{node: snode("a", 2, func(n *llmscalerv1.Node) { n.Cordoned, n.Draining = true, true }), instances: []*llmscalerv1.InstanceStatus{inst("old", "d", ready, []uint32{0}, 0)}},
				{node: snode("b", 2)},
			},
			wantStarts: []string{"b:d[0]"},
			wantMsg:    "1 replicas on draining nodes wait",
		},
		{
			name: "draining node: old one stopped once the replacement is ready",
			deps: []*llmscalerv1.Deployment{dep("d", 1, 4, nil)},
			nodes: []nodeSnapshot{
				{node: snode("a", 2, func(n *llmscalerv1.Node) { n.Cordoned, n.Draining = true, true }), instances: []*llmscalerv1.InstanceStatus{inst("old", "d", ready, []uint32{0}, 0)}},
				{node: snode("b", 2), instances: []*llmscalerv1.InstanceStatus{inst("new", "d", ready, []uint32{0}, 0)}},
			},
			wantStops: []string{"old"},
		},
		{
			name: "nothing fits: the status says why",
			deps: []*llmscalerv1.Deployment{dep("d", 2, 4, nil)},
			nodes: []nodeSnapshot{
				{node: snode("a", 1, func(n *llmscalerv1.Node) { n.Cordoned = true })},
				{node: snode("b", 1, func(n *llmscalerv1.Node) { n.Profiles = []string{"other"} })},
			},
			wantMsg: `cannot place 2 of 2 replicas: no node fits (2 checked: 1 cordoned, 1 without profile "fake-llm" in their catalog)`,
		},
		{
			name:       "two deployments in one pass never share a GPU",
			deps:       []*llmscalerv1.Deployment{dep("d1", 1, 4, nil), dep("d2", 1, 4, nil)},
			nodes:      []nodeSnapshot{{node: snode("a", 2, func(n *llmscalerv1.Node) { n.Gpus[0].Index = 5 })}},
			wantStarts: []string{"a:d1[1]", "a:d2[5]"},
		},
		{
			name: "GPUs of live instances and lost memory are not used",
			deps: []*llmscalerv1.Deployment{dep("d", 2, 4, nil), dep("other", 1, 1, nil)},
			nodes: []nodeSnapshot{{node: snode("a", 3, func(n *llmscalerv1.Node) {
				used := uint64(81000)
				n.GpuSamples = []*llmscalerv1.GpuSample{{Index: 1, MemoryUsedMib: &used}}
			}), instances: []*llmscalerv1.InstanceStatus{inst("x", "other", ready, []uint32{0}, 0)}}},
			wantStarts: []string{"a:d[2]"},
			wantMsg:    "cannot place 1 of 2 replicas",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			deps := map[string]*llmscalerv1.Deployment{}
			for _, d := range tc.deps {
				deps[d.GetSpec().GetName()] = d
			}
			st := newReconcileState()
			if tc.state != nil {
				tc.state(st)
			}
			starts, stops, msgs := plan(t0, deps, tc.nodes, st, idGen(), desiredReplicas)
			if got := strings.Join(startsOn(starts), " "); got != strings.Join(tc.wantStarts, " ") {
				t.Errorf("starts %q, want %q", got, strings.Join(tc.wantStarts, " "))
			}
			if got := strings.Join(stopped(stops), " "); got != strings.Join(tc.wantStops, " ") {
				t.Errorf("stops %q, want %q", got, strings.Join(tc.wantStops, " "))
			}
			var all []string
			for _, m := range msgs {
				all = append(all, m)
			}
			if tc.wantMsg == "" && len(all) > 0 || tc.wantMsg != "" && !strings.Contains(strings.Join(all, "|"), tc.wantMsg) {
				t.Errorf("messages %q, want one containing %q", all, tc.wantMsg)
			}
		})
	}
}

// desiredReplicas is the count of a deployment without an autoscaler, for plan tests.
func desiredReplicas(d *llmscalerv1.Deployment) uint32 {
	sp := d.GetSpec()
	if m := d.GetScale().ManualReplicas; m != nil {
		return min(max(*m, 1), sp.GetMaxReplicas())
	}
	return sp.GetMinReplicas()
}

func TestListSome(t *testing.T) {
	for _, tc := range []struct {
		items []string
		want  string
	}{
		{nil, ""},
		{[]string{"a", "b"}, "a, b"},
		{[]string{"a", "b", "c", "d"}, "a, b, c and 1 more nodes"},
	} {
		if got := listSome(tc.items, 3); got != tc.want {
			t.Errorf("listSome(%v, 3) = %q, want %q", tc.items, got, tc.want)
		}
	}
}
