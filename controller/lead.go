package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// term is one leadership term: everything the leader does runs under its ctx, which ends
// when the etcd session is lost, so a deposed leader stops at once.
type term struct {
	ctx        context.Context
	epoch      int64
	fence      fence
	fleet      *fleet
	reconciler *reconciler
	engine     *engine
	nodes      *nodeWriter
	routers    *routerBook
	since      time.Time
	log        hclog.Logger
	// failed ends the term: a leader write that failed leaves the stored state behind what
	// the leader acts on, so the leader steps down and the next term (this controller's or
	// another's) starts again from what etcd holds.
	failed chan error
}

// fail ends the term with err; the first failure wins, later ones are dropped.
func (t *term) fail(err error) {
	select {
	case t.failed <- err:
	default:
	}
}

// lead does the leader's work for one term and returns when ctx ends or a fenced write fails.
func (c *Controller) lead(ctx context.Context, key string, epoch int64, log hclog.Logger) error {
	g, gctx := errgroup.WithContext(ctx)
	t := &term{
		ctx:     gctx,
		epoch:   epoch,
		fence:   fence{cli: c.store.cli, key: key, rev: epoch},
		since:   c.now(),
		log:     log,
		routers: newRouterBook(),
		failed:  make(chan error, 1),
	}
	t.reconciler = newReconciler(c, t)
	t.engine = newEngine(c, t)
	t.nodes = newNodeWriter(c.store, t.fence)
	// Every fleet event (a node came or went, an instance changed phase) is worth a pass.
	t.fleet = newFleet(c.now, c.cfg.NodeGrace, func(e *llmscalerv1.Event) {
		c.events.publish(e)
		t.reconciler.poke()
	})
	nodes, err := c.store.nodes(gctx)
	if err != nil {
		return err
	}
	cordons, cordonRev, err := c.store.cordons(gctx)
	if err != nil {
		return err
	}
	t.fleet.load(nodes, cordons)
	deps, deployRev, err := c.store.listDeploymentsAt(gctx)
	if err != nil {
		return err
	}
	t.reconciler.setDeployments(deps)
	if err := t.engine.load(gctx, deps); err != nil {
		return err
	}

	c.setTerm(t)
	defer c.setTerm(nil)
	c.metrics.leaderChanges.Inc()
	c.events.publish(&llmscalerv1.Event{Time: timestamppb.New(t.since), Type: llmscalerv1.EventType_EVENT_TYPE_LEADER_ELECTED,
		Message: fmt.Sprintf("controller %s leads at epoch %d", c.info.GetId(), epoch)})

	g.Go(func() error { return t.nodes.run(gctx) })
	g.Go(func() error { return c.expireNodes(gctx, t) })
	g.Go(func() error { return c.watchCordons(gctx, t, cordonRev) })
	g.Go(func() error { return c.watchDeployments(gctx, t, deployRev) })
	g.Go(func() error { return t.reconciler.run(gctx) })
	g.Go(func() error { return t.engine.run(gctx) })
	g.Go(func() error {
		select {
		case err := <-t.failed:
			return err
		case <-gctx.Done():
			return nil
		}
	})
	err = g.Wait()
	if ctx.Err() != nil && !errors.Is(err, errFenced) {
		return nil
	}
	return err
}

func (c *Controller) setTerm(t *term) {
	c.mu.Lock()
	c.term = t
	c.mu.Unlock()
	// The agent service is SERVING only on the leader, so that health checks and load
	// balancers can find it.
	if t != nil {
		c.metrics.isLeader.Set(1)
		c.metrics.epoch.Set(float64(t.epoch))
		c.health.SetServingStatus(llmscalerv1.AgentService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	} else {
		c.metrics.isLeader.Set(0)
		c.health.SetServingStatus(llmscalerv1.AgentService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
	}
	c.changes.notify()
}

func (c *Controller) currentTerm() *term {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.term != nil && c.term.ctx.Err() != nil {
		return nil
	}
	return c.term
}

// expireNodes marks nodes lost once their stream has been gone for the grace period.
func (c *Controller) expireNodes(ctx context.Context, t *term) error {
	period := c.cfg.NodeGrace / 4
	period = min(max(period, 100*time.Millisecond), time.Second)
	tk := time.NewTicker(period)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tk.C:
			var stored []<-chan error
			for _, n := range t.fleet.expire() {
				t.log.Info("node lost", "node_id", n.GetNodeId())
				stored = append(stored, t.nodes.queue(n))
			}
			for _, done := range stored {
				select {
				case err := <-done:
					if err != nil {
						return fmt.Errorf("store lost nodes: %w", err)
					}
				case <-ctx.Done():
					return nil
				}
			}
		}
	}
}

