package fakeserver

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/llmscaler/llmscaler/internal/servermodel"
)

// fastParams make requests finish in milliseconds.
func fastParams() servermodel.Params {
	return servermodel.Params{
		MaxConcurrency:  4,
		MaxBatchTokens:  512,
		KVCacheTokens:   8192,
		PrefillBase:     time.Millisecond,
		PrefillPerToken: time.Microsecond,
		DecodeBase:      2 * time.Millisecond,
		DecodePerSeq:    100 * time.Microsecond,
	}
}

type testServer struct {
	srv    *Server
	url    string
	client *http.Client
	cancel context.CancelFunc
	runErr chan error
}

// start runs a server on 127.0.0.1:0 until the test ends.
func start(t *testing.T, cfg Config) *testServer {
	t.Helper()
	srv, err := New(cfg, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{
		srv: srv, url: "http://" + srv.Addr(), cancel: cancel, runErr: make(chan error, 1),
		client: &http.Client{Transport: &http.Transport{}, Timeout: 30 * time.Second},
	}
	go func() { ts.runErr <- srv.Run(ctx) }()
	t.Cleanup(func() {
		// Idle client connections first: the server's Shutdown waits on connections that
		// never sent a request.
		ts.client.CloseIdleConnections()
		ts.stop(t)
	})
	return ts
}

// stop ends Run and checks it returned nil; it may be called more than once.
func (ts *testServer) stop(t *testing.T) {
	t.Helper()
	ts.cancel()
	select {
	case err, ok := <-ts.runErr:
		if ok {
			close(ts.runErr)
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		}
	case <-time.After(30 * time.Second):
		t.Error("Run did not return") // not Fatal: stop may run on another goroutine
	}
}

// startHealthy starts a server with no cold start.
func startHealthy(t *testing.T, p servermodel.Params) *testServer {
	t.Helper()
	return start(t, Config{Params: p})
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

func (ts *testServer) get(t *testing.T, path string) (int, []byte) {
	t.Helper()
	resp, err := ts.client.Get(ts.url + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

func (ts *testServer) post(t *testing.T, path, body string) *http.Response {
	t.Helper()
	resp, err := ts.client.Post(ts.url+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func (ts *testServer) metrics(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := ts.get(t, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return mfs
}

// value is the one sample of a gauge or counter, or a histogram's count.
func value(t *testing.T, mfs map[string]*dto.MetricFamily, name string) float64 {
	t.Helper()
	mf := mfs[name]
	if mf == nil || len(mf.GetMetric()) != 1 {
		t.Fatalf("metric %s: want one series, have %v", name, mf)
	}
	m := mf.GetMetric()[0]
	var modelName string
	for _, l := range m.GetLabel() {
		if l.GetName() == "model_name" {
			modelName = l.GetValue()
		}
	}
	if modelName != DefaultModel {
		t.Errorf("metric %s: model_name %q, want %q", name, modelName, DefaultModel)
	}
	switch {
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Histogram != nil:
		return float64(m.GetHistogram().GetSampleCount())
	}
	t.Fatalf("metric %s: unexpected type", name)
	return 0
}

func TestHealthTurnsOKAfterColdStart(t *testing.T) {
	ts := start(t, Config{Params: fastParams(), ColdStart: 150 * time.Millisecond})
	began := time.Now()
	waitFor(t, "healthy", 10*time.Second, func() bool {
		code, _ := ts.get(t, "/health")
		return code == http.StatusOK
	})
	if d := time.Since(began); d < 100*time.Millisecond {
		t.Errorf("healthy after %v, before the 150ms cold start", d)
	}
	code, _ := ts.get(t, "/v1/models")
	if code != http.StatusOK {
		t.Errorf("/v1/models after healthy: %d", code)
	}
}

func TestBeforeHealthy(t *testing.T) {
	ts := start(t, Config{Params: fastParams(), ColdStart: time.Hour})
	if code, _ := ts.get(t, "/health"); code != http.StatusServiceUnavailable {
		t.Errorf("/health: %d, want 503", code)
	}
	if code, _ := ts.get(t, "/v1/models"); code != http.StatusServiceUnavailable {
		t.Errorf("/v1/models: %d, want 503", code)
	}
	for _, path := range []string{"/v1/completions", "/v1/chat/completions"} {
		resp := ts.post(t, path, `{"prompt":"hi","messages":[{"role":"user","content":"hi"}],"max_tokens":2}`)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("%s: %d, want 503", path, resp.StatusCode)
		}
		checkErrorBody(t, body)
	}
	if code, _ := ts.get(t, "/metrics"); code != http.StatusOK {
		t.Errorf("/metrics while starting: %d", code)
	}
}

func checkErrorBody(t *testing.T, body []byte) {
	t.Helper()
	var e struct {
		Error struct {
			Message string `json:"message"`
			Type    string `json:"type"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Error.Message == "" || e.Error.Type == "" {
		t.Errorf("not an OpenAI error body: %s", body)
	}
}

func TestModels(t *testing.T) {
	ts := startHealthy(t, fastParams())
	code, body := ts.get(t, "/v1/models")
	if code != http.StatusOK {
		t.Fatalf("%d: %s", code, body)
	}
	var list struct {
		Object string `json:"object"`
		Data   []struct {
			ID      string `json:"id"`
			OwnedBy string `json:"owned_by"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatal(err)
	}
	if list.Object != "list" || len(list.Data) != 1 || list.Data[0].ID != DefaultModel || !strings.Contains(list.Data[0].OwnedBy, "(simulated)") {
		t.Errorf("models: %s", body)
	}
}

type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

type choice struct {
	Text    string `json:"text"`
	Message *struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	} `json:"message"`
	Delta *struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	} `json:"delta"`
	FinishReason *string `json:"finish_reason"`
}

type completion struct {
	ID                string   `json:"id"`
	Object            string   `json:"object"`
	Model             string   `json:"model"`
	SystemFingerprint string   `json:"system_fingerprint"`
	Choices           []choice `json:"choices"`
	Usage             *usage   `json:"usage"`
}

func TestGeneration(t *testing.T) {
	ts := startHealthy(t, fastParams())
	const prompt = "one two three four five six seven eight" // 8 words, 39 chars: 10 tokens
	for _, tc := range []struct {
		name       string
		path, body string
		stream     bool
		wantPrompt int
		wantTokens int
		wantObject string
	}{
		{"completion", "/v1/completions", `{"model":"fake-llm","prompt":"` + prompt + `","max_tokens":5}`, false, 10, 5, "text_completion"},
		{"completion default length", "/v1/completions", `{"prompt":"` + prompt + `"}`, false, 10, DefaultMaxTokens, "text_completion"},
		{"completion exact prompt", "/v1/completions", `{"prompt":"x","max_tokens":3,"llmscaler":{"prompt_tokens":1024}}`, false, 1024, 3, "text_completion"},
		{"completion token ids", "/v1/completions", `{"prompt":[1,2,3,4,5,6,7],"max_tokens":2}`, false, 7, 2, "text_completion"},
		{"completion stream", "/v1/completions", `{"prompt":"` + prompt + `","max_tokens":7,"stream":true,"stream_options":{"include_usage":true}}`, true, 10, 7, "text_completion"},
		{"chat", "/v1/chat/completions", `{"messages":[{"role":"user","content":"` + prompt + `"}],"max_tokens":4}`, false, 10, 4, "chat.completion"},
		{"chat max_completion_tokens", "/v1/chat/completions", `{"messages":[{"role":"user","content":[{"type":"text","text":"` + prompt + `"}]}],"max_tokens":9,"max_completion_tokens":6}`, false, 10, 6, "chat.completion"},
		{"chat stream", "/v1/chat/completions", `{"messages":[{"role":"user","content":"` + prompt + `"}],"max_tokens":6,"stream":true,"stream_options":{"include_usage":true}}`, true, 10, 6, "chat.completion.chunk"},
		{"chat stream exact prompt", "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"max_tokens":3,"stream":true,"llmscaler":{"prompt_tokens":300}}`, true, 300, 3, "chat.completion.chunk"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := ts.post(t, tc.path, tc.body)
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b, _ := io.ReadAll(resp.Body)
				t.Fatalf("%d: %s", resp.StatusCode, b)
			}
			if !tc.stream {
				var c completion
				if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
					t.Fatal(err)
				}
				checkCommon(t, c, tc.wantObject)
				if c.Usage == nil || *c.Usage != (usage{tc.wantPrompt, tc.wantTokens, tc.wantPrompt + tc.wantTokens}) {
					t.Errorf("usage %+v, want %d prompt and %d completion tokens", c.Usage, tc.wantPrompt, tc.wantTokens)
				}
				text := c.Choices[0].Text
				if c.Choices[0].Message != nil {
					text = c.Choices[0].Message.Content
					if c.Choices[0].Message.Role != "assistant" {
						t.Errorf("role %q", c.Choices[0].Message.Role)
					}
				}
				if n := strings.Count(text, "token"); n != tc.wantTokens {
					t.Errorf("text has %d tokens, want %d: %q", n, tc.wantTokens, text)
				}
				if c.Choices[0].FinishReason == nil || *c.Choices[0].FinishReason != "length" {
					t.Errorf("finish_reason %v", c.Choices[0].FinishReason)
				}
				return
			}

			if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
				t.Errorf("content type %q", ct)
			}
			chunks, done := readSSE(t, resp.Body)
			if !done {
				t.Fatal("stream did not end with data: [DONE]")
			}
			tokens := 0
			var u *usage
			for i, c := range chunks {
				checkCommon(t, c, tc.wantObject)
				if c.Usage != nil {
					if i != len(chunks)-1 || len(c.Choices) != 0 {
						t.Errorf("usage chunk %d of %d with %d choices", i, len(chunks), len(c.Choices))
					}
					u = c.Usage
					continue
				}
				if len(c.Choices) != 1 {
					t.Fatalf("chunk %d has %d choices", i, len(c.Choices))
				}
				ch := c.Choices[0]
				text := ch.Text
				if ch.Delta != nil {
					text = ch.Delta.Content
					if (i == 0) != (ch.Delta.Role == "assistant") {
						t.Errorf("chunk %d role %q", i, ch.Delta.Role)
					}
				}
				if text != tokenText {
					t.Errorf("chunk %d text %q", i, text)
				}
				tokens++
				last := tokens == tc.wantTokens
				if last != (ch.FinishReason != nil && *ch.FinishReason == "length") {
					t.Errorf("chunk %d finish_reason %v", i, ch.FinishReason)
				}
			}
			if tokens != tc.wantTokens {
				t.Errorf("%d token chunks, want %d", tokens, tc.wantTokens)
			}
			wantUsage := strings.Contains(tc.body, "include_usage")
			if wantUsage && (u == nil || *u != (usage{tc.wantPrompt, tc.wantTokens, tc.wantPrompt + tc.wantTokens})) {
				t.Errorf("usage %+v, want %d prompt and %d completion tokens", u, tc.wantPrompt, tc.wantTokens)
			}
			if !wantUsage && u != nil {
				t.Errorf("usage chunk without include_usage")
			}
		})
	}
	// Exact prompt lengths reach the engine: the prompt counter has every request's.
	mfs := ts.metrics(t)
	if got, want := value(t, mfs, "vllm:prompt_tokens_total"), float64(10+10+1024+7+10+10+10+10+300); got != want {
		t.Errorf("vllm:prompt_tokens_total %v, want %v", got, want)
	}
}

func checkCommon(t *testing.T, c completion, object string) {
	t.Helper()
	if c.Object != object || c.Model != DefaultModel || c.SystemFingerprint != Fingerprint || !strings.Contains(c.ID, "fake") {
		t.Errorf("object %q model %q fingerprint %q id %q", c.Object, c.Model, c.SystemFingerprint, c.ID)
	}
}

// readSSE reads "data: ..." events until [DONE] or EOF, checking the framing.
func readSSE(t *testing.T, r io.Reader) ([]completion, bool) {
	t.Helper()
	var chunks []completion
	sc := bufio.NewScanner(r)
	expectBlank := false
	for sc.Scan() {
		line := sc.Text()
		if expectBlank {
			if line != "" {
				t.Fatalf("event not followed by a blank line: %q", line)
			}
			expectBlank = false
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			t.Fatalf("not an SSE data line: %q", line)
		}
		expectBlank = true
		if data == "[DONE]" {
			if sc.Scan() && sc.Text() != "" {
				t.Fatalf("[DONE] not followed by a blank line")
			}
			if sc.Scan() {
				t.Fatalf("data after [DONE]: %q", sc.Text())
			}
			return chunks, true
		}
		var c completion
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			t.Fatalf("chunk %q: %v", data, err)
		}
		chunks = append(chunks, c)
	}
	return chunks, false
}

