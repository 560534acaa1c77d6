package controller

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/llmscaler/llmscaler/internal/placement"
	"github.com/llmscaler/llmscaler/internal/scaling"
	"github.com/llmscaler/llmscaler/internal/window"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

const (
	// pendingTimeout is how long a start may go unreported by its connected node before it
	// is given up (drained, in case it turns up) and the replica placed again. A node that
	// is disconnected keeps its starts until it is lost: they reach it when it returns.
	pendingTimeout = 30 * time.Second
	// failureWindow and avoidAfter: a node where a deployment's instances failed avoidAfter
	// times within failureWindow gets its replacements only when no other node fits.
	failureWindow = 10 * time.Minute
	avoidAfter    = 2
)

// nodeSnapshot is one node as the reconciler and the scaling loops see it in one pass. The
// fields below derived are computed from the others by derive, once per change of the node
// when the snapshot comes from the fleet.
type nodeSnapshot struct {
	node      *llmscalerv1.Node
	instances []*llmscalerv1.InstanceStatus
	// unreported: a node known from etcd whose agent has not connected since this term
	// began; its instances are unknown, not absent.
	unreported bool

	derived bool
	// place is the node for placement, its GPUs busy with the instances it runs.
	place placement.Node
	// replicas are the node's live (STARTING or READY) instances as the scaling loops
	// observe them, each with its deployment.
	replicas []nodeReplica
}

// nodeReplica is one live instance of a deployment as the scaling loops observe it, and the
// cold start it measured (0 unless READY).
type nodeReplica struct {
	deployment string
	profile    string
	coldStart  time.Duration
	replica    scaling.Replica
}

// derive computes the derived fields from the node and its instances.
func (ns *nodeSnapshot) derive() {
	n := ns.node
	ns.place = placement.Node{
		ID:        n.GetNodeId(),
		Labels:    n.GetLabels(),
		Profiles:  n.GetProfiles(),
		Connected: n.GetState() == llmscalerv1.NodeState_NODE_STATE_CONNECTED,
		Cordoned:  n.GetCordoned(),
	}
	// A node has a handful of GPUs: a linear search beats building maps, which was most of
	// the cost of rebuilding the views of 10,000 reports a second.
	samples := n.GetGpuSamples()
	sample := func(idx uint32) *llmscalerv1.GpuSample {
		for _, s := range samples {
			if s.GetIndex() == idx {
				return s
			}
		}
		return nil
	}
	ns.place.GPUs = make([]placement.GPU, 0, len(n.GetGpus()))
	for _, g := range n.GetGpus() {
		pg := placement.GPU{Index: g.GetIndex(), MemoryTotalMiB: g.GetMemoryTotalMib(), Healthy: true}
		if s := sample(g.GetIndex()); s != nil {
			pg.MemoryUsedMiB = s.MemoryUsedMib
			if s.Healthy != nil && !s.GetHealthy() {
				pg.Healthy = false
			}
		}
		ns.place.GPUs = append(ns.place.GPUs, pg)
	}
	ns.replicas = nil
	for _, in := range ns.instances {
		if occupiesGPUs(in.GetPhase()) {
			markBusy(&ns.place, in.GetGpuIndices())
		}
		if r, ok := observeInstance(in, samples); ok {
			nr := nodeReplica{deployment: in.GetDeployment(), profile: in.GetProfile(), replica: r}
			if r.Phase == window.Ready {
				nr.coldStart = in.GetColdStart().AsDuration()
			}
			ns.replicas = append(ns.replicas, nr)
		}
	}
	ns.derived = true
}

// pendingStart is a desired instance its node has not reported yet.
type pendingStart struct {
	instanceID string
	deployment string
	nodeID     string
	gpus       []uint32
}

// reconcileState is what the reconciler remembers between passes.
type reconcileState struct {
	nodes    map[string]*nodeDesired           // the desired state of each node, by node id
	failures map[string]map[string][]time.Time // deployment -> node -> failure times
	seenFail map[string]bool                   // instance ids already counted as failures
}

func newReconcileState() *reconcileState {
	return &reconcileState{
		nodes:    map[string]*nodeDesired{},
		failures: map[string]map[string][]time.Time{},
		seenFail: map[string]bool{},
	}
}

