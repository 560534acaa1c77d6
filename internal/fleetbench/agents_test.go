package fleetbench

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/llmscaler/llmscaler/internal/transport"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeController answers Connect as a leader does (welcome, the node's desired state, a
// start for a probe whose queue is long) or, with redirect set, as a follower does.
type fakeController struct {
	llmscalerv1.UnimplementedAgentServiceServer
	redirect string // leader address a follower names

	mu    sync.Mutex
	acks  int
	ready map[string]bool // probe instances seen READY
}

func (f *fakeController) Connect(stream llmscalerv1.AgentService_ConnectServer) error {
	m, err := stream.Recv()
	if err != nil {
		return err
	}
	h := m.GetHello()
	if f.redirect != "" {
		st, _ := status.New(codes.FailedPrecondition, "not the leader").WithDetails(&errdetails.ErrorInfo{
			Reason: "NOT_LEADER", Metadata: map[string]string{"leader_id": "leader", "leader_address": f.redirect}})
		return st.Err()
	}
	if err := stream.Send(&llmscalerv1.ConnectResponse{Msg: &llmscalerv1.ConnectResponse_Welcome{Welcome: &llmscalerv1.Welcome{
		ControllerId: "leader", Epoch: 3, ReportInterval: durationpb.New(100 * time.Millisecond), HeartbeatInterval: durationpb.New(time.Second)}}}); err != nil {
		return err
	}
	ds := &llmscalerv1.DesiredState{Epoch: 3, Version: 1}
	for _, in := range h.GetInstances() {
		ds.Instances = append(ds.Instances, &llmscalerv1.StartInstance{InstanceId: in.GetInstanceId(), Deployment: in.GetDeployment(), Profile: in.GetProfile(), GpuIndices: in.GetGpuIndices()})
	}
	if err := stream.Send(&llmscalerv1.ConnectResponse{Msg: &llmscalerv1.ConnectResponse_Desired{Desired: ds}}); err != nil {
		return err
	}
	started := false
	for {
		m, err := stream.Recv()
		if err != nil {
			return nil
		}
		switch msg := m.GetMsg().(type) {
		case *llmscalerv1.ConnectRequest_DesiredAck:
			f.mu.Lock()
			f.acks++
			f.mu.Unlock()
		case *llmscalerv1.ConnectRequest_Report:
			for _, in := range msg.Report.GetInstances() {
				if in.GetInstanceId() == "probe-0-new" && in.GetPhase() == llmscalerv1.InstancePhase_INSTANCE_PHASE_READY {
					f.mu.Lock()
					f.ready[h.GetNodeId()] = true
					f.mu.Unlock()
				}
				if in.GetDeployment() != "probe-0" || in.GetMetrics().GetWaiting() < 10 || started {
					continue
				}
				started = true
				ds.Version++
				ds.Instances = append(ds.Instances, &llmscalerv1.StartInstance{InstanceId: "probe-0-new", Deployment: "probe-0", Profile: Profile, GpuIndices: []uint32{3}})
				if err := stream.Send(&llmscalerv1.ConnectResponse{Msg: &llmscalerv1.ConnectResponse_Desired{Desired: ds}}); err != nil {
					return err
				}
			}
		}
	}
}

func serve(t *testing.T, f *fakeController) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(transport.ServerOptions(transport.Plaintext)...)
	llmscalerv1.RegisterAgentServiceServer(s, f)
	go func() { _ = s.Serve(l) }()
	t.Cleanup(s.Stop)
	return l.Addr().String()
}

// link is the bench's end of the agents process's JSON lines.
type link struct {
	in     *io.PipeWriter
	events chan event
}

func runAgents(t *testing.T, cfg AgentsConfig) *link {
	t.Helper()
	a, err := NewAgents(cfg, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	l := &link{in: inW, events: make(chan event, 1000)}
	done := make(chan error, 1)
	go func() {
		done <- a.Run(context.Background(), inR, outW)
		outW.Close()
	}()
	go func() {
		sc := bufio.NewScanner(outR)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var e event
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				t.Errorf("agents wrote %q: %v", sc.Text(), err)
				continue
			}
			l.events <- e
		}
		close(l.events)
	}()
	t.Cleanup(func() {
		inW.Close() // the end of stdin is a quit
		for range l.events {
		}
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return l
}

func (l *link) send(t *testing.T, c command) {
	t.Helper()
	b, _ := json.Marshal(c)
	if _, err := l.in.Write(append(b, '\n')); err != nil {
		t.Fatal(err)
	}
}

// wait reads events until one satisfies ok, within d.
func (l *link) wait(t *testing.T, d time.Duration, what string, ok func(event) bool) event {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case e, open := <-l.events:
			if !open {
				t.Fatalf("%s: the agents ended first", what)
			}
			if ok(e) {
				return e
			}
		case <-deadline:
			t.Fatalf("%s: not within %v", what, d)
		}
	}
}

