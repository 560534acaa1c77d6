package sim

import (
	"testing"
	"time"

	"github.com/llmscaler/llmscaler/internal/servermodel"
	"github.com/llmscaler/llmscaler/internal/trace"
)

// TestStepBound: a load that steps from 15 to 75 req/s at 3 minutes, on the A100 profile
// (80 s cold start). Whatever a policy does after the step, the requests of its first cold
// start meet the replicas held when it came: to reach 99 % a policy must already hold
// nearly the whole static pool, far more than the 15 req/s before the step need.
func TestStepBound(t *testing.T) {
	if testing.Short() {
		t.Skip("simulates a dozen fleets for 10 minutes each")
	}
	p, err := servermodel.Profile("a100-80gb-llama3-8b")
	if err != nil {
		t.Fatal(err)
	}
	step := 3 * time.Minute
	wl, err := FromRates("step", []trace.RatePoint{{RPS: 15}, {Start: step, RPS: 75}, {Start: 10 * time.Minute, RPS: 75}}, 1, FixedLengths(512, 128), 1)
	if err != nil {
		t.Fatal(err)
	}
	wl.Truncate(10 * time.Minute)
	cfg := Config{Params: p, Workload: wl, SLOTarget: 2 * time.Second}

	n, below, ok, err := StepReplicas(cfg, step, SuiteAttainment)
	if err != nil || !ok {
		t.Fatalf("StepReplicas = %d, %v, %v", n, ok, err)
	}
	if below >= SuiteAttainment {
		t.Errorf("with %d held the bound is %.4f, at or above the target the search says it misses", n-1, below)
	}
	at, err := StepBound(cfg, step, n)
	if err != nil || at.SLOAttainment < SuiteAttainment {
		t.Fatalf("with %d held the bound is %v (%v), below the target the search says it meets", n, at, err)
	}
	// Before the step the load needs a few replicas; the bound needs most of the pool that
	// carries the step.
	pre := *wl
	pre.Truncate(step)
	base, _, err := Static(Config{Params: p, Workload: &pre, SLOTarget: 2 * time.Second}, SuiteAttainment)
	if err != nil {
		t.Fatal(err)
	}
	static, _, err := Static(cfg, SuiteAttainment)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("before the step %d replicas; the step needs %d held (%d: %.2f %%); static %d", base, n, n-1, 100*below, static)
	if n <= 2*base || n < static*4/5 || n > static {
		t.Errorf("the step needs %d held, want more than twice the %d before it and 0.8-1x the static %d", n, base, static)
	}

	if _, _, _, err := StepReplicas(Config{Params: p}, step, SuiteAttainment); err == nil {
		t.Error("StepReplicas without a workload: want an error")
	}
	if _, _, _, err := StepReplicas(cfg, step, 1.5); err == nil {
		t.Error("StepReplicas at attainment 1.5: want an error")
	}
	for _, bad := range []struct {
		onset time.Duration
		held  int
	}{{0, 3}, {step, 0}, {step, DefaultMaxReplicas + 1}} {
		if _, err := StepBound(cfg, bad.onset, bad.held); err == nil {
			t.Errorf("StepBound(%s, %d): want an error", bad.onset, bad.held)
		}
	}
}