// desire is a node's desired state, made empty if the node has none yet.
func (s *reconcileState) desire(nodeID string) *nodeDesired {
	nd := s.nodes[nodeID]
	if nd == nil {
		nd = newNodeDesired()
		s.nodes[nodeID] = nd
	}
	return nd
}

// stopping is every instance listed to drain on any node.
func (s *reconcileState) stopping() map[string]bool {
	out := map[string]bool{}
	for _, nd := range s.nodes {
		for id := range nd.drain {
			out[id] = true
		}
	}
	return out
}

// pending is every desired instance not reported yet.
func (s *reconcileState) pending() []*pendingStart {
	var out []*pendingStart
	for _, nodeID := range slices.Sorted(maps.Keys(s.nodes)) {
		nd := s.nodes[nodeID]
		for _, id := range slices.Sorted(maps.Keys(nd.instances)) {
			if di := nd.instances[id]; !di.seen {
				out = append(out, &pendingStart{instanceID: id, deployment: di.start.GetDeployment(), nodeID: nodeID, gpus: di.start.GetGpuIndices()})
			}
		}
	}
	return out
}

func (s *reconcileState) recordFailure(deployment, node string, at time.Time) {
	if s.failures[deployment] == nil {
		s.failures[deployment] = map[string][]time.Time{}
	}
	s.failures[deployment][node] = append(s.failures[deployment][node], at)
}

func (s *reconcileState) avoid(deployment, node string, now time.Time) bool {
	n := 0
	for _, t := range s.failures[deployment][node] {
		if now.Sub(t) < failureWindow {
			n++
		}
	}
	return n >= avoidAfter
}

// avoiding is the set of nodes that placement avoids for a deployment now (avoid).
func (s *reconcileState) avoiding(deployment string, now time.Time) map[string]bool {
	var out map[string]bool
	for node := range s.failures[deployment] {
		if s.avoid(deployment, node, now) {
			if out == nil {
				out = map[string]bool{}
			}
			out[node] = true
		}
	}
	return out
}

// startAction and stopAction are the commands one pass decides to send.
type startAction struct {
	nodeID string
	start  *llmscalerv1.StartInstance
}

type stopAction struct {
	nodeID     string
	instanceID string
	deployment string
	reason     string
}

// placed is one instance with the node it runs on.
type placed struct {
	node   int // index in the pass's nodes
	nodeID string
	in     *llmscalerv1.InstanceStatus
}

