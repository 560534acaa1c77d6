package controller

import (
	"slices"
	"sort"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/llmscaler/llmscaler/internal/names"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

const (
	// defaultColdStartWait is how long a router holds a request while a deployment has no
	// ready replica, when the spec does not say: real cold starts take minutes.
	defaultColdStartWait = 5 * time.Minute
	// endpointsKVRefresh is how often a watcher is sent a table whose only change is the
	// instances' KV-cache use (a tie-break for routers, not worth a message a second).
	endpointsKVRefresh = 5 * time.Second
)

// servedModels is the request model names that pick a deployment: the spec's, or its name.
func servedModels(spec *llmscalerv1.DeploymentSpec) []string {
	if m := spec.GetServedModels(); len(m) > 0 {
		return slices.Clone(m)
	}
	return []string{spec.GetName()}
}

// endpointTable is every selected deployment's routing table as the leader sees it now:
// READY instances on nodes not lost, without those listed to drain (from that moment on a
// router sends them nothing new), sorted for stable comparison.
func (r *reconciler) endpointTable(only map[string]bool) []*llmscalerv1.DeploymentEndpoints {
	nodes := r.t.fleet.snapshot()
	r.mu.Lock()
	defer r.mu.Unlock()
	stopping := r.st.stopping()
	byName := map[string]*llmscalerv1.DeploymentEndpoints{}
	for name, d := range r.deployments {
		if len(only) > 0 && !only[name] {
			continue
		}
		wait := defaultColdStartWait
		if w := d.GetSpec().GetColdStartWait(); w != nil {
			wait = w.AsDuration()
		}
		byName[name] = &llmscalerv1.DeploymentEndpoints{
			Deployment: name, ServedModels: servedModels(d.GetSpec()), ColdStartWait: durationpb.New(wait),
		}
	}
	for _, ns := range nodes {
		if ns.node.GetState() == llmscalerv1.NodeState_NODE_STATE_LOST {
			continue
		}
		for _, in := range ns.instances {
			de := byName[in.GetDeployment()]
			if de == nil || in.GetPhase() != llmscalerv1.InstancePhase_INSTANCE_PHASE_READY || in.GetEndpoint() == "" {
				continue
			}
			if stopping[in.GetInstanceId()] {
				continue
			}
			ep := &llmscalerv1.Endpoint{
				InstanceId: in.GetInstanceId(), NodeId: ns.node.GetNodeId(), Address: in.GetEndpoint(),
				MaxInFlight: in.GetMaxInFlight(),
			}
			if m := in.GetMetrics(); m != nil && m.KvCacheUsage != nil {
				ep.KvCacheUsage = proto.Float64(m.GetKvCacheUsage())
			}
			de.Endpoints = append(de.Endpoints, ep)
		}
	}
	out := make([]*llmscalerv1.DeploymentEndpoints, 0, len(byName))
	for _, de := range byName {
		sort.Slice(de.Endpoints, func(i, j int) bool { return de.Endpoints[i].GetInstanceId() < de.Endpoints[j].GetInstanceId() })
		out = append(out, de)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetDeployment() < out[j].GetDeployment() })
	return out
}

// sameRouting reports whether two tables route alike: the same deployments, models, waits
// and endpoints, whatever their KV-cache use.
func sameRouting(a, b []*llmscalerv1.DeploymentEndpoints) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := proto.Clone(a[i]).(*llmscalerv1.DeploymentEndpoints), proto.Clone(b[i]).(*llmscalerv1.DeploymentEndpoints)
		for _, e := range x.Endpoints {
			e.KvCacheUsage = nil
		}
		for _, e := range y.Endpoints {
			e.KvCacheUsage = nil
		}
		if !proto.Equal(x, y) {
			return false
		}
	}
	return true
}

// changed returns a channel closed after the next reconcile pass: the routing table may
// have changed then (an instance turned READY, a stop was sent, a deployment changed).
func (r *reconciler) changed() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.passed == nil {
		r.passed = make(chan struct{})
	}
	return r.passed
}

// notifyPassed wakes the watchers of changed; the caller holds r.mu.
func (r *reconciler) notifyPassedLocked() {
	if r.passed != nil {
		close(r.passed)
		r.passed = nil
	}
}

func (s adminService) WatchEndpoints(req *llmscalerv1.WatchEndpointsRequest, stream llmscalerv1.AdminService_WatchEndpointsServer) error {
	only := map[string]bool{}
	for i, d := range req.GetDeployments() {
		if err := names.DeploymentName(d); err != nil {
			return badField("deployments["+strconv.Itoa(i)+"]", "%v", err).grpcStatus()
		}
		only[d] = true
	}
	t, err := s.leaderTerm()
	if err != nil {
		return err
	}
	ctx := stream.Context()
	var last []*llmscalerv1.DeploymentEndpoints
	var lastSent time.Time
	tick := time.NewTicker(s.c.cfg.ReportInterval)
	defer tick.Stop()
	for {
		wake := t.reconciler.changed()
		table := t.reconciler.endpointTable(only)
		now := s.c.now()
		if last == nil || !sameRouting(last, table) || (now.Sub(lastSent) >= endpointsKVRefresh && !tablesEqual(last, table)) {
			if err := stream.Send(&llmscalerv1.WatchEndpointsResponse{Deployments: table, Epoch: uint64(t.epoch)}); err != nil {
				return err
			}
			last, lastSent = table, now
			s.c.metrics.endpointUpdates.Inc()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.ctx.Done():
			return status.Error(codes.Unavailable, "this controller stopped leading; watch again")
		case <-wake:
		case <-tick.C:
		}
	}
}

func tablesEqual(a, b []*llmscalerv1.DeploymentEndpoints) bool {
	return slices.EqualFunc(a, b, func(x, y *llmscalerv1.DeploymentEndpoints) bool { return proto.Equal(x, y) })
}
