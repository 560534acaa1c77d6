package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/llmscaler/llmscaler/internal/names"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// adminService serves AdminService. Calls that change desired state write etcd from any
// controller; calls that read live state run on the leader (the forwarding interceptor sends
// them there), so they reach these handlers only on the leader.
type adminService struct {
	llmscalerv1.UnimplementedAdminServiceServer
	c *Controller
}

// storeError maps store errors to gRPC status at the handler edge.
func storeError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return status.FromContextError(err).Err()
	default:
		return status.Errorf(codes.Unavailable, "etcd: %v", err)
	}
}

// leaderTerm returns the current term; handlers of live state only run on the leader, but
// leadership can end between the interceptor's check and here.
func (s adminService) leaderTerm() (*term, error) {
	if t := s.c.currentTerm(); t != nil {
		return t, nil
	}
	return nil, status.Error(codes.Unavailable, "this controller stopped leading; retry")
}

func (s adminService) ListNodes(ctx context.Context, r *llmscalerv1.ListNodesRequest) (*llmscalerv1.ListNodesResponse, error) {
	if err := names.Labels(r.GetLabels()); err != nil {
		return nil, badField("labels", "%v", err).grpcStatus()
	}
	if _, ok := llmscalerv1.NodeState_name[int32(r.GetState())]; !ok {
		return nil, badField("state", "%d is no node state", r.GetState()).grpcStatus()
	}
	p, ferr := parsePage(r.GetPageSize(), r.GetPageToken(), filterKey(r.GetState().String(), r.GetLabels()))
	if ferr != nil {
		return nil, ferr.grpcStatus()
	}
	t, err := s.leaderTerm()
	if err != nil {
		return nil, err
	}
	keep := func(n *llmscalerv1.Node) bool {
		if r.GetState() != llmscalerv1.NodeState_NODE_STATE_UNSPECIFIED && n.GetState() != r.GetState() {
			return false
		}
		for k, v := range r.GetLabels() {
			if n.GetLabels()[k] != v {
				return false
			}
		}
		return true
	}
	nodes, next, total := t.fleet.nodePage(keep, p)
	return &llmscalerv1.ListNodesResponse{Nodes: nodes, NextPageToken: next, TotalSize: int32(total)}, nil
}

// filterKey is a canonical string of a list call's filters, for its page tokens.
func filterKey(parts ...any) string {
	b, _ := json.Marshal(parts) // maps marshal with sorted keys
	return string(b)
}

func (s adminService) GetNode(ctx context.Context, r *llmscalerv1.GetNodeRequest) (*llmscalerv1.GetNodeResponse, error) {
	if err := names.NodeID(r.GetNodeId()); err != nil {
		return nil, badField("node_id", "%v", err).grpcStatus()
	}
	t, err := s.leaderTerm()
	if err != nil {
		return nil, err
	}
	n, ins, ok := t.fleet.getNode(r.GetNodeId())
	if !ok {
		return nil, status.Errorf(codes.NotFound, "node %q: no agent with that id has connected", r.GetNodeId())
	}
	return &llmscalerv1.GetNodeResponse{Node: n, Instances: ins}, nil
}

// setCordon cordons (c set) or uncordons a node, recording by, the caller.
func (s adminService) setCordon(ctx context.Context, id string, c *cordon, by string) (*llmscalerv1.Node, error) {
	if err := names.NodeID(id); err != nil {
		return nil, badField("node_id", "%v", err).grpcStatus()
	}
	n, err := s.c.store.node(ctx, id)
	if err != nil {
		return nil, storeError(err)
	}
	if err := s.c.store.setCordon(ctx, id, c, by); err != nil {
		return nil, storeError(err)
	}
	n.Cordoned = c != nil
	if c != nil {
		n.CordonReason, n.Draining = c.Reason, c.Drain
	}
	return n, nil
}

