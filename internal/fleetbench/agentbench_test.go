package fleetbench

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

func validAgentBenchConfig() AgentBenchConfig {
	return AgentBenchConfig{
		GPUs: 8, Instances: 4, Duration: time.Minute, Interval: time.Second, Load: 2, ReadyTimeout: time.Minute,
		Controller: "c", Agent: "a", Self: "s",
	}
}

func TestAgentBenchConfigNamesTheFlagAtFault(t *testing.T) {
	if err := validAgentBenchConfig().Validate(); err != nil {
		t.Fatalf("the defaults are refused: %v", err)
	}
	for _, tc := range []struct {
		name string
		edit func(*AgentBenchConfig)
		want string
	}{
		{"no GPUs", func(c *AgentBenchConfig) { c.GPUs = 0 }, "--gpus 0"},
		{"more GPUs than the fake backend has", func(c *AgentBenchConfig) { c.GPUs = 65 }, "--gpus 65"},
		{"no instances", func(c *AgentBenchConfig) { c.Instances = 0 }, "--instances 0"},
		{"more instances than GPUs", func(c *AgentBenchConfig) { c.GPUs, c.Instances = 2, 3 }, "--instances 3"},
		{"short window", func(c *AgentBenchConfig) { c.Duration = 10 * time.Millisecond }, "--duration"},
		{"fast interval", func(c *AgentBenchConfig) { c.Interval = time.Millisecond }, "--interval"},
		{"negative load", func(c *AgentBenchConfig) { c.Load = -1 }, "--load -1"},
		{"flood", func(c *AgentBenchConfig) { c.Load = 1e6 }, "--load"},
		{"no ready timeout", func(c *AgentBenchConfig) { c.ReadyTimeout = 0 }, "--ready-timeout"},
		{"no agent binary", func(c *AgentBenchConfig) { c.Agent = "" }, "agent"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validAgentBenchConfig()
			tc.edit(&c)
			if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate = %v, want an error naming %q", err, tc.want)
			}
		})
	}
}

