package controller

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/types/known/timestamppb"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// reconciler keeps every deployment at its desired replica count for one leadership term:
// it compares the deployments in etcd with what agents report, and hands start and stop
// commands to the agents' stream loops. It is level-triggered: each pass looks at the whole
// picture, so a lost command or a new leader converges on the next pass.
type reconciler struct {
	c     *Controller
	t     *term
	log   hclog.Logger
	every time.Duration
	poked chan struct{}

	mu          sync.Mutex
	deployments map[string]*llmscalerv1.Deployment
	messages    map[string]string
	st          *reconcileState
	// passed is closed after a pass, for the endpoint watchers (changed).
	passed chan struct{}
	// sent keeps the commands of the last minute by deployment, so that a decision can be
	// journaled with the commands that carried it out, whichever pass sent them.
	sent map[string][]sentCommand
}

type sentCommand struct {
	at   time.Time
	text string
}

func newReconciler(c *Controller, t *term) *reconciler {
	return &reconciler{
		c: c, t: t, log: t.log.Named("reconciler"), every: c.cfg.ReportInterval,
		poked:       make(chan struct{}, 1),
		deployments: map[string]*llmscalerv1.Deployment{},
		messages:    map[string]string{},
		st:          newReconcileState(),
		sent:        map[string][]sentCommand{},
	}
}

// poke asks for a pass soon; it never blocks.
func (r *reconciler) poke() {
	select {
	case r.poked <- struct{}{}:
	default:
	}
}

func (r *reconciler) setDeployments(ds []*llmscalerv1.Deployment) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.deployments = make(map[string]*llmscalerv1.Deployment, len(ds))
	for _, d := range ds {
		r.deployments[d.GetSpec().GetName()] = d
	}
}

func (r *reconciler) putDeployment(d *llmscalerv1.Deployment) {
	r.mu.Lock()
	r.deployments[d.GetSpec().GetName()] = d
	r.mu.Unlock()
	r.poke()
}

func (r *reconciler) deleteDeployment(name string) {
	r.mu.Lock()
	delete(r.deployments, name)
	delete(r.messages, name)
	r.mu.Unlock()
	r.poke()
}

// deploymentCount is the number of deployments the leader knows.
func (r *reconciler) deploymentCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.deployments)
}

// status is the deployment's reconcile message: why it is not at its desired count.
func (r *reconciler) status(name string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.messages[name]
}

// passShare bounds the reconciler's share of a core when pokes come faster than passes
// end (every node of a connect storm publishes an event, each a poke): after a pass that
// took d, the next one waits d*(1/passShare - 1) first. At 10,000 nodes a pass takes about
// 20 ms, so a fleet event waits at most 80 ms more for its pass; a decision does not wait
// (the engine runs its own pass).
const passShare = 0.2

func (r *reconciler) run(ctx context.Context) error {
	tk := time.NewTicker(r.every)
	defer tk.Stop()
	var rest time.Duration
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tk.C:
		case <-r.poked:
		}
		if rest > 0 {
			// Pokes that arrive meanwhile coalesce into the one pass after the rest.
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(rest):
			}
		}
		began := time.Now()
		r.pass()
		rest = time.Duration(float64(time.Since(began)) * (1/passShare - 1))
	}
}

