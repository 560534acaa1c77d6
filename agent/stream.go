package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/llmscaler/llmscaler/agent/gpu"
	"github.com/llmscaler/llmscaler/internal/buildinfo"
	"github.com/llmscaler/llmscaler/internal/transport"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

var (
	// errStaleLeader ends a stream whose welcome carries an epoch below one the agent has
	// accepted: the controller was deposed and does not know it yet.
	errStaleLeader = errors.New("stale leader")
	// errControllerSilent ends a stream on which the controller has said nothing, not even a
	// heartbeat, for silentHeartbeats heartbeat intervals.
	errControllerSilent = errors.New("controller silent")
)

// sample makes a report every report interval until ctx ends. It runs whether or not a stream
// is up, so that the controller learns what happened while the agent was cut off.
func (a *Agent) sample(ctx context.Context) error {
	interval := a.cfg.ReportInterval
	t := time.NewTicker(interval)
	defer t.Stop()
	var changed <-chan struct{}
	if a.sup != nil {
		changed = a.sup.Changed()
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
			// An instance changed phase: tell the controller now, not at the next tick.
			a.report(ctx)
		case d := <-a.intervals:
			if d != interval {
				a.log.Debug("report interval changed", "from", interval, "to", d)
				interval = d
				t.Reset(d)
			}
		case <-t.C:
			a.report(ctx)
		}
	}
}

// report samples the GPUs and queues one report for the stream.
func (a *Agent) report(ctx context.Context) {
	instances := a.instances()
	if f, ok := a.gpus.(*gpu.Fake); ok {
		f.SetLoad(fakeLoads(instances, a.profileMemory))
	}
	samples := a.gpus.Sample(ctx)
	a.metrics.observeGPUs(samples)
	a.metrics.observeInstances(instances)
	r := &llmscalerv1.Report{Seq: a.seq.Add(1), Time: timestamppb.New(a.now()), Gpus: samples, Instances: instances}
	if a.queue.push(r, a.liveSession.Load()) {
		a.metrics.reportsDropped.Inc()
	}
}

// instances is what the supervisor runs now; none without a catalog.
func (a *Agent) instances() []*llmscalerv1.InstanceStatus {
	if a.sup == nil {
		return nil
	}
	return a.sup.Instances()
}

// profiles names the catalog's profiles; none without a catalog.
func (a *Agent) profiles() []string {
	if a.catalog == nil {
		return nil
	}
	return a.catalog.Names()
}

func (a *Agent) profileMemory(name string) uint64 {
	if a.catalog == nil {
		return 0
	}
	if p, ok := a.catalog.Profile(name); ok {
		return p.GPUMemoryMiB
	}
	return 0
}

// setReportInterval hands the sampler the interval of a welcome, replacing one it has not
// picked up yet: only the newest matters.
func (a *Agent) setReportInterval(d time.Duration) {
	select {
	case <-a.intervals:
	default:
	}
	select {
	case a.intervals <- d:
	default:
	}
}

// connect keeps one stream to the leader until ctx ends, trying the controller addresses in
// turn and backing off between failures.
func (a *Agent) connect(ctx context.Context) error {
	var (
		failures  int
		redirects int    // redirects in a row that gave no welcome
		next      int    // index in Controllers of the next address to try
		target    string // where a redirect points, tried before the list
	)
	for attempt := 0; ; attempt++ {
		addr := target
		if addr == "" {
			addr = a.cfg.Controllers[next]
			next = (next + 1) % len(a.cfg.Controllers)
		}
		target = ""
		if attempt > 0 {
			a.metrics.reconnects.Inc()
		}

		welcomed, err := a.session(ctx, addr)
		if ctx.Err() != nil {
			return nil
		}
		if welcomed {
			failures, redirects = 0, 0
			a.log.Info("disconnected", "address", addr, "error", err)
		}

		if leaderID, leaderAddr, ok := notLeader(err); ok && leaderAddr != "" {
			redirects++
			// Even after backing off, the hint is the best address there is.
			target = leaderAddr
			if redirects <= maxRedirects {
				a.log.Debug("redirected to leader", "address", addr, "leader_id", leaderID, "leader_address", leaderAddr)
				continue
			}
			a.log.Warn("redirected too often without a welcome, backing off",
				"address", addr, "leader_id", leaderID, "leader_address", leaderAddr, "redirects", redirects)
		} else {
			redirects = 0
			if !welcomed && !errors.Is(err, errStaleLeader) {
				a.log.Warn("connect failed", "address", addr, "code", status.Code(err).String(), "error", err)
			}
		}

		d := a.cfg.Backoff.Delay(failures)
		if welcomed && a.cfg.Backoff.Base > 0 {
			// A stream that served and ended usually ended for every agent at once (the
			// leader died or stepped down): the first retry is spread over twice the base
			// delay, not the ±jitter around it, so that a fleet does not reconnect in one wave.
			d = rand.N(2 * a.cfg.Backoff.Base)
		}
		failures++
		if err := a.wait(ctx, d); err != nil {
			return nil
		}
	}
}

