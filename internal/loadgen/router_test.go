package loadgen

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/hashicorp/go-hclog"

	"github.com/llmscaler/llmscaler/internal/router"
)

// routedRequest is what a model router saw of one request.
type routedRequest struct {
	Path, Model string
	Stream      bool
}

// modelRouter is an httptest server that stands for an OpenAI-compatible router: it
// records every request and answers it as the test says.
type modelRouter struct {
	URL  string
	mu   sync.Mutex
	seen []routedRequest
}

func (m *modelRouter) requests() []routedRequest {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]routedRequest(nil), m.seen...)
}

// startModelRouter serves answer behind a recorder until the test ends; n counts from 1.
func startModelRouter(t *testing.T, answer func(w http.ResponseWriter, req completionRequest, n int)) *modelRouter {
	t.Helper()
	m := &modelRouter{}
	var count atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req completionRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			openAIError(w, http.StatusBadRequest, "invalid_request_error", "bad body", 0)
			return
		}
		m.mu.Lock()
		m.seen = append(m.seen, routedRequest{Path: r.URL.Path, Model: req.Model, Stream: req.Stream})
		m.mu.Unlock()
		answer(w, req, int(count.Add(1)))
	}))
	t.Cleanup(srv.Close)
	m.URL = srv.URL
	return m
}

// openAIError answers in OpenAI's error shape, as the router does; retryAfter > 0 adds the
// Retry-After header of its 503s.
func openAIError(w http.ResponseWriter, status int, typ, msg string, retryAfter int) {
	w.Header().Set("Content-Type", "application/json")
	if retryAfter > 0 {
		w.Header().Set("Retry-After", fmt.Sprint(retryAfter))
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{
		"message": msg, "type": typ, "param": nil, "code": nil,
	}})
}

// streamCompletion answers like an OpenAI server that serves model: max_tokens tokens as
// SSE, the usage, then [DONE]; another model is a 404.
func streamCompletion(model string) func(http.ResponseWriter, completionRequest, int) {
	return func(w http.ResponseWriter, req completionRequest, _ int) {
		if req.Model != model {
			openAIError(w, http.StatusNotFound, "invalid_request_error", fmt.Sprintf("the model %q does not exist", req.Model), 0)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		for range req.MaxTokens {
			fmt.Fprint(w, "data: {\"choices\":[{\"index\":0,\"text\":\"x\"}]}\n\n")
		}
		fmt.Fprintf(w, "data: {\"choices\":[],\"usage\":{\"completion_tokens\":%d}}\n\n", req.MaxTokens)
		fmt.Fprint(w, "data: [DONE]\n\n")
	}
}

// noInstance answers like a router with no instance free in time.
func noInstance(w http.ResponseWriter, req completionRequest, _ int) {
	openAIError(w, http.StatusServiceUnavailable, "server_error",
		fmt.Sprintf("no instance of deployment %q was free in time; retry later", req.Model), 2)
}

// With --router every request goes to the router's URL, with the deployment's name (or
// --model) as its model, and needs no controller; what the router turns away counts by
// status, not as a connection error.
func TestRouterTarget(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadController := ln.Addr().String()
	ln.Close()

	tests := []struct {
		name       string
		answer     func(http.ResponseWriter, completionRequest, int)
		cfg        Config
		wantModel  string
		wantOK     int
		wantErrors map[string]int
	}{
		{name: "deployment names the model", answer: streamCompletion("chat"),
			cfg: Config{Deployment: "chat"}, wantModel: "chat", wantOK: 3},
		{name: "model overrides the deployment", answer: streamCompletion("chat-8b"),
			cfg: Config{Deployment: "chat", Model: "chat-8b"}, wantModel: "chat-8b", wantOK: 3},
		{name: "model alone", answer: streamCompletion("chat"),
			cfg: Config{Model: "chat"}, wantModel: "chat", wantOK: 3},
		{name: "controller given but not used", answer: streamCompletion("chat"),
			cfg: Config{Deployment: "chat", Controller: deadController}, wantModel: "chat", wantOK: 3},
		{name: "no instance in time", answer: noInstance,
			cfg: Config{Deployment: "chat"}, wantModel: "chat", wantErrors: map[string]int{"http 503": 3}},
		{name: "scale from zero: 503 until an instance is up", answer: func(w http.ResponseWriter, req completionRequest, n int) {
			if n == 1 {
				noInstance(w, req, n)
				return
			}
			streamCompletion("chat")(w, req, n)
		}, cfg: Config{Deployment: "chat"}, wantModel: "chat", wantOK: 2, wantErrors: map[string]int{"http 503": 1}},
		{name: "429 and 502 count by status", answer: func(w http.ResponseWriter, req completionRequest, n int) {
			switch n {
			case 1:
				openAIError(w, http.StatusTooManyRequests, "rate_limit_error", "slow down", 1)
			case 2:
				openAIError(w, http.StatusBadGateway, "server_error", "instance unreachable", 0)
			default:
				streamCompletion("chat")(w, req, n)
			}
		}, cfg: Config{Deployment: "chat"}, wantModel: "chat", wantOK: 1, wantErrors: map[string]int{"http 429": 1, "http 502": 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rt := startModelRouter(t, tc.answer)
			cfg := tc.cfg
			cfg.Router = rt.URL + "/"
			// One at a time, so that "n" is the order of arrival.
			cfg.TraceFile = writeTrace(t, 10, 4, 0, 100*time.Millisecond, 200*time.Millisecond)
			sum := run(t, cfg)

			if sum.OK != tc.wantOK || sum.Sent != 3 || sum.OutputTokens != int64(4*tc.wantOK) {
				t.Errorf("sent %d, ok %d, output tokens %d; want 3, %d, %d", sum.Sent, sum.OK, sum.OutputTokens, tc.wantOK, 4*tc.wantOK)
			}
			if diff := cmp.Diff(tc.wantErrors, sum.Errors, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(map[string]int{rt.URL: 3}, sum.ByTarget); diff != "" {
				t.Errorf("by target (-want +got):\n%s", diff)
			}
			want := []routedRequest{}
			for range 3 {
				want = append(want, routedRequest{Path: "/v1/completions", Model: tc.wantModel, Stream: true})
			}
			if diff := cmp.Diff(want, rt.requests()); diff != "" {
				t.Errorf("requests the router saw (-want +got):\n%s", diff)
			}
		})
	}
}

// A router's 503s show in the text and JSON summaries under their status, and the log
// carries the router's message and its Retry-After.
func TestRouter503Summary(t *testing.T) {
	rt := startModelRouter(t, noInstance)
	logs := &syncBuffer{}
	log := hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Warn})
	g, err := New(Config{Router: rt.URL, Deployment: "chat",
		TraceFile: writeTrace(t, 10, 4, 0, 10*time.Millisecond)}, log)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := g.Target(), fmt.Sprintf("model %q via router %s", "chat", rt.URL); got != want {
		t.Errorf("Target() = %q, want %q", got, want)
	}
	sum, err := g.Run(t.Context())
	if err != nil {
		t.Fatal(err)
	}

	var text bytes.Buffer
	if err := sum.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), "errors    2 (http 503: 2)") {
		t.Errorf("summary lacks the 503s:\n%s", text.String())
	}
	b, err := json.Marshal(sum)
	if err != nil {
		t.Fatal(err)
	}
	var back struct {
		OK     int            `json:"ok"`
		Errors map[string]int `json:"errors_by_kind"`
	}
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]int{"http 503": 2}, back.Errors); diff != "" || back.OK != 0 {
		t.Errorf("JSON ok %d; errors_by_kind (-want +got):\n%s", back.OK, diff)
	}
	for _, want := range []string{`kind="http 503"`, `no instance of deployment \"chat\" was free in time`, "retry after 2"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
}

