package controller

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/llmscaler/llmscaler/controller/statuspage"
	"github.com/llmscaler/llmscaler/internal/policy"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// statusDecisionRows is how many rows of decisions the status page lists, over all deployments.
const statusDecisionRows = 25

// serveStatus serves the read-only status page. It reads through the admin API's own
// handlers, called in-process, so the page shows what ListDeployments, ListDecisions,
// ListNodes and ListInstances answer. On a follower those that need the leader's live view
// are not called: the page shows what etcd holds and links to the leader's page.
func (c *Controller) serveStatus(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	var buf bytes.Buffer
	if err := statuspage.Render(&buf, c.statusPage(ctx)); err != nil {
		c.log.Error("render status page failed", "error", err)
		http.Error(w, "render status page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	// The page has no script: forbid any, so that an escaping mistake cannot run one.
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	_, _ = w.Write(buf.Bytes())
}

// statusPage gathers the page. A part that cannot be read is named in Problems and the rest
// is shown.
func (c *Controller) statusPage(ctx context.Context) *statuspage.Page {
	s := adminService{c: c}
	p := &statuspage.Page{
		Controller: c.info.GetId(), Version: c.info.GetVersion(), Now: c.now(),
		HistoryStep: historyStep, HistorySpan: historySpan,
	}
	problem := func(what string, err error) { p.Problems = append(p.Problems, fmt.Sprintf("%s: %v", what, err)) }
	t := c.currentTerm()
	if t != nil {
		p.Leader, p.LeaderID, p.Epoch, p.LeaderSince = true, c.info.GetId(), t.epoch, t.since
	} else if v := c.currentView(); v.leader != nil {
		p.LeaderID, p.Epoch, p.LeaderGRPC, p.LeaderURL = v.leader.GetId(), v.epoch, v.leader.GetGrpcAddress(), statusURL(v.leader)
	}

	deps, err := s.ListDeployments(ctx, &llmscalerv1.ListDeploymentsRequest{})
	if err != nil {
		problem("deployments", err)
	}
	for _, d := range deps.GetDeployments() {
		p.Deployments = append(p.Deployments, c.statusDeployment(t, d, p.Now))
		ds, err := c.statusDecisions(ctx, s, t != nil, d.GetSpec().GetName())
		if err != nil {
			problem("decisions of "+d.GetSpec().GetName(), err)
		}
		p.Decisions = append(p.Decisions, statusDecisionRuns(ds)...)
	}
	sort.SliceStable(p.Decisions, func(i, j int) bool { return p.Decisions[i].Time.After(p.Decisions[j].Time) })
	p.Decisions = p.Decisions[:min(len(p.Decisions), statusDecisionRows)]

	var nodes []*llmscalerv1.Node
	byNode := map[string][]statuspage.Instance{}
	if t != nil {
		// One page of each: a fleet larger than a page is summed up, not rendered whole.
		ns, err := s.ListNodes(ctx, &llmscalerv1.ListNodesRequest{PageSize: maxPageSize})
		if err != nil {
			problem("nodes", err)
		}
		nodes = ns.GetNodes()
		if ns.GetNextPageToken() != "" {
			p.Problems = append(p.Problems, fmt.Sprintf("showing the first %d of %d nodes (ListNodes pages through all)", len(nodes), ns.GetTotalSize()))
		}
		ins, err := s.ListInstances(ctx, &llmscalerv1.ListInstancesRequest{PageSize: maxPageSize})
		if err != nil {
			problem("instances", err)
		}
		if ins.GetNextPageToken() != "" {
			p.Problems = append(p.Problems, fmt.Sprintf("showing the first %d of %d instances (ListInstances pages through all)", len(ins.GetInstances()), ins.GetTotalSize()))
		}
		for _, in := range ins.GetInstances() {
			st := in.GetStatus()
			byNode[in.GetNodeId()] = append(byNode[in.GetNodeId()], statuspage.Instance{
				ID: st.GetInstanceId(), Deployment: st.GetDeployment(), Phase: phaseName(st.GetPhase()),
				Endpoint: st.GetEndpoint(), GPUs: st.GetGpuIndices(), Message: st.GetMessage()})
		}
	} else {
		if nodes, err = c.store.nodes(ctx); err != nil {
			problem("nodes", err)
		}
		sort.Slice(nodes, func(i, j int) bool { return nodes[i].GetNodeId() < nodes[j].GetNodeId() })
	}
	for _, n := range nodes {
		p.Nodes = append(p.Nodes, statusNode(n, byNode[n.GetNodeId()]))
	}
	return p
}

// statusURL is a controller's status page, "" when its HTTP address is unknown. A wildcard
// listen address is reached at the host of the advertised gRPC address.
func statusURL(info *llmscalerv1.ControllerInfo) string {
	host, port, err := net.SplitHostPort(info.GetHttpAddress())
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		if host, _, err = net.SplitHostPort(info.GetGrpcAddress()); err != nil {
			return ""
		}
	}
	return "http://" + net.JoinHostPort(host, port) + "/"
}

// statusDeployment is a deployment's row: its spec, and on the leader its live counts
// (ListDeployments' status) and replica history, which ends with those counts now.
func (c *Controller) statusDeployment(t *term, d *llmscalerv1.Deployment, now time.Time) statuspage.Deployment {
	sp := d.GetSpec()
	out := statuspage.Deployment{
		Name: sp.GetName(), Profile: sp.GetProfile(), Min: sp.GetMinReplicas(), Max: sp.GetMaxReplicas(),
		Policy: policyName(sp.GetPolicy()), Paused: d.GetScale().GetPaused(),
	}
	if pol := sp.GetPolicy(); pol != nil && proto.Size(pol) > 0 {
		b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(pol)
		if err == nil {
			out.PolicySettings = string(b)
		}
	}
	if m := d.GetScale().ManualReplicas; m != nil {
		out.Manual, out.HasManual = *m, true
	}
	if t == nil || d.GetStatus() == nil {
		return out
	}
	st := d.GetStatus()
	out.Live, out.Desired, out.Replicas, out.Message = true, st.GetDesiredReplicas(), st.GetReplicas(), st.GetMessage()
	for _, pt := range t.engine.history.points(sp.GetName()) {
		out.History = append(out.History, statuspage.Point{Time: pt.at, Desired: pt.desired, Ready: pt.ready})
	}
	out.History = append(out.History, statuspage.Point{Time: now, Desired: st.GetDesiredReplicas(), Ready: st.GetReplicas()[phaseName(llmscalerv1.InstancePhase_INSTANCE_PHASE_READY)]})
	return out
}

// statusDecisions reads a deployment's recent decisions: ListDecisions on the leader, the
// journal stored in etcd elsewhere.
func (c *Controller) statusDecisions(ctx context.Context, s adminService, leading bool, name string) ([]*llmscalerv1.Decision, error) {
	if leading {
		// All the journal holds: a hold repeats at every evaluation, and repeats make one row.
		resp, err := s.ListDecisions(ctx, &llmscalerv1.ListDecisionsRequest{Deployment: name, Limit: journalMemory})
		return resp.GetDecisions(), err
	}
	return c.store.decisions(ctx, name)
}

// statusDecisionRuns turns one deployment's decisions, newest first, into rows: decisions in
// a row that read the same (sameKind, as the journal stores them) make one row, the newest,
// counted. It returns at most statusDecisionRows rows.
func statusDecisionRuns(ds []*llmscalerv1.Decision) []statuspage.Decision {
	var out []statuspage.Decision
	for i, d := range ds {
		if i > 0 && sameKind(ds[i-1], d) {
			last := &out[len(out)-1]
			last.Repeats++
			last.Since = d.GetTime().AsTime()
			continue
		}
		if len(out) == statusDecisionRows {
			break
		}
		row := statuspage.Decision{
			Time: d.GetTime().AsTime(), Deployment: d.GetDeployment(), Policy: d.GetPolicy(),
			From: d.GetFromReplicas(), To: d.GetToReplicas(), Acted: d.GetActed(), Reason: d.GetReason(),
			Repeats: 1, Since: d.GetTime().AsTime(),
		}
		out = append(out, row)
	}
	return out
}

func statusNode(n *llmscalerv1.Node, ins []statuspage.Instance) statuspage.Node {
	out := statuspage.Node{
		ID: n.GetNodeId(), State: strings.TrimPrefix(n.GetState().String(), "NODE_STATE_"), Address: n.GetAddress(),
		Backend: n.GetGpuBackend(), Cordoned: n.GetCordoned(), Draining: n.GetDraining(), CordonReason: n.GetCordonReason(),
		Instances: ins,
	}
	if ls := n.GetLastSeen(); ls != nil {
		out.LastSeen = ls.AsTime()
	}
	samples := map[uint32]*llmscalerv1.GpuSample{}
	for _, s := range n.GetGpuSamples() {
		samples[s.GetIndex()] = s
	}
	for _, g := range n.GetGpus() {
		v := statuspage.GPU{Index: g.GetIndex(), Name: g.GetName(), MemoryMiB: g.GetMemoryTotalMib()}
		if s := samples[g.GetIndex()]; s != nil {
			if s.UtilizationPercent != nil {
				v.Utilization, v.HasUtilization = s.GetUtilizationPercent(), true
			}
			if s.MemoryUsedMib != nil {
				v.MemoryUsedMiB, v.HasMemoryUsed = s.GetMemoryUsedMib(), true
			}
		}
		out.GPUs = append(out.GPUs, v)
	}
	return out
}

// policyName is the policy a spec runs, as decisions name it.
func policyName(p *llmscalerv1.Policy) string {
	switch p.GetKind().(type) {
	case *llmscalerv1.Policy_Threshold:
		return policy.NameThreshold
	case *llmscalerv1.Policy_Target:
		return policy.NameTarget
	default:
		return policy.NameSLO
	}
}