// pass runs one reconcile: bring the nodes' desired states up to date with their reports,
// plan, write the plan into the desired states and wake the streams of the nodes that
// changed. It returns what it changed, by deployment, in words for the decision journal.
func (r *reconciler) pass() map[string][]string {
	now := r.c.now()
	nodes := r.t.fleet.snapshot()

	r.mu.Lock()
	changed := map[string]bool{}
	for _, ns := range nodes {
		id := ns.node.GetNodeId()
		for _, in := range ns.instances {
			if in.GetPhase() == llmscalerv1.InstancePhase_INSTANCE_PHASE_FAILED && !r.st.seenFail[in.GetInstanceId()] {
				r.st.seenFail[in.GetInstanceId()] = true
				r.st.recordFailure(in.GetDeployment(), id, now)
				r.log.Warn("instance failed", "deployment", in.GetDeployment(), "instance_id", in.GetInstanceId(), "node_id", id, "message", in.GetMessage())
			}
		}
		if r.syncNodeLocked(ns, now) {
			changed[id] = true
		}
	}

	starts, stops, msgs := plan(now, maps.Clone(r.deployments), nodes, r.st, newInstanceID, r.desired)
	r.messages = msgs
	sent := map[string][]string{}
	for _, a := range starts {
		r.st.desire(a.nodeID).place(a.start, now)
		changed[a.nodeID] = true
		r.log.Info("start placed", "deployment", a.start.GetDeployment(), "instance_id", a.start.GetInstanceId(), "node_id", a.nodeID, "gpus", a.start.GetGpuIndices())
		sent[a.start.GetDeployment()] = append(sent[a.start.GetDeployment()], fmt.Sprintf("start %s on %s (GPUs %v)", a.start.GetInstanceId(), a.nodeID, a.start.GetGpuIndices()))
		r.c.events.publish(&llmscalerv1.Event{Time: timestamppb.New(now), Type: llmscalerv1.EventType_EVENT_TYPE_INSTANCE_PHASE,
			NodeId: a.nodeID, Deployment: a.start.GetDeployment(), InstanceId: a.start.GetInstanceId(), Phase: llmscalerv1.InstancePhase_INSTANCE_PHASE_UNSPECIFIED,
			Message: fmt.Sprintf("start of %s (%s) sent to %s on GPUs %v", a.start.GetInstanceId(), a.start.GetDeployment(), a.nodeID, a.start.GetGpuIndices())})
	}
	for _, a := range stops {
		r.st.desire(a.nodeID).stop(a.instanceID, a.reason, true, now)
		changed[a.nodeID] = true
		r.log.Info("drain placed", "deployment", a.deployment, "instance_id", a.instanceID, "node_id", a.nodeID, "reason", a.reason)
		sent[a.deployment] = append(sent[a.deployment], fmt.Sprintf("stop %s on %s (%s)", a.instanceID, a.nodeID, a.reason))
	}
	// Stamped when sent, not when the pass began: a pass that began before a decision may
	// carry out that decision (it reads the desired count late), and the decision's journal
	// entry asks for the commands sent since it was made.
	sentAt := r.c.now()
	for dep, texts := range sent {
		for _, t := range texts {
			r.sent[dep] = append(r.sent[dep], sentCommand{at: sentAt, text: t})
		}
	}
	for dep, l := range r.sent {
		i := 0
		for i < len(l) && now.Sub(l[i].at) > time.Minute {
			i++
		}
		if i == len(l) {
			delete(r.sent, dep)
		} else {
			r.sent[dep] = l[i:]
		}
	}
	r.notifyPassedLocked()
	r.mu.Unlock()
	// Outside the lock: a stream loop that wakes takes it to read its state.
	for id := range changed {
		r.t.fleet.notify(id)
	}
	return sent
}

