package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// Key layout under the configured prefix:
//
//	election/<lease>     leader election (concurrency.Election); value: ControllerInfo
//	deployments/<name>   Deployment (spec and scale state, no status); written by admin calls on any controller
//	cordons/<node>       cordon record (JSON); written by admin calls on any controller
//	nodes/<node>         Node as last registered (inventory, lost or not); written by the leader only, fenced
//	removed/deployments/<name>, removed/cordons/<node>
//	                     who deleted a deployment or uncordoned a node (the caller's identity),
//	                     written in the same transaction as the delete, so the leader can say
//	                     who in the event; a deployment's is removed with its journal
//
// Nothing is written per report: node records change when an agent connects or is marked lost.

var (
	// errNotFound is returned when a key does not exist.
	errNotFound = errors.New("not found")
	// errFenced is returned when a leader write fails its fence: another controller leads now.
	errFenced = errors.New("leadership lost: the election key changed")
)

type store struct {
	cli    *clientv3.Client
	prefix string
	now    func() time.Time
}

func (s *store) electionPrefix() string           { return s.prefix + "/election" }
func (s *store) deploymentKey(name string) string { return s.prefix + "/deployments/" + name }
func (s *store) deploymentsPrefix() string        { return s.prefix + "/deployments/" }
func (s *store) nodeKey(id string) string         { return s.prefix + "/nodes/" + id }
func (s *store) nodesPrefix() string              { return s.prefix + "/nodes/" }
func (s *store) cordonKey(id string) string       { return s.prefix + "/cordons/" + id }
func (s *store) cordonsPrefix() string            { return s.prefix + "/cordons/" }

// removedKey records who removed the key of kind ("deployments", "cordons") and name.
func (s *store) removedKey(kind, name string) string {
	return s.prefix + "/removed/" + kind + "/" + name
}

// removedBy returns who removed kind/name in the delete at revision rev, "" if unknown.
func (s *store) removedBy(ctx context.Context, kind, name string, rev int64) string {
	resp, err := s.cli.Get(ctx, s.removedKey(kind, name))
	if err != nil || len(resp.Kvs) == 0 || resp.Kvs[0].ModRevision != rev {
		return ""
	}
	return string(resp.Kvs[0].Value)
}

// fence makes leader writes conditional on the leader's election key still having the
// creation revision it had when it won: a deposed leader's writes fail instead of landing.
type fence struct {
	cli *clientv3.Client
	key string
	rev int64
}

func (f fence) commit(ctx context.Context, ops ...clientv3.Op) error {
	resp, err := f.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(f.key), "=", f.rev)).
		Then(ops...).
		Commit()
	if err != nil {
		return fmt.Errorf("fenced write: %w", err)
	}
	if !resp.Succeeded {
		return errFenced
	}
	return nil
}

