// Package routerlink connects a request router (internal/router) to the controllers: it
// follows the leader's WatchEndpoints into the router's table and sends what the router
// measured with ReportRouter once per interval. The router keeps serving from its last table
// while the watch is down (a leader change, a restart); nothing here is state that matters.
package routerlink

import (
	"context"
	"errors"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/llmscaler/llmscaler/internal/backoff"
	"github.com/llmscaler/llmscaler/internal/router"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// Config is a link's settings.
type Config struct {
	// ID names the router in its reports (stable across restarts of one router host).
	ID string
	// Interval is how often the router's figures are sent [1 s].
	Interval time.Duration
	// MaxQueue bounds each deployment's queue in the router while it has no free replica.
	MaxQueue int
	// Deployments, when set, are the only deployments this router serves.
	Deployments []string
	// Backoff spaces the watch's reconnects.
	Backoff backoff.Config
}

// Link is one router's connection to the controllers.
type Link struct {
	cfg    Config
	conn   grpc.ClientConnInterface
	router *router.Router
	log    hclog.Logger
}

// New makes a link over conn, a connection to any controller: followers forward both calls
// to the leader.
func New(cfg Config, conn grpc.ClientConnInterface, r *router.Router, log hclog.Logger) (*Link, error) {
	if cfg.ID == "" {
		return nil, errors.New("routerlink: empty router id")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.Backoff.Base <= 0 {
		cfg.Backoff = backoff.Config{Base: 200 * time.Millisecond, Multiplier: 2, Jitter: 0.2, Max: 5 * time.Second}
	}
	return &Link{cfg: cfg, conn: conn, router: r, log: log.Named("link")}, nil
}

// Run follows the endpoints and sends reports until ctx ends.
func (l *Link) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return l.watchLoop(ctx) })
	g.Go(func() error { return l.reportLoop(ctx) })
	return g.Wait()
}

func (l *Link) watchLoop(ctx context.Context) error {
	cli := llmscalerv1.NewAdminServiceClient(l.conn)
	retries := 0
	for ctx.Err() == nil {
		got, err := l.watchOnce(ctx, cli)
		if ctx.Err() != nil {
			return nil
		}
		if got {
			retries = 0
		}
		d := l.cfg.Backoff.Delay(retries)
		retries++
		l.log.Warn("endpoint watch ended; serving from the last table", "error", err, "retry_in", d)
		if backoff.Sleep(ctx, d) != nil {
			return nil
		}
	}
	return nil
}

// watchOnce runs one watch; got says whether it received a table.
func (l *Link) watchOnce(ctx context.Context, cli llmscalerv1.AdminServiceClient) (got bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := cli.WatchEndpoints(ctx, &llmscalerv1.WatchEndpointsRequest{Deployments: l.cfg.Deployments})
	if err != nil {
		return false, err
	}
	for {
		m, err := st.Recv()
		if err != nil {
			return got, err
		}
		if !got {
			l.log.Info("endpoint watch connected", "deployments", len(m.GetDeployments()), "epoch", m.GetEpoch())
		}
		got = true
		if err := l.router.SetDeployments(Table(m, l.cfg.MaxQueue)); err != nil {
			// A table the router refuses (two deployments serving one model) leaves the
			// previous one in force; the controller's next change may fix it.
			l.log.Error("routing table refused; keeping the previous one", "error", err)
		}
	}
}

// Table turns a routing table from the controller into the router's deployments.
func Table(m *llmscalerv1.WatchEndpointsResponse, maxQueue int) []router.Deployment {
	out := make([]router.Deployment, 0, len(m.GetDeployments()))
	for _, d := range m.GetDeployments() {
		rd := router.Deployment{
			Name: d.GetDeployment(), Models: d.GetServedModels(),
			ColdStartWait: d.GetColdStartWait().AsDuration(), MaxQueue: maxQueue,
		}
		for _, e := range d.GetEndpoints() {
			rd.Endpoints = append(rd.Endpoints, router.Endpoint{
				ID: e.GetInstanceId(), URL: "http://" + e.GetAddress(),
				MaxInFlight: int(e.GetMaxInFlight()), KVCache: e.GetKvCacheUsage(),
			})
		}
		out = append(out, rd)
	}
	return out
}

func (l *Link) reportLoop(ctx context.Context) error {
	cli := llmscalerv1.NewRouterServiceClient(l.conn)
	tk := time.NewTicker(l.cfg.Interval)
	defer tk.Stop()
	last := time.Now()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-tk.C:
			req := Report(l.cfg.ID, now, now.Sub(last), l.router.Stats(now))
			last = now
			rctx, cancel := context.WithTimeout(ctx, l.cfg.Interval)
			_, err := cli.ReportRouter(rctx, req)
			cancel()
			switch {
			case err != nil && !failing:
				l.log.Warn("report not delivered; the figures of this interval are lost", "error", err)
				failing = true
			case err == nil && failing:
				l.log.Info("reports delivered again")
				failing = false
			}
		}
	}
}

// Report turns a router snapshot into the report of one interval.
func Report(id string, now time.Time, interval time.Duration, snap router.Snapshot) *llmscalerv1.ReportRouterRequest {
	req := &llmscalerv1.ReportRouterRequest{RouterId: id, Time: timestamppb.New(now), Interval: durationpb.New(interval)}
	for _, d := range snap.Deployments {
		rd := &llmscalerv1.RouterDeploymentStats{
			Deployment: d.Name, Arrivals: d.Interval.Arrivals, Waiting: uint32(max(d.Waiting, 0)), Rejected: d.Interval.Rejected,
		}
		for _, in := range d.Instances {
			rd.Instances = append(rd.Instances, &llmscalerv1.RouterInstanceStats{
				InstanceId: in.ID, InFlight: uint32(max(in.InFlight, 0)),
				Arrivals: in.Interval.Arrivals, Finished: in.Interval.Finished, Errors: in.Interval.Errors,
				Ttft: latency(in.Interval.TTFT), E2ELatency: latency(in.Interval.E2E), CompletionTokens: in.Interval.CompletionTokens,
			})
		}
		req.Deployments = append(req.Deployments, rd)
	}
	return req
}

func latency(l router.Latency) *llmscalerv1.LatencySummary {
	return &llmscalerv1.LatencySummary{P50Seconds: l.P50.Seconds(), P95Seconds: l.P95.Seconds(), Count: l.Count}
}
