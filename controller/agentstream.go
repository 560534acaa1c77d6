package controller

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/llmscaler/llmscaler/internal/names"
	"github.com/llmscaler/llmscaler/internal/transport"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// helloTimeout bounds the wait for an agent's first message.
const helloTimeout = 10 * time.Second

// maxGPUsPerNode bounds the inventory one hello may claim.
const maxGPUsPerNode = 64

// maxAdmitting bounds the agent streams registering at once (hello to the node record
// queued for etcd): when thousands of agents connect at once (a controller restart, a
// failover), the rest wait blocked, costing nothing, instead of all running at once in front
// of the goroutines that keep the leader's etcd lease alive. Admission is quick, so the queue
// drains at thousands a second, well inside an agent's wait for its welcome.
const maxAdmitting = 64

// agentService serves AgentService/Connect.
type agentService struct {
	llmscalerv1.UnimplementedAgentServiceServer
	c *Controller
}

// Connect runs one agent stream: hello, welcome, then reports and commands until the stream
// or the leader's term ends.
func (s agentService) Connect(stream llmscalerv1.AgentService_ConnectServer) error {
	c := s.c
	hello, err := recvHello(stream)
	if err != nil {
		return err
	}
	log := c.log.With("node_id", hello.GetNodeId())
	// A node speaks only for itself: the authorization interceptor let a node identity in,
	// and here its hello must claim that very node, before anything is registered.
	if cl := callerFrom(stream.Context()); !cl.insecure && cl.id.Node != hello.GetNodeId() {
		c.metrics.refused.WithLabelValues(codes.PermissionDenied.String()).Inc()
		log.Warn("agent refused: hello names another node than its certificate", "certificate", cl.describe())
		return status.Errorf(codes.PermissionDenied, "hello.node_id %q is not this agent's node: its certificate is for node %q", hello.GetNodeId(), cl.id.Node)
	}
	for {
		if t := c.currentTerm(); t != nil {
			return c.serveAgent(stream, t, hello)
		}
		if err := c.waitForLeader(stream.Context(), hello); err != nil {
			log.Debug("agent redirected", "error", err)
			return err
		}
	}
}

func recvHello(stream llmscalerv1.AgentService_ConnectServer) (*llmscalerv1.Hello, error) {
	type result struct {
		m   *llmscalerv1.ConnectRequest
		err error
	}
	ch := make(chan result, 1)
	go func() {
		m, err := stream.Recv()
		ch <- result{m, err}
	}()
	var r result
	select {
	case r = <-ch:
	case <-time.After(helloTimeout):
		return nil, status.Errorf(codes.DeadlineExceeded, "no hello within %v", helloTimeout)
	}
	if r.err != nil {
		return nil, r.err
	}
	h := r.m.GetHello()
	if h == nil {
		return nil, status.Errorf(codes.InvalidArgument, "first message must be a hello, got %s", messageKind(r.m))
	}
	if err := validateHello(h); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return h, nil
}

func validateHello(h *llmscalerv1.Hello) error {
	if err := names.NodeID(h.GetNodeId()); err != nil {
		return fmt.Errorf("hello.node_id: %w", err)
	}
	if err := names.Labels(h.GetLabels()); err != nil {
		return fmt.Errorf("hello.labels: %w", err)
	}
	if h.GetRunId() == "" {
		return errors.New("hello.run_id: is empty")
	}
	if n := len(h.GetGpus()); n > maxGPUsPerNode {
		return fmt.Errorf("hello.gpus: %d GPUs, at most %d allowed", n, maxGPUsPerNode)
	}
	for _, p := range h.GetProfiles() {
		if err := names.Profile(p); err != nil {
			return fmt.Errorf("hello.profiles: %w", err)
		}
	}
	return nil
}

func messageKind(m *llmscalerv1.ConnectRequest) string {
	switch m.GetMsg().(type) {
	case *llmscalerv1.ConnectRequest_Report:
		return "a report"
	case *llmscalerv1.ConnectRequest_Heartbeat:
		return "a heartbeat"
	case *llmscalerv1.ConnectRequest_DesiredAck:
		return "a desired state ack"
	case *llmscalerv1.ConnectRequest_Hello:
		return "a hello"
	default:
		return "an empty message"
	}
}