// getDeployment reads one deployment and its mod revision.
func (s *store) getDeployment(ctx context.Context, name string) (*llmscalerv1.Deployment, int64, error) {
	resp, err := s.cli.Get(ctx, s.deploymentKey(name))
	if err != nil {
		return nil, 0, fmt.Errorf("read deployment %s: %w", name, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, fmt.Errorf("deployment %q: %w", name, errNotFound)
	}
	d := &llmscalerv1.Deployment{}
	if err := proto.Unmarshal(resp.Kvs[0].Value, d); err != nil {
		return nil, 0, fmt.Errorf("decode deployment %s: %w", name, err)
	}
	return d, resp.Kvs[0].ModRevision, nil
}

// listDeployments reads all deployments, ordered by name.
func (s *store) listDeployments(ctx context.Context) ([]*llmscalerv1.Deployment, error) {
	ds, _, err := s.listDeploymentsAt(ctx)
	return ds, err
}

// listDeploymentsAt reads all deployments and the revision they were read at, to watch from.
func (s *store) listDeploymentsAt(ctx context.Context) ([]*llmscalerv1.Deployment, int64, error) {
	resp, err := s.cli.Get(ctx, s.deploymentsPrefix(), clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, 0, fmt.Errorf("list deployments: %w", err)
	}
	out := make([]*llmscalerv1.Deployment, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		d := &llmscalerv1.Deployment{}
		if err := proto.Unmarshal(kv.Value, d); err != nil {
			return nil, 0, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		out = append(out, d)
	}
	return out, resp.Header.Revision, nil
}

// updateDeployment applies fn to the stored deployment (nil when there is none) and writes
// the result only if nobody changed it in between, retrying on conflict. fn's error aborts
// with nothing written.
func (s *store) updateDeployment(ctx context.Context, name string, fn func(cur *llmscalerv1.Deployment) (*llmscalerv1.Deployment, error)) (*llmscalerv1.Deployment, bool, error) {
	key := s.deploymentKey(name)
	for range 16 {
		cur, rev, err := s.getDeployment(ctx, name)
		if err != nil && !errors.Is(err, errNotFound) {
			return nil, false, err
		}
		next, err := fn(cur)
		if err != nil {
			return nil, false, err
		}
		now := timestamppb.New(s.now())
		next.UpdatedAt = now
		next.Generation = 1
		if cur != nil {
			next.Generation = cur.GetGeneration() + 1
			next.CreatedAt = cur.GetCreatedAt()
		} else {
			next.CreatedAt = now
		}
		next.Status = nil
		val, err := proto.Marshal(next)
		if err != nil {
			return nil, false, fmt.Errorf("encode deployment %s: %w", name, err)
		}
		// rev is 0 when the key does not exist, and ModRevision of a missing key compares as 0.
		resp, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
			Then(clientv3.OpPut(key, string(val))).
			Commit()
		if err != nil {
			return nil, false, fmt.Errorf("write deployment %s: %w", name, err)
		}
		if resp.Succeeded {
			return next, cur == nil, nil
		}
	}
	return nil, false, fmt.Errorf("write deployment %s: too many concurrent changes, try again", name)
}

// deleteDeployment removes a deployment, recording by, the caller; errNotFound if there was none.
func (s *store) deleteDeployment(ctx context.Context, name, by string) error {
	key := s.deploymentKey(name)
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), ">", 0)).
		Then(clientv3.OpDelete(key), clientv3.OpPut(s.removedKey("deployments", name), by)).
		Commit()
	if err != nil {
		return fmt.Errorf("delete deployment %s: %w", name, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("deployment %q: %w", name, errNotFound)
	}
	return nil
}

// cordon is the stored record of a cordoned node.
type cordon struct {
	Reason string    `json:"reason"`
	Since  time.Time `json:"since"`
	// Drain moves the node's instances elsewhere as well.
	Drain bool `json:"drain,omitempty"`
	// By is the identity of the caller who cordoned the node.
	By string `json:"by,omitempty"`
}

// setCordon stores a cordon, or removes it (c nil) recording by, the caller.
func (s *store) setCordon(ctx context.Context, nodeID string, c *cordon, by string) error {
	if c == nil {
		key := s.cordonKey(nodeID)
		// Only an existing cordon's removal is recorded: the leader sees no event otherwise.
		if _, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), ">", 0)).
			Then(clientv3.OpDelete(key), clientv3.OpPut(s.removedKey("cordons", nodeID), by)).
			Commit(); err != nil {
			return fmt.Errorf("uncordon %s: %w", nodeID, err)
		}
		return nil
	}
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	if _, err := s.cli.Put(ctx, s.cordonKey(nodeID), string(b)); err != nil {
		return fmt.Errorf("cordon %s: %w", nodeID, err)
	}
	return nil
}