func (s adminService) CordonNode(ctx context.Context, r *llmscalerv1.CordonNodeRequest) (*llmscalerv1.CordonNodeResponse, error) {
	if len(r.GetReason()) > 1024 {
		return nil, badField("reason", "%d bytes, at most 1024 allowed", len(r.GetReason())).grpcStatus()
	}
	reason := r.GetReason()
	if reason == "" {
		reason = "cordoned by an operator"
	}
	by := callerFrom(ctx).String()
	n, err := s.setCordon(ctx, r.GetNodeId(), &cordon{Reason: reason, Since: s.c.now().UTC(), By: by}, by)
	if err != nil {
		return nil, err
	}
	s.c.log.Info("node cordoned", "node_id", r.GetNodeId(), "reason", reason, "caller", by)
	return &llmscalerv1.CordonNodeResponse{Node: n}, nil
}

func (s adminService) UncordonNode(ctx context.Context, r *llmscalerv1.UncordonNodeRequest) (*llmscalerv1.UncordonNodeResponse, error) {
	by := callerFrom(ctx).String()
	n, err := s.setCordon(ctx, r.GetNodeId(), nil, by)
	if err != nil {
		return nil, err
	}
	s.c.log.Info("node uncordoned", "node_id", r.GetNodeId(), "caller", by)
	return &llmscalerv1.UncordonNodeResponse{Node: n}, nil
}

func (s adminService) DrainNode(ctx context.Context, r *llmscalerv1.DrainNodeRequest) (*llmscalerv1.DrainNodeResponse, error) {
	by := callerFrom(ctx).String()
	n, err := s.setCordon(ctx, r.GetNodeId(), &cordon{Reason: "draining: instances move elsewhere", Since: s.c.now().UTC(), Drain: true, By: by}, by)
	if err != nil {
		return nil, err
	}
	s.c.log.Info("node draining", "node_id", r.GetNodeId(), "caller", by)
	return &llmscalerv1.DrainNodeResponse{Node: n}, nil
}

func (s adminService) ApplyDeployment(ctx context.Context, r *llmscalerv1.ApplyDeploymentRequest) (*llmscalerv1.ApplyDeploymentResponse, error) {
	if fe := checkRequestSize(r); fe != nil {
		return nil, fe.grpcStatus()
	}
	if len(r.ProtoReflect().GetUnknown()) > 0 {
		return nil, badField("request", "has fields this controller does not know").grpcStatus()
	}
	spec := r.GetDeployment()
	if fe := validateDeploymentSpec(spec); fe != nil {
		return nil, fe.grpcStatus()
	}
	by := callerFrom(ctx).String()
	d, created, err := s.c.store.updateDeployment(ctx, spec.GetName(), func(cur *llmscalerv1.Deployment) (*llmscalerv1.Deployment, error) {
		next := &llmscalerv1.Deployment{Spec: proto.Clone(spec).(*llmscalerv1.DeploymentSpec), Scale: &llmscalerv1.ScaleState{}, UpdatedBy: by}
		if cur != nil {
			// A new spec keeps what ScaleDeployment set by hand. A count outside the new
			// bounds is clamped into them when used, not silently dropped.
			next.Scale = cur.GetScale()
		}
		return next, nil
	})
	if err != nil {
		return nil, storeError(err)
	}
	s.c.log.Info("deployment applied", "deployment", spec.GetName(), "generation", d.GetGeneration(), "created", created, "caller", by)
	return &llmscalerv1.ApplyDeploymentResponse{Deployment: d, Created: created}, nil
}

func (s adminService) GetDeployment(ctx context.Context, r *llmscalerv1.GetDeploymentRequest) (*llmscalerv1.GetDeploymentResponse, error) {
	if err := names.DeploymentName(r.GetName()); err != nil {
		return nil, badField("name", "%v", err).grpcStatus()
	}
	d, _, err := s.c.store.getDeployment(ctx, r.GetName())
	if err != nil {
		return nil, storeError(err)
	}
	s.c.fillStatus(d)
	return &llmscalerv1.GetDeploymentResponse{Deployment: d}, nil
}

