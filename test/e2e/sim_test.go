package e2e

import (
	"encoding/json"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestSimCommand runs `llmscaler sim` as a user does and checks what it prints and writes.
func TestSimCommand(t *testing.T) {
	dir := t.TempDir()
	policies := []string{"threshold", "slo", "hpa", "clairvoyant", "static", "oracle"}
	cmd := exec.Command(bin(t, "llmscaler"), "sim", "--workload", "seed", "--rate-scale", "0.3", "--duration", "4m",
		"--hardware", "cpu-tiny", "--seed", "3", "--policies", strings.Join(policies, ","), "--out", dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("sim: %v\n%s", err, out)
	}
	text := string(out)
	for _, want := range []string{"workload: seed", "attainable: 100.00 %", "capacity at the SLO", "slo_attain", "clairvoyant: headroom", "policies in", "static: ", "always-warm replicas"} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}

	var summary []map[string]any
	b, err := os.ReadFile(filepath.Join(dir, "summary.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &summary); err != nil {
		t.Fatal(err)
	}
	if len(summary) != len(policies) {
		t.Fatalf("summary has %d results, want %d", len(summary), len(policies))
	}
	for i, r := range summary {
		for _, k := range []string{"policy", "requests", "slo_attainment", "gpu_hours", "ttft_p50_s", "ttft_p95_s", "ttft_p99_s", "scale_events", "peak_replicas"} {
			if _, ok := r[k]; !ok {
				t.Errorf("result %d lacks %q: %v", i, k, r)
			}
		}
		if r["policy"] != policies[i] {
			t.Errorf("result %d is %v, want %s", i, r["policy"], policies[i])
		}
		if a, _ := r["slo_attainment"].(float64); a < 0 || a > 1 {
			t.Errorf("%v: attainment %v outside 0..1", r["policy"], r["slo_attainment"])
		}
		if n, _ := r["requests"].(float64); n < 1000 {
			t.Errorf("%v: %v requests in 4 minutes at 4.5-30 req/s", r["policy"], r["requests"])
		}
	}

	tl, err := os.ReadFile(filepath.Join(dir, "timeline.csv"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(tl)), "\n")
	if lines[0] != "policy,second,arrivals,queue,starting,ready,draining,desired,change,gpu_util,ttft_mean_s,e2e_mean_s,reason" {
		t.Errorf("timeline header %q", lines[0])
	}
	// One row a second for each policy, until its last request finished.
	if len(lines) < len(policies)*240 {
		t.Errorf("timeline has %d rows, want at least %d", len(lines)-1, len(policies)*240)
	}

	for _, name := range append(policies, "attainment_vs_gpu_hours") {
		f, err := os.Open(filepath.Join(dir, name+".png"))
		if err != nil {
			t.Error(err)
			continue
		}
		cfg, err := png.DecodeConfig(f)
		f.Close()
		if err != nil || cfg.Width < 400 || cfg.Height < 300 {
			t.Errorf("%s.png: %v, %dx%d", name, err, cfg.Width, cfg.Height)
		}
	}
}

// TestSimBadTrace checks that a malformed trace fails with its file and line.
func TestSimBadTrace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.csv")
	if err := os.WriteFile(path, []byte("timestamp_ms,input_length,output_length\n0,100,10\n5,abc,10\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin(t, "llmscaler"), "sim", "--trace", path, "--policies", "slo").CombinedOutput()
	if err == nil {
		t.Fatalf("a bad trace was accepted:\n%s", out)
	}
	if !strings.Contains(string(out), "bad.csv:3") {
		t.Errorf("error does not name the file and line 3:\n%s", out)
	}
}

// TestSimSuiteCommand runs `llmscaler sim suite` as a user does on one workload: the
// scoreboard has the policy's row and both references with a verdict, and --json holds it.
func TestSimSuiteCommand(t *testing.T) {
	traces := filepath.Join("..", "..", "..", "shared", "traces")
	if _, err := os.Stat(traces); err != nil {
		t.Skipf("shared traces not found at %s: %v", traces, err)
	}
	js := filepath.Join(t.TempDir(), "suite.json")
	out, err := exec.Command(bin(t, "llmscaler"), "sim", "suite", "--traces", traces, "--workloads", "seed",
		"--policies", "slo,threshold", "--json", js).CombinedOutput()
	if err != nil {
		t.Fatalf("suite: %v\n%s", err, out)
	}
	text := string(out)
	for _, want := range []string{"workload", "x static", "x oracle", "seed", "slo", "static", "oracle", "9 replicas", "slo passes"} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	var entries []map[string]any
	b, err := os.ReadFile(js)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &entries); err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0]["verdict"] == "" || len(entries[0]["results"].([]any)) != 4 {
		t.Fatalf("json: %s", b)
	}
	bad, err := exec.Command(bin(t, "llmscaler"), "sim", "suite", "--traces", traces, "--workloads", "nope").CombinedOutput()
	if err == nil || !strings.Contains(string(bad), `unknown workload "nope"`) {
		t.Errorf("an unknown workload: %v\n%s", err, bad)
	}
}
