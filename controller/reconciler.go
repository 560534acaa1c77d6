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

// status is the deployment's reconcile message: why it is not at its desired count.
func (r *reconciler) status(name string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.messages[name]
}

func (r *reconciler) run(ctx context.Context) error {
	tk := time.NewTicker(r.every)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tk.C:
		case <-r.poked:
		}
		r.pass()
	}
}

// pass runs one reconcile: plan, send, remember. It returns the commands it sent, by
// deployment, in words for the decision journal.
func (r *reconciler) pass() map[string][]string {
	now := r.c.now()
	nodes := r.t.fleet.snapshot()

	r.mu.Lock()
	defer r.mu.Unlock()
	seen := map[string]bool{}
	for _, ns := range nodes {
		for _, in := range ns.instances {
			id := in.GetInstanceId()
			seen[id] = true
			if in.GetPhase() == llmscalerv1.InstancePhase_INSTANCE_PHASE_FAILED && !r.st.seenFail[id] {
				r.st.seenFail[id] = true
				r.st.recordFailure(in.GetDeployment(), ns.node.GetNodeId(), now)
				r.log.Warn("instance failed", "deployment", in.GetDeployment(), "instance_id", id, "node_id", ns.node.GetNodeId(), "message", in.GetMessage())
			}
		}
	}
	for id, p := range r.st.pending {
		if seen[id] {
			delete(r.st.pending, id)
		} else if now.Sub(p.sentAt) > pendingTimeout {
			r.log.Warn("start not reported in time; placing again", "deployment", p.deployment, "instance_id", id, "node_id", p.nodeID)
			delete(r.st.pending, id)
		}
	}
	for id, at := range r.st.stopSent {
		if !seen[id] && now.Sub(at) > stopResend {
			delete(r.st.stopSent, id)
		}
	}

	starts, stops, msgs := plan(now, maps.Clone(r.deployments), nodes, r.st, newInstanceID, r.desired)
	r.messages = msgs
	sent := map[string][]string{}
	for _, a := range starts {
		cmd := &llmscalerv1.Command{CommandId: newCommandID(), Epoch: r.t.epoch, Action: &llmscalerv1.Command_StartInstance{StartInstance: a.start}}
		log := r.log.With("deployment", a.start.GetDeployment(), "instance_id", a.start.GetInstanceId(), "node_id", a.nodeID)
		if err := r.t.fleet.send(a.nodeID, cmd); err != nil {
			log.Warn("start not sent", "error", err)
			continue
		}
		r.st.pending[a.start.GetInstanceId()] = &pendingStart{commandID: cmd.GetCommandId(), instanceID: a.start.GetInstanceId(),
			deployment: a.start.GetDeployment(), nodeID: a.nodeID, gpus: a.start.GetGpuIndices(), sentAt: now}
		log.Info("start sent", "gpus", a.start.GetGpuIndices(), "command_id", cmd.GetCommandId())
		sent[a.start.GetDeployment()] = append(sent[a.start.GetDeployment()], fmt.Sprintf("start %s on %s (GPUs %v)", a.start.GetInstanceId(), a.nodeID, a.start.GetGpuIndices()))
		r.c.events.publish(&llmscalerv1.Event{Time: timestamppb.New(now), Type: llmscalerv1.EventType_EVENT_TYPE_INSTANCE_PHASE,
			NodeId: a.nodeID, Deployment: a.start.GetDeployment(), InstanceId: a.start.GetInstanceId(), Phase: llmscalerv1.InstancePhase_INSTANCE_PHASE_UNSPECIFIED,
			Message: fmt.Sprintf("start of %s (%s) sent to %s on GPUs %v", a.start.GetInstanceId(), a.start.GetDeployment(), a.nodeID, a.start.GetGpuIndices())})
	}
	for _, a := range stops {
		cmd := &llmscalerv1.Command{CommandId: newCommandID(), Epoch: r.t.epoch, Action: &llmscalerv1.Command_StopInstance{
			StopInstance: &llmscalerv1.StopInstance{InstanceId: a.instanceID, Reason: a.reason}}}
		log := r.log.With("deployment", a.deployment, "instance_id", a.instanceID, "node_id", a.nodeID)
		if err := r.t.fleet.send(a.nodeID, cmd); err != nil {
			log.Warn("stop not sent", "error", err)
			continue
		}
		r.st.stopSent[a.instanceID] = now
		log.Info("stop sent", "reason", a.reason, "command_id", cmd.GetCommandId())
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
	return sent
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

// ack learns from an agent's answer to a command: a refused start is given up at once, counted
// against the node, and shown in the deployment's status.
func (r *reconciler) ack(nodeID string, a *llmscalerv1.CommandAck) {
	switch a.GetResult() {
	case llmscalerv1.CommandResult_COMMAND_RESULT_REJECTED, llmscalerv1.CommandResult_COMMAND_RESULT_STALE_EPOCH:
	default:
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, p := range r.st.pending {
		if p.commandID != a.GetCommandId() {
			continue
		}
		delete(r.st.pending, id)
		r.st.recordFailure(p.deployment, nodeID, r.c.now())
		r.messages[p.deployment] = fmt.Sprintf("node %s refused to start %s: %s", nodeID, id, a.GetMessage())
		r.poke()
		return
	}
}

func newInstanceID(deployment string) string {
	return deployment + "-" + randomHex(4)
}

func newCommandID() string { return randomHex(8) }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