func TestBadRequests(t *testing.T) {
	p := fastParams()
	ts := start(t, Config{Params: p, MaxBodyBytes: 4096})
	for _, tc := range []struct {
		name, path, body string
		want             int
	}{
		{"bad JSON", "/v1/completions", `{"prompt": "hi",`, http.StatusBadRequest},
		{"not JSON", "/v1/chat/completions", `hello`, http.StatusBadRequest},
		{"wrong type", "/v1/completions", `{"prompt":"hi","max_tokens":"many"}`, http.StatusBadRequest},
		{"no prompt", "/v1/completions", `{"max_tokens":3}`, http.StatusBadRequest},
		{"no messages", "/v1/chat/completions", `{"max_tokens":3}`, http.StatusBadRequest},
		{"zero max_tokens", "/v1/completions", `{"prompt":"hi","max_tokens":0}`, http.StatusBadRequest},
		{"n of 2", "/v1/completions", `{"prompt":"hi","n":2}`, http.StatusBadRequest},
		{"bad exact prompt", "/v1/completions", `{"prompt":"hi","llmscaler":{"prompt_tokens":0}}`, http.StatusBadRequest},
		{"longer than the context", "/v1/completions", fmt.Sprintf(`{"prompt":"hi","max_tokens":%d}`, p.KVCacheTokens), http.StatusBadRequest},
		{"other model", "/v1/completions", `{"model":"gpt-9","prompt":"hi"}`, http.StatusNotFound},
		{"body too large", "/v1/completions", `{"prompt":"` + strings.Repeat("a", 5000) + `"}`, http.StatusRequestEntityTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := ts.post(t, tc.path, tc.body)
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("%d, want %d: %s", resp.StatusCode, tc.want, body)
			}
			checkErrorBody(t, body)
		})
	}
	resp, err := ts.client.Get(ts.url + "/v1/completions")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /v1/completions: %d", resp.StatusCode)
	}
}