// plan compares desired and reported state and decides what to start and stop. It is pure:
// it reads the fleet, the deployments and the remembered state, and returns actions and a
// status message per deployment. The caller sends the actions and updates the state.
func plan(now time.Time, deployments map[string]*llmscalerv1.Deployment, nodes []nodeSnapshot, st *reconcileState, newID func(deployment string) string, desiredOf func(*llmscalerv1.Deployment) uint32) ([]startAction, []stopAction, map[string]string) {
	var starts []startAction
	var stops []stopAction
	msgs := map[string]string{}

	// Per-node placement views, shared across deployments so that two replicas placed in one
	// pass never get the same GPU. Nodes are found by their index in nodes: maps keyed by
	// node and instance id were most of a pass over 10,000 nodes.
	views := make([]placement.Node, len(nodes))
	byDeployment := map[string][]placed{}
	var unreported []string
	for i := range nodes {
		ns := &nodes[i]
		if !ns.derived {
			ns.derive()
		}
		n := ns.node
		if ns.unreported {
			unreported = append(unreported, n.GetNodeId())
		}
		views[i] = ns.place // shares the GPUs: markBusy copies them before it marks one
		for _, in := range ns.instances {
			byDeployment[in.GetDeployment()] = append(byDeployment[in.GetDeployment()], placed{i, n.GetNodeId(), in})
		}
	}
	find := nodeFinder(nodes)
	stopping := st.stopping()
	pendingBy := map[string][]*pendingStart{}
	pendingAt := map[*pendingStart]int{} // node index, -1 for a node not in the pass
	for _, p := range st.pending() {
		i := find(p.nodeID)
		if i >= 0 && hasInstance(nodes[i].instances, p.instanceID) {
			continue // reported: counted with the node's instances
		}
		pendingBy[p.deployment] = append(pendingBy[p.deployment], p)
		pendingAt[p] = i
		if i >= 0 {
			markBusy(&views[i], p.gpus)
		}
	}

	stop := func(p placed, reason string) {
		if stopping[p.in.GetInstanceId()] {
			return
		}
		stops = append(stops, stopAction{nodeID: p.nodeID, instanceID: p.in.GetInstanceId(), deployment: p.in.GetDeployment(), reason: reason})
	}

	names := make([]string, 0, len(byDeployment)+len(deployments))
	for name := range deployments {
		names = append(names, name)
	}
	for name := range byDeployment {
		if deployments[name] == nil {
			names = append(names, name)
		}
	}
	sort.Strings(names)

	for _, name := range names {
		d := deployments[name]
		var good, drained []placed
		for _, p := range byDeployment[name] {
			ph := p.in.GetPhase()
			switch {
			case ph == llmscalerv1.InstancePhase_INSTANCE_PHASE_FAILED:
				stop(p, "failed instance cleaned up")
			case d == nil && (ph == llmscalerv1.InstancePhase_INSTANCE_PHASE_STARTING || ph == llmscalerv1.InstancePhase_INSTANCE_PHASE_READY):
				stop(p, "deployment deleted")
			case ph != llmscalerv1.InstancePhase_INSTANCE_PHASE_STARTING && ph != llmscalerv1.InstancePhase_INSTANCE_PHASE_READY:
				// draining or stopped: on its way out
			case stopping[p.in.GetInstanceId()]:
			case nodes[p.node].node.GetDraining():
				drained = append(drained, p)
			default:
				good = append(good, p)
			}
		}
		if d == nil {
			continue
		}
		desired := int(desiredOf(d))
		spec := d.GetSpec()
		need := desired - len(good) - len(pendingBy[name])
		if need > 0 && len(unreported) > 0 {
			// A new leader knows the nodes from etcd but not their servers until each agent
			// reconnects (or its grace runs out and it is lost): starting replacements now
			// could double servers that are running fine. Stopping a surplus is still safe.
			msgs[name] = fmt.Sprintf("waiting for %s to report their instances to the new leader (at most the node grace) before starting %d replicas",
				listSome(unreported, 5), need)
			need = 0
		}
		if need > 0 {
			req := placement.Request{Profile: spec.GetProfile(), GPUs: int(spec.GetGpusPerReplica()), GPUMemoryMiB: spec.GetGpuMemoryMib(), Selector: spec.GetNodeSelector()}
			on := replicasByNode(len(nodes), good, drained, pendingBy[name], pendingAt)
			avoid := st.avoiding(name, now)
			cands := make([]placement.Node, len(nodes))
			for i := 0; i < need; i++ {
				for k := range nodes {
					cands[k] = views[k]
					cands[k].Replicas = on[k]
					cands[k].Avoid = avoid[nodes[k].node.GetNodeId()]
				}
				ch, err := placement.Place(cands, req)
				if err != nil {
					msgs[name] = fmt.Sprintf("cannot place %d of %d replicas: %v", need-i, desired, err)
					break
				}
				id := newID(name)
				at := find(ch.NodeID)
				markBusy(&views[at], ch.GPUs)
				on[at]++
				ps := &pendingStart{instanceID: id, deployment: name, nodeID: ch.NodeID, gpus: ch.GPUs}
				pendingBy[name] = append(pendingBy[name], ps)
				pendingAt[ps] = at
				starts = append(starts, startAction{nodeID: ch.NodeID, start: &llmscalerv1.StartInstance{
					InstanceId: id, Deployment: name, Profile: spec.GetProfile(), GpuIndices: ch.GPUs,
				}})
			}
		}
		if need < 0 {
			for _, p := range victims(good, -need) {
				stop(p, fmt.Sprintf("scale down to %d", desired))
			}
		}
		// Instances on a draining node stay while the replicas elsewhere are not READY yet:
		// start before stop.
		ready := 0
		for _, p := range good {
			if p.in.GetPhase() == llmscalerv1.InstancePhase_INSTANCE_PHASE_READY {
				ready++
			}
		}
		if keep := max(0, desired-ready); len(drained) > keep {
			for _, p := range victims(drained, len(drained)-keep) {
				stop(p, fmt.Sprintf("node %s draining; replacement ready", p.nodeID))
			}
		}
		if waiting := min(len(drained), max(0, desired-ready)); waiting > 0 && msgs[name] == "" {
			msgs[name] = fmt.Sprintf("%d replicas on draining nodes wait for replacements to be ready", waiting)
		}
	}
	return starts, stops, msgs
}

