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

// view merges the fresh reports (those younger than routerForget intervals) per deployment.
func (b *routerBook) view(now time.Time, interval time.Duration) map[string]*routerView {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[string]*routerView{}
	for id, rep := range b.reports {
		if now.Sub(rep.at) > routerForget*interval {
			delete(b.reports, id)
			continue
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
	return out
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
