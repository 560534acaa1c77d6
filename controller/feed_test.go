package controller

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/llmscaler/llmscaler/internal/scaling"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// fedIDs lists changes as "+id" (given) and "-id" (gone), sorted.
func fedIDs(ch []scaling.Change) string {
	var out []string
	for _, c := range ch {
		if c.Gone {
			out = append(out, "-"+c.Replica.ID)
		} else {
			out = append(out, "+"+c.Replica.ID)
		}
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

// TestFeedGivesWhatChanged checks what the scaling loops are fed: every replica at first, then
// only the replicas of nodes that reported, replicas that went as gone, the longest cold start
// per profile as replicas come and go, and the routers' figures merged in again whenever
// they change.
func TestFeedGivesWhatChanged(t *testing.T) {
	f := newFleet(func() time.Time { return t0 }, time.Minute, func(*llmscalerv1.Event) {})
	for i := range 3 {
		if _, _, err := f.attach(benchHello(i), "127.0.0.1:1"); err != nil {
			t.Fatal(err)
		}
	}
	fd := newFeed()
	if got := fedIDs(fd.update(f, nil, 0, false)); got != "+i-00000-0 +i-00000-1 +i-00001-0 +i-00001-1 +i-00002-0 +i-00002-1" {
		t.Fatalf("first feed: %s", got)
	}
	if c := fd.cold["fake-llm"]; c != 40*time.Second {
		t.Fatalf("cold start %s, want 40s", c)
	}
	if got := fedIDs(fd.update(f, nil, 0, false)); got != "" {
		t.Fatalf("nothing reported, fed %s", got)
	}

	// Node 0 reports one instance, now with a longer cold start: the other one is gone.
	r := benchReport(0, 2)
	r.Instances = r.Instances[:1]
	r.Instances[0].ColdStart = durationpb.New(50 * time.Second)
	f.report("bench-00000", r)
	if got := fedIDs(fd.update(f, nil, 0, false)); got != "+i-00000-0 -i-00000-1" {
		t.Fatalf("after node 0's report: %s", got)
	}
	if c := fd.cold["fake-llm"]; c != 50*time.Second {
		t.Fatalf("cold start %s, want 50s", c)
	}
	// The replica with the longest cold start goes: the longest is counted again.
	r = benchReport(0, 3)
	r.Instances = nil
	f.report("bench-00000", r)
	if got := fedIDs(fd.update(f, nil, 0, false)); got != "-i-00000-0" {
		t.Fatalf("after node 0 emptied: %s", got)
	}
	if c := fd.cold["fake-llm"]; c != 40*time.Second {
		t.Fatalf("cold start %s after the 50 s replica went, want 40s", c)
	}

	// Routers' figures change (a new count): every replica of the deployment they route is
	// given again, with the figures merged where the engine reports none.
	dep := benchInstance(1, 0).GetDeployment()
	var want []string
	for i := 1; i < 3; i++ {
		for k := range benchInstances {
			if in := benchInstance(i, k); in.GetDeployment() == dep {
				want = append(want, "+"+in.GetInstanceId())
			}
		}
	}
	routers := map[string]*routerView{dep: {instances: map[string]*routerInstance{"i-00001-0": {finishedPerSec: 7}}}}
	ch := fd.update(f, routers, 1, false)
	if got := fedIDs(ch); got != strings.Join(want, " ") {
		t.Fatalf("routers changed: fed %s, want %s", got, strings.Join(want, " "))
	}
	for _, c := range ch {
		if c.Replica.ID == "i-00001-0" && c.Replica.Sample.FinishedPerSec != 7 {
			t.Fatalf("router figures not merged: %+v", c.Replica.Sample)
		}
	}
	if got := fedIDs(fd.update(f, routers, 1, false)); got != "" {
		t.Fatalf("routers unchanged, fed %s", got)
	}
	// A node's report of a routed replica is merged as well.
	f.report("bench-00001", benchReport(1, 2))
	for _, c := range fd.update(f, routers, 1, false) {
		if c.Replica.ID == "i-00001-0" && c.Replica.Sample.FinishedPerSec != 7 {
			t.Fatalf("router figures not merged into a node's report: %+v", c.Replica.Sample)
		}
	}
	// all: every live replica.
	if got := fedIDs(fd.update(f, routers, 1, true)); got != "+i-00001-0 +i-00001-1 +i-00002-0 +i-00002-1" {
		t.Fatalf("all: %s", got)
	}
}

// TestRouterViewCached checks that the routers' view is built again only after a report or
// when a report is forgotten, and that its count changes exactly then.
func TestRouterViewCached(t *testing.T) {
	b := newRouterBook()
	const interval = time.Second
	report := func(id string) *llmscalerv1.ReportRouterRequest {
		return &llmscalerv1.ReportRouterRequest{RouterId: id, Interval: durationpb.New(interval),
			Deployments: []*llmscalerv1.RouterDeploymentStats{{Deployment: "d", Waiting: 3}}}
	}
	b.put(t0, report("r1"))
	v1, g1 := b.view(t0, interval)
	v2, g2 := b.view(t0.Add(routerForget*interval), interval)
	if g1 != g2 || fmt.Sprintf("%p", v1) != fmt.Sprintf("%p", v2) || v1["d"].waiting != 3 {
		t.Fatalf("unchanged view rebuilt: gen %d then %d, waiting %v", g1, g2, v1["d"].waiting)
	}
	b.put(t0.Add(time.Second), report("r2"))
	v3, g3 := b.view(t0.Add(time.Second), interval)
	if g3 == g2 || v3["d"].waiting != 6 {
		t.Fatalf("after a second router: gen %d (was %d), waiting %v", g3, g2, v3["d"].waiting)
	}
	// r1 is forgotten just past routerForget intervals.
	v4, g4 := b.view(t0.Add(routerForget*interval+time.Nanosecond), interval)
	if g4 == g3 || v4["d"].waiting != 3 {
		t.Fatalf("r1 not forgotten: gen %d (was %d), waiting %v", g4, g3, v4["d"].waiting)
	}
}

// TestEngineFollowsTheStoredCount: while a decision is being stored, the reconciler sees
// the count stored before it, not the one the loops already decided; new bounds apply to
// the stored count.
func TestEngineFollowsTheStoredCount(t *testing.T) {
	e := &engine{log: hclogNull(), specs: map[string]*llmscalerv1.Deployment{}, counts: map[string]uint32{"d": 2}}
	e.loops = scaling.NewFleet(scaling.RealClock{}, time.Second, e, e)
	e.put(dep("d", 1, 10, nil))
	if n, ok := e.desired("d"); !ok || n != 2 {
		t.Fatalf("desired %d %v, want the stored 2", n, ok)
	}
	// The loops decide 5 (as Fleet.Tick does before the sink stores it).
	if err := e.loops.Put("d", scaling.Spec{Min: 5, Max: 10}, nil, 0); err != nil {
		t.Fatal(err)
	}
	if n, _ := e.loops.Desired("d"); n != 5 {
		t.Fatalf("loops at %d", n)
	}
	if n, _ := e.desired("d"); n != 2 {
		t.Fatalf("desired %d before the count is stored, want 2", n)
	}
	// A spec whose min_replicas is above the stored count raises it.
	e.put(dep("d", 4, 10, nil))
	if n, _ := e.desired("d"); n != 4 {
		t.Fatalf("desired %d after min_replicas 4, want 4", n)
	}
	if _, ok := e.desired("nobody"); ok {
		t.Fatal("a count for an unknown deployment")
	}
}
