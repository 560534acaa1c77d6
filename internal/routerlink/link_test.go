package routerlink

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/llmscaler/llmscaler/internal/router"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

func TestTableFromWatch(t *testing.T) {
	m := &llmscalerv1.WatchEndpointsResponse{Deployments: []*llmscalerv1.DeploymentEndpoints{
		{Deployment: "chat", ServedModels: []string{"llama-3-8b", "chat"}, ColdStartWait: durationpb.New(2 * time.Minute),
			Endpoints: []*llmscalerv1.Endpoint{
				{InstanceId: "chat-1", Address: "10.0.0.5:8001", MaxInFlight: 16, KvCacheUsage: proto.Float64(0.4)},
				{InstanceId: "chat-2", Address: "10.0.0.6:8001"},
			}},
		{Deployment: "idle", ServedModels: []string{"idle"}},
	}}
	got := Table(m, 50)
	if len(got) != 2 {
		t.Fatalf("%d deployments, want 2", len(got))
	}
	c := got[0]
	if c.Name != "chat" || len(c.Models) != 2 || c.Models[0] != "llama-3-8b" || c.ColdStartWait != 2*time.Minute || c.MaxQueue != 50 {
		t.Fatalf("deployment %+v", c)
	}
	want := []router.Endpoint{{ID: "chat-1", URL: "http://10.0.0.5:8001", MaxInFlight: 16, KVCache: 0.4}, {ID: "chat-2", URL: "http://10.0.0.6:8001"}}
	if len(c.Endpoints) != 2 || c.Endpoints[0] != want[0] || c.Endpoints[1] != want[1] {
		t.Fatalf("endpoints %+v, want %+v", c.Endpoints, want)
	}
	if got[1].Name != "idle" || len(got[1].Endpoints) != 0 {
		t.Fatalf("a deployment with no endpoint: %+v", got[1])
	}
	// The router takes the table as it is.
	r, err := router.New(router.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.SetDeployments(got); err != nil {
		t.Fatalf("the router refused the table: %v", err)
	}
}

func TestReportFromSnapshot(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 1, 0, time.UTC)
	snap := router.Snapshot{Deployments: []router.DeploymentStats{{
		Name: "chat", Waiting: 3, Interval: router.Interval{Counters: router.Counters{Arrivals: 12, Rejected: 1}},
		Instances: []router.InstanceStats{{ID: "chat-1", InFlight: 2, Interval: router.Interval{
			Counters: router.Counters{Arrivals: 9, Finished: 8, Errors: 1, CompletionTokens: 640},
			TTFT:     router.Latency{P50: 200 * time.Millisecond, P95: 900 * time.Millisecond, Count: 8},
			E2E:      router.Latency{P50: 3 * time.Second, P95: 5 * time.Second, Count: 8},
		}}},
	}}}
	req := Report("r1", now, time.Second, snap)
	if req.GetRouterId() != "r1" || !req.GetTime().AsTime().Equal(now) || req.GetInterval().AsDuration() != time.Second || len(req.GetDeployments()) != 1 {
		t.Fatalf("report %v", req)
	}
	d := req.GetDeployments()[0]
	if d.GetDeployment() != "chat" || d.GetArrivals() != 12 || d.GetWaiting() != 3 || d.GetRejected() != 1 || len(d.GetInstances()) != 1 {
		t.Fatalf("deployment %v", d)
	}
	in := d.GetInstances()[0]
	if in.GetInstanceId() != "chat-1" || in.GetInFlight() != 2 || in.GetArrivals() != 9 || in.GetFinished() != 8 || in.GetErrors() != 1 ||
		in.GetCompletionTokens() != 640 || in.GetTtft().GetP95Seconds() != 0.9 || in.GetTtft().GetCount() != 8 || in.GetE2ELatency().GetP50Seconds() != 3 {
		t.Fatalf("instance %v", in)
	}
}