func (s adminService) ListDeployments(ctx context.Context, r *llmscalerv1.ListDeploymentsRequest) (*llmscalerv1.ListDeploymentsResponse, error) {
	p, ferr := parsePage(r.GetPageSize(), r.GetPageToken(), "")
	if ferr != nil {
		return nil, ferr.grpcStatus()
	}
	ds, err := s.c.store.listDeployments(ctx)
	if err != nil {
		return nil, storeError(err)
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i].GetSpec().GetName() < ds[j].GetSpec().GetName() })
	keys := make([]string, len(ds))
	for i, d := range ds {
		keys[i] = d.GetSpec().GetName()
	}
	from, to, next := p.page(keys)
	ds = ds[from:to]
	s.c.fillStatus(ds...)
	return &llmscalerv1.ListDeploymentsResponse{Deployments: ds, NextPageToken: next, TotalSize: int32(len(keys))}, nil
}

// fillStatus adds the leader's live view to a stored deployment. Off the leader (no leader
// elected) the status stays empty.
func (c *Controller) fillStatus(ds ...*llmscalerv1.Deployment) {
	t := c.currentTerm()
	if t == nil || len(ds) == 0 {
		return
	}
	phases := t.fleet.phases()
	for _, d := range ds {
		st := &llmscalerv1.DeploymentStatus{DesiredReplicas: t.reconciler.desired(d), Replicas: map[string]uint32{}, Message: t.reconciler.status(d.GetSpec().GetName())}
		for ph, n := range phases[d.GetSpec().GetName()] {
			st.Replicas[phaseName(ph)] += n
		}
		d.Status = st
	}
}

func (s adminService) DeleteDeployment(ctx context.Context, r *llmscalerv1.DeleteDeploymentRequest) (*llmscalerv1.DeleteDeploymentResponse, error) {
	if err := names.DeploymentName(r.GetName()); err != nil {
		return nil, badField("name", "%v", err).grpcStatus()
	}
	by := callerFrom(ctx).String()
	if err := s.c.store.deleteDeployment(ctx, r.GetName(), by); err != nil {
		return nil, storeError(err)
	}
	s.c.log.Info("deployment deleted", "deployment", r.GetName(), "caller", by)
	return &llmscalerv1.DeleteDeploymentResponse{}, nil
}

func (s adminService) ScaleDeployment(ctx context.Context, r *llmscalerv1.ScaleDeploymentRequest) (*llmscalerv1.ScaleDeploymentResponse, error) {
	if err := names.DeploymentName(r.GetName()); err != nil {
		return nil, badField("name", "%v", err).grpcStatus()
	}
	by := callerFrom(ctx).String()
	d, _, err := s.c.store.updateDeployment(ctx, r.GetName(), func(cur *llmscalerv1.Deployment) (*llmscalerv1.Deployment, error) {
		if cur == nil {
			return nil, fmt.Errorf("deployment %q: %w", r.GetName(), errNotFound)
		}
		if fe := validateScale(r, cur.GetSpec()); fe != nil {
			return nil, fe
		}
		next := proto.Clone(cur).(*llmscalerv1.Deployment)
		next.UpdatedBy = by
		if next.Scale == nil {
			next.Scale = &llmscalerv1.ScaleState{}
		}
		if r.Replicas != nil {
			next.Scale.ManualReplicas = proto.Uint32(r.GetReplicas())
		}
		if r.GetClearReplicas() {
			next.Scale.ManualReplicas = nil
		}
		switch r.GetAutoscaling() {
		case llmscalerv1.AutoscalingAction_AUTOSCALING_ACTION_PAUSE:
			next.Scale.Paused = true
		case llmscalerv1.AutoscalingAction_AUTOSCALING_ACTION_RESUME:
			next.Scale.Paused = false
		}
		return next, nil
	})
	var fe *fieldError
	if errors.As(err, &fe) {
		return nil, fe.grpcStatus()
	}
	if err != nil {
		return nil, storeError(err)
	}
	s.c.log.Info("deployment scaled", "deployment", r.GetName(), "generation", d.GetGeneration(),
		"manual_replicas", d.GetScale().GetManualReplicas(), "paused", d.GetScale().GetPaused(), "caller", by)
	s.c.fillStatus(d)
	return &llmscalerv1.ScaleDeploymentResponse{Deployment: d}, nil
}

