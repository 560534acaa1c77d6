package controller

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

var (
	// errNodeConnected refuses a second agent process that claims a connected node id.
	errNodeConnected = errors.New("node id already connected")
)

// fleet is the leader's live view of its agents: what they run and how their GPUs are. It is
// built anew in every leadership term from the stored node records and the agents' streams.
type fleet struct {
	mu    sync.Mutex
	nodes map[string]*nodeEntry
	// ids is every node id, sorted, for snapshots; nil after a node was added.
	ids []string
	// dirty lists the nodes changed since the scaling loops last read them (changes), each
	// once; dirtySpare is the list they read last, reused.
	dirty, dirtySpare []string
	cordons           map[string]cordon
	now               func() time.Time
	grace             time.Duration
	publish           func(*llmscalerv1.Event)
}

type nodeEntry struct {
	node      *llmscalerv1.Node
	instances map[string]*llmscalerv1.InstanceStatus
	conn      *agentConn
	// unreported is set for a node loaded from etcd at the start of a term until its agent
	// connects (its hello lists its instances) or it is lost: until then its servers may
	// be running, unseen, and replacing them would run a deployment above its count.
	unreported bool
	// view is the node as snapshots show it, made when a snapshot asks and dropped (nil) by
	// every change to the entry: an evaluation of the scaling loops or a reconcile pass
	// over 10,000 nodes rebuilds only the nodes that reported since the last one, and
	// shares the rest.
	view *nodeSnapshot
	// gen counts the entry's changes, so that a view built outside the lock is kept only
	// if the entry did not change meanwhile.
	gen uint64
	// dirty is set while the node is on the fleet's dirty list.
	dirty bool
}

// changed drops a node's view after a change and lists it for the scaling loops; the
// caller holds the lock.
func (f *fleet) changed(id string, e *nodeEntry) {
	e.view = nil
	e.gen++
	if !e.dirty {
		e.dirty = true
		f.dirty = append(f.dirty, id)
	}
}

// agentConn is the leader's handle on one agent stream. Only that stream's loop sends on the
// stream; others wake it through desired when the node's desired state changed, and it sends
// the latest. The wake-up holds at most one: changes coalesce, none is lost.
type agentConn struct {
	nodeID  string
	runID   string
	desired chan struct{}
	// replaced is closed when a newer stream of the same agent process takes over.
	replaced chan struct{}
}

func newFleet(now func() time.Time, grace time.Duration, publish func(*llmscalerv1.Event)) *fleet {
	return &fleet{nodes: map[string]*nodeEntry{}, cordons: map[string]cordon{}, now: now, grace: grace, publish: publish}
}

// load seeds the fleet with stored node records at the start of a term. Nodes recorded as
// connected count as disconnected from now on until their agent comes back.
func (f *fleet) load(nodes []*llmscalerv1.Node, cordons map[string]cordon) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := timestamppb.New(f.now())
	f.cordons = cordons
	for _, n := range nodes {
		n = proto.Clone(n).(*llmscalerv1.Node)
		if n.GetState() != llmscalerv1.NodeState_NODE_STATE_LOST {
			n.State = llmscalerv1.NodeState_NODE_STATE_DISCONNECTED
			n.DisconnectedAt = now
		}
		if c, ok := cordons[n.GetNodeId()]; ok {
			n.Cordoned, n.CordonReason, n.Draining = true, c.Reason, c.Drain
		}
		f.nodes[n.GetNodeId()] = &nodeEntry{node: n, instances: map[string]*llmscalerv1.InstanceStatus{},
			unreported: n.GetState() != llmscalerv1.NodeState_NODE_STATE_LOST}
	}
	f.ids = nil
}