// TestAgentBenchCatalogKeepsAnAwkwardPath checks that a binary path with spaces and quotes
// reaches the agent as one argument, and that the servers are named by the deployment.
func TestAgentBenchCatalogKeepsAnAwkwardPath(t *testing.T) {
	self := `/home/o'neil/my "builds"/llmscaler`
	b, err := AgentBenchCatalog(self)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Profiles []catalogProfile `yaml:"profiles"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("catalog is not YAML: %v\n%s", err, b)
	}
	if len(doc.Profiles) != 1 {
		t.Fatalf("%d profiles, want 1:\n%s", len(doc.Profiles), b)
	}
	p := doc.Profiles[0]
	if p.Name != AgentBenchProfile || p.GPUs != 1 || p.Dialect != "vllm" {
		t.Errorf("profile %+v", p)
	}
	if diff := cmp.Diff([]string{self, "fakeserver"}, p.Command[:2]); diff != "" {
		t.Errorf("command (-want +got):\n%s", diff)
	}
	if i := slices.Index(p.Command, "--model"); i < 0 || p.Command[i+1] != "{deployment}" {
		t.Errorf("the servers are not named by their deployment: %q", p.Command)
	}
}

func TestIsServerOf(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cmdline string
		want    bool
	}{
		{"this run's server", "/bin/llmscaler\x00fakeserver\x00--port\x001\x00--model\x00agentbench-1\x00", true},
		{"another run's server", "/bin/llmscaler\x00fakeserver\x00--model\x00agentbench-2\x00", false},
		{"a prefix is not the name", "/bin/llmscaler\x00fakeserver\x00--model\x00agentbench-10\x00", false},
		{"not a fakeserver", "/bin/llmscaler\x00load\x00--model\x00agentbench-1\x00", false},
		{"--model last", "/bin/llmscaler\x00fakeserver\x00--model\x00", false},
		{"a zombie's empty cmdline", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := IsServerOf([]byte(tc.cmdline), "agentbench-1"); got != tc.want {
				t.Errorf("IsServerOf = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestParseStatPPID(t *testing.T) {
	got, err := ParseStatPPID("4242 (llm scaler) x) S 77 4242 4242 0 -1 4194560 1234 0 5 0 731 269\n")
	if err != nil || got != 77 {
		t.Errorf("ParseStatPPID = %d, %v; want 77", got, err)
	}
	for _, bad := range []string{"", "4242 no parenthesis S 1", "1 (x) S", "1 (x) S one"} {
		if _, err := ParseStatPPID(bad); err == nil {
			t.Errorf("ParseStatPPID(%q) should fail", bad)
		}
	}
}

func TestChildPIDsFindsAChild(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Skip("no sleep to start:", err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	if got := childPIDs(os.Getpid()); !slices.Contains(got, cmd.Process.Pid) {
		t.Errorf("childPIDs = %v, want it to hold %d", got, cmd.Process.Pid)
	}
}

func TestCountInstances(t *testing.T) {
	in := func(id string, p llmscalerv1.InstancePhase, msg string) *llmscalerv1.Instance {
		return &llmscalerv1.Instance{Status: &llmscalerv1.InstanceStatus{InstanceId: id, Phase: p, Message: msg}}
	}
	got := CountInstances([]*llmscalerv1.Instance{
		in("a", llmscalerv1.InstancePhase_INSTANCE_PHASE_READY, ""),
		in("b", llmscalerv1.InstancePhase_INSTANCE_PHASE_READY, ""),
		in("c", llmscalerv1.InstancePhase_INSTANCE_PHASE_STARTING, ""),
		in("d", llmscalerv1.InstancePhase_INSTANCE_PHASE_DRAINING, ""),
		in("e", llmscalerv1.InstancePhase_INSTANCE_PHASE_STOPPED, ""),
		in("f", llmscalerv1.InstancePhase_INSTANCE_PHASE_FAILED, "exit 1: no such file"),
	})
	want := InstanceCounts{Ready: 2, Busy: 2, Failed: 1, FailedMessage: "f: exit 1: no such file"}
	if got != want {
		t.Errorf("CountInstances = %+v, want %+v", got, want)
	}
}

func TestLoadFigures(t *testing.T) {
	if LoadPeriod(0) != 0 || LoadPeriod(-1) != 0 {
		t.Error("no load should have no period")
	}
	if got := LoadPeriod(4); got != 250*time.Millisecond {
		t.Errorf("LoadPeriod(4) = %v, want 250ms", got)
	}
	r := LoadCounts{Sent: 130, OK: 125, Failed: 3, Skipped: 2}.Since(LoadCounts{Sent: 10, OK: 10}, 60)
	want := &LoadResult{Sent: 120, OK: 115, Failed: 3, Skipped: 2, SentPerSecond: 2, OKPerSecond: 115.0 / 60}
	if diff := cmp.Diff(want, r); diff != "" {
		t.Errorf("Since (-want +got):\n%s", diff)
	}
}

// TestLoadGenSendsCompletionsAndStops runs the load generator against a stand-in server: it
// names the model, spreads requests over the endpoints, and leaves no request running.
func TestLoadGenSendsCompletionsAndStops(t *testing.T) {
	got := make(chan string, 1000)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req struct{ Model string }
		if r.Method != http.MethodPost || r.URL.Path != "/v1/completions" || json.Unmarshal(body, &req) != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		got <- req.Model
		w.Write([]byte(`{}`))
	}))
	defer srv.Close()
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down", http.StatusServiceUnavailable) }))
	defer broken.Close()

	l := newLoadGen(200, []string{strings.TrimPrefix(srv.URL, "http://"), strings.TrimPrefix(broken.URL, "http://")}, "agentbench-1")
	ctx, cancel := context.WithCancel(context.Background())
	go l.run(ctx)
	err := waitFor(ctx, 10*time.Second, 5*time.Millisecond, "requests answered and refused", func() (bool, error) {
		c := l.counts()
		return c.OK >= 5 && c.Failed >= 5, nil
	})
	cancel()
	l.wait()
	if err != nil {
		t.Fatal(err)
	}
	c := l.counts()
	if c.Sent != c.OK+c.Failed {
		t.Errorf("counts %+v: every request sent should have ended ok or failed", c)
	}
	if m := <-got; m != "agentbench-1" {
		t.Errorf("model %q, want the deployment", m)
	}
}

func TestAgentBenchWriteText(t *testing.T) {
	r := &AgentBenchResult{
		Params: AgentBenchParams{GPUs: 8, Instances: 4, IntervalS: 1, LoadPerSecond: 2},
		Ready:  ReadyResult{GPUs: 8, Instances: 4, Seconds: 2.5},
		Steady: AgentSteady{
			WindowS: 60, ReportsPerSecond: 1, ReceivedPerSecond: 1, ReadyMin: 4, ReadyEnd: 4,
			Agent:   ProcResult{CPUCores: 0.004, RSSMiB: 24, RSSMaxMiB: 25, PeakRSSMiB: 26},
			Servers: ServersResult{Processes: 4, CPUCores: 0.05, RSSMiB: 150},
			Load:    &LoadResult{SentPerSecond: 2, OKPerSecond: 2},
		},
	}
	var b bytes.Buffer
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"1 agent x 8 fake GPUs, 4 fakeserver instances", "load 2 req/s", "4 READY 2.5 s after the apply",
		"1.00 reports/s sent", "CPU 0.40 % of a core (0.0040 cores)", "peak 26.0", ": met",
		"4 processes: CPU 5.00 % of a core together", "2.00 req/s sent",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
	if r.Failed() != nil {
		t.Error("a result without failures failed")
	}

	// Over either budget, and a run that failed before the window: no steady rows.
	for _, a := range []ProcResult{{CPUCores: 0.011, PeakRSSMiB: 20}, {CPUCores: 0.001, RSSMaxMiB: 51, PeakRSSMiB: 49}} {
		if (AgentSteady{Agent: a}).WithinTarget() {
			t.Errorf("%+v is within the target", a)
		}
	}
	failed := &AgentBenchResult{Params: AgentBenchParams{GPUs: 8, Instances: 4}, Outcome: Outcome{Failures: []string{"ready: an instance FAILED"}}}
	b.Reset()
	if err := failed.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	if out := b.String(); strings.Contains(out, "agent  ") || strings.Contains(out, "target") || !strings.Contains(out, "FAILED: ready") {
		t.Errorf("a failed run's table:\n%s", out)
	}
	if failed.Failed() == nil {
		t.Error("a result with failures did not fail")
	}
}

func TestAgentBenchResultJSONNamesAreSnakeCase(t *testing.T) {
	b, err := json.Marshal(&AgentBenchResult{Steady: AgentSteady{ReportsPerSecond: 1}})
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"reports_per_second":1`, `"ready_min":0`, `"cpu_cores"`, `"peak_rss_mib"`, `"load":null`, `"load_per_second"`} {
		if !bytes.Contains(b, []byte(key)) {
			t.Errorf("JSON lacks %s: %s", key, b)
		}
	}
}
