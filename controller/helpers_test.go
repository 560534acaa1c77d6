package controller

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/goleak"
	"google.golang.org/grpc"

	"github.com/llmscaler/llmscaler/internal/backoff"
	"github.com/llmscaler/llmscaler/internal/embedetcd"
	"github.com/llmscaler/llmscaler/internal/transport"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// The embedded etcd server and its client keep a few process-wide goroutines.
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreAnyFunction("go.etcd.io/etcd/pkg/v3/schedule.(*fifo).run"),
		goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
		goleak.IgnoreTopFunction("go.etcd.io/etcd/client/pkg/v3/logutil.(*MergeLogger).outputLoop"),
	)
}

// startEtcd runs an etcd member for one test and returns its endpoint.
func startEtcd(t *testing.T) string {
	t.Helper()
	s, err := embedetcd.Start(embedetcd.Config{Dir: t.TempDir(), ClientAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s.Endpoint()
}

// running is a controller started by a test.
type running struct {
	*Controller
	cancel context.CancelFunc
	done   chan error
}

// stop stops the controller and waits for Run to return; it is safe to call twice.
func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok && err != nil {
			t.Errorf("controller %s: Run: %v", r.ID(), err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("controller %s did not stop", r.ID())
	}
}

func testConfig(endpoint string) Config {
	return Config{
		GRPCAddr:          "127.0.0.1:0",
		HTTPAddr:          "127.0.0.1:0",
		EtcdEndpoints:     []string{endpoint},
		SessionTTL:        2 * time.Second,
		ReportInterval:    100 * time.Millisecond,
		HeartbeatInterval: 200 * time.Millisecond,
		NodeGrace:         500 * time.Millisecond,
		ShutdownTimeout:   2 * time.Second,
		Backoff:           backoff.Config{Base: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, Max: time.Second},
	}
}

func startController(t *testing.T, cfg Config) *running {
	t.Helper()
	c, err := New(cfg, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Controller: c, cancel: cancel, done: make(chan error, 1)}
	go func() {
		r.done <- c.Run(ctx)
		close(r.done)
	}()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	tk := time.NewTicker(10 * time.Millisecond)
	defer tk.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		<-tk.C
	}
}

func waitLeader(t *testing.T, r *running) {
	t.Helper()
	waitFor(t, 15*time.Second, fmt.Sprintf("%s to lead", r.ID()), r.IsLeader)
}

// waitFollowing waits until follower b sees leader a lead and both see both campaigning: b's
// observer can see a's key before b's own campaign key is written.
func waitFollowing(t *testing.T, a, b *running) {
	t.Helper()
	waitFor(t, 10*time.Second, "b to follow a", func() bool {
		return b.currentView().leader.GetId() == a.ID() && len(a.currentView().candidates) == 2 && len(b.currentView().candidates) == 2
	})
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, transport.DialOptions(transport.Plaintext)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func admin(t *testing.T, r *running) llmscalerv1.AdminServiceClient {
	return llmscalerv1.NewAdminServiceClient(dial(t, r.GRPCAddr()))
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func hclogNull() hclog.Logger { return hclog.NewNullLogger() }

// startEtcdB, dialB and connectB are the benchmark versions of the test helpers.
func startEtcdB(b *testing.B) string {
	b.Helper()
	s, err := embedetcd.Start(embedetcd.Config{Dir: b.TempDir(), ClientAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:0"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(s.Close)
	return s.Endpoint()
}

func dialB(b *testing.B, addr string) *grpc.ClientConn {
	conn, err := grpc.NewClient(addr, transport.DialOptions(transport.Plaintext)...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return conn
}

func connectB(addr string, first *llmscalerv1.ConnectRequest) (*rawAgent, *llmscalerv1.Welcome, error) {
	conn, err := grpc.NewClient(addr, transport.DialOptions(transport.Plaintext)...)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	context.AfterFunc(ctx, func() { conn.Close() })
	s, err := llmscalerv1.NewAgentServiceClient(conn).Connect(ctx)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	if err := s.Send(first); err != nil {
		cancel()
		return nil, nil, err
	}
	m, err := s.Recv()
	if err != nil {
		cancel()
		return nil, nil, err
	}
	return &rawAgent{stream: s, cancel: cancel}, m.GetWelcome(), nil
}
