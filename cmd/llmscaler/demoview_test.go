package main

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/llmscaler/llmscaler/internal/loadgen"
)

func TestDemoScheduleFollowsThePhases(t *testing.T) {
	s, length := demoSchedule()
	if s != "0s:4,20s:4->16,1m10s:16,1m40s:16->4,2m30s:4" || length != 170*time.Second {
		t.Fatalf("schedule %q over %v", s, length)
	}
	for _, tc := range []struct {
		at    time.Duration
		phase string
		rate  float64
	}{
		{0, "low", demoLowRPS}, {45 * time.Second, "ramp", (demoLowRPS + demoHighRPS) / 2},
		{80 * time.Second, "high", demoHighRPS}, {125 * time.Second, "decline", (demoLowRPS + demoHighRPS) / 2},
		{165 * time.Second, "low again", demoLowRPS}, {length, "done", 0},
	} {
		if p, r := demoPhase(tc.at), scheduleRate(tc.at); p != tc.phase || math.Abs(r-tc.rate) > 1e-9 {
			t.Errorf("at %v: %s at %.2f req/s, want %s at %.2f", tc.at, p, r, tc.phase, tc.rate)
		}
	}
}

// A run of two samples: the first with one replica, the second with three (one starting);
// two requests within the SLO, one over it, one failed.
func demoRun() (time.Time, []demoSample, []loadgen.Result) {
	start := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return start.Add(time.Duration(s * float64(time.Second))) }
	samples := []demoSample{
		{Time: at(60), At: time.Minute, Phase: "ramp", OfferedRPS: 9, Desired: 1,
			Nodes: map[string]*nodeSample{"n1": {Ready: 1, GPUUtil: []float64{50, 0}}}, ReadyGPUUtil: 50},
		{Time: at(120), At: 2 * time.Minute, Phase: "high", OfferedRPS: 16, Desired: 3, Waiting: 4, InFlight: 20,
			Nodes:        map[string]*nodeSample{"n1": {Ready: 1, Starting: 1, GPUUtil: []float64{90, 0}}, "n2": {Ready: 1, GPUUtil: []float64{80}}},
			ReadyGPUUtil: 85, Decision: &decisionSample{At: 110 * time.Second, From: 1, To: 3, Reason: "p95 TTFT 2.5 s > 2 s target"}},
	}
	results := []loadgen.Result{
		{Sent: at(10), TTFT: 100 * time.Millisecond, E2E: time.Second, Tokens: 128},
		{Sent: at(100), TTFT: 3 * time.Second, E2E: 4 * time.Second, Tokens: 128},
		{Sent: at(114), TTFT: 500 * time.Millisecond, E2E: 1500 * time.Millisecond, Tokens: 128},
		{Sent: at(115), Kind: "http 503"},
	}
	return start, samples, results
}

func TestDemoSummary(t *testing.T) {
	start, samples, results := demoRun()
	decisions := []decisionRecord{
		{Time: start.Add(110 * time.Second), From: 1, To: 3, Acted: true},
		{Time: start.Add(111 * time.Second), From: 3, To: 3},              // a hold
		{Time: start.Add(112 * time.Second), From: 3, To: 2},              // a dry run
		{Time: start.Add(-time.Second), From: 0, To: 1, Acted: true},      // before the workload
		{Time: start.Add(119 * time.Second), From: 3, To: 2, Acted: true}, // down
	}
	rep := summarise(start, samples, results, decisions, 2*time.Second)
	want := demoReport{Seconds: 120, Requests: 4, OK: 3, Failed: 1, Attainment: 0.5,
		TTFTP50: 0.5, TTFTP95: 3, TTFTP99: 3,
		// One replica for the first minute, three for the second.
		GPUMinutes: 4, PeakReplicas: 3, FixedGPUMinutes: 6, ScaleUps: 1, ScaleDowns: 1, SLO: 2}
	rep.Duration = 0
	if rep != want {
		t.Errorf("summary\n got %+v\nwant %+v", rep, want)
	}
	var b strings.Builder
	rep.write(&b, loadgen.Summary{})
	for _, s := range []string{"4 sent through the router: 3 answered in full, 1 failed", "50.0 %", "4.0 autoscaled, against 6.0 for a fixed pool of 3 replicas", "67 %", "1 up, 1 down"} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("summary text lacks %q:\n%s", s, b.String())
		}
	}

	r := rep.simResult(samples, results, start)
	if len(r.Timeline) != 2 {
		t.Fatalf("timeline %+v", r.Timeline)
	}
	p := r.Timeline[1]
	if p.Arrivals != 3 || p.Queue != 4 || p.Ready != 2 || p.Starting != 1 || p.Desired != 3 || p.Change != 2 ||
		p.Reason == "" || p.GPUUtil != 85 || math.Abs(p.TTFTMean-1.75) > 1e-9 {
		t.Errorf("second point %+v", p)
	}
	if q := r.Timeline[0]; q.Arrivals != 1 || q.Change != 0 || math.Abs(q.TTFTMean-0.1) > 1e-9 {
		t.Errorf("first point %+v", q)
	}
}

func TestDemoViewShowsWhatIsGoingOn(t *testing.T) {
	_, samples, results := demoRun()
	v := buildView(samples[1], results, 3*time.Minute, 2*time.Second)
	// The requests whose first token came in the last 10 s: sent at 114 s (0.5 s).
	if v.TTFTCount != 1 || v.TTFTP95 != 500*time.Millisecond || v.Done != 4 || v.Failed != 1 || v.Attained != 0.5 {
		t.Errorf("view %+v", v)
	}
	// Answered in the last 5 s: the one that ended at 115.5 s.
	if v.AnsweredRPS != 0.2 {
		t.Errorf("answered %v req/s, want 0.2", v.AnsweredRPS)
	}
	v.Commands = []string{"grpcurl -plaintext 127.0.0.1:7400 list"}
	var b strings.Builder
	v.render(&b)
	for _, s := range []string{"2:00 / 3:00", "workload: high", "16.0 req/s offered", "router: 4 waiting, 20 in flight",
		"TTFT p95  0.50 s", "desired 3: 2 ready, 1 starting, 0 draining", "n1", "90%", "n2", "80%",
		"at 1:50: 1 -> 3 replicas", "p95 TTFT 2.5 s > 2 s target", "grpcurl -plaintext 127.0.0.1:7400 list"} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("view lacks %q:\n%s", s, b.String())
		}
	}
	b.Reset()
	v.line(&b)
	if l := b.String(); strings.Count(l, "\n") != 1 || !strings.Contains(l, "2:00 high") || !strings.Contains(l, "1->3") {
		t.Errorf("line %q", l)
	}
}