// notLeader reads the redirect of a controller that is not the leader: FailedPrecondition
// with an ErrorInfo whose reason is NOT_LEADER. A controller that knows no leader yet answers
// Unavailable instead, which is an ordinary failure.
func notLeader(err error) (leaderID, leaderAddr string, ok bool) {
	st, isStatus := status.FromError(err)
	if !isStatus || st.Code() != codes.FailedPrecondition {
		return "", "", false
	}
	for _, d := range st.Details() {
		if info, is := d.(*errdetails.ErrorInfo); is && info.GetReason() == "NOT_LEADER" {
			return info.GetMetadata()["leader_id"], info.GetMetadata()["leader_address"], true
		}
	}
	return "", "", false
}

// session runs one stream to addr until it ends and says whether it got a welcome. The
// error is the controller's status where it gave one.
func (a *Agent) session(ctx context.Context, addr string) (welcomed bool, err error) {
	log := a.log.With("address", addr)
	cc, err := grpc.NewClient(addr, transport.DialOptions(a.cfg.Credentials)...)
	if err != nil {
		return false, fmt.Errorf("dial %s: %w", addr, err)
	}
	defer cc.Close()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := llmscalerv1.NewAgentServiceClient(cc).Connect(ctx)
	if err != nil {
		return false, err
	}

	// The receive goroutine only receives; everything else, Send included, happens on this
	// goroutine, since a gRPC stream allows one sender.
	msgs, recvErr, recvDone := transport.Receive(ctx, stream.Recv)
	defer func() {
		cancel()
		<-recvDone
	}()

	send := func(m *llmscalerv1.ConnectRequest) error {
		err := stream.Send(m)
		if !errors.Is(err, io.EOF) {
			return err
		}
		// The controller ended the stream; its status comes with the next receive. Messages
		// still in flight go unanswered: there is no stream left to answer on.
		for {
			select {
			case err := <-recvErr:
				return err
			case <-msgs:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}

	hello := &llmscalerv1.Hello{
		NodeId:       a.cfg.NodeID,
		Labels:       a.cfg.Labels,
		AgentVersion: buildinfo.Version(),
		GpuBackend:   a.gpus.Name(),
		Gpus:         a.gpus.Inventory(),
		RunId:        a.runID,
		LastEpoch:    a.fence.Highest(),
		Profiles:     a.profiles(),
		Instances:    a.instances(),
	}
	if err := send(&llmscalerv1.ConnectRequest{Msg: &llmscalerv1.ConnectRequest_Hello{Hello: hello}}); err != nil {
		return false, err
	}

	welcome, err := a.awaitWelcome(ctx, msgs, recvErr)
	if err != nil {
		return false, err
	}
	ok, highest, err := a.fence.Raise(welcome.GetEpoch())
	if err != nil {
		return false, err
	}
	if !ok {
		log.Warn("stale leader", "controller_id", welcome.GetControllerId(), "epoch", welcome.GetEpoch(), "accepted_epoch", highest)
		return false, fmt.Errorf("%w: controller %q has epoch %d, agent has accepted %d",
			errStaleLeader, welcome.GetControllerId(), welcome.GetEpoch(), highest)
	}

	a.sessions++
	session := a.sessions
	a.liveSession.Store(session)
	a.setConnected(connState{controllerID: welcome.GetControllerId(), epoch: welcome.GetEpoch(), ok: true})
	defer func() {
		a.liveSession.Store(0)
		a.setConnected(connState{})
	}()
	log.Info("connected", "controller_id", welcome.GetControllerId(), "epoch", welcome.GetEpoch())

	heartbeat := defaultHeartbeat
	if d := welcome.GetHeartbeatInterval().AsDuration(); d > 0 {
		heartbeat = max(d, minInterval)
	}
	// Set after the session is live, so that the first report at the new interval is not
	// taken for one made without a stream.
	if d := welcome.GetReportInterval().AsDuration(); d > 0 {
		a.setReportInterval(max(d, minInterval))
	}

	lastHeard := time.Now()
	beat := time.NewTicker(heartbeat)
	defer beat.Stop()

	// Reports made while there was no stream go first.
	if err := a.sendReports(send, session); err != nil {
		return true, err
	}
	for {
		select {
		case <-ctx.Done():
			return true, ctx.Err()

		case err := <-recvErr:
			return true, err

		case m := <-msgs:
			lastHeard = time.Now()
			switch msg := m.GetMsg().(type) {
			case *llmscalerv1.ConnectResponse_Desired:
				ack := a.handleDesired(msg.Desired)
				a.metrics.desiredAnswered(ack)
				log.Debug("desired state", "epoch", ack.GetEpoch(), "version", ack.GetVersion(),
					"result", ack.GetResult().String(), "message", ack.GetMessage())
				for _, r := range ack.GetRejected() {
					log.Warn("desired instance refused", "instance_id", r.GetInstanceId(), "error", r.GetMessage())
				}
				if err := send(&llmscalerv1.ConnectRequest{Msg: &llmscalerv1.ConnectRequest_DesiredAck{DesiredAck: ack}}); err != nil {
					return true, err
				}
			case *llmscalerv1.ConnectResponse_Heartbeat:
				// Hearing it is all that matters.
			case *llmscalerv1.ConnectResponse_Welcome:
				return true, errors.New("controller sent a second welcome on one stream")
			default:
				// A newer controller may send what this agent does not know; ignoring it
				// keeps mixed versions working during an upgrade.
				log.Debug("ignoring unknown message from controller", "type", fmt.Sprintf("%T", msg))
			}

		case <-a.queue.ready:
			if err := a.sendReports(send, session); err != nil {
				return true, err
			}

		case <-beat.C:
			if silent := time.Since(lastHeard); silent >= silentHeartbeats*heartbeat {
				return true, fmt.Errorf("%w for %v", errControllerSilent, silent.Round(time.Millisecond))
			}
			hb := &llmscalerv1.Heartbeat{Time: timestamppb.New(a.now())}
			if err := send(&llmscalerv1.ConnectRequest{Msg: &llmscalerv1.ConnectRequest_Heartbeat{Heartbeat: hb}}); err != nil {
				return true, err
			}
		}
	}
}

// awaitWelcome waits for the controller's first message, which must be a welcome.
func (a *Agent) awaitWelcome(ctx context.Context, msgs <-chan *llmscalerv1.ConnectResponse, recvErr <-chan error) (*llmscalerv1.Welcome, error) {
	t := time.NewTimer(welcomeTimeout)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case err := <-recvErr:
		return nil, err
	case <-t.C:
		return nil, fmt.Errorf("no welcome within %v", welcomeTimeout)
	case m := <-msgs:
		w := m.GetWelcome()
		if w == nil {
			return nil, fmt.Errorf("controller's first message is %T, want a welcome", m.GetMsg())
		}
		return w, nil
	}
}

// sendReports sends the queued reports, oldest first. A report leaves the queue only once
// sent, so one that a broken stream did not take goes out on the next. A report made under
// another session than this one is marked buffered: the controller gets it late.
func (a *Agent) sendReports(send func(*llmscalerv1.ConnectRequest) error, session uint64) error {
	for {
		q, ok := a.queue.peek()
		if !ok {
			return nil
		}
		q.report.Buffered = q.session != session
		if err := send(&llmscalerv1.ConnectRequest{Msg: &llmscalerv1.ConnectRequest_Report{Report: q.report}}); err != nil {
			return err
		}
		a.queue.pop(q.report)
		a.metrics.reportsSent.Inc()
	}
}
