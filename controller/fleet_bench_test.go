package controller

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// The fleet benchmarks build the leader's view of a large fleet (10,000 nodes of 8 GPUs with
// 2 READY instances each, spread over 10 deployments, the shape of `llmscaler bench fleet`'s
// default) and time the hot paths that run per report or per evaluation on it:
//
//	go test -run '^$' -bench 'Fleet|Plan' -benchmem ./controller/
const (
	benchNodes     = 10000
	benchGPUs      = 8
	benchInstances = 2
	benchDeps      = 10
)

func benchHello(i int) *llmscalerv1.Hello {
	h := &llmscalerv1.Hello{NodeId: fmt.Sprintf("bench-%05d", i), RunId: fmt.Sprintf("run-%d", i), GpuBackend: "fake",
		Profiles: []string{"fake-llm"}, Labels: map[string]string{"rack": fmt.Sprint(i % 40)}}
	for g := range benchGPUs {
		h.Gpus = append(h.Gpus, &llmscalerv1.Gpu{Index: uint32(g), Uuid: fmt.Sprintf("GPU-%d-%d", i, g), Name: "fake", MemoryTotalMib: 81920})
	}
	for k := range benchInstances {
		h.Instances = append(h.Instances, benchInstance(i, k))
	}
	return h
}

func benchInstance(i, k int) *llmscalerv1.InstanceStatus {
	return &llmscalerv1.InstanceStatus{
		InstanceId: fmt.Sprintf("i-%05d-%d", i, k), Deployment: fmt.Sprintf("d%d", (i*benchInstances+k)%benchDeps),
		Profile: "fake-llm", Phase: llmscalerv1.InstancePhase_INSTANCE_PHASE_READY, GpuIndices: []uint32{uint32(k)},
		Endpoint: fmt.Sprintf("10.0.%d.%d:8000", i/250, i%250), StartedAt: timestamppb.New(t0), ColdStart: durationpb.New(40 * time.Second),
		Metrics: &llmscalerv1.QueueMetrics{ScrapedAt: timestamppb.New(t0), Waiting: 1, Running: 4,
			Ttft:       &llmscalerv1.LatencySummary{P50Seconds: 0.2, P95Seconds: 0.5, Count: 10},
			E2ELatency: &llmscalerv1.LatencySummary{P50Seconds: 3, P95Seconds: 6, Count: 10}, KvCacheUsage: new(float64)},
	}
}

func benchReport(i int, seq uint64) *llmscalerv1.Report {
	r := &llmscalerv1.Report{Seq: seq, Time: timestamppb.New(t0)}
	for g := range benchGPUs {
		u := 50.0
		r.Gpus = append(r.Gpus, &llmscalerv1.GpuSample{Index: uint32(g), UtilizationPercent: &u, MemoryUsedMib: proto.Uint64(40000)})
	}
	for k := range benchInstances {
		r.Instances = append(r.Instances, benchInstance(i, k))
	}
	return r
}

// benchFleet is a fleet of n connected nodes, each with its latest report applied.
func benchFleet(b *testing.B, n int) *fleet {
	f := newFleet(func() time.Time { return t0 }, time.Minute, func(*llmscalerv1.Event) {})
	for i := range n {
		if _, _, err := f.attach(benchHello(i), "127.0.0.1:1"); err != nil {
			b.Fatal(err)
		}
		f.report(fmt.Sprintf("bench-%05d", i), benchReport(i, 1))
	}
	return f
}

func benchDeployments() map[string]*llmscalerv1.Deployment {
	deps := map[string]*llmscalerv1.Deployment{}
	per := uint32(benchNodes * benchInstances / benchDeps)
	for d := range benchDeps {
		name := fmt.Sprintf("d%d", d)
		deps[name] = dep(name, per, per, nil)
	}
	return deps
}

// BenchmarkFleetReport is one agent's report applied to the leader's view of 10,000 nodes.
func BenchmarkFleetReport(b *testing.B) {
	f := benchFleet(b, benchNodes)
	reports := make([]*llmscalerv1.Report, 100)
	for i := range reports {
		reports[i] = benchReport(i, 2)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		k := i % len(reports)
		f.report(fmt.Sprintf("bench-%05d", k), reports[k])
	}
}

// BenchmarkFleetFeed is what the scaling loops read in one batch at 10,000 reports a second:
// the changes to the replicas of the 100 nodes that reported in the last 10 ms, out of
// 10,000 (each evaluation used to observe all 20,000 replicas).
func BenchmarkFleetFeed(b *testing.B) {
	f := benchFleet(b, benchNodes)
	fd := newFeed()
	fd.update(f, nil, 0, true)
	reports := make([]*llmscalerv1.Report, benchNodes/100)
	for i := range reports {
		reports[i] = benchReport(i, 2)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		for k := range 100 {
			n := (i*100 + k) % len(reports)
			f.report(fmt.Sprintf("bench-%05d", n), reports[n])
		}
		b.StartTimer()
		if ch := fd.update(f, nil, 0, false); len(ch) != 100*benchInstances {
			b.Fatalf("%d changes for 100 reports", len(ch))
		}
	}
}

// BenchmarkPlanSteady is one reconcile plan over 10,000 nodes when every deployment is at
// its count: the pass that runs every report interval.
func BenchmarkPlanSteady(b *testing.B) {
	f := benchFleet(b, benchNodes)
	deps := benchDeployments()
	st := newReconcileState()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		starts, stops, _ := plan(t0, deps, f.snapshot(), st, idGen(), desiredReplicas)
		if len(starts)+len(stops) != 0 {
			b.Fatalf("steady fleet: %d starts, %d stops", len(starts), len(stops))
		}
	}
}

// BenchmarkPlanOneStart is the plan that carries out a scale-up by one replica on 10,000
// nodes: what a decision waits for before its start is sent.
func BenchmarkPlanOneStart(b *testing.B) {
	f := benchFleet(b, benchNodes)
	deps := benchDeployments()
	d0 := deps["d0"]
	d0.Spec.MaxReplicas++
	d0.Spec.MinReplicas++
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		starts, _, _ := plan(t0, deps, f.snapshot(), newReconcileState(), idGen(), desiredReplicas)
		if len(starts) != 1 {
			b.Fatalf("%d starts, want 1", len(starts))
		}
	}
}
