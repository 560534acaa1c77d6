package controller

import (
	"errors"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

func testStore(t *testing.T) *store {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{startEtcd(t)}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return &store{cli: cli, prefix: "/test", now: time.Now}
}

// TestNodeWriterBatches queues 250 records while no writer runs (a connect storm), then lets
// it run: they are stored in three transactions of at most 100 operations, the newest
// record of a node queued twice wins, and every waiter hears of success.
func TestNodeWriterBatches(t *testing.T) {
	s := testStore(t)
	ctx := ctxT(t)
	lease, err := s.cli.Put(ctx, "/test/leader", "me")
	if err != nil {
		t.Fatal(err)
	}
	f := fence{cli: s.cli, key: "/test/leader", rev: lease.Header.Revision}
	w := newNodeWriter(s, f)
	var waits []<-chan error
	for i := range 250 {
		waits = append(waits, w.queue(&llmscalerv1.Node{NodeId: fmt.Sprintf("n%03d", i), Address: "old"}))
	}
	waits = append(waits, w.queue(&llmscalerv1.Node{NodeId: "n007", Address: "new"}))
	before := lease.Header.Revision
	go func() { _ = w.run(ctx) }()
	for i, d := range waits {
		if err := <-d; err != nil {
			t.Fatalf("waiter %d: %v", i, err)
		}
	}
	resp, err := s.cli.Get(ctx, s.nodeKey(""), clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 250 {
		t.Fatalf("%d records stored, want 250", len(resp.Kvs))
	}
	if txns := resp.Header.Revision - before; txns != 3 {
		t.Errorf("%d transactions, want 3 (250 records, at most %d a transaction)", txns, maxNodeWritesPerTxn)
	}
	n7, err := s.node(ctx, "n007")
	if err != nil {
		t.Fatal(err)
	}
	if n7.GetAddress() != "new" {
		t.Errorf("n007 stored with address %q, want the newer record", n7.GetAddress())
	}
}

// TestNodeWriterFenced: a writer whose leadership is gone fails its batch, every waiter
// (written, cancelled in flight or still queued) hears of a failure, and run returns the
// error that ends the term.
func TestNodeWriterFenced(t *testing.T) {
	s := testStore(t)
	ctx := ctxT(t)
	w := newNodeWriter(s, fence{cli: s.cli, key: "/test/leader", rev: 1})
	var waits []<-chan error
	for i := range 150 {
		waits = append(waits, w.queue(&llmscalerv1.Node{NodeId: fmt.Sprintf("n%03d", i)}))
	}
	if err := w.run(ctx); !errors.Is(err, errFenced) {
		t.Fatalf("run: %v, want errFenced", err)
	}
	for i, d := range waits {
		if err := <-d; err == nil {
			t.Fatalf("waiter %d told its record was stored", i)
		}
	}
	resp, err := s.cli.Get(ctx, s.nodeKey(""), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Count != 0 {
		t.Errorf("%d records stored under a lost fence", resp.Count)
	}
}