// attach registers an agent stream after its hello. A stream from the same agent process
// (same run id) replaces the old one; another process claiming a connected node is refused.
// It returns the node as it should be stored.
func (f *fleet) attach(h *llmscalerv1.Hello, addr string) (*agentConn, *llmscalerv1.Node, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := h.GetNodeId()
	e := f.nodes[id]
	if e != nil && e.conn != nil {
		if e.conn.runID != h.GetRunId() {
			return nil, nil, fmt.Errorf("%w: node %q is held by another agent process from %s since %s",
				errNodeConnected, id, e.node.GetAddress(), e.node.GetConnectedAt().AsTime().Format(time.RFC3339))
		}
		close(e.conn.replaced)
	}
	if e == nil {
		e = &nodeEntry{node: &llmscalerv1.Node{NodeId: id}}
		f.nodes[id] = e
		f.ids = nil
		if c, ok := f.cordons[id]; ok {
			e.node.Cordoned, e.node.CordonReason, e.node.Draining = true, c.Reason, c.Drain
		}
	}
	now := timestamppb.New(f.now())
	n := e.node
	n.Labels = h.GetLabels()
	n.AgentVersion = h.GetAgentVersion()
	n.GpuBackend = h.GetGpuBackend()
	n.Gpus = h.GetGpus()
	n.Profiles = h.GetProfiles()
	n.State = llmscalerv1.NodeState_NODE_STATE_CONNECTED
	n.Address = addr
	n.ConnectedAt = now
	n.LastSeen = now
	n.DisconnectedAt = nil
	f.changed(id, e)
	e.instances = map[string]*llmscalerv1.InstanceStatus{}
	for _, in := range h.GetInstances() {
		e.instances[in.GetInstanceId()] = in
	}
	e.unreported = false
	n.InstanceCount = uint32(len(e.instances))
	e.conn = &agentConn{nodeID: id, runID: h.GetRunId(), desired: make(chan struct{}, 1), replaced: make(chan struct{})}
	f.publish(&llmscalerv1.Event{Time: now, Type: llmscalerv1.EventType_EVENT_TYPE_NODE_CONNECTED, NodeId: id,
		Message: fmt.Sprintf("node %s connected from %s with %d GPUs (%s)", id, addr, len(n.GetGpus()), n.GetGpuBackend())})
	return e.conn, proto.Clone(n).(*llmscalerv1.Node), nil
}

// detach ends a stream. It reports false when a newer stream of the agent already took over.
func (f *fleet) detach(c *agentConn, reason error) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	e := f.nodes[c.nodeID]
	if e == nil || e.conn != c {
		return false
	}
	e.conn = nil
	f.changed(c.nodeID, e)
	now := f.now()
	e.node.State = llmscalerv1.NodeState_NODE_STATE_DISCONNECTED
	e.node.DisconnectedAt = timestamppb.New(now)
	msg := fmt.Sprintf("node %s disconnected", c.nodeID)
	if reason != nil {
		msg += ": " + reason.Error()
	}
	f.publish(&llmscalerv1.Event{Time: timestamppb.New(now), Type: llmscalerv1.EventType_EVENT_TYPE_NODE_DISCONNECTED, NodeId: c.nodeID, Message: msg})
	return true
}

// report applies an agent's report to the node. It allocates nothing under the lock in the
// steady state: an allocation there can be made to assist the garbage collector while
// every other report waits for the lock, which at 10,000 agents put seconds into the
// tail of ingest.
func (f *fleet) report(nodeID string, r *llmscalerv1.Report) {
	now := timestamppb.New(f.now())
	f.mu.Lock()
	defer f.mu.Unlock()
	e := f.nodes[nodeID]
	if e == nil {
		return
	}
	e.node.LastSeen = now
	if r.GetBuffered() {
		// A report made while the agent had no stream is history: it must not replace the
		// live samples that a fresher report already gave.
		return
	}
	f.changed(nodeID, e)
	e.node.GpuSamples = r.GetGpus()
	for _, in := range r.GetInstances() {
		old := e.instances[in.GetInstanceId()]
		if old == nil || old.GetPhase() != in.GetPhase() || old.GetRestarts() != in.GetRestarts() {
			// The agent's message says why (an exit, a hang, a failed start): it goes with
			// the event, since the instance's own message is cleared once it is READY again.
			msg := fmt.Sprintf("instance %s of %s on %s is %s", in.GetInstanceId(), in.GetDeployment(), nodeID, phaseName(in.GetPhase()))
			if old != nil && old.GetRestarts() != in.GetRestarts() {
				msg += fmt.Sprintf(" (restart %d)", in.GetRestarts())
			}
			if m := in.GetMessage(); m != "" {
				msg += ": " + m
			}
			f.publish(&llmscalerv1.Event{Time: now, Type: llmscalerv1.EventType_EVENT_TYPE_INSTANCE_PHASE, NodeId: nodeID,
				Deployment: in.GetDeployment(), InstanceId: in.GetInstanceId(), Phase: in.GetPhase(), Message: msg})
		}
		e.instances[in.GetInstanceId()] = in
	}
	for id := range e.instances {
		if !hasInstance(r.GetInstances(), id) {
			delete(e.instances, id)
		}
	}
	e.node.InstanceCount = uint32(len(e.instances))
}

