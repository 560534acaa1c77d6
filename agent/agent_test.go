package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/llmscaler/llmscaler/internal/backoff"
	"github.com/llmscaler/llmscaler/internal/transport"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// testTimeout bounds every wait in these tests; none of them should come near it.
const testTimeout = 10 * time.Second

// fakeController is a real gRPC AgentService on a loopback port. Each stream that gets past
// refuse is handed to the test on streams, which then plays the controller's side.
type fakeController struct {
	llmscalerv1.UnimplementedAgentServiceServer
	addr    string
	hellos  chan *llmscalerv1.Hello
	streams chan *fakeStream
	// refuse, when set, ends a stream after its hello with the error it returns, if any.
	refuse func(*llmscalerv1.Hello) error
}

// fakeStream is the controller's end of one stream.
type fakeStream struct {
	hello *llmscalerv1.Hello
	srv   llmscalerv1.AgentService_ConnectServer
	in    chan *llmscalerv1.ConnectRequest
	end   chan error
	gone  chan struct{} // closed when the agent's side has ended
}

func startController(t *testing.T, refuse func(*llmscalerv1.Hello) error) *fakeController {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &fakeController{
		addr:    ln.Addr().String(),
		hellos:  make(chan *llmscalerv1.Hello, 64),
		streams: make(chan *fakeStream, 16),
		refuse:  refuse,
	}
	srv := grpc.NewServer(append(transport.ServerOptions(transport.Plaintext), grpc.WaitForHandlers(true))...)
	llmscalerv1.RegisterAgentServiceServer(srv, c)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-served
	})
	return c
}

func (c *fakeController) Connect(srv llmscalerv1.AgentService_ConnectServer) error {
	first, err := srv.Recv()
	if err != nil {
		return err
	}
	hello := first.GetHello()
	if hello == nil {
		return status.Error(codes.InvalidArgument, "first message must be a hello")
	}
	select {
	case c.hellos <- hello:
	default:
		return status.Error(codes.ResourceExhausted, "fake controller: too many hellos")
	}
	if c.refuse != nil {
		if err := c.refuse(hello); err != nil {
			return err
		}
	}
	fs := &fakeStream{
		hello: hello,
		srv:   srv,
		in:    make(chan *llmscalerv1.ConnectRequest, 1024),
		end:   make(chan error, 1),
		gone:  make(chan struct{}),
	}
	go func() {
		defer close(fs.gone)
		for {
			m, err := srv.Recv()
			if err != nil {
				return
			}
			select {
			case fs.in <- m:
			case <-srv.Context().Done():
				return
			}
		}
	}()
	select {
	case c.streams <- fs:
	case <-srv.Context().Done():
		return nil
	}
	select {
	case err := <-fs.end:
		return err
	case <-srv.Context().Done():
		return nil
	}
}

// stream waits for the next stream the agent opens.
func (c *fakeController) stream(t *testing.T) *fakeStream {
	t.Helper()
	return within(t, c.streams, "a stream to "+c.addr)
}

func (fs *fakeStream) welcome(t *testing.T, w *llmscalerv1.Welcome) {
	t.Helper()
	if err := fs.srv.Send(&llmscalerv1.ConnectResponse{Msg: &llmscalerv1.ConnectResponse_Welcome{Welcome: w}}); err != nil {
		t.Fatalf("send welcome: %v", err)
	}
}

func (fs *fakeStream) desired(t *testing.T, ds *llmscalerv1.DesiredState) {
	t.Helper()
	if err := fs.srv.Send(&llmscalerv1.ConnectResponse{Msg: &llmscalerv1.ConnectResponse_Desired{Desired: ds}}); err != nil {
		t.Fatalf("send desired state: %v", err)
	}
}

