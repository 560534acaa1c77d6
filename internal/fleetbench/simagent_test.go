package fleetbench

import (
	"strings"
	"testing"
	"time"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func newTestAgent(t *testing.T) *SimAgent {
	t.Helper()
	l, err := NewLayout(4, 4, 2, 1)
	if err != nil {
		t.Fatal(err)
	}
	return NewSimAgent(l, 0, t0) // agent 0 hosts probe-0 on GPU 0 and a fleet instance on GPU 1
}

func phases(r *llmscalerv1.Report) map[string]llmscalerv1.InstancePhase {
	out := map[string]llmscalerv1.InstancePhase{}
	for _, in := range r.GetInstances() {
		out[in.GetInstanceId()] = in.GetPhase()
	}
	return out
}

func start(id, dep string, gpus ...uint32) *llmscalerv1.StartInstance {
	return &llmscalerv1.StartInstance{InstanceId: id, Deployment: dep, Profile: Profile, GpuIndices: gpus}
}

func TestHelloListsWhatRunsWithTheInventory(t *testing.T) {
	a := newTestAgent(t)
	h := a.Hello("run-1", t0)
	if h.GetNodeId() != "bench-00000" || h.GetRunId() != "run-1" || len(h.GetGpus()) != 4 || h.GetGpuBackend() != "fake" {
		t.Fatalf("hello %v", h)
	}
	if len(h.GetInstances()) != 2 || h.GetInstances()[0].GetDeployment() != "probe-0" {
		t.Fatalf("hello instances %v, want probe-0 and a fleet instance", h.GetInstances())
	}
	for _, in := range h.GetInstances() {
		if in.GetPhase() != llmscalerv1.InstancePhase_INSTANCE_PHASE_READY || in.GetMetrics().GetScrapedAt() == nil || in.GetColdStart() == nil {
			t.Errorf("%s: phase %v, scraped %v: want READY with fresh metrics and a cold start", in.GetInstanceId(), in.GetPhase(), in.GetMetrics().GetScrapedAt())
		}
	}
	if h.GetLabels()[probeLabel] != "probe-0" {
		t.Errorf("labels %v, want the probe label", h.GetLabels())
	}
}

func TestAStartIsStartingForOneIntervalThenReady(t *testing.T) {
	a := newTestAgent(t)
	a.SetInterval(time.Second)
	a.Report(1, t0) // the GPU samples of a report before the start must not stick
	ds := &llmscalerv1.DesiredState{Epoch: 5, Version: 1, Instances: []*llmscalerv1.StartInstance{start("probe-0-new", "probe-0", 2)}}
	ap := a.Apply(ds, t0)
	if ap.Ack.GetResult() != llmscalerv1.CommandResult_COMMAND_RESULT_ACCEPTED || len(ap.Started) != 1 || !ap.Changed() {
		t.Fatalf("apply = %+v, want one start accepted", ap)
	}
	if got := phases(a.Report(1, t0.Add(500*time.Millisecond)))["probe-0-new"]; got != llmscalerv1.InstancePhase_INSTANCE_PHASE_STARTING {
		t.Errorf("half an interval after its start: %v, want STARTING", got)
	}
	r := a.Report(2, t0.Add(time.Second))
	if got := phases(r)["probe-0-new"]; got != llmscalerv1.InstancePhase_INSTANCE_PHASE_READY {
		t.Errorf("one interval after its start: %v, want READY", got)
	}
	if len(r.GetInstances()) != 3 {
		t.Errorf("%d instances reported, want 3", len(r.GetInstances()))
	}
	busy := 0
	for _, g := range r.GetGpus() {
		if g.GetMemoryUsedMib() > 0 {
			busy++
		}
	}
	if busy != 3 {
		t.Errorf("%d GPUs show memory in use, want 3", busy)
	}
}

func TestApplyFencesAndDeduplicatesAsTheRealAgent(t *testing.T) {
	a := newTestAgent(t)
	if !a.AcceptWelcome(7) {
		t.Fatal("first welcome refused")
	}
	stale := a.Apply(&llmscalerv1.DesiredState{Epoch: 6, Version: 9, Instances: []*llmscalerv1.StartInstance{start("x", "probe-0", 3)}}, t0)
	if stale.Ack.GetResult() != llmscalerv1.CommandResult_COMMAND_RESULT_STALE_EPOCH || stale.Changed() {
		t.Errorf("older epoch: %v changed=%v, want STALE_EPOCH and nothing done", stale.Ack.GetResult(), stale.Changed())
	}
	ds := &llmscalerv1.DesiredState{Epoch: 7, Version: 3, Instances: []*llmscalerv1.StartInstance{start("x", "probe-0", 3)}}
	if ap := a.Apply(ds, t0); !ap.Changed() {
		t.Fatal("first apply changed nothing")
	}
	for _, v := range []uint64{3, 2} {
		dup := a.Apply(&llmscalerv1.DesiredState{Epoch: 7, Version: v}, t0)
		if dup.Ack.GetResult() != llmscalerv1.CommandResult_COMMAND_RESULT_DUPLICATE {
			t.Errorf("version %d again: %v, want DUPLICATE", v, dup.Ack.GetResult())
		}
	}
	if a.AcceptWelcome(6) {
		t.Error("a welcome from a deposed leader was accepted")
	}
	if !a.AcceptWelcome(8) || a.Hello("r", t0).GetLastEpoch() != 8 {
		t.Error("a newer leader's epoch is not what the next hello says")
	}
}

func TestApplyWithoutChangesIsQuiet(t *testing.T) {
	a := newTestAgent(t)
	h := a.Hello("r", t0)
	// A new leader's first desired state lists what the node reported: no change.
	ds := &llmscalerv1.DesiredState{Epoch: 2, Version: 2}
	for _, in := range h.GetInstances() {
		ds.Instances = append(ds.Instances, start(in.GetInstanceId(), in.GetDeployment(), in.GetGpuIndices()...))
	}
	ap := a.Apply(ds, t0)
	if ap.Changed() || ap.Ack.GetResult() != llmscalerv1.CommandResult_COMMAND_RESULT_ACCEPTED || len(ap.Ack.GetRejected()) != 0 {
		t.Errorf("adopting what runs: %+v, want accepted with no change", ap)
	}
}

func TestDrainRemovesAndBadStartsAreRejected(t *testing.T) {
	a := newTestAgent(t)
	fleetID := a.Hello("r", t0).GetInstances()[1].GetInstanceId()
	ds := &llmscalerv1.DesiredState{Epoch: 1, Version: 1,
		Drain: []*llmscalerv1.StopInstance{{InstanceId: fleetID}, {InstanceId: "gone-already"}},
		Instances: []*llmscalerv1.StartInstance{
			start("ok", "probe-0", 1), // the GPU the drain frees
			start("taken", "probe-0", 0),
			start("nogpu", "probe-0", 4),
			{InstanceId: "other", Deployment: "probe-0", Profile: "vllm-70b", GpuIndices: []uint32{3}},
		}}
	ap := a.Apply(ds, t0)
	if len(ap.Drained) != 1 || ap.Drained[0] != fleetID {
		t.Errorf("drained %v, want only %s (the other was not running)", ap.Drained, fleetID)
	}
	if len(ap.Started) != 1 || ap.Started[0].GetInstanceId() != "ok" {
		t.Errorf("started %v, want only ok", ap.Started)
	}
	rejected := map[string]string{}
	for _, r := range ap.Ack.GetRejected() {
		rejected[r.GetInstanceId()] = r.GetMessage()
	}
	for id, want := range map[string]string{"taken": "taken by", "nogpu": "GPU 4", "other": "catalog"} {
		if !strings.Contains(rejected[id], want) {
			t.Errorf("%s rejected with %q, want a message about %q", id, rejected[id], want)
		}
	}
	if _, ok := phases(a.Report(1, t0))[fleetID]; ok {
		t.Error("a drained instance is still reported")
	}
}

func TestOverloadShowsInTheQueueUntilCleared(t *testing.T) {
	a := newTestAgent(t)
	waiting := func() float64 {
		for _, in := range a.Report(1, t0).GetInstances() {
			if in.GetDeployment() == "probe-0" {
				return in.GetMetrics().GetWaiting()
			}
		}
		t.Fatal("probe-0 not reported")
		return 0
	}
	if w := waiting(); w != 0 {
		t.Errorf("idle probe waiting %v", w)
	}
	a.SetOverload("probe-0", true)
	if w := waiting(); w != overloadWaiting || len(a.Overloads()) != 1 {
		t.Errorf("overloaded probe waiting %v, overloads %v", w, a.Overloads())
	}
	a.SetOverload("probe-0", false)
	if w := waiting(); w != 0 || a.Overloads() != nil {
		t.Errorf("cleared probe waiting %v, overloads %v", w, a.Overloads())
	}
}