// waitForLeader answers an agent that reached a controller which does not lead. Usually it
// redirects at once. But an agent that already accepted the current leader's epoch has just
// lost that leader: then the leader is probably dead and this controller may be next, so it
// waits (up to a session TTL and a second) for the election to move before redirecting. It
// returns nil when this controller became leader and should serve the stream.
func (c *Controller) waitForLeader(ctx context.Context, h *llmscalerv1.Hello) error {
	deadline := time.NewTimer(c.cfg.SessionTTL + time.Second)
	defer deadline.Stop()
	expired := false
	for {
		changed := c.changes.wait()
		if c.currentTerm() != nil {
			return nil
		}
		v := c.currentView()
		if v.leader != nil && v.leader.GetId() != c.info.GetId() && (h.GetLastEpoch() < v.epoch || expired) {
			return notLeader(v)
		}
		if expired {
			if v.leader != nil {
				return notLeader(v)
			}
			return status.Error(codes.Unavailable, "no leader elected yet")
		}
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-changed:
		case <-deadline.C:
			expired = true
		}
	}
}

func notLeader(v leaderView) error {
	st := status.Newf(codes.FailedPrecondition, "not the leader: controller %s at %s leads at epoch %d",
		v.leader.GetId(), v.leader.GetGrpcAddress(), v.epoch)
	st, err := st.WithDetails(&errdetails.ErrorInfo{
		Reason: "NOT_LEADER",
		Domain: "llmscaler.io",
		Metadata: map[string]string{
			"leader_id":      v.leader.GetId(),
			"leader_address": v.leader.GetGrpcAddress(),
			"epoch":          fmt.Sprint(v.epoch),
		},
	})
	if err != nil {
		return status.Errorf(codes.FailedPrecondition, "not the leader: controller %s at %s leads", v.leader.GetId(), v.leader.GetGrpcAddress())
	}
	return st.Err()
}

// serveAgent is the leader's side of one stream. A receive goroutine feeds one select loop,
// which alone sends on the stream.
func (c *Controller) serveAgent(stream llmscalerv1.AgentService_ConnectServer, t *term, h *llmscalerv1.Hello) error {
	ctx, cancel := context.WithCancelCause(stream.Context())
	defer cancel(nil)
	stop := context.AfterFunc(t.ctx, func() { cancel(errors.New("leadership ended")) })
	defer stop()

	c.metrics.admitWaiting.Inc()
	select {
	case c.admitting <- struct{}{}:
		c.metrics.admitWaiting.Dec()
	case <-ctx.Done():
		c.metrics.admitWaiting.Dec()
		return status.Errorf(codes.Unavailable, "not admitted: %v", context.Cause(ctx))
	}
	admitted := true
	admitDone := func() {
		if admitted {
			admitted = false
			<-c.admitting
		}
	}
	defer admitDone()

	addr := "unknown"
	if p, ok := peer.FromContext(ctx); ok {
		addr = p.Addr.String()
	}
	log := t.log.With("node_id", h.GetNodeId())
	conn, node, err := t.fleet.attach(h, addr)
	if err != nil {
		log.Warn("agent refused", "error", err)
		return status.Error(codes.AlreadyExists, err.Error())
	}
	c.metrics.streams.Inc()
	defer c.metrics.streams.Dec()
	var endErr error
	defer func() {
		if t.fleet.detach(conn, endErr) {
			log.Info("agent disconnected", "error", endErr)
		}
	}()
	// The record is stored before the welcome, so that a leader after this one knows the
	// node runs servers it may not see yet; the writer batches the writes of a storm.
	stored := t.nodes.queue(node)
	// The wait for etcd holds no admission: it costs no CPU, and a storm's records are
	// written in batches only while many are queued.
	admitDone()
	var regErr error
	select {
	case regErr = <-stored:
	case <-ctx.Done():
		regErr = context.Cause(ctx)
	}
	if err := regErr; err != nil {
		endErr = err
		return status.Errorf(codes.Unavailable, "register node: %v", err)
	}
	log.Info("agent connected", "address", addr, "gpus", len(h.GetGpus()), "gpu_backend", h.GetGpuBackend(), "agent_version", h.GetAgentVersion())

	welcome := &llmscalerv1.Welcome{
		ControllerId:      c.info.GetId(),
		Epoch:             t.epoch,
		ReportInterval:    durationpb.New(c.cfg.ReportInterval),
		HeartbeatInterval: durationpb.New(c.cfg.HeartbeatInterval),
	}
	if err := stream.Send(&llmscalerv1.ConnectResponse{Msg: &llmscalerv1.ConnectResponse_Welcome{Welcome: welcome}}); err != nil {
		endErr = err
		return err
	}
	// The node's desired state goes out on every new stream, whatever was sent on the
	// streams before: one that ended may have taken the latest version with it.
	t.reconciler.attach(h.GetNodeId(), h.GetInstances())
	var sentVersion uint64
	sendDesired := func() error {
		ds := t.reconciler.desiredState(h.GetNodeId())
		if ds.GetVersion() == sentVersion {
			return nil
		}
		if err := stream.Send(&llmscalerv1.ConnectResponse{Msg: &llmscalerv1.ConnectResponse_Desired{Desired: ds}}); err != nil {
			return err
		}
		sentVersion = ds.GetVersion()
		c.metrics.desiredSent.Inc()
		return nil
	}
	if err := sendDesired(); err != nil {
		endErr = err
		return err
	}

	recv, recvErr, _ := transport.Receive(ctx, stream.Recv)

	hb := time.NewTicker(c.cfg.HeartbeatInterval)
	defer hb.Stop()
	// An agent sends something at least every report interval and every heartbeat interval;
	// three of the longer missed in a row mean it is gone even if TCP has not noticed.
	silence := 3 * max(c.cfg.ReportInterval, c.cfg.HeartbeatInterval)
	lastHeard := c.now()
	for {
		select {
		case <-ctx.Done():
			endErr = context.Cause(ctx)
			if stream.Context().Err() != nil {
				return nil
			}
			return status.Errorf(codes.Unavailable, "stream closed by controller: %v", endErr)
		case <-conn.replaced:
			endErr = errors.New("replaced by a newer stream of the same agent")
			return status.Error(codes.Aborted, endErr.Error())
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				endErr = errors.New("agent closed the stream")
				return nil
			}
			endErr = err
			return err
		case m := <-recv:
			lastHeard = c.now()
			if err := c.handleAgentMessage(t, h.GetNodeId(), m, log); err != nil {
				endErr = err
				return err
			}
		case <-conn.desired:
			if err := sendDesired(); err != nil {
				endErr = err
				return err
			}
		case <-hb.C:
			if d := c.now().Sub(lastHeard); d > silence {
				endErr = fmt.Errorf("no message for %v", d.Round(time.Millisecond))
				return status.Errorf(codes.DeadlineExceeded, "agent silent: %v", endErr)
			}
			if err := stream.Send(&llmscalerv1.ConnectResponse{Msg: &llmscalerv1.ConnectResponse_Heartbeat{
				Heartbeat: &llmscalerv1.Heartbeat{Time: timestamppb.New(c.now())}}}); err != nil {
				endErr = err
				return err
			}
		}
	}
}

