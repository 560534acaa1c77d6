package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/go-hclog"

	"github.com/llmscaler/llmscaler/internal/fakeserver"
	"github.com/llmscaler/llmscaler/internal/servermodel"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// fastParams make a fake server answer a short request in milliseconds.
func fastParams() servermodel.Params {
	return servermodel.Params{
		MaxConcurrency: 16, MaxBatchTokens: 512, KVCacheTokens: 8192,
		PrefillBase: time.Millisecond, PrefillPerToken: time.Microsecond,
		DecodeBase: 2 * time.Millisecond, DecodePerSeq: 100 * time.Microsecond,
	}
}

// startFakeserver runs a fake LLM server on 127.0.0.1:0 with a short cold start until the
// test ends, and waits until it is healthy. It returns the server's base URL.
func startFakeserver(t *testing.T, model string, p servermodel.Params) string {
	t.Helper()
	srv, err := fakeserver.New(fakeserver.Config{Model: model, Params: p, ColdStart: 50 * time.Millisecond,
		ShutdownTimeout: 5 * time.Second}, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("fakeserver: %v", err)
		}
	})
	url := "http://" + srv.Addr()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	waitFor(t, "the fake server to be healthy", 10*time.Second, func() bool {
		resp, err := client.Get(url + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return url
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tk := time.NewTicker(5 * time.Millisecond)
	defer tk.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-tk.C
	}
}

// writeTrace writes a Mooncake-format trace of requests at the given offsets.
func writeTrace(t *testing.T, prompt, output int, offsets ...time.Duration) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("timestamp_ms,input_length,output_length,num_hash_blocks\n")
	for _, o := range offsets {
		fmt.Fprintf(&b, "%d,%d,%d,1\n", o.Milliseconds(), prompt, output)
	}
	path := filepath.Join(t.TempDir(), "trace.csv")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// run runs a generator with cfg to its end, within a deadline.
func run(t *testing.T, cfg Config) Summary {
	t.Helper()
	g, err := New(cfg, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sum, err := g.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ctx.Err() != nil {
		t.Fatal("the run did not end by itself")
	}
	return sum
}

// A Poisson run against a real fake server: every request is answered, with plausible
// latencies and exactly the tokens asked for, and progress lines appear.
func TestPoissonRun(t *testing.T) {
	url := startFakeserver(t, "m", fastParams())
	progress := &syncBuffer{}
	var mu sync.Mutex
	var observed []Result
	before := time.Now()
	sum := run(t, Config{
		RPS: 40, Duration: 1500 * time.Millisecond, PromptTokens: 50, OutputTokens: 16, Seed: 7,
		URL: url, Model: "m", ProgressInterval: 300 * time.Millisecond, Progress: progress,
		Observe: func(r Result) {
			mu.Lock()
			observed = append(observed, r)
			mu.Unlock()
		},
	})
	// Observe sees every request the summary counts, as it ended.
	if len(observed) != sum.Sent {
		t.Errorf("observed %d requests, sent %d", len(observed), sum.Sent)
	}
	for _, r := range observed {
		if r.Kind != "" || r.Tokens != 16 || r.TTFT <= 0 || r.E2E < r.TTFT || r.Sent.Before(before) {
			t.Errorf("observed %+v: want a 16-token answer sent after the start", r)
			break
		}
	}

	if sum.Sent < 20 || sum.Sent > 120 {
		t.Errorf("sent %d in 1.5 s at 40/s", sum.Sent)
	}
	if sum.OK != sum.Sent || len(sum.Errors) != 0 || sum.Dropped != 0 || sum.Arrivals != sum.Sent {
		t.Errorf("sent %d, ok %d, errors %v, dropped %d, arrivals %d: want all ok", sum.Sent, sum.OK, sum.Errors, sum.Dropped, sum.Arrivals)
	}
	if sum.TTFT.Count != sum.OK || sum.TTFT.P50 <= 0 || sum.TTFT.P99 > 2*time.Second {
		t.Errorf("ttft %+v: want one per request, above 0 and below 2 s", sum.TTFT)
	}
	// 16 tokens take at least 15 decode steps of 2 ms after the first.
	if sum.E2E.P50 < sum.TTFT.P50+30*time.Millisecond || sum.E2E.Max > 5*time.Second {
		t.Errorf("e2e %+v against ttft %+v", sum.E2E, sum.TTFT)
	}
	if sum.OutputTokens != int64(16*sum.OK) || sum.OutputTokensPerSec <= 0 {
		t.Errorf("output tokens %d (%g/s), want 16 a request", sum.OutputTokens, sum.OutputTokensPerSec)
	}
	if sum.Sending < 1500*time.Millisecond || sum.Elapsed < sum.Sending || sum.TargetRPS != 40 {
		t.Errorf("sending %v, elapsed %v, target %g rps", sum.Sending, sum.Elapsed, sum.TargetRPS)
	}
	if !strings.Contains(progress.String(), "target 40.0 rps") || !strings.Contains(progress.String(), "ttft p50 ") {
		t.Errorf("progress lines:\n%s", progress)
	}

	var text bytes.Buffer
	if err := sum.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"poisson 40 rps", fmt.Sprintf("ok        %d", sum.OK), "ttft      p50 ", "e2e       p50 ", "tokens/s"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, text.String())
		}
	}
	b, err := json.Marshal(sum)
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back["ok"] != float64(sum.OK) || back["ttft"].(map[string]any)["p50_s"] != sum.TTFT.P50.Seconds() {
		t.Errorf("JSON summary %s", b)
	}
}