// touch records that the agent was heard from.
func (f *fleet) touch(nodeID string) {
	now := timestamppb.New(f.now())
	f.mu.Lock()
	defer f.mu.Unlock()
	if e := f.nodes[nodeID]; e != nil {
		e.node.LastSeen = now
	}
}

// expire marks nodes lost whose stream has been gone longer than the grace period, and
// returns them for storing.
func (f *fleet) expire() []*llmscalerv1.Node {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.now()
	var lost []*llmscalerv1.Node
	for id, e := range f.nodes {
		n := e.node
		if n.GetState() != llmscalerv1.NodeState_NODE_STATE_DISCONNECTED || now.Sub(n.GetDisconnectedAt().AsTime()) < f.grace {
			continue
		}
		f.changed(id, e)
		n.State = llmscalerv1.NodeState_NODE_STATE_LOST
		e.unreported = false
		e.instances = map[string]*llmscalerv1.InstanceStatus{}
		n.InstanceCount = 0
		n.GpuSamples = nil
		f.publish(&llmscalerv1.Event{Time: timestamppb.New(now), Type: llmscalerv1.EventType_EVENT_TYPE_NODE_LOST, NodeId: id,
			Message: fmt.Sprintf("node %s lost: no stream for %s", id, now.Sub(n.GetDisconnectedAt().AsTime()).Round(time.Second))})
		lost = append(lost, proto.Clone(n).(*llmscalerv1.Node))
	}
	return lost
}

// setCordon applies a cordon change seen in etcd, made by the caller by.
func (f *fleet) setCordon(nodeID string, c *cordon, by string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c == nil {
		delete(f.cordons, nodeID)
	} else {
		f.cordons[nodeID] = *c
	}
	e := f.nodes[nodeID]
	if e == nil {
		return
	}
	was, wasDraining := e.node.GetCordoned(), e.node.GetDraining()
	if c == nil {
		e.node.Cordoned, e.node.CordonReason, e.node.Draining = false, "", false
	} else {
		e.node.Cordoned, e.node.CordonReason, e.node.Draining = true, c.Reason, c.Drain
	}
	f.changed(nodeID, e)
	if was == e.node.GetCordoned() && wasDraining == e.node.GetDraining() {
		return
	}
	ev := &llmscalerv1.Event{Time: timestamppb.New(f.now()), NodeId: nodeID, Actor: by}
	if c == nil {
		ev.Type, ev.Message = llmscalerv1.EventType_EVENT_TYPE_NODE_UNCORDONED, fmt.Sprintf("node %s uncordoned", nodeID)
	} else {
		ev.Type, ev.Message = llmscalerv1.EventType_EVENT_TYPE_NODE_CORDONED, fmt.Sprintf("node %s cordoned: %s", nodeID, c.Reason)
		if c.Drain {
			ev.Message = fmt.Sprintf("node %s cordoned and draining: %s", nodeID, c.Reason)
		}
	}
	if by != "" {
		ev.Message += ", by " + by
	}
	f.publish(ev)
}

// notify wakes a node's stream loop to send its desired state; it never blocks.
func (f *fleet) notify(nodeID string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if e := f.nodes[nodeID]; e != nil && e.conn != nil {
		select {
		case e.conn.desired <- struct{}{}:
		default:
		}
	}
}

// nodePage is one page of the nodes that pass keep, ordered by id; only the page is copied.
func (f *fleet) nodePage(keep func(*llmscalerv1.Node) bool, p pageRequest) (nodes []*llmscalerv1.Node, next string, total int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ids := make([]string, 0, len(f.nodes))
	for _, id := range f.sortedIDs() {
		if keep(f.nodes[id].node) {
			ids = append(ids, id)
		}
	}
	from, to, next := p.page(ids)
	nodes = make([]*llmscalerv1.Node, 0, to-from)
	for _, id := range ids[from:to] {
		nodes = append(nodes, proto.Clone(f.nodes[id].node).(*llmscalerv1.Node))
	}
	return nodes, next, len(ids)
}

