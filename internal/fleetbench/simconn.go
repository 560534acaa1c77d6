package fleetbench

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/llmscaler/llmscaler/internal/backoff"
	"github.com/llmscaler/llmscaler/internal/transport"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// As the real agent (agent/agent.go): how long to wait for a welcome, the heartbeat until a
// welcome names one, how many heartbeats of silence end a stream, how many redirects in a
// row are followed before backing off.
const (
	welcomeTimeout   = 10 * time.Second
	defaultHeartbeat = 5 * time.Second
	silentHeartbeats = 3
	maxRedirects     = 3
)

var (
	errStaleLeader      = errors.New("stale leader")
	errControllerSilent = errors.New("controller silent")
	errNoWelcome        = errors.New("no welcome")
)

// simConn is one simulated agent's connection: its own gRPC client connection and stream,
// like a real host. Its one goroutine dials and then receives; the schedule's workers send
// its reports. sendMu makes the two senders (acks from the receiver, reports from a worker)
// take turns, since a gRPC stream allows one Send at a time.
type simConn struct {
	a     *Agents
	index int
	runID string

	mu  sync.Mutex // guards what follows, and sim
	sim *SimAgent
	// stream is the welcomed stream, nil between streams; sessions numbers them.
	stream       llmscalerv1.AgentService_ConnectClient
	sessions     uint64
	controllerID string
	cancel       context.CancelFunc
	reported     bool // a report went out on this session
	seq          uint64
	heartbeat    time.Duration
	lastBeat     time.Time
	lastHeard    time.Time

	sendMu sync.Mutex

	// interval is the welcome's report interval in nanoseconds, read by the schedule.
	interval atomic.Int64
}

func newSimConn(a *Agents, index int, now time.Time) *simConn {
	b := make([]byte, 8)
	_, _ = crand.Read(b)
	c := &simConn{a: a, index: index, runID: hex.EncodeToString(b), sim: NewSimAgent(a.cfg.Layout, index, now), heartbeat: defaultHeartbeat}
	c.interval.Store(int64(time.Second))
	return c
}

// run keeps one stream to the leader until ctx ends, as the real agent's connect loop does:
// the controller addresses in turn, a NOT_LEADER redirect followed at once (up to
// maxRedirects in a row), jittered backoff after every other failure.
func (c *simConn) run(ctx context.Context) {
	var failures, redirects, next int
	var target string
	ctrls := c.a.cfg.Controllers
	for {
		addr := target
		if addr == "" {
			addr = ctrls[next]
			next = (next + 1) % len(ctrls)
		}
		target = ""
		welcomed, err := c.session(ctx, addr)
		if ctx.Err() != nil {
			return
		}
		if welcomed {
			failures, redirects = 0, 0
			c.a.disconnects.Add(1)
		}
		if leaderAddr, ok := notLeader(err); ok && leaderAddr != "" {
			c.a.redirects.Add(1)
			redirects++
			target = leaderAddr
			if redirects <= maxRedirects {
				continue
			}
		} else {
			redirects = 0
			if !welcomed {
				c.a.refused.Add(1)
			}
		}
		if err != nil {
			c.a.noteError(err)
		}
		d := c.a.cfg.Backoff.Delay(failures)
		if welcomed && c.a.cfg.Backoff.Base > 0 {
			// As the real agent: a stream that served usually ended for the whole fleet at
			// once, so the first retry is spread over twice the base delay.
			d = rand.N(2 * c.a.cfg.Backoff.Base)
		}
		failures++
		if backoff.Sleep(ctx, d) != nil {
			return
		}
	}
}

// notLeader reads a follower's redirect: FailedPrecondition with an ErrorInfo NOT_LEADER.
func notLeader(err error) (leaderAddr string, ok bool) {
	st, isStatus := status.FromError(err)
	if !isStatus || st.Code() != codes.FailedPrecondition {
		return "", false
	}
	for _, d := range st.Details() {
		if info, is := d.(*errdetails.ErrorInfo); is && info.GetReason() == "NOT_LEADER" {
			return info.GetMetadata()["leader_address"], true
		}
	}
	return "", false
}

// dialOptions keep a connection small, since one process holds thousands: 4 KiB buffers
// and the smallest flow-control windows gRPC allows (which also turns off its bandwidth
// probing), a write buffer shared with the other connections, and no name resolution.
func dialOptions() []grpc.DialOption {
	return append(transport.DialOptions(transport.Plaintext),
		grpc.WithReadBufferSize(4<<10),
		grpc.WithWriteBufferSize(4<<10),
		grpc.WithInitialWindowSize(64<<10),
		grpc.WithInitialConnWindowSize(64<<10),
		grpc.WithSharedWriteBuffer(true),
	)
}