// next returns the next message from the agent that keep accepts, skipping the others.
func (fs *fakeStream) next(t *testing.T, what string, keep func(*llmscalerv1.ConnectRequest) bool) *llmscalerv1.ConnectRequest {
	t.Helper()
	deadline := time.NewTimer(testTimeout)
	defer deadline.Stop()
	for {
		select {
		case m := <-fs.in:
			if keep(m) {
				return m
			}
		case <-fs.gone:
			t.Fatalf("stream ended while waiting for %s", what)
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func (fs *fakeStream) report(t *testing.T) *llmscalerv1.Report {
	t.Helper()
	return fs.next(t, "a report", func(m *llmscalerv1.ConnectRequest) bool { return m.GetReport() != nil }).GetReport()
}

func (fs *fakeStream) ack(t *testing.T) *llmscalerv1.DesiredStateAck {
	t.Helper()
	return fs.next(t, "an ack", func(m *llmscalerv1.ConnectRequest) bool { return m.GetDesiredAck() != nil }).GetDesiredAck()
}

func (fs *fakeStream) waitGone(t *testing.T) {
	t.Helper()
	within(t, fs.gone, "the agent to drop the stream")
}

// within receives from ch or fails the test after testTimeout.
func within[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	deadline := time.NewTimer(testTimeout)
	defer deadline.Stop()
	select {
	case v := <-ch:
		return v
	case <-deadline.C:
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// eventually waits until cond holds, or fails the test after testTimeout.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// testConfig is a config for tests: reports only when a welcome or the test asks for them,
// and retries at once.
func testConfig(t *testing.T, controllers ...string) Config {
	return Config{
		Controllers:    controllers,
		NodeID:         "gpu-node-1",
		Labels:         map[string]string{"zone": "a"},
		ReportInterval: time.Hour,
		DataDir:        t.TempDir(),
		GPUBackend:     "fake",
		FakeGPUs:       8,
		Backoff:        backoff.Config{Base: time.Millisecond, Multiplier: 1, Max: time.Millisecond},
	}
}

func newAgent(t *testing.T, cfg Config) *Agent {
	t.Helper()
	a, err := New(cfg, hclog.NewNullLogger())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return a
}

// run runs a until the returned stop is called or the test ends, and checks that Run
// returns nil when its context ends.
func run(t *testing.T, a *Agent) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run returned %v, want nil", err)
				}
			case <-time.After(testTimeout):
				t.Errorf("Run did not return after its context ended")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// gatedWait replaces the agent's backoff wait: each wait is announced on waits, then held
// until the test sends on release (or the agent stops).
func gatedWait(a *Agent) (waits chan time.Duration, release chan struct{}) {
	waits = make(chan time.Duration, 64)
	release = make(chan struct{})
	a.wait = func(ctx context.Context, d time.Duration) error {
		waits <- d
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return waits, release
}

func notLeaderError(leaderID, leaderAddr string) error {
	md := map[string]string{"leader_id": leaderID}
	if leaderAddr != "" {
		md["leader_address"] = leaderAddr
	}
	st, err := status.New(codes.FailedPrecondition, "not the leader").
		WithDetails(&errdetails.ErrorInfo{Reason: "NOT_LEADER", Domain: "llmscaler.io", Metadata: md})
	if err != nil {
		panic(err)
	}
	return st.Err()
}

func TestHelloAndReports(t *testing.T) {
	c := startController(t, nil)
	cfg := testConfig(t, c.addr)
	a := newAgent(t, cfg)
	run(t, a)

	fs := c.stream(t)
	h := fs.hello
	if h.GetNodeId() != "gpu-node-1" || h.GetLabels()["zone"] != "a" {
		t.Errorf("hello names node %q labels %v", h.GetNodeId(), h.GetLabels())
	}
	if h.GetGpuBackend() != "fake" || h.GetAgentVersion() == "" || h.GetLastEpoch() != 0 {
		t.Errorf("hello: backend %q version %q last_epoch %d, want fake, a version, 0",
			h.GetGpuBackend(), h.GetAgentVersion(), h.GetLastEpoch())
	}
	if !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(h.GetRunId()) {
		t.Errorf("run_id %q is not 16 hex digits", h.GetRunId())
	}
	if len(h.GetProfiles()) != 0 || len(h.GetInstances()) != 0 {
		t.Errorf("an agent without a catalog sent profiles %v and %d instances", h.GetProfiles(), len(h.GetInstances()))
	}
	if len(h.GetGpus()) != 8 {
		t.Fatalf("hello has %d GPUs, want 8", len(h.GetGpus()))
	}
	for i, g := range h.GetGpus() {
		if !strings.HasPrefix(g.GetUuid(), "GPU-fake-") || g.GetIndex() != uint32(i) {
			t.Errorf("gpu %d: index %d uuid %q", i, g.GetIndex(), g.GetUuid())
		}
	}

	// The welcome's report interval wins over the agent's hour.
	fs.welcome(t, &llmscalerv1.Welcome{ControllerId: "ctrl-a", Epoch: 7, ReportInterval: durationpb.New(5 * time.Millisecond)})
	for want := uint64(1); want <= 5; want++ {
		r := fs.report(t)
		if r.GetSeq() != want || r.GetBuffered() || r.GetDroppedReports() != 0 {
			t.Fatalf("report: seq %d buffered %v dropped %d, want seq %d, live, none dropped",
				r.GetSeq(), r.GetBuffered(), r.GetDroppedReports(), want)
		}
		if len(r.GetGpus()) != 8 || r.GetTime() == nil {
			t.Fatalf("report %d: %d GPU samples, time %v", want, len(r.GetGpus()), r.GetTime())
		}
	}
	eventually(t, "Connected to report ctrl-a", func() bool {
		id, epoch, ok := a.Connected()
		return ok && id == "ctrl-a" && epoch == 7
	})
	if got := a.fence.Highest(); got != 7 {
		t.Fatalf("highest epoch %d, want the welcome's 7", got)
	}
}

func TestDesiredStates(t *testing.T) {
	c := startController(t, nil)
	cfg := testConfig(t, c.addr)
	a := newAgent(t, cfg)
	run(t, a)
	fs := c.stream(t)
	fs.welcome(t, &llmscalerv1.Welcome{ControllerId: "ctrl-a", Epoch: 5})

	state := func(epoch int64, version uint64, start, drain string) *llmscalerv1.DesiredState {
		ds := &llmscalerv1.DesiredState{Epoch: epoch, Version: version}
		if start != "" {
			ds.Instances = []*llmscalerv1.StartInstance{{InstanceId: start, Deployment: "chat", Profile: "vllm-llama3"}}
		}
		if drain != "" {
			ds.Drain = []*llmscalerv1.StopInstance{{InstanceId: drain}}
		}
		return ds
	}
	const noCatalog = `profile "vllm-llama3" is not in this agent's catalog (the agent was started without --catalog)`
	accepted, stale, dup := llmscalerv1.CommandResult_COMMAND_RESULT_ACCEPTED, llmscalerv1.CommandResult_COMMAND_RESULT_STALE_EPOCH, llmscalerv1.CommandResult_COMMAND_RESULT_DUPLICATE
	// Steps run in order on one stream: each depends on what the ones before it left.
	steps := []struct {
		name     string
		ds       *llmscalerv1.DesiredState
		want     llmscalerv1.CommandResult
		wantMsg  string
		rejected string // the instance refused, with noCatalog as the reason
	}{
		{"older epoch is stale", state(4, 1, "i-0", ""), stale, "epoch 4 is older than epoch 5", ""},
		{"a start without a catalog is refused by instance", state(5, 1, "i-1", ""), accepted, "1 instances, 0 to drain, 1 refused", "i-1"},
		{"the same version again", state(5, 1, "i-1", ""), dup, "version 1 already applied", ""},
		{"an older version", state(5, 0, "", ""), dup, "version 0 already applied (latest 1)", ""},
		{"draining an instance the node does not run is no error", state(5, 2, "", "i-9"), accepted, "0 instances, 1 to drain, 0 refused", ""},
		{"newer epoch is accepted from version 1", state(6, 1, "", ""), accepted, "0 instances, 0 to drain, 0 refused", ""},
		{"then the welcome's epoch is stale", state(5, 9, "", ""), stale, "epoch 5 is older than epoch 6", ""},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			fs.desired(t, s.ds)
			ack := fs.ack(t)
			if ack.GetVersion() != s.ds.GetVersion() || ack.GetEpoch() != s.ds.GetEpoch() {
				t.Errorf("ack for version %d epoch %d, want %d epoch %d", ack.GetVersion(), ack.GetEpoch(), s.ds.GetVersion(), s.ds.GetEpoch())
			}
			if ack.GetResult() != s.want || !strings.Contains(ack.GetMessage(), s.wantMsg) {
				t.Errorf("got %v %q, want %v containing %q", ack.GetResult(), ack.GetMessage(), s.want, s.wantMsg)
			}
			var refused []string
			for _, r := range ack.GetRejected() {
				refused = append(refused, r.GetInstanceId())
				if r.GetMessage() != noCatalog {
					t.Errorf("refusal of %s: %q, want %q", r.GetInstanceId(), r.GetMessage(), noCatalog)
				}
			}
			if strings.Join(refused, ",") != s.rejected {
				t.Errorf("refused %v, want %q", refused, s.rejected)
			}
		})
	}

	// The epoch a desired state raised is on disk for the next agent process.
	f, err := loadFence(cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	if f.Highest() != 6 {
		t.Fatalf("persisted epoch %d, want 6", f.Highest())
	}
}

func TestStaleLeaderAfterRestart(t *testing.T) {
	ctrlA := startController(t, nil)
	ctrlB := startController(t, nil)
	dataDir := t.TempDir()

	// First agent process: accepts epoch 10 from A.
	cfg := testConfig(t, ctrlA.addr)
	cfg.DataDir = dataDir
	first := newAgent(t, cfg)
	stopFirst := run(t, first)
	ctrlA.stream(t).welcome(t, &llmscalerv1.Welcome{ControllerId: "ctrl-a", Epoch: 10})
	eventually(t, "the first agent to connect", func() bool { _, _, ok := first.Connected(); return ok })
	stopFirst()

	// Second process on the same data dir: A has been deposed but still welcomes with 9.
	cfg = testConfig(t, ctrlA.addr, ctrlB.addr)
	cfg.DataDir = dataDir
	second := newAgent(t, cfg)
	waits, release := gatedWait(second)
	run(t, second)

	fs := ctrlA.stream(t)
	if fs.hello.GetLastEpoch() != 10 {
		t.Fatalf("restarted agent says last_epoch %d, want 10", fs.hello.GetLastEpoch())
	}
	fs.welcome(t, &llmscalerv1.Welcome{ControllerId: "ctrl-a", Epoch: 9})
	fs.waitGone(t)
	within(t, waits, "the agent to back off after a stale leader")
	if _, _, ok := second.Connected(); ok {
		t.Fatal("agent counts itself connected to a stale leader")
	}
	release <- struct{}{}

	// It moves on to the next address, the real leader.
	fs = ctrlB.stream(t)
	if fs.hello.GetLastEpoch() != 10 {
		t.Fatalf("hello to B says last_epoch %d, want 10", fs.hello.GetLastEpoch())
	}
	fs.welcome(t, &llmscalerv1.Welcome{ControllerId: "ctrl-b", Epoch: 11})
	eventually(t, "the agent to connect to ctrl-b", func() bool {
		id, epoch, ok := second.Connected()
		return ok && id == "ctrl-b" && epoch == 11
	})
}

func TestRedirectToLeader(t *testing.T) {
	leader := startController(t, nil)
	follower := startController(t, func(*llmscalerv1.Hello) error { return notLeaderError("ctrl-l", leader.addr) })
	a := newAgent(t, testConfig(t, follower.addr))
	waits, _ := gatedWait(a)
	run(t, a)

	fs := leader.stream(t)
	select {
	case d := <-waits:
		t.Fatalf("agent backed off %v before following a redirect", d)
	default:
	}
	fs.welcome(t, &llmscalerv1.Welcome{ControllerId: "ctrl-l", Epoch: 1})
	eventually(t, "the agent to connect to the leader", func() bool {
		id, _, ok := a.Connected()
		return ok && id == "ctrl-l"
	})
	if n := len(follower.hellos); n != 1 {
		t.Fatalf("follower saw %d hellos, want 1", n)
	}
}

func TestRedirectLoopBacksOff(t *testing.T) {
	var c1, c2 *fakeController
	c1 = startController(t, func(*llmscalerv1.Hello) error { return notLeaderError("c2", c2.addr) })
	c2 = startController(t, func(*llmscalerv1.Hello) error { return notLeaderError("c1", c1.addr) })
	a := newAgent(t, testConfig(t, c1.addr))
	waits, _ := gatedWait(a)
	run(t, a)

	// The first stream and three redirects go at once; the fourth redirect is a failure.
	within(t, waits, "the agent to back off")
	if n1, n2 := len(c1.hellos), len(c2.hellos); n1+n2 != 1+maxRedirects {
		t.Fatalf("%d+%d hellos before backing off, want %d", n1, n2, 1+maxRedirects)
	}
}

func TestRefusalsBackOff(t *testing.T) {
	tests := []struct {
		name string
		err  error
	}{
		{"no leader elected yet", status.Error(codes.Unavailable, "no leader")},
		{"node id held by another process", status.Error(codes.AlreadyExists, "node gpu-node-1 is connected from run abc")},
		{"bad hello", status.Error(codes.InvalidArgument, "hello.labels: bad")},
		{"not leader without an address", notLeaderError("ctrl-x", "")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := startController(t, func(*llmscalerv1.Hello) error { return tc.err })
			a := newAgent(t, testConfig(t, c.addr))
			waits, release := gatedWait(a)
			run(t, a)
			within(t, waits, "the agent to back off")
			if n := len(c.hellos); n != 1 {
				t.Fatalf("%d hellos before backing off, want 1", n)
			}
			release <- struct{}{}
			within(t, waits, "the agent to back off again")
			if n := len(c.hellos); n != 2 {
				t.Fatalf("%d hellos after one retry, want 2", n)
			}
		})
	}
}

func TestControllerUnreachable(t *testing.T) {
	// A port that was just closed: the dial fails, and the agent backs off with growing delays.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	cfg := testConfig(t, addr)
	cfg.Backoff = backoff.Config{Base: time.Second, Multiplier: 2, Max: time.Minute}
	a := newAgent(t, cfg)
	waits, release := gatedWait(a)
	run(t, a)
	if d := within(t, waits, "the first back-off"); d != time.Second {
		t.Fatalf("first delay %v, want 1s", d)
	}
	release <- struct{}{}
	if d := within(t, waits, "the second back-off"); d != 2*time.Second {
		t.Fatalf("second delay %v, want 2s", d)
	}
}

func TestBufferedReportsAfterReconnect(t *testing.T) {
	c := startController(t, nil)
	cfg := testConfig(t, c.addr)
	cfg.ReportBuffer = 3
	a := newAgent(t, cfg)
	waits, release := gatedWait(a)
	run(t, a)
	ctx := context.Background()

	fs := c.stream(t)
	fs.welcome(t, &llmscalerv1.Welcome{ControllerId: "ctrl-a", Epoch: 1})
	eventually(t, "the agent to connect", func() bool { _, _, ok := a.Connected(); return ok })
	a.report(ctx)
	a.report(ctx)
	for want := uint64(1); want <= 2; want++ {
		if r := fs.report(t); r.GetSeq() != want || r.GetBuffered() {
			t.Fatalf("live report: seq %d buffered %v, want seq %d live", r.GetSeq(), r.GetBuffered(), want)
		}
	}

	// The controller goes away; while the agent waits to reconnect it makes five reports
	// with room for three.
	fs.end <- status.Error(codes.Unavailable, "controller restarting")
	within(t, waits, "the agent to back off")
	if _, _, ok := a.Connected(); ok {
		t.Fatal("agent counts itself connected after the stream ended")
	}
	for range 5 {
		a.report(ctx)
	}
	release <- struct{}{}

	fs = c.stream(t)
	fs.welcome(t, &llmscalerv1.Welcome{ControllerId: "ctrl-a", Epoch: 1})
	// Seqs 3 and 4 were dropped; each report carries the drops counted when it was queued.
	for _, want := range []struct{ seq, dropped uint64 }{{5, 0}, {6, 1}, {7, 2}} {
		r := fs.report(t)
		if r.GetSeq() != want.seq || !r.GetBuffered() || r.GetDroppedReports() != want.dropped {
			t.Fatalf("buffered report: seq %d buffered %v dropped %d, want seq %d buffered, %d dropped",
				r.GetSeq(), r.GetBuffered(), r.GetDroppedReports(), want.seq, want.dropped)
		}
	}
	a.report(ctx)
	if r := fs.report(t); r.GetSeq() != 8 || r.GetBuffered() || r.GetDroppedReports() != 2 {
		t.Fatalf("live report: seq %d buffered %v dropped %d, want seq 8, live, 2 dropped",
			r.GetSeq(), r.GetBuffered(), r.GetDroppedReports())
	}
}

func TestHeartbeatsAndSilentController(t *testing.T) {
	c := startController(t, nil)
	a := newAgent(t, testConfig(t, c.addr))
	run(t, a)

	fs := c.stream(t)
	fs.welcome(t, &llmscalerv1.Welcome{ControllerId: "ctrl-a", Epoch: 1, HeartbeatInterval: durationpb.New(10 * time.Millisecond)})
	fs.next(t, "a heartbeat", func(m *llmscalerv1.ConnectRequest) bool { return m.GetHeartbeat() != nil })
	// The fake controller never speaks after its welcome, so the agent gives up on it and
	// opens a new stream.
	fs.waitGone(t)
	if next := c.stream(t); next.hello.GetLastEpoch() != 1 {
		t.Fatalf("reconnect hello says last_epoch %d, want 1", next.hello.GetLastEpoch())
	}
}

func TestControllerHeartbeatsKeepStream(t *testing.T) {
	c := startController(t, nil)
	a := newAgent(t, testConfig(t, c.addr))
	run(t, a)

	fs := c.stream(t)
	// Answer each of the agent's heartbeats with one of ours, for well over the 150 ms after
	// which a silent controller is dropped. The interval leaves the test goroutine 100 ms of
	// slack per round on a loaded machine.
	fs.welcome(t, &llmscalerv1.Welcome{ControllerId: "ctrl-a", Epoch: 1, HeartbeatInterval: durationpb.New(50 * time.Millisecond)})
	for range 6 {
		fs.next(t, "a heartbeat", func(m *llmscalerv1.ConnectRequest) bool { return m.GetHeartbeat() != nil })
		if err := fs.srv.Send(&llmscalerv1.ConnectResponse{Msg: &llmscalerv1.ConnectResponse_Heartbeat{Heartbeat: &llmscalerv1.Heartbeat{}}}); err != nil {
			t.Fatalf("send heartbeat: %v", err)
		}
	}
	select {
	case <-fs.gone:
		t.Fatal("agent dropped a controller that kept sending heartbeats")
	default:
	}
	if n := len(c.hellos); n != 1 {
		t.Fatalf("%d hellos, want 1: the agent reconnected", n)
	}
}

func TestHTTP(t *testing.T) {
	c := startController(t, nil)
	cfg := testConfig(t, c.addr)
	cfg.HTTPAddr = "127.0.0.1:0"
	a := newAgent(t, cfg)
	if a.HTTPAddr() == "" || strings.HasSuffix(a.HTTPAddr(), ":0") {
		t.Fatalf("HTTPAddr() = %q, want the bound address", a.HTTPAddr())
	}
	stop := run(t, a)
	fs := c.stream(t)
	fs.welcome(t, &llmscalerv1.Welcome{ControllerId: "ctrl-a", Epoch: 3})
	a.report(context.Background())
	fs.report(t)
	fs.desired(t, &llmscalerv1.DesiredState{Epoch: 3, Version: 1, Instances: []*llmscalerv1.StartInstance{{InstanceId: "i-1", Profile: "p"}}})
	fs.ack(t)

	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: testTimeout}
	get := func(path string) string {
		t.Helper()
		resp, err := client.Get("http://" + a.HTTPAddr() + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %v", path, resp.StatusCode, err)
		}
		return string(b)
	}
	if body := get("/healthz"); body != "ok" {
		t.Fatalf("/healthz = %q, want ok", body)
	}
	uuid0 := fs.hello.GetGpus()[0].GetUuid()
	want := []string{
		"llmscaler_agent_connected 1",
		"llmscaler_agent_reports_sent_total 1",
		"llmscaler_agent_reports_dropped_total 0",
		"llmscaler_agent_reconnects_total 0",
		`llmscaler_agent_desired_states_total{result="accepted"} 1`,
		"llmscaler_agent_instance_rejections_total 1",
		fmt.Sprintf(`llmscaler_agent_gpu_temperature_celsius{gpu_index="0",gpu_uuid=%q} 30`, uuid0),
		fmt.Sprintf(`llmscaler_agent_gpu_power_watts{gpu_index="0",gpu_uuid=%q} 60`, uuid0),
		fmt.Sprintf(`llmscaler_agent_gpu_utilization_percent{gpu_index="0",gpu_uuid=%q} 0`, uuid0),
		fmt.Sprintf(`llmscaler_agent_gpu_memory_used_mib{gpu_index="7",gpu_uuid=%q} 0`, fs.hello.GetGpus()[7].GetUuid()),
	}
	// The agent counts a report as sent after the controller may already have it, so wait
	// for the counters to settle rather than reading them once.
	var missing []string
	deadline := time.Now().Add(testTimeout)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		metrics := get("/metrics")
		missing = missing[:0]
		for _, w := range want {
			if !strings.Contains(metrics, w) {
				missing = append(missing, w)
			}
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics lacks %q", missing)
		}
		<-tick.C
	}

	// The listener goes with Run.
	addr := a.HTTPAddr()
	stop()
	if conn, err := net.Dial("tcp", addr); err == nil {
		conn.Close()
		t.Fatal("HTTP port still open after Run returned")
	}
}

func TestRunTwice(t *testing.T) {
	c := startController(t, nil)
	a := newAgent(t, testConfig(t, c.addr))
	run(t, a)
	c.stream(t)
	if err := a.Run(context.Background()); err == nil {
		t.Fatal("second Run returned nil, want an error")
	}
}

func TestNotLeader(t *testing.T) {
	tests := []struct {
		name             string
		err              error
		wantID, wantAddr string
		wantOK           bool
	}{
		{"redirect", notLeaderError("c2", "10.0.0.2:7000"), "c2", "10.0.0.2:7000", true},
		{"no address", notLeaderError("c2", ""), "c2", "", true},
		{"other precondition", status.Error(codes.FailedPrecondition, "node cordoned"), "", "", false},
		{"unavailable", status.Error(codes.Unavailable, "no leader"), "", "", false},
		{"not a status", errors.New("boom"), "", "", false},
		{"nil", nil, "", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id, addr, ok := notLeader(tc.err)
			if id != tc.wantID || addr != tc.wantAddr || ok != tc.wantOK {
				t.Fatalf("got %q %q %v, want %q %q %v", id, addr, ok, tc.wantID, tc.wantAddr, tc.wantOK)
			}
		})
	}
}

