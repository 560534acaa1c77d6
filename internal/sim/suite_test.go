package sim

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/llmscaler/llmscaler/internal/servermodel"
)

const sharedTraces = "../../../shared/traces"

// TestOracleNeverAboveStatic runs both references on the first 10 minutes of every suite
// workload (the fourteen days excepted): the oracle meets the target and never costs more
// than the static pool.
func TestOracleNeverAboveStatic(t *testing.T) {
	if _, err := os.Stat(sharedTraces); err != nil {
		t.Skipf("shared traces not found at %s: %v", sharedTraces, err)
	}
	ws, err := SuiteWorkloads(sharedTraces)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range ws {
		if w.Long {
			continue
		}
		t.Run(w.Name, func(t *testing.T) {
			t.Parallel()
			wl, err := w.Make(1)
			if err != nil {
				t.Fatal(err)
			}
			wl.Truncate(10 * time.Minute)
			p, err := servermodel.Profile(w.Hardware)
			if err != nil {
				t.Fatal(err)
			}
			cfg := Config{Params: p, Workload: wl, SLOTarget: w.SLOTarget}
			static, oracle, n, err := References(cfg, SuiteAttainment)
			if err != nil && !errors.Is(err, ErrUnreachable) {
				t.Fatal(err)
			}
			if oracle.GPUHours > static.GPUHours+1e-9 {
				t.Errorf("oracle %.3f GPU-h > static %.3f (%d replicas)", oracle.GPUHours, static.GPUHours, n)
			}
			if err == nil && oracle.SLOAttainment < SuiteAttainment {
				t.Errorf("oracle attainment %.4f", oracle.SLOAttainment)
			}
		})
	}
}

// TestRunSuiteJudges runs a small suite and checks the scoreboard: both references, a
// verdict on the slo row that names the bars missed, and the JSON-ready fields filled.
func TestRunSuiteJudges(t *testing.T) {
	w := SuiteWorkload{Name: "seed-10m", Scale: ScaleHour, Hardware: "a100-80gb-llama3-8b", SLOTarget: 2 * time.Second,
		Make: func(seed uint64) (*Workload, error) {
			wl, err := Seed(1, FixedLengths(512, 128), seed)
			if err == nil {
				wl = wl.Slice(5*time.Minute, 15*time.Minute) // the ramp
			}
			return wl, err
		}}
	entries, err := RunSuite(context.Background(), []SuiteWorkload{w}, SuiteOptions{Seeds: []uint64{1, 2}, Policies: []string{PolicySLO, PolicyHPA}})
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		t.Fatalf("%d entries", len(entries))
	}
	for _, e := range entries {
		if e.Result(PolicySLO) == nil || e.Result(PolicyStatic) == nil || e.Result(PolicyOracle) == nil || e.Result(PolicyHPA) == nil {
			t.Fatalf("missing rows: %+v", e.Results)
		}
		if e.StaticReplicas < 1 || e.Requests == 0 || e.Capacity <= 0 {
			t.Errorf("entry %+v", e)
		}
		if e.Verdict != "pass" && !strings.ContainsAny(e.Verdict, "<>") && !strings.Contains(e.Verdict, "cheaper") {
			t.Errorf("verdict %q names no bar", e.Verdict)
		}
		if want := Judge(e); want != e.Verdict {
			t.Errorf("verdict %q, Judge says %q", e.Verdict, want)
		}
	}
	if _, err := RunSuite(context.Background(), []SuiteWorkload{w}, SuiteOptions{Policies: []string{"nope"}}); err == nil {
		t.Error("an unknown policy was accepted")
	}
}

func TestJudge(t *testing.T) {
	rows := func(slo, static, oracle, hpa [2]float64) []*Result {
		return []*Result{
			{Policy: PolicySLO, SLOAttainment: slo[0], GPUHours: slo[1]},
			{Policy: PolicyHPA, SLOAttainment: hpa[0], GPUHours: hpa[1]},
			{Policy: PolicyStatic, SLOAttainment: static[0], GPUHours: static[1]},
			{Policy: PolicyOracle, SLOAttainment: oracle[0], GPUHours: oracle[1]},
		}
	}
	for _, tc := range []struct {
		name, scale string
		r           []*Result
		want        string
		step        int
	}{
		{"hour pass", ScaleHour, rows([2]float64{0.995, 9}, [2]float64{1, 10}, [2]float64{0.99, 8}, [2]float64{1, 20}), "pass", 0},
		{"hour above static", ScaleHour, rows([2]float64{0.995, 11}, [2]float64{1, 10}, [2]float64{0.99, 8}, [2]float64{1, 20}), "11.00 GPU-h > static 10.00", 0},
		{"attainment", ScaleHour, rows([2]float64{0.98, 9}, [2]float64{1, 10}, [2]float64{0.99, 8}, [2]float64{1, 20}), "attainment 98.00 % < 99 %", 0},
		{"baseline cheaper", ScaleHour, rows([2]float64{0.995, 9}, [2]float64{1, 10}, [2]float64{0.99, 8}, [2]float64{0.999, 8.5}), "hpa cheaper", 0},
		{"day 0.8x static", ScaleDay, rows([2]float64{0.995, 85}, [2]float64{1, 100}, [2]float64{0.99, 70}, [2]float64{1, 200}), "85.00 GPU-h > 0.8x static 80.00", 0},
		{"day 1.25x oracle", ScaleDay, rows([2]float64{0.995, 75}, [2]float64{1, 100}, [2]float64{0.99, 50}, [2]float64{1, 200}), "75.00 GPU-h > 1.25x oracle 62.50", 0},
		{"day both bars", ScaleDay, rows([2]float64{0.995, 85}, [2]float64{1, 100}, [2]float64{0.99, 50}, [2]float64{1, 200}), "85.00 GPU-h > 0.8x static 80.00; 85.00 GPU-h > 1.25x oracle 62.50", 0},
		{"attainment after a step", ScaleHour, rows([2]float64{0.90, 9}, [2]float64{1, 10}, [2]float64{0.99, 8}, [2]float64{1, 20}), "(oracle 99.00 %; any policy: at most 97.50 % with fewer than 9 replicas at the step, static 10)", 9},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := &SuiteEntry{Scale: tc.scale, Results: tc.r, StaticReplicas: 10}
			if tc.step > 0 {
				e.StepReplicas, e.StepBelow = tc.step, 0.975
			}
			got := Judge(e)
			if !strings.Contains(got, tc.want) || (tc.want != "pass" && got == "pass") {
				t.Errorf("Judge = %q, want it to contain %q", got, tc.want)
			}
		})
	}
}