// cordons reads every cordon record and the revision they were read at.
func (s *store) cordons(ctx context.Context) (map[string]cordon, int64, error) {
	resp, err := s.cli.Get(ctx, s.cordonsPrefix(), clientv3.WithPrefix())
	if err != nil {
		return nil, 0, fmt.Errorf("list cordons: %w", err)
	}
	out := make(map[string]cordon, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		c, err := decodeCordon(kv.Value)
		if err != nil {
			return nil, 0, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		out[strings.TrimPrefix(string(kv.Key), s.cordonsPrefix())] = *c
	}
	return out, resp.Header.Revision, nil
}

// node reads one registered node record.
func (s *store) node(ctx context.Context, id string) (*llmscalerv1.Node, error) {
	resp, err := s.cli.Get(ctx, s.nodeKey(id))
	if err != nil {
		return nil, fmt.Errorf("read node %s: %w", id, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("node %q: %w", id, errNotFound)
	}
	n := &llmscalerv1.Node{}
	if err := proto.Unmarshal(resp.Kvs[0].Value, n); err != nil {
		return nil, fmt.Errorf("decode node %s: %w", id, err)
	}
	return n, nil
}

// nodes reads every registered node record.
func (s *store) nodes(ctx context.Context) ([]*llmscalerv1.Node, error) {
	resp, err := s.cli.Get(ctx, s.nodesPrefix(), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	out := make([]*llmscalerv1.Node, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		n := &llmscalerv1.Node{}
		if err := proto.Unmarshal(kv.Value, n); err != nil {
			return nil, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		out = append(out, n)
	}
	return out, nil
}

// nodeOp is the write of a node's record (nodeRecord); the leader's nodeWriter commits
// these in fenced batches.
func (s *store) nodeOp(n *llmscalerv1.Node) (clientv3.Op, error) {
	val, err := proto.Marshal(nodeRecord(n))
	if err != nil {
		return clientv3.Op{}, fmt.Errorf("encode node %s: %w", n.GetNodeId(), err)
	}
	return clientv3.OpPut(s.nodeKey(n.GetNodeId()), string(val)), nil
}

func decodeCordon(b []byte) (*cordon, error) {
	var c cordon
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, err
	}
	return &c, nil
}

// describeDeploymentChange says in a line what a write to a deployment changed.
func describeDeploymentChange(name string, val []byte, prev *mvccpb.KeyValue) string {
	d := &llmscalerv1.Deployment{}
	if err := proto.Unmarshal(val, d); err != nil {
		return fmt.Sprintf("deployment %s changed (undecodable: %v)", name, err)
	}
	sp := d.GetSpec()
	base := fmt.Sprintf("deployment %s generation %d: profile %s, %d-%d replicas", name, d.GetGeneration(), sp.GetProfile(), sp.GetMinReplicas(), sp.GetMaxReplicas())
	if prev == nil {
		return base + " (created)"
	}
	old := &llmscalerv1.Deployment{}
	if err := proto.Unmarshal(prev.Value, old); err != nil || proto.Equal(old.GetSpec(), sp) {
		sc := d.GetScale()
		switch {
		case sc.ManualReplicas != nil:
			base += fmt.Sprintf(", held at %d replicas by hand", sc.GetManualReplicas())
		default:
			base += ", replica count back to the policy"
		}
		if sc.GetPaused() {
			base += ", autoscaling paused"
		}
		return base
	}
	return base + " (spec changed)"
}

// memberStatus asks each configured etcd endpoint for its status at once, each bounded by
// per, and returns the raft leader's member id (0 if no endpoint answered) and which members
// answered. A dead endpoint costs per, not the caller's whole deadline.
func (s *store) memberStatus(ctx context.Context, per time.Duration) (leader uint64, reachable map[uint64]bool) {
	type answer struct{ member, leader uint64 }
	eps := s.cli.Endpoints()
	ch := make(chan answer, len(eps))
	for _, ep := range eps {
		go func() {
			cctx, cancel := context.WithTimeout(ctx, per)
			defer cancel()
			st, err := s.cli.Status(cctx, ep)
			if err != nil {
				ch <- answer{}
				return
			}
			ch <- answer{member: st.Header.GetMemberId(), leader: st.Leader}
		}()
	}
	reachable = map[uint64]bool{}
	for range eps {
		a := <-ch
		if a.member != 0 {
			reachable[a.member] = true
			leader = max(leader, a.leader)
		}
	}
	return leader, reachable
}