// session runs one stream to addr until it ends and says whether it was welcomed.
func (c *simConn) session(ctx context.Context, addr string) (welcomed bool, err error) {
	cc, err := grpc.NewClient("passthrough:///"+addr, dialOptions()...)
	if err != nil {
		return false, fmt.Errorf("dial %s: %w", addr, err)
	}
	defer cc.Close()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	c.a.dialed()
	stream, err := llmscalerv1.NewAgentServiceClient(cc).Connect(ctx)
	if err != nil {
		return false, err
	}
	helloAt := time.Now()
	c.mu.Lock()
	hello := c.sim.Hello(c.runID, helloAt)
	overloads := c.sim.Overloads()
	c.mu.Unlock()
	if err := stream.Send(&llmscalerv1.ConnectRequest{Msg: &llmscalerv1.ConnectRequest_Hello{Hello: hello}}); err != nil {
		if _, rerr := stream.Recv(); rerr != nil {
			return false, rerr // the controller's status says more than the EOF of Send
		}
		return false, err
	}
	if len(overloads) > 0 {
		// The hello lists the instances with their metrics: the first news of an overload
		// that began while the agent had no stream, and the leader acts on it.
		c.a.overloadSent(overloads, helloAt)
	}

	timer := time.AfterFunc(welcomeTimeout, func() { cancel(fmt.Errorf("%w within %v", errNoWelcome, welcomeTimeout)) })
	m, err := stream.Recv()
	if !timer.Stop() {
		// The wait ran out as the welcome came: the stream is cancelled either way.
		return false, context.Cause(ctx)
	}
	if err != nil {
		if cause := context.Cause(ctx); errors.Is(cause, errNoWelcome) {
			return false, cause
		}
		return false, err
	}
	w := m.GetWelcome()
	if w == nil {
		return false, fmt.Errorf("controller's first message is %T, want a welcome", m.GetMsg())
	}

	c.mu.Lock()
	if !c.sim.AcceptWelcome(w.GetEpoch()) {
		c.mu.Unlock()
		return false, fmt.Errorf("%w: controller %q has epoch %d", errStaleLeader, w.GetControllerId(), w.GetEpoch())
	}
	if d := w.GetReportInterval().AsDuration(); d > 0 {
		c.sim.SetInterval(d)
		c.interval.Store(int64(d))
	}
	c.heartbeat = defaultHeartbeat
	if d := w.GetHeartbeatInterval().AsDuration(); d > 0 {
		c.heartbeat = d
	}
	c.sessions++
	c.stream, c.controllerID, c.reported = stream, w.GetControllerId(), false
	c.cancel = func() { cancel(errControllerSilent) }
	c.lastHeard, c.lastBeat = time.Now(), time.Now()
	c.mu.Unlock()
	c.a.welcomed(w.GetControllerId())
	defer func() {
		c.mu.Lock()
		reported := c.reported
		c.stream, c.cancel, c.reported = nil, nil, false
		c.mu.Unlock()
		c.a.left(w.GetControllerId(), reported)
	}()

	for {
		m, err := stream.Recv()
		if err != nil {
			if cause := context.Cause(ctx); errors.Is(cause, errControllerSilent) {
				return true, cause
			}
			return true, err
		}
		c.mu.Lock()
		c.lastHeard = time.Now()
		c.mu.Unlock()
		switch msg := m.GetMsg().(type) {
		case *llmscalerv1.ConnectResponse_Desired:
			if err := c.desired(stream, msg.Desired, w.GetControllerId()); err != nil {
				return true, err
			}
		case *llmscalerv1.ConnectResponse_Heartbeat:
		case *llmscalerv1.ConnectResponse_Welcome:
			return true, errors.New("controller sent a second welcome on one stream")
		}
	}
}

// desired applies a desired state, acks it, and tells the bench's trials about new starts.
func (c *simConn) desired(stream llmscalerv1.AgentService_ConnectClient, ds *llmscalerv1.DesiredState, controllerID string) error {
	now := time.Now()
	c.mu.Lock()
	ap := c.sim.Apply(ds, now)
	c.mu.Unlock()
	c.a.applied(ap)
	c.sendMu.Lock()
	err := stream.Send(&llmscalerv1.ConnectRequest{Msg: &llmscalerv1.ConnectRequest_DesiredAck{DesiredAck: ap.Ack}})
	c.sendMu.Unlock()
	for _, s := range ap.Started {
		c.a.startArrived(s, controllerID, now)
	}
	return err
}

// report sends the report that is due, and a heartbeat when one is due, unless the agent
// has no stream or its stream is busy (a slow Send is the controller's backpressure, and the
// real agent would queue rather than send twice at once).
func (c *simConn) report() {
	now := time.Now()
	c.mu.Lock()
	st, sess := c.stream, c.sessions
	if st == nil {
		c.mu.Unlock()
		return
	}
	if silent := now.Sub(c.lastHeard); silent >= silentHeartbeats*c.heartbeat {
		c.cancel()
		c.mu.Unlock()
		return
	}
	c.seq++
	rep := c.sim.Report(c.seq, now)
	overloads := c.sim.Overloads()
	beat := now.Sub(c.lastBeat) >= c.heartbeat
	if beat {
		c.lastBeat = now
	}
	c.mu.Unlock()

	if !c.sendMu.TryLock() {
		c.a.skipped.Add(1)
		return
	}
	err := st.Send(&llmscalerv1.ConnectRequest{Msg: &llmscalerv1.ConnectRequest_Report{Report: rep}})
	if err == nil && beat {
		err = st.Send(&llmscalerv1.ConnectRequest{Msg: &llmscalerv1.ConnectRequest_Heartbeat{Heartbeat: &llmscalerv1.Heartbeat{Time: timestamppb.New(now)}}})
		if err == nil {
			c.a.heartbeats.Add(1)
		}
	}
	c.sendMu.Unlock()
	if err != nil {
		return // the receiver sees the stream's end and its status
	}
	c.a.reports.Add(1)
	c.mu.Lock()
	first := c.sessions == sess && c.stream != nil && !c.reported
	if first {
		c.reported = true
	}
	c.mu.Unlock()
	if first {
		c.a.firstReport()
	}
	if len(overloads) > 0 {
		c.a.overloadSent(overloads, now)
	}
}
