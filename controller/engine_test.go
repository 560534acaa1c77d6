package controller

import (
	"strings"
	"testing"
	"time"

	"github.com/llmscaler/llmscaler/internal/policy"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// TestOverloadScalesAndDecisionsSurviveLeaderChange drives the real engine through an agent
// stream: an overloaded replica makes the slo policy scale up at once, the decision is
// journaled with its reason and commands, and the next leader still lists it.
func TestOverloadScalesAndDecisionsSurviveLeaderChange(t *testing.T) {
	ep := startEtcd(t)
	a := startController(t, testConfig(ep))
	waitLeader(t, a)
	b := startController(t, testConfig(ep))

	h := hello("n1", "run-1", 8)
	h.GetHello().Profiles = []string{"p"}
	raw, _, err := connect(t, a.GRPCAddr(), h)
	if err != nil {
		t.Fatal(err)
	}
	ag := &benchAgent{a: raw, live: map[string]*llmscalerv1.InstanceStatus{}}
	cli := admin(t, a)
	ctx := ctxT(t)
	spec := &llmscalerv1.DeploymentSpec{Name: "d", Profile: "p", MinReplicas: 1, MaxReplicas: 6}
	if _, err := cli.ApplyDeployment(ctx, &llmscalerv1.ApplyDeploymentRequest{Deployment: spec}); err != nil {
		t.Fatal(err)
	}
	if _, err := ag.nextStart("d"); err != nil {
		t.Fatal(err)
	}
	if err := ag.report(nil); err != nil {
		t.Fatal(err)
	}
	if err := ag.report(func(in *llmscalerv1.InstanceStatus) {
		in.Metrics.Waiting, in.Metrics.Running = 60, 8
		in.Metrics.Ttft = &llmscalerv1.LatencySummary{P50Seconds: 4, P95Seconds: 9, Count: 20}
		in.Metrics.FinishedRequestsPerSecond = 2
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := ag.nextStart("d"); err != nil {
		t.Fatal(err)
	}
	var up *llmscalerv1.Decision
	waitFor(t, 5*time.Second, "a journaled scale-up", func() bool {
		resp, err := cli.ListDecisions(ctx, &llmscalerv1.ListDecisionsRequest{Deployment: "d"})
		if err != nil {
			return false
		}
		for _, d := range resp.GetDecisions() {
			if d.GetActed() && d.GetToReplicas() > d.GetFromReplicas() {
				up = d
			}
		}
		return up != nil
	})
	if up.GetToReplicas() <= 1 || !strings.HasPrefix(up.GetReason(), "scale 1 -> ") || len(up.GetCommands()) == 0 || up.GetPolicy() != "slo" || up.GetPanic().GetWindow().AsDuration() != 6*time.Second {
		t.Fatalf("decision %v", up)
	}

	// The journal is written to etcd after the commands have left; wait for it before the
	// leader goes away (a crash in between loses that one entry, not the scale-up).
	waitFor(t, 5*time.Second, "the scale-up stored", func() bool {
		stored, err := a.store.decisions(ctx, "d")
		if err != nil {
			return false
		}
		for _, d := range stored {
			if d.GetTime().AsTime().Equal(up.GetTime().AsTime()) {
				return true
			}
		}
		return false
	})
	a.stop(t)
	waitLeader(t, b)
	resp, err := admin(t, b).ListDecisions(ctx, &llmscalerv1.ListDecisionsRequest{Deployment: "d"})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, d := range resp.GetDecisions() {
		if d.GetReason() == up.GetReason() && d.GetTime().AsTime().Equal(up.GetTime().AsTime()) {
			found = true
		}
	}
	if !found {
		t.Fatalf("the new leader lists %d decisions, not the scale-up %q", len(resp.GetDecisions()), up.GetReason())
	}
	got, err := admin(t, b).GetDeployment(ctx, &llmscalerv1.GetDeploymentRequest{Name: "d"})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetDeployment().GetStatus().GetDesiredReplicas() != up.GetToReplicas() {
		t.Fatalf("the new leader drives towards %d, the old one had set %d", got.GetDeployment().GetStatus().GetDesiredReplicas(), up.GetToReplicas())
	}
}

// A leader write that fails ends the term rather than being logged and forgotten: the
// leader acts on no count it could not store, and leads again (here, with nobody else
// campaigning) from what etcd holds.
func TestFailedLeaderWriteEndsTheTerm(t *testing.T) {
	a := startController(t, testConfig(startEtcd(t)))
	waitLeader(t, a)
	first := a.currentTerm()
	// Another controller's win would change the election key; deleting it has the same
	// effect on the fence without a second controller racing for the lead.
	if _, err := a.store.cli.Delete(ctxT(t), first.fence.key); err != nil {
		t.Fatal(err)
	}
	first.engine.Decided(ctxT(t), "chat", policy.Decision{Time: time.Now(), Policy: "slo", Current: 1, Recommended: 2,
		Desired: 2, Change: true, Reason: "scale 1 -> 2: test"}, true)
	waitFor(t, 15*time.Second, "the term to end", func() bool { return first.ctx.Err() != nil })
	waitFor(t, 15*time.Second, "a new term", func() bool {
		t2 := a.currentTerm()
		return t2 != nil && t2.epoch > first.epoch
	})
	if n, ok := a.currentTerm().engine.desired("chat"); ok && n == 2 {
		t.Errorf("the new term drives chat to %d: the count the old term could not store", n)
	}
}