// Through the real router: a deployment with an instance answers in full, streamed; one
// with none answers 503 once its cold-start wait runs out, and those count as "http 503".
func TestThroughRouter(t *testing.T) {
	fake := startFakeserver(t, "chat", fastParams())
	r, err := router.New(router.Config{RetryAfter: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.SetDeployments([]router.Deployment{
		{Name: "chat", Models: []string{"chat"}, Endpoints: []router.Endpoint{{ID: "i1", URL: fake}}},
		{Name: "idle", Models: []string{"idle"}, ColdStartWait: 50 * time.Millisecond},
	}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(r)
	defer srv.Close()

	tests := []struct {
		deployment string
		wantOK     int
		wantErrors map[string]int
	}{
		{deployment: "chat", wantOK: 3},
		{deployment: "idle", wantErrors: map[string]int{"http 503": 3}},
	}
	for _, tc := range tests {
		t.Run(tc.deployment, func(t *testing.T) {
			sum := run(t, Config{Router: srv.URL, Deployment: tc.deployment,
				TraceFile: writeTrace(t, 10, 5, 0, 10*time.Millisecond, 20*time.Millisecond)})
			if diff := cmp.Diff(tc.wantErrors, sum.Errors, cmpopts.EquateEmpty()); diff != "" || sum.OK != tc.wantOK {
				t.Errorf("ok %d, want %d; errors (-want +got):\n%s", sum.OK, tc.wantOK, diff)
			}
			if sum.OutputTokens != int64(5*tc.wantOK) || sum.TTFT.Count != tc.wantOK {
				t.Errorf("output tokens %d, ttft %+v", sum.OutputTokens, sum.TTFT)
			}
		})
	}
}

func TestRouterConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{name: "no target at all", cfg: Config{RPS: 1, Deployment: "chat"}, want: "--router"},
		{name: "router without a model", cfg: Config{RPS: 1, Router: "http://x:1"}, want: "a router needs a model"},
		{name: "router and url", cfg: Config{RPS: 1, Router: "http://x:1", URL: "http://y:1", Deployment: "chat"}, want: "exactly one target"},
		{name: "router and targets", cfg: Config{RPS: 1, Router: "http://x:1", Targets: staticTargets{"http://y:1"}, Deployment: "chat"}, want: "exactly one target"},
		{name: "bad router url", cfg: Config{RPS: 1, Router: "x:7410", Deployment: "chat"}, want: `router "x:7410": want http://host:port`},
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