// listSome names up to n items and counts the rest: after a failover every node of a
// 10,000-node fleet is unreported for a while, and a message naming them all was 150 KB.
func listSome(items []string, n int) string {
	if len(items) <= n {
		return strings.Join(items, ", ")
	}
	return fmt.Sprintf("%s and %d more nodes", strings.Join(items[:n], ", "), len(items)-n)
}

func occupiesGPUs(p llmscalerv1.InstancePhase) bool {
	switch p {
	case llmscalerv1.InstancePhase_INSTANCE_PHASE_STARTING, llmscalerv1.InstancePhase_INSTANCE_PHASE_READY, llmscalerv1.InstancePhase_INSTANCE_PHASE_DRAINING:
		return true
	}
	return false
}

func markBusy(v *placement.Node, gpus []uint32) {
	if v == nil {
		return
	}
	gs := make([]placement.GPU, len(v.GPUs))
	copy(gs, v.GPUs)
	for i := range gs {
		for _, g := range gpus {
			if gs[i].Index == g {
				gs[i].Busy = true
			}
		}
	}
	v.GPUs = gs
}

// replicasByNode counts a deployment's replicas on each node: live, on draining nodes, and
// started but not reported yet.
func replicasByNode(nodes int, good, drained []placed, pending []*pendingStart, pendingAt map[*pendingStart]int) []int {
	on := make([]int, nodes)
	for _, p := range good {
		on[p.node]++
	}
	for _, p := range drained {
		on[p.node]++
	}
	for _, p := range pending {
		if i := pendingAt[p]; i >= 0 {
			on[i]++
		}
	}
	return on
}

// nodeFinder returns a lookup of a node's index in nodes (-1: absent): a binary search when
// nodes are in id order, as fleet snapshots are, else a map.
func nodeFinder(nodes []nodeSnapshot) func(id string) int {
	sorted := slices.IsSortedFunc(nodes, func(a, b nodeSnapshot) int { return strings.Compare(a.node.GetNodeId(), b.node.GetNodeId()) })
	if sorted {
		return func(id string) int {
			i, ok := slices.BinarySearchFunc(nodes, id, func(n nodeSnapshot, id string) int { return strings.Compare(n.node.GetNodeId(), id) })
			if !ok {
				return -1
			}
			return i
		}
	}
	at := make(map[string]int, len(nodes))
	for i := range nodes {
		at[nodes[i].node.GetNodeId()] = i
	}
	return func(id string) int {
		if i, ok := at[id]; ok {
			return i
		}
		return -1
	}
}

// hasInstance reports whether a node's instances include id.
func hasInstance(ins []*llmscalerv1.InstanceStatus, id string) bool {
	for _, in := range ins {
		if in.GetInstanceId() == id {
			return true
		}
	}
	return false
}

// victims picks n instances to stop: STARTING ones first (they serve nothing yet), then
// those with the fewest requests in flight, then the youngest.
func victims(ps []placed, n int) []placed {
	c := append([]placed(nil), ps...)
	sort.SliceStable(c, func(i, j int) bool {
		a, b := c[i].in, c[j].in
		as, bs := a.GetPhase() == llmscalerv1.InstancePhase_INSTANCE_PHASE_STARTING, b.GetPhase() == llmscalerv1.InstancePhase_INSTANCE_PHASE_STARTING
		if as != bs {
			return as
		}
		af := a.GetMetrics().GetRunning() + a.GetMetrics().GetWaiting()
		bf := b.GetMetrics().GetRunning() + b.GetMetrics().GetWaiting()
		if af != bf {
			return af < bf
		}
		if !a.GetStartedAt().AsTime().Equal(b.GetStartedAt().AsTime()) {
			return a.GetStartedAt().AsTime().After(b.GetStartedAt().AsTime())
		}
		return a.GetInstanceId() < b.GetInstanceId()
	})
	if n > len(c) {
		n = len(c)
	}
	return c[:n]
}