// syncNodeLocked brings one node's desired state up to date with what the node reports: a
// start reported is no longer pending, an instance that was reported and is gone is
// forgotten, a drained instance that is gone leaves the drain list, a start a connected node
// has not reported within pendingTimeout is given up (listed to drain for another
// pendingTimeout, in case it turns up late), and a lost node's state is dropped
// (a pending start there must not run when it returns; what it still runs is adopted then).
// It reports whether the state changed.
func (r *reconciler) syncNodeLocked(ns nodeSnapshot, now time.Time) bool {
	id := ns.node.GetNodeId()
	nd := r.st.nodes[id]
	if nd == nil {
		return false
	}
	if ns.node.GetState() == llmscalerv1.NodeState_NODE_STATE_LOST {
		for iid, di := range nd.instances {
			if !di.seen {
				r.log.Warn("node lost before it reported a start; placing again", "deployment", di.start.GetDeployment(), "instance_id", iid, "node_id", id)
			}
		}
		delete(r.st.nodes, id)
		return false
	}
	if ns.node.GetState() != llmscalerv1.NodeState_NODE_STATE_CONNECTED {
		return false // what it runs is as last reported; its pending starts wait for it
	}
	reported := make(map[string]bool, len(ns.instances))
	for _, in := range ns.instances {
		reported[in.GetInstanceId()] = true
	}
	before := nd.version
	for iid, di := range nd.instances {
		switch {
		case reported[iid]:
			di.seen = true
		case di.seen:
			nd.forget(iid)
		case now.Sub(di.since) > pendingTimeout:
			r.log.Warn("start not reported in time; placing again", "deployment", di.start.GetDeployment(), "instance_id", iid, "node_id", id)
			nd.stop(iid, fmt.Sprintf("start not reported within %v; placed again", pendingTimeout), false, now)
		}
	}
	for iid, de := range nd.drain {
		switch {
		case reported[iid]:
			de.seen = true
		case de.seen || now.Sub(de.since) > pendingTimeout:
			nd.forget(iid) // stopped and gone, or never turned up
		}
	}
	return nd.version != before
}

// attach takes a node's stream in: the instances its hello lists that this term does not
// know yet are adopted into its desired state.
func (r *reconciler) attach(nodeID string, reported []*llmscalerv1.InstanceStatus) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.st.desire(nodeID).adopt(reported, r.c.now())
}

// desiredState is the node's desired state as its stream sends it.
func (r *reconciler) desiredState(nodeID string) *llmscalerv1.DesiredState {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.st.desire(nodeID).state(r.t.epoch)
}

// sentSince returns the commands sent for a deployment at or after t.
func (r *reconciler) sentSince(dep string, t time.Time) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, c := range r.sent[dep] {
		if !c.at.Before(t) {
			out = append(out, c.text)
		}
	}
	return out
}

// desired is the count a deployment is driven towards: the count set by hand if any (1 to
// max_replicas), else the autoscaler's (within min and max), else min_replicas.
func (r *reconciler) desired(d *llmscalerv1.Deployment) uint32 {
	sp := d.GetSpec()
	if m := d.GetScale().ManualReplicas; m != nil {
		return min(max(*m, 1), sp.GetMaxReplicas())
	}
	if r.t.engine != nil {
		if n, ok := r.t.engine.desired(sp.GetName()); ok {
			return min(max(n, sp.GetMinReplicas()), sp.GetMaxReplicas())
		}
	}
	return sp.GetMinReplicas()
}

// ack learns from a node's answer to its desired state: an instance it refused to start is
// given up at once (another node gets the replica), counted against the node, and shown in
// the deployment's status; one it could not drain is dropped from the list, so that the
// next pass decides again.
func (r *reconciler) ack(nodeID string, a *llmscalerv1.DesiredStateAck) {
	if len(a.GetRejected()) == 0 {
		return
	}
	r.mu.Lock()
	nd := r.st.nodes[nodeID]
	if nd == nil || a.GetEpoch() != r.t.epoch {
		r.mu.Unlock()
		return
	}
	for _, rej := range a.GetRejected() {
		id := rej.GetInstanceId()
		if di := nd.instances[id]; di != nil {
			dep := di.start.GetDeployment()
			r.st.recordFailure(dep, nodeID, r.c.now())
			r.messages[dep] = fmt.Sprintf("node %s refused to start %s: %s", nodeID, id, rej.GetMessage())
		}
		nd.forget(id)
	}
	r.mu.Unlock()
	r.t.fleet.notify(nodeID)
	r.poke()
}

func newInstanceID(deployment string) string {
	return deployment + "-" + randomHex(4)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
