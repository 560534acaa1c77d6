package controller

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"google.golang.org/protobuf/proto"

	"github.com/llmscaler/llmscaler/internal/backoff"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// leaderView is what every controller knows of the election: who leads at which epoch,
// and who else campaigns.
type leaderView struct {
	leader     *llmscalerv1.ControllerInfo
	epoch      int64
	candidates []*llmscalerv1.ControllerInfo
	// synced is true once the view has been read from etcd at least once.
	synced bool
}

// observe keeps c.view current: the candidates are the keys under the election prefix, the
// leader is the one created first (the rule concurrency.Election follows).
func (c *Controller) observe(ctx context.Context) error {
	var failures int
	for ctx.Err() == nil {
		err := c.observeOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		c.log.Warn("election watch failed", "error", err)
		if backoff.Sleep(ctx, c.cfg.Backoff.Delay(failures)) != nil {
			return nil
		}
		failures++
	}
	return nil
}

func (c *Controller) observeOnce(ctx context.Context) error {
	pfx := c.store.electionPrefix() + "/"
	rev, err := c.readView(ctx, pfx)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for resp := range c.store.cli.Watch(wctx, pfx, clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
		if err := resp.Err(); err != nil {
			return fmt.Errorf("watch election: %w", err)
		}
		if rev, err = c.readView(ctx, pfx); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	return errors.New("election watch closed")
}

func (c *Controller) readView(ctx context.Context, pfx string) (int64, error) {
	resp, err := c.store.cli.Get(ctx, pfx, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
	if err != nil {
		return 0, fmt.Errorf("read election: %w", err)
	}
	v := leaderView{synced: true}
	for i, kv := range resp.Kvs {
		info := &llmscalerv1.ControllerInfo{}
		if err := proto.Unmarshal(kv.Value, info); err != nil {
			c.log.Warn("undecodable election value", "key", string(kv.Key), "error", err)
			info.Id = string(kv.Key)
		}
		v.candidates = append(v.candidates, info)
		if i == 0 {
			v.leader, v.epoch = info, kv.CreateRevision
		}
	}
	c.setView(v)
	return resp.Header.Revision, nil
}

func (c *Controller) setView(v leaderView) {
	c.mu.Lock()
	old := c.view
	c.view = v
	c.mu.Unlock()
	if old.epoch != v.epoch || len(old.candidates) != len(v.candidates) || old.synced != v.synced {
		if v.leader != nil {
			c.log.Debug("leader observed", "leader_id", v.leader.GetId(), "epoch", v.epoch)
		}
		c.changes.notify()
	}
}

func (c *Controller) currentView() leaderView {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.view
}

// campaign runs for leadership until ctx ends: win, lead until the session is lost, resign,
// and campaign again.
func (c *Controller) campaign(ctx context.Context) error {
	var failures int
	for ctx.Err() == nil {
		led, err := c.campaignOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if led {
			failures = 0
		}
		c.log.Warn("leadership ended", "error", err)
		if backoff.Sleep(ctx, c.cfg.Backoff.Delay(failures)) != nil {
			return nil
		}
		failures++
	}
	return nil
}

// campaignOnce wins one term and leads it. It reports whether it led.
func (c *Controller) campaignOnce(ctx context.Context) (bool, error) {
	sess, err := concurrency.NewSession(c.store.cli, concurrency.WithTTL(c.ttlSeconds()), concurrency.WithContext(ctx))
	if err != nil {
		return false, fmt.Errorf("etcd session: %w", err)
	}
	// Closing the session revokes its lease, which ends our claim at once instead of after
	// the TTL: the next leader does not wait for a controller that shut down cleanly.
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, _ = c.store.cli.Revoke(cctx, sess.Lease())
		sess.Orphan()
	}()

	// The campaign itself is bound to the session: if the lease expires while we wait our turn,
	// the wait ends instead of "winning" with a key that is gone.
	cctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(ctx, cancel)
	defer stop()
	go func() {
		select {
		case <-sess.Done():
			cancel()
		case <-cctx.Done():
		}
	}()
	val, err := proto.Marshal(c.info)
	if err != nil {
		cancel()
		return false, err
	}
	el := concurrency.NewElection(sess, c.store.electionPrefix())
	if err := el.Campaign(cctx, string(val)); err != nil {
		cancel()
		return false, fmt.Errorf("campaign: %w", err)
	}
	epoch := el.Rev()
	log := c.log.With("epoch", epoch)
	log.Info("elected leader")
	err = c.lead(cctx, el.Key(), epoch, log)
	cancel()
	// Leader work has stopped (lead returned); only now give the key up.
	rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer rcancel()
	if rerr := el.Resign(rctx); rerr != nil && ctx.Err() == nil {
		log.Warn("resign failed", "error", rerr)
	}
	log.Info("stepped down")
	select {
	case <-sess.Done():
		return true, fmt.Errorf("etcd session lost: %w", errors.Join(err, errFenced))
	default:
	}
	return true, err
}

func (c *Controller) ttlSeconds() int {
	s := int(c.cfg.SessionTTL.Round(time.Second) / time.Second)
	if s < 1 {
		s = 1
	}
	return s
}