// With more requests than MaxConcurrency the waiting gauge really rises while they run, and
// the counters and histograms add up once they finish.
func TestWaitingUnderLoad(t *testing.T) {
	p := fastParams()
	p.MaxConcurrency = 2
	p.DecodeBase = 10 * time.Millisecond
	ts := startHealthy(t, p)

	const requests, maxTokens, promptTokens = 6, 30, 100
	var wg sync.WaitGroup
	errs := make(chan error, requests)
	for range requests {
		wg.Go(func() {
			body := fmt.Sprintf(`{"prompt":"x","max_tokens":%d,"llmscaler":{"prompt_tokens":%d}}`, maxTokens, promptTokens)
			resp, err := ts.client.Post(ts.url+"/v1/completions", "application/json", strings.NewReader(body))
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			var c completion
			if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
				errs <- err
				return
			}
			if resp.StatusCode != http.StatusOK || c.Usage == nil || c.Usage.CompletionTokens != maxTokens {
				errs <- fmt.Errorf("status %d usage %+v", resp.StatusCode, c.Usage)
			}
		})
	}

	waitFor(t, "vllm:num_requests_waiting > 0 with a full batch", 10*time.Second, func() bool {
		mfs := ts.metrics(t)
		return value(t, mfs, "vllm:num_requests_waiting") > 0 &&
			value(t, mfs, "vllm:num_requests_running") == float64(p.MaxConcurrency) &&
			value(t, mfs, "vllm:kv_cache_usage_perc") > 0
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	mfs := ts.metrics(t)
	for _, tc := range []struct {
		name string
		want float64
	}{
		{"vllm:num_requests_waiting", 0},
		{"vllm:num_requests_running", 0},
		{"vllm:kv_cache_usage_perc", 0},
		{"vllm:request_success_total", requests},
		{"vllm:prompt_tokens_total", requests * promptTokens},
		{"vllm:generation_tokens_total", requests * maxTokens},
		{"vllm:time_to_first_token_seconds", requests},
		{"vllm:e2e_request_latency_seconds", requests},
		{"vllm:request_queue_time_seconds", requests},
		{"vllm:time_per_output_token_seconds", requests * (maxTokens - 1)},
	} {
		if got := value(t, mfs, tc.name); got != tc.want {
			t.Errorf("%s = %v, want %v", tc.name, got, tc.want)
		}
	}
	// Four of the six queued behind the first two: the queue histogram saw real waits.
	q := mfs["vllm:request_queue_time_seconds"].GetMetric()[0].GetHistogram()
	if q.GetSampleSum() < 4*float64(maxTokens-1)*p.DecodeTime(2).Seconds() {
		t.Errorf("total queue time %vs, too small for 4 of 6 requests to have waited", q.GetSampleSum())
	}
	for _, b := range mfs["vllm:e2e_request_latency_seconds"].GetMetric()[0].GetHistogram().GetBucket() {
		if b.GetUpperBound() == 0.3 {
			return // vLLM's bucket boundaries are there
		}
	}
	t.Error("e2e histogram lacks vLLM's 0.3s bucket")
}

// On shutdown the server stops accepting but finishes a stream in flight.
func TestShutdownFinishesInFlight(t *testing.T) {
	p := fastParams()
	p.DecodeBase = 10 * time.Millisecond
	ts := startHealthy(t, p)

	resp := ts.post(t, "/v1/completions", `{"prompt":"hi","max_tokens":40,"stream":true}`)
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	for range 2 { // the first token's event and its blank line
		if _, err := br.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		ts.stop(t)
	}()
	chunks, done := readSSE(t, br)
	if !done || len(chunks) != 39 {
		t.Errorf("stream cut short by shutdown: %d more chunks, done %v", len(chunks), done)
	}
	<-stopped
	if _, err := ts.client.Get(ts.url + "/health"); err == nil {
		t.Error("server still accepts connections after Run returned")
	}
}

// Past the shutdown timeout, Run drops requests still in flight and returns.
func TestShutdownTimeout(t *testing.T) {
	p := fastParams()
	p.DecodeBase = time.Second
	ts := start(t, Config{Params: p, ShutdownTimeout: 100 * time.Millisecond})
	resp := ts.post(t, "/v1/completions", `{"prompt":"hi","max_tokens":1000,"stream":true}`)
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	ts.stop(t)
	if d := time.Since(began); d > 10*time.Second {
		t.Errorf("Run took %v to return with a 100ms shutdown timeout", d)
	}
	// The stream was cut: reading it ends, cleanly or not, well short of 1000 tokens.
	chunks, done := readSSEPartial(br)
	if done || chunks >= 1000 {
		t.Errorf("stream ran on after the shutdown timeout: %d chunks, done %v", chunks, done)
	}
}

// With HealthStallBusy, /health does not answer while a request is in flight, as a busy
// llama-server does, while the request and the metrics go on; idle, it answers at once.
func TestHealthStallsWhileBusy(t *testing.T) {
	ts := start(t, Config{Params: fastParams(), HealthStallBusy: time.Hour})
	if code, _ := ts.get(t, "/health"); code != http.StatusOK {
		t.Fatalf("idle /health: %d, want 200 at once", code)
	}

	resp := ts.post(t, "/v1/completions", `{"prompt":"hi","max_tokens":1000,"stream":true}`)
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	for range 2 { // the first token's event and its blank line: it is running
		if _, err := br.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
	}
	impatient := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 300 * time.Millisecond}
	if r, err := impatient.Get(ts.url + "/health"); err == nil {
		r.Body.Close()
		t.Errorf("busy /health answered %s; want no answer within the prober's deadline", r.Status)
	}
	before := value(t, ts.metrics(t), "vllm:generation_tokens_total")
	waitFor(t, "generated tokens to grow while /health stalls", 10*time.Second, func() bool {
		return value(t, ts.metrics(t), "vllm:generation_tokens_total") > before
	})

	chunks, done := readSSE(t, br)
	if !done || len(chunks) != 999 {
		t.Errorf("the request did not finish while /health stalled: %d more chunks, done %v", len(chunks), done)
	}
	waitFor(t, "/health to answer once idle", 10*time.Second, func() bool {
		r, err := impatient.Get(ts.url + "/health")
		if err != nil {
			return false
		}
		r.Body.Close()
		return r.StatusCode == http.StatusOK
	})
}