// A replay sends each request at its scaled time with the trace's lengths.
func TestTraceReplay(t *testing.T) {
	url := startFakeserver(t, "m", fastParams())
	path := writeTrace(t, 30, 5, 0, 200*time.Millisecond, 400*time.Millisecond, 1000*time.Millisecond)
	sum := run(t, Config{TraceFile: path, RateScale: 2, URL: url})
	if sum.OK != 4 || sum.OutputTokens != 20 {
		t.Errorf("ok %d, output tokens %d; errors %v", sum.OK, sum.OutputTokens, sum.Errors)
	}
	// The last request is at 1 s of trace time, 500 ms at scale 2.
	if sum.Sending < 500*time.Millisecond || sum.Sending > 900*time.Millisecond {
		t.Errorf("sending took %v, want about 500 ms", sum.Sending)
	}
	if sum.MaxLag > 200*time.Millisecond {
		t.Errorf("max lag %v", sum.MaxLag)
	}
}

// fixedTargets is a TargetLister whose list the test sets; it counts its calls.
type fixedTargets struct {
	mu      sync.Mutex
	targets []string
	err     error
	calls   atomic.Int32
	after   int32    // from this call on, list later instead
	later   []string // what to list from call after on
}

func (f *fixedTargets) Targets(context.Context) ([]string, error) {
	n := f.calls.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.after > 0 && n >= f.after {
		return f.later, nil
	}
	return f.targets, f.err
}

// Requests go to the server with the fewest outstanding: equal servers share the load, and a
// slow one gets much less than a fast one.
func TestLeastOutstanding(t *testing.T) {
	fast := fastParams()
	slow := fastParams()
	slow.DecodeBase = 100 * time.Millisecond // 8 tokens: 0.8 s
	tests := []struct {
		name  string
		a, b  servermodel.Params
		check func(a, b int) bool
	}{
		{name: "equal", a: fast, b: fast, check: func(a, b int) bool { return a >= (a+b)/3 && b >= (a+b)/3 }},
		{name: "fast and slow", a: fast, b: slow, check: func(a, b int) bool { return a > 2*b }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, b := startFakeserver(t, "m", tc.a), startFakeserver(t, "m", tc.b)
			sum := run(t, Config{RPS: 60, Duration: 1500 * time.Millisecond, OutputTokens: 8, Seed: 3,
				Targets: &fixedTargets{targets: []string{a, b}}, RefreshInterval: 50 * time.Millisecond})
			if sum.OK != sum.Sent || sum.Sent < 30 {
				t.Fatalf("sent %d, ok %d, errors %v", sum.Sent, sum.OK, sum.Errors)
			}
			if na, nb := sum.ByTarget[a], sum.ByTarget[b]; na+nb != sum.Sent || !tc.check(na, nb) {
				t.Errorf("first server got %d, second %d", na, nb)
			}
		})
	}
}

// With no READY instance, requests count as errors at once; when one turns up, they go to it.
func TestNoReadyInstance(t *testing.T) {
	url := startFakeserver(t, "m", fastParams())
	targets := &fixedTargets{after: 3, later: []string{url}}
	// Three arrivals at once with no target, two a second later, after the refreshes found one.
	path := writeTrace(t, 10, 2, 0, 0, 0, time.Second, time.Second)
	sum := run(t, Config{TraceFile: path, Targets: targets, RefreshInterval: 20 * time.Millisecond})
	if diff := cmp.Diff(map[string]int{KindNoTarget: 3}, sum.Errors); diff != "" || sum.OK != 2 || sum.Sent != 5 {
		t.Errorf("ok %d of %d; errors (-want +got):\n%s", sum.OK, sum.Sent, diff)
	}
}

// A failing first listing stops the run before it starts.
func TestTargetsFail(t *testing.T) {
	g, err := New(Config{RPS: 1, Targets: &fixedTargets{err: errors.New("controller down")}}, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "controller down") {
		t.Errorf("Run: %v, want the listing's error", err)
	}
}

// stalledServer accepts requests and never answers them until the test ends.
func stalledServer(t *testing.T) (url string, arrived *atomic.Int32) {
	t.Helper()
	arrived = &atomic.Int32{}
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived.Add(1)
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(func() { close(release); srv.Close() })
	return srv.URL, arrived
}

