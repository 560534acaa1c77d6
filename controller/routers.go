package controller

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/llmscaler/llmscaler/internal/names"
	"github.com/llmscaler/llmscaler/internal/window"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

const (
	// routerForget is how many report intervals a router may stay silent before its
	// figures stop counting.
	routerForget = 3
	// maxRouterDeployments bounds one report.
	maxRouterDeployments = 10000
	// defaultIdleToZero is how long a deployment at min_replicas 0 sees no request before it
	// goes to zero, when its spec does not say.
	defaultIdleToZero = 10 * time.Minute
)

// routerBook holds the latest report of every router for one leadership term.
type routerBook struct {
	mu      sync.Mutex
	reports map[string]*routerReport // by router id
	// lastDemand is when any router last saw a request for a deployment.
	lastDemand map[string]time.Time
	// gen counts changes to what view returns: a report, or one forgotten. cached is the
	// view as of cachedGen, good until expires, when its oldest report is forgotten.
	gen       uint64
	cached    map[string]*routerView
	cachedGen uint64
	expires   time.Time
}

type routerReport struct {
	at       time.Time
	interval time.Duration
	deps     map[string]*llmscalerv1.RouterDeploymentStats
}

func newRouterBook() *routerBook {
	return &routerBook{reports: map[string]*routerReport{}, lastDemand: map[string]time.Time{}}
}

func (b *routerBook) put(now time.Time, r *llmscalerv1.ReportRouterRequest) {
	rep := &routerReport{at: now, interval: r.GetInterval().AsDuration(), deps: make(map[string]*llmscalerv1.RouterDeploymentStats, len(r.GetDeployments()))}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, d := range r.GetDeployments() {
		rep.deps[d.GetDeployment()] = d
		if d.GetArrivals() > 0 || d.GetWaiting() > 0 {
			b.lastDemand[d.GetDeployment()] = now
		}
	}
	b.reports[r.GetRouterId()] = rep
	b.gen++
}

// routerView is what the routers together say of one deployment.
type routerView struct {
	waiting    float64
	lastDemand time.Time
	// instances merges the routers' figures per instance.
	instances map[string]*routerInstance
}

type routerInstance struct {
	inFlight          float64
	finishedPerSec    float64
	ttft, e2e         window.Summary
	completionPerSec  float64
	hasTTFT, hasE2E   bool
	reportedByRouters int
}

// view merges the fresh reports (those younger than routerForget intervals) per deployment,
// with a count that changes whenever the view does. The view is shared: it is built again
// only after a change, since the scaling loops ask for it up to a hundred times a second,
// and callers must not modify it.
func (b *routerBook) view(now time.Time, interval time.Duration) (map[string]*routerView, uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cached != nil && b.cachedGen == b.gen && now.Before(b.expires) {
		return b.cached, b.gen
	}
	forget := routerForget * interval
	out := map[string]*routerView{}
	// The view is good until just past the moment its oldest report is forgotten: a report
	// exactly forget old still counts.
	b.expires = now.Add(forget + time.Nanosecond)
	for id, rep := range b.reports {
		if now.Sub(rep.at) > forget {
			delete(b.reports, id)
			b.gen++
			continue
		}
		if exp := rep.at.Add(forget + time.Nanosecond); exp.Before(b.expires) {
			b.expires = exp
		}
		sec := rep.interval.Seconds()
		if sec <= 0 {
			sec = interval.Seconds()
		}
		for name, d := range rep.deps {
			v := out[name]
			if v == nil {
				v = &routerView{instances: map[string]*routerInstance{}}
				out[name] = v
			}
			v.waiting += float64(d.GetWaiting())
			for _, is := range d.GetInstances() {
				ri := v.instances[is.GetInstanceId()]
				if ri == nil {
					ri = &routerInstance{}
					v.instances[is.GetInstanceId()] = ri
				}
				ri.reportedByRouters++
				ri.inFlight += float64(is.GetInFlight())
				ri.finishedPerSec += float64(is.GetFinished()) / sec
				ri.completionPerSec += float64(is.GetCompletionTokens()) / sec
				if t := is.GetTtft(); t.GetCount() > 0 {
					ri.ttft = window.MergeSummaries(ri.ttft, summaryOf(t))
					ri.hasTTFT = true
				}
				if t := is.GetE2ELatency(); t.GetCount() > 0 {
					ri.e2e = window.MergeSummaries(ri.e2e, summaryOf(t))
					ri.hasE2E = true
				}
			}
		}
	}
	for name, at := range b.lastDemand {
		if v := out[name]; v != nil {
			v.lastDemand = at
		} else {
			out[name] = &routerView{lastDemand: at, instances: map[string]*routerInstance{}}
		}
	}
	b.cached, b.cachedGen = out, b.gen
	return out, b.gen
}