func TestConfigErrorsNameTheFlag(t *testing.T) {
	tests := []struct {
		name    string
		change  func(*Config)
		wantErr string
	}{
		{"no controllers", func(c *Config) { c.Controllers = nil }, "--controller:"},
		{"empty controller", func(c *Config) { c.Controllers = []string{"a:1", ""} }, "--controller: address 1 is empty"},
		{"no node id", func(c *Config) { c.NodeID = "" }, "--node-id: is empty"},
		{"bad node id", func(c *Config) { c.NodeID = "gpu node" }, "--node-id:"},
		{"bad label", func(c *Config) { c.Labels = map[string]string{"zone": "a b"} }, `--labels: ["zone"]`},
		{"negative interval", func(c *Config) { c.ReportInterval = -time.Second }, "--report-interval:"},
		{"no data dir", func(c *Config) { c.DataDir = "" }, "--data-dir:"},
		{"no fake gpus", func(c *Config) { c.FakeGPUs = 0 }, "--fake-gpus: 0, want 1 to 64"},
		{"too many fake gpus", func(c *Config) { c.FakeGPUs = 65 }, "--fake-gpus: 65"},
		{"nvml without a driver", func(c *Config) { c.GPUBackend = "nvml" }, "use --gpu-backend fake (simulated GPUs) or --gpu-backend none"},
		{"bad catalog", func(c *Config) { c.GPUBackend, c.FakeGPUs, c.Catalog = "fake", 1, "/nonexistent/catalog.yaml" }, "--catalog:"},
		{"unknown backend", func(c *Config) { c.GPUBackend = "cuda" }, `--gpu-backend: "cuda", want nvml, fake or none`},
		{"negative buffer", func(c *Config) { c.ReportBuffer = -1 }, "--report-buffer:"},
		{"busy http port", nil, "--http-addr:"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, "127.0.0.1:1")
			if tc.change != nil {
				tc.change(&cfg)
			} else {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				defer ln.Close()
				cfg.HTTPAddr = ln.Addr().String()
			}
			_, err := New(cfg, hclog.NewNullLogger())
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("got %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	cfg := testConfig(t, "127.0.0.1:1")
	cfg.ReportInterval, cfg.ReportBuffer, cfg.Backoff, cfg.GPUBackend = 0, 0, backoff.Config{}, ""
	cfg.DataDir = filepath.Join(t.TempDir(), "new", "dir")
	a := newAgent(t, cfg)
	if a.cfg.ReportInterval != time.Second || a.cfg.ReportBuffer != 300 || a.cfg.Backoff != DefaultBackoff {
		t.Errorf("defaults: interval %v buffer %d backoff %+v", a.cfg.ReportInterval, a.cfg.ReportBuffer, a.cfg.Backoff)
	}
	if a.gpus.Name() != "none" || a.cfg.Credentials != transport.Plaintext || a.HTTPAddr() != "" {
		t.Errorf("defaults: backend %q credentials %v http %q", a.gpus.Name(), a.cfg.Credentials, a.HTTPAddr())
	}
	st, err := os.Stat(cfg.DataDir)
	if err != nil {
		t.Fatalf("data dir not created: %v", err)
	}
	if st.Mode().Perm() != 0o700 {
		t.Fatalf("data dir mode %v, want 0700", st.Mode().Perm())
	}
}

func TestCorruptStateFile(t *testing.T) {
	cfg := testConfig(t, "127.0.0.1:1")
	path := filepath.Join(cfg.DataDir, stateFileName)
	if err := os.WriteFile(path, []byte("not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(cfg, hclog.NewNullLogger()); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("got %v, want an error naming %s", err, path)
	}
}