// Arrivals above MaxInFlight are dropped and counted, not queued; requests still in flight
// when the drain timeout passes are cancelled.
func TestMaxInFlight(t *testing.T) {
	url, arrived := stalledServer(t)
	path := writeTrace(t, 10, 2, make([]time.Duration, 10)...) // ten at once
	sum := run(t, Config{TraceFile: path, URL: url, MaxInFlight: 3, DrainTimeout: 200 * time.Millisecond})
	if sum.Arrivals != 10 || sum.Sent != 3 || sum.Dropped != 7 || sum.OK != 0 {
		t.Errorf("arrivals %d, sent %d, dropped %d, ok %d; want 10, 3, 7, 0", sum.Arrivals, sum.Sent, sum.Dropped, sum.OK)
	}
	if diff := cmp.Diff(map[string]int{KindCancelled: 3}, sum.Errors); diff != "" {
		t.Errorf("errors (-want +got):\n%s", diff)
	}
	if n := arrived.Load(); n > 3 {
		t.Errorf("the server saw %d requests, want at most 3", n)
	}
}

// Failures are counted by kind.
func TestErrorKinds(t *testing.T) {
	stalled, _ := stalledServer(t)
	noDone := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: {\"choices\":[{\"text\":\"x\"}]}\n\n")
	}))
	defer noDone.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	ln.Close()
	fake := startFakeserver(t, "m", fastParams())

	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{name: "wrong model", cfg: Config{URL: fake, Model: "other"}, want: "http 404"},
		{name: "too long for the server", cfg: Config{URL: fake, PromptTokens: 9000}, want: "http 400"},
		{name: "refused", cfg: Config{URL: closed}, want: KindConnect},
		{name: "timeout", cfg: Config{URL: stalled, RequestTimeout: 50 * time.Millisecond}, want: KindTimeout},
		{name: "no [DONE]", cfg: Config{URL: noDone.URL}, want: KindStream},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.TraceFile = writeTrace(t, 10, 2, 0, 10*time.Millisecond)
			sum := run(t, tc.cfg)
			if diff := cmp.Diff(map[string]int{tc.want: 2}, sum.Errors); diff != "" || sum.OK != 0 {
				t.Errorf("ok %d; errors (-want +got):\n%s", sum.OK, diff)
			}
		})
	}
}

// Interrupting a run cancels the requests in flight and still returns the summary.
func TestInterrupt(t *testing.T) {
	url, arrived := stalledServer(t)
	g, err := New(Config{RPS: 50, URL: url}, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	type result struct {
		sum Summary
		err error
	}
	done := make(chan result, 1)
	go func() { s, err := g.Run(ctx); done <- result{s, err} }()
	waitFor(t, "requests to reach the server", 10*time.Second, func() bool { return arrived.Load() >= 3 })
	cancel()
	select {
	case r := <-done:
		if r.err != nil || r.sum.Sent < 3 || r.sum.Errors[KindCancelled] != r.sum.Sent {
			t.Errorf("Run: %v; sent %d, errors %v", r.err, r.sum.Sent, r.sum.Errors)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after the interrupt")
	}
}

// With --controller, the targets are the deployment's READY instances from the admin API, and
// the model is the deployment's name.
func TestControllerTargets(t *testing.T) {
	ready := startFakeserver(t, "chat", fastParams())
	admin := &fakeAdmin{instances: []*llmscalerv1.Instance{
		instance("chat", strings.TrimPrefix(ready, "http://"), llmscalerv1.InstancePhase_INSTANCE_PHASE_READY),
		instance("chat", "127.0.0.1:1", llmscalerv1.InstancePhase_INSTANCE_PHASE_STARTING),
	}}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveAdmin(t, lis, admin)
	sum := run(t, Config{TraceFile: writeTrace(t, 10, 3, 0, 10*time.Millisecond, 20*time.Millisecond),
		Controller: lis.Addr().String(), Deployment: "chat"})
	if sum.OK != 3 || sum.ByTarget[ready] != 3 {
		t.Errorf("ok %d, by target %v, errors %v", sum.OK, sum.ByTarget, sum.Errors)
	}
}

func TestNewErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{name: "no workload", cfg: Config{URL: "http://x:1"}, want: "exactly one workload"},
		{name: "two workloads", cfg: Config{RPS: 1, Schedule: "0s:1", URL: "http://x:1"}, want: "exactly one workload"},
		{name: "no target", cfg: Config{RPS: 1}, want: "exactly one target"},
		{name: "bad url", cfg: Config{RPS: 1, URL: "x:1"}, want: `url "x:1"`},
		{name: "no deployment", cfg: Config{RPS: 1, Controller: "x:1"}, want: "needs a deployment"},
		{name: "bad schedule", cfg: Config{Schedule: "0s:1,5s:1->2", URL: "http://x:1"}, want: "schedule: the last point ramps"},
		{name: "negative rate", cfg: Config{RPS: -1, URL: "http://x:1"}, want: "rate -1"},
		{name: "infinite rate", cfg: Config{RPS: math.Inf(1), URL: "http://x:1"}, want: "rate +Inf"},
		{name: "negative rate scale", cfg: Config{TraceFile: "x.csv", RateScale: -2, URL: "http://x:1"}, want: "rate scale -2"},
		{name: "missing trace", cfg: Config{TraceFile: "testdata/none.csv", URL: "http://x:1"}, want: "no such file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg, hclog.NewNullLogger())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