func (s adminService) ListInstances(ctx context.Context, r *llmscalerv1.ListInstancesRequest) (*llmscalerv1.ListInstancesResponse, error) {
	if r.GetDeployment() != "" {
		if err := names.DeploymentName(r.GetDeployment()); err != nil {
			return nil, badField("deployment", "%v", err).grpcStatus()
		}
	}
	if r.GetNodeId() != "" {
		if err := names.NodeID(r.GetNodeId()); err != nil {
			return nil, badField("node_id", "%v", err).grpcStatus()
		}
	}
	if _, ok := llmscalerv1.InstancePhase_name[int32(r.GetPhase())]; !ok {
		return nil, badField("phase", "%d is no instance phase", r.GetPhase()).grpcStatus()
	}
	p, ferr := parsePage(r.GetPageSize(), r.GetPageToken(), filterKey(r.GetDeployment(), r.GetNodeId(), r.GetPhase().String()))
	if ferr != nil {
		return nil, ferr.grpcStatus()
	}
	t, err := s.leaderTerm()
	if err != nil {
		return nil, err
	}
	keep := func(in *llmscalerv1.InstanceStatus) bool {
		return (r.GetDeployment() == "" || in.GetDeployment() == r.GetDeployment()) &&
			(r.GetPhase() == llmscalerv1.InstancePhase_INSTANCE_PHASE_UNSPECIFIED || in.GetPhase() == r.GetPhase())
	}
	ins, next, total := t.fleet.instancePage(r.GetNodeId(), keep, p)
	return &llmscalerv1.ListInstancesResponse{Instances: ins, NextPageToken: next, TotalSize: int32(total)}, nil
}

func (s adminService) ListDecisions(ctx context.Context, r *llmscalerv1.ListDecisionsRequest) (*llmscalerv1.ListDecisionsResponse, error) {
	if err := names.DeploymentName(r.GetDeployment()); err != nil {
		return nil, badField("deployment", "%v", err).grpcStatus()
	}
	if r.GetLimit() > journalMemory {
		return nil, badField("limit", "%d, at most %d", r.GetLimit(), journalMemory).grpcStatus()
	}
	t, err := s.leaderTerm()
	if err != nil {
		return nil, err
	}
	limit := int(r.GetLimit())
	if limit == 0 {
		limit = 20
	}
	ds := t.engine.journal.recent(r.GetDeployment(), limit)
	if len(ds) == 0 {
		if _, _, err := s.c.store.getDeployment(ctx, r.GetDeployment()); err != nil {
			return nil, storeError(err)
		}
	}
	return &llmscalerv1.ListDecisionsResponse{Decisions: ds}, nil
}

func (s adminService) WatchEvents(r *llmscalerv1.WatchEventsRequest, stream llmscalerv1.AdminService_WatchEventsServer) error {
	t, err := s.leaderTerm()
	if err != nil {
		return err
	}
	sub, cancel := s.c.events.subscribe(r)
	defer cancel()
	// Headers tell the client it is subscribed: every event from now on will reach it.
	if err := stream.SendHeader(metadata.MD{}); err != nil {
		return err
	}
	ctx := stream.Context()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.ctx.Done():
			return status.Error(codes.Unavailable, "this controller stopped leading; watch again")
		case <-sub.overflow:
			return status.Errorf(codes.ResourceExhausted, "watcher fell %d events behind; watch again", eventQueue)
		case e := <-sub.ch:
			if err := stream.Send(&llmscalerv1.WatchEventsResponse{Event: e}); err != nil {
				return err
			}
		}
	}
}