// instancePage is one page of the instances that pass keep, ordered by node and instance
// id; only the page is copied.
func (f *fleet) instancePage(nodeID string, keep func(*llmscalerv1.InstanceStatus) bool, p pageRequest) (ins []*llmscalerv1.Instance, next string, total int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	// Keys are node id, NUL, instance id: they sort by node, then instance, which is the
	// order of the sorted node ids and each view's sorted instances, so nothing is sorted.
	var keys []string
	for _, id := range f.sortedIDs() {
		if nodeID != "" && id != nodeID {
			continue
		}
		for _, in := range f.view(id).instances {
			if keep(in) {
				keys = append(keys, id+"\x00"+in.GetInstanceId())
			}
		}
	}
	from, to, next := p.page(keys)
	ins = make([]*llmscalerv1.Instance, 0, to-from)
	for _, k := range keys[from:to] {
		node, iid, _ := strings.Cut(k, "\x00")
		ins = append(ins, &llmscalerv1.Instance{NodeId: node, Status: proto.Clone(f.nodes[node].instances[iid]).(*llmscalerv1.InstanceStatus)})
	}
	return ins, next, len(keys)
}

// getNode returns a copy of one node and its instances.
func (f *fleet) getNode(id string) (*llmscalerv1.Node, []*llmscalerv1.InstanceStatus, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e := f.nodes[id]
	if e == nil {
		return nil, nil, false
	}
	return proto.Clone(e.node).(*llmscalerv1.Node), sortedInstances(e.instances), true
}

// phases counts the instances of each deployment by phase, in one pass and copying nothing:
// what ListDeployments and the status page's history need, at any fleet size.
func (f *fleet) phases() map[string]map[llmscalerv1.InstancePhase]uint32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]map[llmscalerv1.InstancePhase]uint32{}
	for _, e := range f.nodes {
		for _, in := range e.instances {
			m := out[in.GetDeployment()]
			if m == nil {
				m = map[llmscalerv1.InstancePhase]uint32{}
				out[in.GetDeployment()] = m
			}
			m[in.GetPhase()]++
		}
	}
	return out
}

// counts summarises the fleet for GetClusterStatus and metrics.
type fleetCounts struct {
	byState   map[llmscalerv1.NodeState]uint32
	gpus      uint32
	instances uint32
	streams   uint32
}

func (f *fleet) counts() fleetCounts {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := fleetCounts{byState: map[llmscalerv1.NodeState]uint32{}}
	for _, e := range f.nodes {
		c.byState[e.node.GetState()]++
		if e.node.GetState() == llmscalerv1.NodeState_NODE_STATE_CONNECTED {
			c.gpus += uint32(len(e.node.GetGpus()))
		}
		c.instances += uint32(len(e.instances))
		if e.conn != nil {
			c.streams++
		}
	}
	return c
}

func sortedInstances(m map[string]*llmscalerv1.InstanceStatus) []*llmscalerv1.InstanceStatus {
	out := make([]*llmscalerv1.InstanceStatus, 0, len(m))
	for _, in := range m {
		out = append(out, proto.Clone(in).(*llmscalerv1.InstanceStatus))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetInstanceId() < out[j].GetInstanceId() })
	return out
}

func phaseName(p llmscalerv1.InstancePhase) string {
	s := p.String()
	const pfx = "INSTANCE_PHASE_"
	if len(s) > len(pfx) {
		return s[len(pfx):]
	}
	return s
}

// snapshot is every node and its instances for one reconcile pass or evaluation, ordered
// by node id. It is read-only: the nodes and instances in it are shared with the fleet and
// with other snapshots. That is safe because the fleet never changes a stored instance or a
// node's lists and maps in place (a report or a hello replaces them), and a node's own
// fields are copied into a new view after each change. A view's last_seen may be older than
// the node's: a heartbeat moves it without a new view.
func (f *fleet) snapshot() []nodeSnapshot {
	f.mu.Lock()
	ids := f.sortedIDs()
	return f.viewsUnlock(ids, make([]nodeSnapshot, 0, len(ids)))
}

// changes is the views of the nodes changed since the last call, in the order they first
// changed, appended to out[:0]. The scaling loops are its one caller: each call takes the
// dirty list.
func (f *fleet) changes(out []nodeSnapshot) []nodeSnapshot {
	f.mu.Lock()
	ids := f.dirty
	f.dirty, f.dirtySpare = f.dirtySpare[:0], ids
	for _, id := range ids {
		f.nodes[id].dirty = false
	}
	return f.viewsUnlock(ids, out[:0])
}