func summaryOf(l *llmscalerv1.LatencySummary) window.Summary {
	return window.Summary{P50: l.GetP50Seconds(), P95: l.GetP95Seconds(), Count: l.GetCount()}
}

// mergeRouter fills a replica's sample with what routers measured where its engine exports
// nothing: a server without a finished-request counter or latency histograms (llama.cpp)
// gets the routers' counts and latencies, which cover every request it served. Where the
// engine does report a figure, the engine's stays.
func mergeRouter(s *window.Sample, ri *routerInstance) {
	if ri == nil {
		return
	}
	if s.FinishedPerSec == 0 {
		s.FinishedPerSec = ri.finishedPerSec
	}
	if s.TTFT.Count == 0 && ri.hasTTFT {
		s.TTFT = ri.ttft
	}
	if s.E2E.Count == 0 && ri.hasE2E {
		s.E2E = ri.e2e
	}
	if s.GenerationTPS == 0 {
		s.GenerationTPS = ri.completionPerSec
	}
	if s.Waiting+s.Running == 0 && ri.inFlight > 0 {
		s.Running = ri.inFlight
	}
}

type routerService struct {
	llmscalerv1.UnimplementedRouterServiceServer
	c *Controller
}

func (s routerService) ReportRouter(ctx context.Context, r *llmscalerv1.ReportRouterRequest) (*llmscalerv1.ReportRouterResponse, error) {
	if fe := validateRouterReport(r); fe != nil {
		return nil, fe.grpcStatus()
	}
	t := s.c.currentTerm()
	if t == nil {
		return nil, status.Error(codes.Unavailable, "this controller stopped leading; retry")
	}
	t.routers.put(s.c.now(), r)
	s.c.metrics.routerReports.Inc()
	// Demand at zero replicas should not wait for the next tick.
	t.engine.poke()
	return &llmscalerv1.ReportRouterResponse{}, nil
}

func validateRouterReport(r *llmscalerv1.ReportRouterRequest) *fieldError {
	if fe := checkRequestSize(r); fe != nil {
		return fe
	}
	if err := names.NodeID(r.GetRouterId()); err != nil {
		return badField("router_id", "%v", err)
	}
	if iv := r.GetInterval(); iv == nil || iv.CheckValid() != nil || iv.AsDuration() <= 0 || iv.AsDuration() > time.Minute {
		return badField("interval", "%v: want more than 0 and at most 1 m", r.GetInterval().AsDuration())
	}
	if len(r.GetDeployments()) > maxRouterDeployments {
		return badField("deployments", "%d, at most %d", len(r.GetDeployments()), maxRouterDeployments)
	}
	for i, d := range r.GetDeployments() {
		if err := names.DeploymentName(d.GetDeployment()); err != nil {
			return badField(fmt.Sprintf("deployments[%d].deployment", i), "%v", err)
		}
		for j, is := range d.GetInstances() {
			if is.GetInstanceId() == "" || len(is.GetInstanceId()) > 128 {
				return badField(fmt.Sprintf("deployments[%d].instances[%d].instance_id", i, j), "%q: want 1 to 128 characters", is.GetInstanceId())
			}
		}
	}
	return nil
}
