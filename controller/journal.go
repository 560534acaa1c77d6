package controller

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// Journal bounds: the leader keeps the last journalMemory decisions of each deployment in
// memory (every evaluation that recommended a change) and stores the last journalStored in
// etcd (the ones that changed something, or a new kind of hold), so they survive a leader
// change without one etcd write per tick.
const (
	journalMemory = 256
	journalStored = 64
)

// Keys: decisions/<deployment>/<unix nanos, zero-padded> and autoscale/<deployment>.
func (s *store) decisionsPrefix(dep string) string { return s.prefix + "/decisions/" + dep + "/" }
func (s *store) autoscaleKey(dep string) string    { return s.prefix + "/autoscale/" + dep }
func (s *store) autoscalePrefix() string           { return s.prefix + "/autoscale/" }

// putDecision stores one decision under the leader's fence and trims the deployment's stored
// decisions to journalStored.
func (s *store) putDecision(ctx context.Context, f fence, d *llmscalerv1.Decision) error {
	val, err := proto.Marshal(d)
	if err != nil {
		return err
	}
	pfx := s.decisionsPrefix(d.GetDeployment())
	key := fmt.Sprintf("%s%020d", pfx, d.GetTime().AsTime().UnixNano())
	if err := f.commit(ctx, clientv3.OpPut(key, string(val))); err != nil {
		return fmt.Errorf("journal decision of %s: %w", d.GetDeployment(), err)
	}
	resp, err := s.cli.Get(ctx, pfx, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend))
	if err != nil {
		return fmt.Errorf("list decisions of %s: %w", d.GetDeployment(), err)
	}
	if len(resp.Kvs) <= journalStored {
		return nil
	}
	oldest := string(resp.Kvs[journalStored].Key)
	// Everything at or before the oldest key past the bound goes, in one fenced delete.
	return f.commit(ctx, clientv3.OpDelete(pfx, clientv3.WithRange(oldest+"\x00")))
}

// decisions reads a deployment's stored decisions, newest first.
func (s *store) decisions(ctx context.Context, dep string) ([]*llmscalerv1.Decision, error) {
	resp, err := s.cli.Get(ctx, s.decisionsPrefix(dep), clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend))
	if err != nil {
		return nil, fmt.Errorf("read decisions of %s: %w", dep, err)
	}
	out := make([]*llmscalerv1.Decision, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		d := &llmscalerv1.Decision{}
		if err := proto.Unmarshal(kv.Value, d); err != nil {
			return nil, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		out = append(out, d)
	}
	return out, nil
}

// deleteDeploymentState removes a deleted deployment's journal and autoscaler count.
func (s *store) deleteDeploymentState(ctx context.Context, f fence, dep string) error {
	return f.commit(ctx, clientv3.OpDelete(s.decisionsPrefix(dep), clientv3.WithPrefix()), clientv3.OpDelete(s.autoscaleKey(dep)),
		clientv3.OpDelete(s.removedKey("deployments", dep)))
}

// putAutoscale stores the count the autoscaler set for a deployment, so that a new leader
// starts from it rather than from min_replicas.
func (s *store) putAutoscale(ctx context.Context, f fence, dep string, desired uint32) error {
	return f.commit(ctx, clientv3.OpPut(s.autoscaleKey(dep), fmt.Sprint(desired)))
}

// autoscaleCounts reads every stored autoscaler count.
func (s *store) autoscaleCounts(ctx context.Context) (map[string]uint32, error) {
	resp, err := s.cli.Get(ctx, s.autoscalePrefix(), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read autoscaler counts: %w", err)
	}
	out := map[string]uint32{}
	for _, kv := range resp.Kvs {
		var n uint32
		if _, err := fmt.Sscan(string(kv.Value), &n); err != nil {
			return nil, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		out[strings.TrimPrefix(string(kv.Key), s.autoscalePrefix())] = n
	}
	return out, nil
}

// journal is the leader's in-memory decision journal: newest last per deployment.
type journal struct {
	mu  sync.Mutex
	by  map[string][]*llmscalerv1.Decision
	cap int
}

func newJournal() *journal {
	return &journal{by: map[string][]*llmscalerv1.Decision{}, cap: journalMemory}
}

// seed loads stored decisions (newest first) for a deployment at the start of a term.
func (j *journal) seed(dep string, newestFirst []*llmscalerv1.Decision) {
	j.mu.Lock()
	defer j.mu.Unlock()
	l := make([]*llmscalerv1.Decision, 0, len(newestFirst))
	for i := len(newestFirst) - 1; i >= 0; i-- {
		l = append(l, newestFirst[i])
	}
	j.by[dep] = l
}

func (j *journal) add(d *llmscalerv1.Decision) {
	j.mu.Lock()
	defer j.mu.Unlock()
	l := append(j.by[d.GetDeployment()], d)
	if len(l) > j.cap {
		l = append(l[:0:0], l[len(l)-j.cap:]...)
	}
	j.by[d.GetDeployment()] = l
}

func (j *journal) forget(dep string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	delete(j.by, dep)
}

// recent returns up to limit decisions of a deployment, newest first.
func (j *journal) recent(dep string, limit int) []*llmscalerv1.Decision {
	j.mu.Lock()
	defer j.mu.Unlock()
	l := j.by[dep]
	if limit <= 0 || limit > len(l) {
		limit = len(l)
	}
	out := make([]*llmscalerv1.Decision, 0, limit)
	for i := len(l) - 1; i >= 0 && len(out) < limit; i-- {
		out = append(out, l[i])
	}
	return out
}

// last returns the newest decision of a deployment, nil when none.
func (j *journal) last(dep string) *llmscalerv1.Decision {
	j.mu.Lock()
	defer j.mu.Unlock()
	l := j.by[dep]
	if len(l) == 0 {
		return nil
	}
	return l[len(l)-1]
}

// sameKind says whether two decisions would read the same in a journal: same counts and the
// same clamps. A repeat of the last stored decision is kept in memory only.
func sameKind(a, b *llmscalerv1.Decision) bool {
	if a == nil || b == nil {
		return false
	}
	if a.GetFromReplicas() != b.GetFromReplicas() || a.GetToReplicas() != b.GetToReplicas() || a.GetRecommended() != b.GetRecommended() || a.GetActed() != b.GetActed() {
		return false
	}
	kinds := func(d *llmscalerv1.Decision) string {
		var k []string
		for _, c := range d.GetClamps() {
			k = append(k, c.GetKind())
		}
		sort.Strings(k)
		return strings.Join(k, ",")
	}
	return kinds(a) == kinds(b)
}