// viewsUnlock appends the views of the nodes ids to out and returns it. The caller holds the
// lock, which viewsUnlock releases; ids must stay as they are until it returns.
//
// Views are built outside the lock: sorting and deriving the thousand nodes that reported
// since the last snapshot took long enough to hold up every agent stream waiting to apply
// its report (the mutex profile at 10,000 agents). Under the lock only the node is copied
// and its instances listed.
func (f *fleet) viewsUnlock(ids []string, out []nodeSnapshot) []nodeSnapshot {
	type pending struct {
		i         int
		id        string
		gen       uint64
		instances int
	}
	var todo []pending
	for _, id := range ids {
		e := f.nodes[id]
		if e.view != nil {
			out = append(out, *e.view)
			continue
		}
		todo = append(todo, pending{len(out), id, e.gen, len(e.instances)})
		out = append(out, nodeSnapshot{})
	}
	f.mu.Unlock()
	if len(todo) == 0 {
		return out
	}
	// The new views' messages and lists are allocated before the lock is taken again to
	// copy the nodes into them: an allocation under the lock may assist the garbage
	// collector while every report waits.
	nodes := make([]*llmscalerv1.Node, len(todo))
	lists := make([][]*llmscalerv1.InstanceStatus, len(todo))
	for k, p := range todo {
		nodes[k] = new(llmscalerv1.Node)
		lists[k] = make([]*llmscalerv1.InstanceStatus, 0, p.instances+2)
	}
	f.mu.Lock()
	for k := range todo {
		p := &todo[k]
		e := f.nodes[p.id]
		shallowNodeInto(nodes[k], e.node)
		for _, in := range e.instances {
			lists[k] = append(lists[k], in)
		}
		out[p.i] = nodeSnapshot{node: nodes[k], instances: lists[k], unreported: e.unreported}
		p.gen = e.gen // copied as of now
	}
	f.mu.Unlock()
	for _, p := range todo {
		out[p.i].finish()
	}
	// One allocation per view, not one array for all: a view may outlive the others by
	// long (a node that does not report), and would keep the whole array alive.
	views := make([]*nodeSnapshot, len(todo))
	for k, p := range todo {
		v := out[p.i]
		views[k] = &v
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for k, p := range todo {
		if e := f.nodes[p.id]; e != nil && e.gen == p.gen && e.view == nil {
			e.view = views[k]
		}
	}
	return out
}

// sortedIDs is every node id in order; the caller holds the lock and must not change it.
func (f *fleet) sortedIDs() []string {
	if f.ids == nil {
		f.ids = slices.Sorted(maps.Keys(f.nodes))
	}
	return f.ids
}

// view is a node's view, made if a change dropped it; the caller holds the lock.
func (f *fleet) view(id string) *nodeSnapshot {
	e := f.nodes[id]
	if e.view == nil {
		e.view = newNodeView(e)
	}
	return e.view
}

// newNodeView makes a node's view: a shallow copy of the node, its instances ordered by id,
// and what evaluations and placement derive from them, computed once per change. The caller
// holds the lock.
func newNodeView(e *nodeEntry) *nodeSnapshot {
	v := &nodeSnapshot{node: shallowNode(e.node), instances: slices.Collect(maps.Values(e.instances)), unreported: e.unreported}
	v.finish()
	return v
}

// finish orders a new view's instances by id and derives the rest; it needs no lock, the
// view being the caller's alone until it is stored.
func (ns *nodeSnapshot) finish() {
	slices.SortFunc(ns.instances, func(a, b *llmscalerv1.InstanceStatus) int {
		return strings.Compare(a.GetInstanceId(), b.GetInstanceId())
	})
	ns.derive()
}

// shallowNode copies a node's fields into a new message that shares its lists, maps and
// timestamps (TestShallowNodeCopiesEveryField keeps it complete).
func shallowNode(n *llmscalerv1.Node) *llmscalerv1.Node {
	d := new(llmscalerv1.Node)
	shallowNodeInto(d, n)
	return d
}

// shallowNodeInto is shallowNode into a message already allocated.
func shallowNodeInto(d, n *llmscalerv1.Node) {
	*d = llmscalerv1.Node{
		NodeId:         n.NodeId,
		Labels:         n.Labels,
		AgentVersion:   n.AgentVersion,
		GpuBackend:     n.GpuBackend,
		Gpus:           n.Gpus,
		Profiles:       n.Profiles,
		State:          n.State,
		Cordoned:       n.Cordoned,
		CordonReason:   n.CordonReason,
		Address:        n.Address,
		ConnectedAt:    n.ConnectedAt,
		LastSeen:       n.LastSeen,
		DisconnectedAt: n.DisconnectedAt,
		GpuSamples:     n.GpuSamples,
		InstanceCount:  n.InstanceCount,
		Draining:       n.Draining,
	}
}