// etcdCluster is the part of the cluster status read from etcd's cluster API: its members,
// which leads and which answer.
type etcdCluster struct {
	members []*llmscalerv1.EtcdMember
}

// etcdStatusAge is how old the etcd members in GetClusterStatus may be. Reading them takes
// a member list and a status call to every endpoint, round trips that wait
// behind whatever etcd is doing (a connect storm's writes): dashboards and scripts that
// poll the status every second cost etcd one read a second however many there are.
const etcdStatusAge = time.Second

// etcdStatusCache keeps the last etcdCluster read for etcdStatusAge. One caller reads at a
// time; the others wait for its answer rather than asking etcd again.
type etcdStatusCache struct {
	mu   sync.Mutex
	at   time.Time
	last etcdCluster
}

func (ec *etcdStatusCache) get(ctx context.Context, now time.Time, read func(context.Context) (etcdCluster, error)) (etcdCluster, error) {
	ec.mu.Lock()
	defer ec.mu.Unlock()
	if !ec.at.IsZero() && now.Sub(ec.at) < etcdStatusAge {
		return ec.last, nil
	}
	v, err := read(ctx)
	if err != nil {
		return etcdCluster{}, err
	}
	ec.at, ec.last = now, v
	return v, nil
}

// readEtcdCluster reads the etcd part of the cluster status.
func (c *Controller) readEtcdCluster(ctx context.Context) (etcdCluster, error) {
	mctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	members, err := c.store.cli.MemberList(mctx)
	if err != nil {
		return etcdCluster{}, err
	}
	var out etcdCluster
	etcdLeader, reachable := c.store.memberStatus(ctx, time.Second)
	for _, m := range members.Members {
		out.members = append(out.members, &llmscalerv1.EtcdMember{
			Name: m.Name, Id: fmt.Sprintf("%x", m.ID), ClientUrls: m.ClientURLs, IsLeader: m.ID == etcdLeader, Reachable: reachable[m.ID],
		})
	}
	return out, nil
}

func (s adminService) GetClusterStatus(ctx context.Context, _ *llmscalerv1.GetClusterStatusRequest) (*llmscalerv1.GetClusterStatusResponse, error) {
	c := s.c
	v := c.currentView()
	resp := &llmscalerv1.GetClusterStatusResponse{
		Leader:      v.leader,
		Epoch:       v.epoch,
		AnsweredBy:  c.info,
		Controllers: v.candidates,
	}
	ec, err := c.etcdStatus.get(ctx, c.now(), func(ctx context.Context) (etcdCluster, error) { return c.readEtcdCluster(ctx) })
	if err != nil {
		return nil, storeError(err)
	}
	resp.EtcdMembers = ec.members
	if t := c.currentTerm(); t != nil {
		// The leader follows the deployments through its watch: no read of etcd, which
		// may be busy with a storm of node records.
		resp.Deployments = uint32(t.reconciler.deploymentCount())
	} else {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		cnt, err := c.store.cli.Get(cctx, c.store.deploymentsPrefix(), clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			return nil, storeError(err)
		}
		resp.Deployments = uint32(cnt.Count)
	}
	if t := c.currentTerm(); t != nil {
		// The leader knows it leads before its own election watch says so.
		resp.Leader, resp.Epoch = c.info, t.epoch
		fc := t.fleet.counts()
		resp.NodesConnected = fc.byState[llmscalerv1.NodeState_NODE_STATE_CONNECTED]
		resp.NodesDisconnected = fc.byState[llmscalerv1.NodeState_NODE_STATE_DISCONNECTED]
		resp.NodesLost = fc.byState[llmscalerv1.NodeState_NODE_STATE_LOST]
		resp.Gpus = fc.gpus
		resp.Instances = fc.instances
		resp.LeaderSince = timestamppb.New(t.since)
	}
	return resp, nil
}
