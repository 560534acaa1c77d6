//go:build linux

package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// TestRouterScalesFromZero runs the router issue's path with real processes: a controller, an
// agent with fakeserver profiles, and llmscaler-router. A deployment at min_replicas 0 has no
// server; the first request through the router waits while one starts and then succeeds; a
// streamed answer arrives event by event; after the idle period the deployment is back at
// zero. The fakeserver's cold start is 2 s (the example catalog), far shorter than a real
// engine's minutes: the router's wait is the deployment's cold_start_wait either way.
func TestRouterScalesFromZero(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	addr := fleet(t)
	listen := freePort(t)
	start(t, "router", bin(t, "llmscaler-router"), "--insecure", "--controller", addr, "--listen", listen, "--router-id", "r1",
		"--report-interval", "500ms", "--log-level", "debug")
	base := "http://" + listen
	eventually(t, 20*time.Second, "the router up", func() error {
		resp, err := http.Get(base + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})

	spec := `{"deployment":{"name":"zero","profile":"fake-llm","gpus_per_replica":1,"gpu_memory_mib":1000,"min_replicas":0,"max_replicas":2,
	  "idle_to_zero":"15s","cold_start_wait":"60s",
	  "policy":{"slo":{"target":"2s","scale_down_delay":"5s"},"stable_window":"10s"}}}`
	if _, err := grpcurl(t, "-d", spec, addr, "llmscaler.v1.AdminService/ApplyDeployment"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if ins, err := instances(t, addr, "zero"); err != nil || len(ins) != 0 {
		t.Fatalf("instances %v (%v) before any request, want none at min_replicas 0", ins, err)
	}

	// The models list comes from the routing table.
	eventually(t, 10*time.Second, "zero in /v1/models", func() error {
		resp, err := http.Get(base + "/v1/models")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(b), `"zero"`) {
			return fmt.Errorf("models %s", b)
		}
		return nil
	})

	// The first request waits for a cold start, then succeeds.
	sent := time.Now()
	resp, err := http.Post(base+"/v1/completions", "application/json",
		strings.NewReader(`{"model":"zero","prompt":"hello there","max_tokens":16}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	waited := time.Since(sent)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("first request: %d %s", resp.StatusCode, body)
	}
	var out struct {
		Choices []struct {
			Text string `json:"text"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(body, &out); err != nil || len(out.Choices) != 1 {
		t.Fatalf("first answer %s: %v", body, err)
	}
	t.Logf("router: the first request at zero replicas was answered after %v (a start from zero, 2 s cold start)", waited.Round(time.Millisecond))
	if waited < 2*time.Second {
		t.Errorf("answered after %v, faster than the server's 2 s cold start: it cannot have started from zero", waited)
	}
	found := false
	for _, d := range decisions(t, addr, "zero") {
		found = found || strings.Contains(d.GetReason(), "scale from zero")
	}
	if !found {
		t.Error("no decision says it scaled from zero")
	}

	// A stream arrives event by event, not buffered whole: the fakeserver paces tokens, so
	// the first event reaches the client well before the last.
	resp, err = http.Post(base+"/v1/completions", "application/json",
		strings.NewReader(`{"model":"zero","prompt":"count","max_tokens":32,"stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("stream: %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	var times []time.Time
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if bytes.HasPrefix(sc.Bytes(), []byte("data: ")) {
			times = append(times, time.Now())
		}
	}
	resp.Body.Close()
	if len(times) < 10 {
		t.Fatalf("%d stream events, want one per token", len(times))
	}
	spread := times[len(times)-1].Sub(times[0])
	t.Logf("router: %d stream events over %v", len(times), spread.Round(time.Millisecond))
	if spread < 50*time.Millisecond {
		t.Errorf("all %d events arrived within %v: the stream was buffered", len(times), spread)
	}

	// Errors in OpenAI's shape.
	resp, err = http.Post(base+"/v1/completions", "application/json", strings.NewReader(`{"model":"nope","prompt":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(b), `"error"`) {
		t.Errorf("unknown model: %d %s", resp.StatusCode, b)
	}

	// Idle: back to zero after the idle period and the scale-down delay.
	idleFrom := time.Now()
	eventually(t, 90*time.Second, "back to zero replicas", func() error {
		ins, err := instances(t, addr, "zero")
		if err != nil {
			return err
		}
		if live := len(byPhase(ins, llmscalerv1.InstancePhase_INSTANCE_PHASE_READY)) + len(byPhase(ins, llmscalerv1.InstancePhase_INSTANCE_PHASE_STARTING)); live > 0 {
			return fmt.Errorf("%d live instances", live)
		}
		return nil
	})
	t.Logf("router: back to zero %v after the last request (idle_to_zero 15 s)", time.Since(idleFrom).Round(time.Second))
}

// TestRouterFollowsScaling puts `llmscaler load --router` through the router while the slo
// policy scales up and back down: every new instance gets its first request within one
// report interval (1 s, with 0.5 s for this test's polling) of turning READY, and no request
// fails, the scale-down's drain included (the load goes on at a lower rate while it runs).
func TestRouterFollowsScaling(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	addr := fleet(t)
	listen := freePort(t)
	start(t, "router", bin(t, "llmscaler-router"), "--insecure", "--controller", addr, "--listen", listen, "--router-id", "r1", "--report-interval", "500ms")
	base := "http://" + listen
	spec := `{"deployment":{"name":"auto","profile":"fake-llm","gpus_per_replica":1,"gpu_memory_mib":1000,"min_replicas":1,"max_replicas":4,
	  "policy":{"slo":{"target":"2s","scale_down_delay":"5s"},"stable_window":"10s"}}}`
	if _, err := grpcurl(t, "-d", spec, addr, "llmscaler.v1.AdminService/ApplyDeployment"); err != nil {
		t.Fatal(err)
	}
	waitReady(t, addr, "auto", 1, 30*time.Second)
	eventually(t, 10*time.Second, "auto routable", func() error {
		resp, err := http.Post(base+"/v1/completions", "application/json", strings.NewReader(`{"model":"auto","prompt":"x","max_tokens":2}`))
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})

	out := filepath.Join(t.TempDir(), "load.json")
	loadStart := time.Now()
	load := start(t, "load", bin(t, "llmscaler"), "load", "--router", base, "--deployment", "auto",
		"--schedule", "0s:2,8s:14,30s:2", "--duration", "55s", "--prompt-tokens", "128", "--output-tokens", "64",
		"--progress-interval", "10s", "--json", out)

	// Watch instances turn READY and see when each first serves a request (its own metrics).
	type seen struct {
		ready, served time.Time
		endpoint      string
	}
	inst := map[string]*seen{}
	poll := time.NewTicker(100 * time.Millisecond)
	defer poll.Stop()
	for running := true; running; {
		select {
		case <-load.done:
			running = false
		case <-poll.C:
		}
		ins, err := instances(t, addr, "auto")
		if err != nil {
			continue
		}
		for _, s := range byPhase(ins, llmscalerv1.InstancePhase_INSTANCE_PHASE_READY) {
			e := inst[s.GetInstanceId()]
			if e == nil {
				e = &seen{ready: s.GetReadyAt().AsTime(), endpoint: s.GetEndpoint()}
				inst[s.GetInstanceId()] = e
			}
			if e.served.IsZero() && served(e.endpoint) > 0 {
				e.served = time.Now()
			}
		}
	}
	fresh := 0
	for id, e := range inst {
		if e.ready.Before(loadStart) {
			continue
		}
		fresh++
		if e.served.IsZero() {
			t.Errorf("%s turned READY at %s and never served a request through the router", id, e.ready.Format("15:04:05.000"))
			continue
		}
		lag := e.served.Sub(e.ready)
		t.Logf("router: %s served its first request %v after turning READY", id, lag.Round(10*time.Millisecond))
		if lag > 1500*time.Millisecond {
			t.Errorf("%s got its first request %v after turning READY, want within one report interval", id, lag)
		}
	}
	if fresh == 0 {
		t.Fatal("no instance was started under the load")
	}
	var downDuringLoad bool
	loadEnd := loadStart.Add(55 * time.Second)
	for _, d := range acted(decisions(t, addr, "auto")) {
		at := d.GetTime().AsTime()
		if d.GetToReplicas() < d.GetFromReplicas() && at.After(loadStart) && at.Before(loadEnd) {
			downDuringLoad = true
		}
	}
	if !downDuringLoad {
		t.Error("no scale-down while the load went on: the drain was not exercised")
	}
	sum := readLoadSummary(t, out)
	t.Logf("router: load sent %d, ok %d, errors %v", sum.Sent, sum.OK, sum.Errors)
	if sum.Sent < 200 || sum.OK != sum.Sent {
		t.Errorf("load through the router: %d sent, %d ok, errors %v; want every request answered", sum.Sent, sum.OK, sum.Errors)
	}
}

// loadSummary is the part of `llmscaler load --json` these tests read.
type loadSummary struct {
	Sent   int            `json:"sent"`
	OK     int            `json:"ok"`
	Errors map[string]int `json:"errors_by_kind"`
}

func readLoadSummary(t *testing.T, path string) loadSummary {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var sum loadSummary
	if err := json.Unmarshal(b, &sum); err != nil {
		t.Fatal(err)
	}
	return sum
}

// served is the requests a fakeserver at endpoint finished or is running, from its metrics.
func served(endpoint string) float64 {
	resp, err := http.Get("http://" + endpoint + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	total := 0.0
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "vllm:request_success_total") || strings.HasPrefix(line, "vllm:num_requests_running") {
			f := strings.Fields(line)
			var v float64
			if _, err := fmt.Sscanf(f[len(f)-1], "%g", &v); err == nil {
				total += v
			}
		}
	}
	return total
}

// fakeCatalog is a catalog of one fakeserver profile on cpu-tiny with a 1 s cold start,
// extra fakeserver flags and the agent's metrics dialect for it.
func fakeCatalog(name, dialect string, flags ...string) string {
	args := ""
	for _, f := range flags {
		args += ", " + strconv.Quote(f)
	}
	return fmt.Sprintf(`profiles:
  - name: %s
    command: ["../bin/llmscaler", "fakeserver", "--host", "{host}", "--port", "{port}",
              "--model", "{deployment}", "--hardware", "cpu-tiny", "--cold-start", "1s"%s]
    dialect: %s
    health_path: /health
    metrics_path: /metrics
    gpus: 1
    gpu_memory_mib: 1000
    startup_timeout: 60s
    drain_timeout: 30s
`, name, args, dialect)
}

// stallCatalog's server does not answer /health while it has work, as a real llama.cpp
// server's does while it works through a queue.
var stallCatalog = fakeCatalog("stall-llm", "vllm", "--health-stall-busy", "30s")

// TestSurgeKillsNoBusyServer surges a replica whose health endpoint stalls while it is busy
// (12 req/s of 128 tokens against cpu-tiny's 8 sequences at once: a queue the whole time),
// with the agent checking health every second and taking two silent checks for a hang: the
// server answers no health check for the whole surge, but its metrics show progress, so it
// is never killed and every request is answered.
func TestSurgeKillsNoBusyServer(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	addr := fleetWith(t, stallCatalog, "--health-interval", "1s", "--unhealthy-checks", "2")
	listen := freePort(t)
	start(t, "router", bin(t, "llmscaler-router"), "--insecure", "--controller", addr, "--listen", listen, "--router-id", "r1")
	spec := `{"deployment":{"name":"surge","profile":"stall-llm","gpus_per_replica":1,"gpu_memory_mib":1000,"min_replicas":1,"max_replicas":1}}`
	if _, err := grpcurl(t, "-d", spec, addr, "llmscaler.v1.AdminService/ApplyDeployment"); err != nil {
		t.Fatal(err)
	}
	before := waitReady(t, addr, "surge", 1, 30*time.Second)[0]
	out := filepath.Join(t.TempDir(), "load.json")
	load := start(t, "load", bin(t, "llmscaler"), "load", "--router", "http://"+listen, "--deployment", "surge",
		"--rps", "12", "--duration", "10s", "--prompt-tokens", "64", "--output-tokens", "128", "--json", out)
	busy := false
	for running := true; running; {
		select {
		case <-load.done:
			running = false
		case <-time.After(500 * time.Millisecond):
		}
		ins, err := instances(t, addr, "surge")
		if err != nil {
			continue
		}
		for _, in := range ins {
			s := in.GetStatus()
			if s.GetInstanceId() != before.GetInstanceId() || s.GetRestarts() != 0 || strings.Contains(s.GetMessage(), "hung") {
				t.Fatalf("the busy server was taken for hung: %s phase %v restarts %d: %q", s.GetInstanceId(), s.GetPhase(), s.GetRestarts(), s.GetMessage())
			}
			busy = busy || strings.Contains(s.GetMessage(), "making progress")
		}
	}
	if !busy {
		t.Error("the agent never saw the health check fail while the server worked: the surge did not exercise the check")
	}
	sum := readLoadSummary(t, out)
	t.Logf("router: surge of %d requests on one stalling server: %d ok, errors %v", sum.Sent, sum.OK, sum.Errors)
	if sum.Sent < 60 || sum.OK != sum.Sent {
		t.Errorf("%d sent, %d ok, errors %v: want every request answered", sum.Sent, sum.OK, sum.Errors)
	}
}

// llamaCatalog's server has llama.cpp's /metrics: no latency histogram and no
// finished-request counter, only queue gauges and token counters.
var llamaCatalog = fakeCatalog("llama-llm", "llamacpp", "--metrics", "llamacpp")

// TestScalesOnRouterFigures runs a deployment whose engine exports no latency at all (the
// llama.cpp dialect) under load through the router: the windows the slo policy decides on
// carry TTFT, which only the router measured, and the deployment scales up.
func TestScalesOnRouterFigures(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	addr := fleetWith(t, llamaCatalog)
	listen := freePort(t)
	start(t, "router", bin(t, "llmscaler-router"), "--insecure", "--controller", addr, "--listen", listen, "--router-id", "r1", "--report-interval", "500ms")
	spec := `{"deployment":{"name":"llama","profile":"llama-llm","gpus_per_replica":1,"gpu_memory_mib":1000,"min_replicas":1,"max_replicas":4,
	  "policy":{"slo":{"target":"2s"},"stable_window":"10s"}}}`
	if _, err := grpcurl(t, "-d", spec, addr, "llmscaler.v1.AdminService/ApplyDeployment"); err != nil {
		t.Fatal(err)
	}
	waitReady(t, addr, "llama", 1, 30*time.Second)
	// The engine reports no TTFT of its own.
	if ins, err := instances(t, addr, "llama"); err != nil || len(ins) != 1 || ins[0].GetStatus().GetMetrics().GetTtft().GetCount() != 0 {
		t.Fatalf("instances %v (%v): want one whose engine reports no TTFT", ins, err)
	}
	loadStart := time.Now()
	load := start(t, "load", bin(t, "llmscaler"), "load", "--router", "http://"+listen, "--deployment", "llama",
		"--schedule", "0s:1,5s:12", "--duration", "25s", "--prompt-tokens", "128", "--output-tokens", "64", "--progress-interval", "10s")
	var up *llmscalerv1.Decision
	eventually(t, 30*time.Second, "a scale-up decided on the router's TTFT", func() error {
		for _, d := range acted(decisions(t, addr, "llama")) {
			if d.GetToReplicas() > d.GetFromReplicas() && d.GetTime().AsTime().After(loadStart) {
				up = d
				return nil
			}
		}
		return fmt.Errorf("none yet")
	})
	t.Logf("router: %s; panic window p95 TTFT %.2f s, stable %.2f s (the engine exports none)", up.GetReason(), up.GetPanic().GetTtftP95Seconds(), up.GetStable().GetTtftP95Seconds())
	withTTFT := false
	for _, d := range decisions(t, addr, "llama") {
		withTTFT = withTTFT || d.GetPanic().GetTtftP95Seconds() > 0 || d.GetStable().GetTtftP95Seconds() > 0
	}
	if !withTTFT {
		t.Error("no decision's windows carry a TTFT: the router's figures did not reach the policy")
	}
	<-load.done
}