func TestAgentsFollowARedirectReportAndTimeAStart(t *testing.T) {
	leader := &fakeController{ready: map[string]bool{}}
	leaderAddr := serve(t, leader)
	follower := serve(t, &fakeController{redirect: leaderAddr})
	layout, err := NewLayout(3, 4, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	l := runAgents(t, AgentsConfig{Layout: layout, Controllers: []string{follower, leaderAddr}, Storm: true, StatsInterval: 50 * time.Millisecond})
	l.wait(t, 5*time.Second, "ready", func(e event) bool { return e.Event == evReady })
	l.send(t, command{Cmd: cmdConnect})

	e := l.wait(t, 10*time.Second, "all reporting", func(e event) bool { return e.Stats != nil && e.Stats.AllReportingAt != 0 })
	s := e.Stats
	if s.Connected != 3 || s.ByController["leader"] != 3 || s.AllOn["leader"] == 0 {
		t.Errorf("stats %+v, want all 3 on the leader", s)
	}
	if s.Redirects < 1 {
		t.Errorf("%d redirects: the agents that tried the follower first should have followed it", s.Redirects)
	}
	if s.DesiredChanges != 0 || s.Desired < 3 {
		t.Errorf("%d desired states, %d with changes: want one per agent, none changing anything", s.Desired, s.DesiredChanges)
	}

	l.send(t, command{Cmd: cmdOverload, Deployment: "probe-0"})
	tr := l.wait(t, 10*time.Second, "the trial", func(e event) bool { return e.Trial != nil }).Trial
	if tr.Deployment != "probe-0" || tr.T0 == 0 || tr.T1 < tr.T0 || tr.InstanceID != "probe-0-new" || tr.ControllerID != "leader" {
		t.Errorf("trial %+v, want probe-0's start from the leader after its overloaded report", tr)
	}
	probeNode := layout.NodeID(layout.Probes[0].Agent)
	l.wait(t, 10*time.Second, "the new instance READY and acks in", func(event) bool {
		leader.mu.Lock()
		defer leader.mu.Unlock()
		return leader.ready[probeNode] && leader.acks >= 4
	})
	e = l.wait(t, 5*time.Second, "stats with the start", func(e event) bool { return e.Stats != nil && e.Stats.Starts == 1 })
	if e.Stats.DesiredChanges != 1 || e.Stats.Rejected != 0 || e.Stats.Disconnects != 0 {
		t.Errorf("stats %+v, want one change, no rejection, no disconnect", e.Stats)
	}
}

func TestAgentsTimeOutATrialWithoutAStart(t *testing.T) {
	leader := &fakeController{ready: map[string]bool{}}
	addr := serve(t, leader)
	layout, err := NewLayout(2, 4, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	l := runAgents(t, AgentsConfig{Layout: layout, Controllers: []string{addr}, RampPerSecond: 100, TrialTimeout: 300 * time.Millisecond, StatsInterval: 50 * time.Millisecond})
	l.wait(t, 5*time.Second, "ready", func(e event) bool { return e.Event == evReady })
	l.send(t, command{Cmd: cmdConnect})
	l.wait(t, 10*time.Second, "all reporting", func(e event) bool { return e.Stats != nil && e.Stats.AllReportingAt != 0 })
	// The fake starts only probe-0-new: probe-1's overload goes unanswered.
	l.send(t, command{Cmd: cmdOverload, Deployment: "probe-1"})
	tr := l.wait(t, 5*time.Second, "the trial", func(e event) bool { return e.Trial != nil }).Trial
	if tr.Deployment != "probe-1" || tr.T0 == 0 || tr.T1 != 0 {
		t.Errorf("trial %+v, want probe-1 sent and never answered", tr)
	}
}