// A /health stalled by a busy server ends when the server shuts down, rather than holding
// up the shutdown.
func TestStalledHealthEndsAtShutdown(t *testing.T) {
	srv, err := New(Config{Params: fastParams(), HealthStallBusy: time.Hour, ShutdownTimeout: time.Hour}, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	var active atomic.Int64 // connections that have sent a request
	srv.http.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateActive {
			active.Add(1)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- srv.Run(ctx) }()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	url := "http://" + srv.Addr()

	resp, err := client.Post(url+"/v1/completions", "application/json", strings.NewReader(`{"prompt":"hi","max_tokens":1000,"stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	health := make(chan int, 1)
	go func() {
		r, err := client.Get(url + "/health")
		if err != nil {
			health <- 0
			return
		}
		r.Body.Close()
		health <- r.StatusCode
	}()
	// Once its connection is active the shutdown waits for the health request's answer.
	waitFor(t, "the health request to reach the server", 10*time.Second, func() bool { return active.Load() >= 2 })
	cancel() // with an hour's shutdown timeout, a /health held to the end would keep Run
	if chunks, done := readSSEPartial(br); !done || chunks != 999 {
		t.Errorf("the stream in flight did not finish at the shutdown: %d more chunks, done %v", chunks, done)
	}
	select {
	case err := <-runErr:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return: the stalled /health holds up the shutdown")
	}
	if code := <-health; code != http.StatusServiceUnavailable {
		t.Errorf("stalled /health at shutdown: %d, want 503", code)
	}
}

// readSSEPartial counts the data events left in r until it ends.
func readSSEPartial(r io.Reader) (chunks int, done bool) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		switch line := sc.Text(); {
		case line == "data: [DONE]":
			done = true
		case strings.HasPrefix(line, "data: "):
			chunks++
		}
	}
	return chunks, done
}

func TestNewRejects(t *testing.T) {
	bad := fastParams()
	bad.MaxConcurrency = 0
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"bad params", Config{Params: bad}},
		{"bad port", Config{Port: 70000}},
		{"negative cold start", Config{ColdStart: -time.Second}},
		{"negative health stall", Config{HealthStallBusy: -time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if s, err := New(tc.cfg, hclog.NewNullLogger()); err == nil {
				s.ln.Close()
				t.Error("New accepted it")
			}
		})
	}
}

func TestEstimateTokens(t *testing.T) {
	for _, tc := range []struct {
		text string
		want int
	}{
		{"", 1},
		{"hi", 1},
		{"a b c d e", 5},
		{"internationalization", 5},
		{"one two three four five six seven eight", 10},
	} {
		if got := estimateTokens(tc.text); got != tc.want {
			t.Errorf("estimateTokens(%q) = %d, want %d", tc.text, got, tc.want)
		}
	}
}

// TestLlamaCppMetrics: the llamacpp dialect exports llama-server's gauges and token
// counters under its names and nothing of vLLM's, in particular no latency histogram and no
// finished-request counter, while generation works as before.
func TestLlamaCppMetrics(t *testing.T) {
	ts := start(t, Config{Params: fastParams(), Metrics: "llamacpp"})
	waitFor(t, "healthy", 10*time.Second, func() bool { code, _ := ts.get(t, "/health"); return code == http.StatusOK })
	resp := ts.post(t, "/v1/completions", `{"model":"`+DefaultModel+`","prompt":"hi","max_tokens":4}`)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("completion: %d", resp.StatusCode)
	}
	mfs := ts.metrics(t)
	for _, name := range []string{"llamacpp:requests_deferred", "llamacpp:requests_processing", "llamacpp:kv_cache_usage_ratio",
		"llamacpp:prompt_tokens_total", "llamacpp:tokens_predicted_total"} {
		if mfs[name] == nil {
			t.Errorf("%s missing", name)
		}
	}
	if g := mfs["llamacpp:tokens_predicted_total"].GetMetric()[0].GetCounter().GetValue(); g < 4 {
		t.Errorf("tokens predicted %g after a 4-token answer", g)
	}
	for name, mf := range mfs {
		if strings.HasPrefix(name, "vllm:") || mf.GetType() == dto.MetricType_HISTOGRAM || strings.Contains(name, "unexported") {
			t.Errorf("llamacpp dialect exports %s (%v)", name, mf.GetType())
		}
	}
	if _, err := New(Config{Params: fastParams(), Metrics: "tgi"}, hclog.NewNullLogger()); err == nil {
		t.Error("an unknown metrics dialect was accepted")
	}
}