func (c *Controller) handleAgentMessage(t *term, nodeID string, m *llmscalerv1.ConnectRequest, log interface {
	Info(string, ...any)
	Warn(string, ...any)
}) error {
	switch msg := m.GetMsg().(type) {
	case *llmscalerv1.ConnectRequest_Report:
		c.metrics.messages.WithLabelValues("report").Inc()
		t.fleet.report(nodeID, msg.Report)
		if at := msg.Report.GetTime(); at != nil && !msg.Report.GetBuffered() {
			c.metrics.ingest.Observe(max(0, c.now().Sub(at.AsTime()).Seconds()))
		}
		t.engine.poke()
	case *llmscalerv1.ConnectRequest_Heartbeat:
		c.metrics.messages.WithLabelValues("heartbeat").Inc()
		t.fleet.touch(nodeID)
	case *llmscalerv1.ConnectRequest_DesiredAck:
		c.metrics.messages.WithLabelValues("desired_ack").Inc()
		a := msg.DesiredAck
		t.fleet.touch(nodeID)
		t.reconciler.ack(nodeID, a)
		switch a.GetResult() {
		case llmscalerv1.CommandResult_COMMAND_RESULT_ACCEPTED, llmscalerv1.CommandResult_COMMAND_RESULT_DUPLICATE:
			for _, r := range a.GetRejected() {
				log.Warn("instance refused by the node", "instance_id", r.GetInstanceId(), "message", r.GetMessage(), "version", a.GetVersion())
			}
		default:
			log.Warn("desired state refused", "version", a.GetVersion(), "epoch", a.GetEpoch(), "result", a.GetResult().String(), "message", a.GetMessage())
		}
	case *llmscalerv1.ConnectRequest_Hello:
		return status.Error(codes.InvalidArgument, "hello sent twice on one stream")
	default:
		return status.Error(codes.InvalidArgument, "empty message")
	}
	return nil
}