// watchCordons applies cordon changes that any controller wrote to the leader's fleet view.
func (c *Controller) watchCordons(ctx context.Context, t *term, rev int64) error {
	pfx := c.store.cordonsPrefix()
	for resp := range c.store.cli.Watch(clientv3.WithRequireLeader(ctx), pfx, clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
		if err := resp.Err(); err != nil {
			return fmt.Errorf("watch cordons: %w", err)
		}
		for _, ev := range resp.Events {
			id := strings.TrimPrefix(string(ev.Kv.Key), pfx)
			if ev.Type == clientv3.EventTypeDelete {
				t.fleet.setCordon(id, nil, c.store.removedBy(ctx, "cordons", id, ev.Kv.ModRevision))
				continue
			}
			cs, err := decodeCordon(ev.Kv.Value)
			if err != nil {
				t.log.Warn("undecodable cordon", "node_id", id, "error", err)
				continue
			}
			t.fleet.setCordon(id, cs, cs.By)
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	return errors.New("cordon watch closed")
}

// watchDeployments turns changes to desired state into events. The reconciler of the agent
// issue hangs off this watch too.
func (c *Controller) watchDeployments(ctx context.Context, t *term, rev int64) error {
	pfx := c.store.deploymentsPrefix()
	for resp := range c.store.cli.Watch(clientv3.WithRequireLeader(ctx), pfx, clientv3.WithPrefix(), clientv3.WithRev(rev+1), clientv3.WithPrevKV()) {
		if err := resp.Err(); err != nil {
			return fmt.Errorf("watch deployments: %w", err)
		}
		for _, ev := range resp.Events {
			name := strings.TrimPrefix(string(ev.Kv.Key), pfx)
			e := &llmscalerv1.Event{Time: timestamppb.New(c.now()), Deployment: name}
			if ev.Type == clientv3.EventTypeDelete {
				// Who deleted it is read before remove drops the record.
				e.Actor = c.store.removedBy(ctx, "deployments", name, ev.Kv.ModRevision)
				e.Type, e.Message = llmscalerv1.EventType_EVENT_TYPE_DEPLOYMENT_DELETED, fmt.Sprintf("deployment %s deleted", name)
				t.reconciler.deleteDeployment(name)
				t.engine.remove(ctx, name)
			} else {
				e.Type, e.Message = llmscalerv1.EventType_EVENT_TYPE_DEPLOYMENT_APPLIED, describeDeploymentChange(name, ev.Kv.Value, ev.PrevKv)
				d := &llmscalerv1.Deployment{}
				if err := proto.Unmarshal(ev.Kv.Value, d); err != nil {
					t.log.Warn("undecodable deployment", "deployment", name, "error", err)
				} else {
					e.Actor = d.GetUpdatedBy()
					if prev := decodePrev(ev.PrevKv); prev != nil && !proto.Equal(prev.GetScale(), d.GetScale()) {
						t.engine.scaledByHand(ctx, prev, d)
					}
					t.engine.put(d)
					t.reconciler.putDeployment(d)
				}
			}
			if e.Actor != "" {
				e.Message += ", by " + e.Actor
			}
			c.events.publish(e)
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	return errors.New("deployment watch closed")
}

// decodePrev decodes the previous value of a deployment's key, nil when there was none or it
// does not decode.
func decodePrev(kv *mvccpb.KeyValue) *llmscalerv1.Deployment {
	if kv == nil {
		return nil
	}
	d := &llmscalerv1.Deployment{}
	if err := proto.Unmarshal(kv.Value, d); err != nil {
		return nil
	}
	return d
}
