package controller

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// benchAgent is a raw agent that follows its desired states by reporting the instances and can
// send a report that shows overload.
type benchAgent struct {
	a    *rawAgent
	seq  uint64
	live map[string]*llmscalerv1.InstanceStatus
}

func (b *benchAgent) report(mod func(*llmscalerv1.InstanceStatus)) error {
	b.seq++
	r := &llmscalerv1.Report{Seq: b.seq, Time: timestamppb.Now()}
	for _, in := range b.live {
		in.Metrics = &llmscalerv1.QueueMetrics{ScrapedAt: timestamppb.Now(), Ttft: &llmscalerv1.LatencySummary{}, E2ELatency: &llmscalerv1.LatencySummary{}}
		if mod != nil {
			mod(in)
		}
		r.Instances = append(r.Instances, in)
	}
	return b.a.stream.Send(&llmscalerv1.ConnectRequest{Msg: &llmscalerv1.ConnectRequest_Report{Report: r}})
}

// nextStart waits for a desired state with a new start of dep, records the instance as
// READY, and returns when that state was received.
func (b *benchAgent) nextStart(dep string) (time.Time, error) {
	for {
		m, err := b.a.stream.Recv()
		if err != nil {
			return time.Time{}, err
		}
		ds := m.GetDesired()
		if ds == nil {
			continue
		}
		at := time.Now()
		started := false
		applyDesired(b.live, ds, func(s *llmscalerv1.StartInstance) *llmscalerv1.InstanceStatus {
			started = started || s.GetDeployment() == dep
			return &llmscalerv1.InstanceStatus{InstanceId: s.GetInstanceId(), Deployment: s.GetDeployment(), Profile: s.GetProfile(),
				Phase: llmscalerv1.InstancePhase_INSTANCE_PHASE_READY, GpuIndices: s.GetGpuIndices(),
				StartedAt: timestamppb.Now(), ColdStart: durationpb.New(time.Second)}
		})
		if started {
			return at, nil
		}
	}
}

// BenchmarkOverloadToStart measures the time from a report that shows overload reaching the
// leader to the start command leaving it, through the real stream, windows, slo policy and
// reconciler. Each iteration uses a fresh deployment with one idle READY replica, and sends
// the overload report at a random point of the controller's report interval.
//
//	go test -run '^$' -bench OverloadToStart -benchtime 40x ./controller
func BenchmarkOverloadToStart(b *testing.B) {
	ep := startEtcdB(b)
	cfg := testConfig(ep)
	cfg.ReportInterval = time.Second
	cfg.HeartbeatInterval = 5 * time.Second
	cfg.NodeGrace = time.Minute
	c, err := New(cfg, hclogNull())
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	deadline := time.Now().Add(15 * time.Second)
	for !c.IsLeader() {
		if time.Now().After(deadline) {
			b.Fatal("no leader")
		}
		time.Sleep(10 * time.Millisecond)
	}
	h := hello("bench", "run-1", 64)
	h.GetHello().Profiles = []string{"p"}
	a, _, err := connectB(c.GRPCAddr(), h)
	if err != nil {
		b.Fatal(err)
	}
	defer a.cancel()
	ag := &benchAgent{a: a, live: map[string]*llmscalerv1.InstanceStatus{}}
	cli := llmscalerv1.NewAdminServiceClient(dialB(b, c.GRPCAddr()))

	var lat []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		for id := range ag.live {
			delete(ag.live, id)
		}
		dep := fmt.Sprintf("d%d", i)
		spec := &llmscalerv1.DeploymentSpec{Name: dep, Profile: "p", GpusPerReplica: 0, MinReplicas: 1, MaxReplicas: 4}
		if _, err := cli.ApplyDeployment(ctx, &llmscalerv1.ApplyDeploymentRequest{Deployment: spec}); err != nil {
			b.Fatal(err)
		}
		if _, err := ag.nextStart(dep); err != nil {
			b.Fatal(err)
		}
		for range 2 {
			if err := ag.report(nil); err != nil {
				b.Fatal(err)
			}
			time.Sleep(cfg.ReportInterval)
		}
		time.Sleep(time.Duration(rand.Int64N(int64(cfg.ReportInterval))))
		b.StartTimer()
		sent := time.Now()
		if err := ag.report(func(in *llmscalerv1.InstanceStatus) {
			in.Metrics.Waiting, in.Metrics.Running = 60, 8
			in.Metrics.Ttft = &llmscalerv1.LatencySummary{P50Seconds: 4, P95Seconds: 9, Count: 20}
			in.Metrics.FinishedRequestsPerSecond = 2
		}); err != nil {
			b.Fatal(err)
		}
		at, err := ag.nextStart(dep)
		if err != nil {
			b.Fatal(err)
		}
		lat = append(lat, at.Sub(sent))
		b.StopTimer()
		if _, err := cli.DeleteDeployment(ctx, &llmscalerv1.DeleteDeploymentRequest{Name: dep}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(q(1), "max-ms")
}
