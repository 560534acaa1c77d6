package controller

import (
	"context"
	"fmt"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// maxNodeWritesPerTxn bounds one batch of node records: etcd refuses a transaction of more
// than --max-txn-ops operations (128 by default).
const maxNodeWritesPerTxn = 100

// nodeWriters is how many batches may be in flight at once. One at a time, a storm of
// 10,000 records waited for a hundred round trips in a row, each slow on a loaded etcd,
// and agents gave up waiting for their welcome; etcd commits concurrent transactions in
// one raft batch.
const nodeWriters = 8

// nodeWriter stores the term's node records in etcd by group commit: every record queued
// while a transaction is in flight goes into the next one, so a connect storm of 10,000
// agents costs about a hundred fenced transactions, not 10,000 that would queue in front of
// the leader's lease keepalive. A waiter learns when its record is stored. A failed write
// ends the term (run returns the error): what the leader acts on must be stored.
type nodeWriter struct {
	store *store
	fence fence

	mu       sync.Mutex
	pending  map[string]*nodeWrite // the latest record of each node not yet written
	order    []string              // node ids in pending, oldest first
	inflight map[string]bool       // nodes whose record is being written
	wake     chan struct{}
}

type nodeWrite struct {
	node    *llmscalerv1.Node
	waiters []chan error
}

func newNodeWriter(s *store, f fence) *nodeWriter {
	return &nodeWriter{store: s, fence: f, pending: map[string]*nodeWrite{}, inflight: map[string]bool{}, wake: make(chan struct{}, 1)}
}

// queue asks for n to be stored and returns a channel that gets the result. A record queued
// again before it was written replaces the older one, and both waiters get the result of
// writing the newer.
func (w *nodeWriter) queue(n *llmscalerv1.Node) <-chan error {
	done := make(chan error, 1)
	w.mu.Lock()
	nw := w.pending[n.GetNodeId()]
	if nw == nil {
		nw = &nodeWrite{}
		w.pending[n.GetNodeId()] = nw
		w.order = append(w.order, n.GetNodeId())
	}
	nw.node = n
	nw.waiters = append(nw.waiters, done)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	return done
}

// put stores n and waits until it is stored.
func (w *nodeWriter) put(ctx context.Context, n *llmscalerv1.Node) error {
	select {
	case err := <-w.queue(n):
		return err
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// run writes queued records until ctx ends or a write fails, with up to nodeWriters
// batches in flight. A node's record is never in two batches at once, so the newest record
// is the one that stays.
func (w *nodeWriter) run(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	errs := make(chan error, nodeWriters)
	for range nodeWriters {
		go func() {
			err := w.work(ctx)
			if err != nil {
				cancel(err) // the others stop too: the term is over
			}
			errs <- err
		}()
	}
	failed := false
	for range nodeWriters {
		if err := <-errs; err != nil {
			failed = true
		}
	}
	if failed {
		// The first failure cancelled the others, whose writes then failed too: it is
		// the one that says why.
		return context.Cause(ctx)
	}
	return nil
}

func (w *nodeWriter) work(ctx context.Context) error {
	for {
		batch := w.take()
		if len(batch) == 0 {
			select {
			case <-ctx.Done():
				w.fail(context.Cause(ctx))
				return nil
			case <-w.wake:
				continue
			}
		}
		// Others may take what is left while this batch is written.
		w.signal()
		err := w.write(ctx, batch)
		w.done(batch)
		for _, nw := range batch {
			for _, d := range nw.waiters {
				d <- err
			}
		}
		if err != nil {
			w.fail(err)
			w.signal()
			return err
		}
		w.signal()
	}
}

func (w *nodeWriter) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// take removes up to maxNodeWritesPerTxn records from the queue, oldest first, skipping
// nodes whose record is in flight, and marks them in flight.
func (w *nodeWriter) take() []*nodeWrite {
	w.mu.Lock()
	defer w.mu.Unlock()
	var batch []*nodeWrite
	rest := w.order[:0]
	for _, id := range w.order {
		if len(batch) == maxNodeWritesPerTxn || w.inflight[id] {
			rest = append(rest, id)
			continue
		}
		batch = append(batch, w.pending[id])
		delete(w.pending, id)
		w.inflight[id] = true
	}
	w.order = rest
	return batch
}

// done clears the in-flight marks of a written batch.
func (w *nodeWriter) done(batch []*nodeWrite) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, nw := range batch {
		delete(w.inflight, nw.node.GetNodeId())
	}
}

func (w *nodeWriter) write(ctx context.Context, batch []*nodeWrite) error {
	ops := make([]clientv3.Op, 0, len(batch))
	for _, nw := range batch {
		op, err := w.store.nodeOp(nw.node)
		if err != nil {
			return err
		}
		ops = append(ops, op)
	}
	if err := w.fence.commit(ctx, ops...); err != nil {
		return fmt.Errorf("store %d node records: %w", len(batch), err)
	}
	return nil
}

// fail answers every waiter still queued: the term is over.
func (w *nodeWriter) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, nw := range w.pending {
		for _, d := range nw.waiters {
			d <- err
		}
	}
	w.pending, w.order = map[string]*nodeWrite{}, nil
}

// nodeRecord is the part of a node that is stored: live fields (samples, last seen, the
// instance count, the cordon, which has its own key) are not.
func nodeRecord(n *llmscalerv1.Node) *llmscalerv1.Node {
	rec := proto.Clone(n).(*llmscalerv1.Node)
	rec.GpuSamples = nil
	rec.LastSeen = nil
	rec.InstanceCount = 0
	rec.Cordoned, rec.CordonReason, rec.Draining = false, "", false
	return rec
}
