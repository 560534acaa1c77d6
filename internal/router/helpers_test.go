package router

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if role := os.Getenv(streamRoleEnv); role != "" {
		os.Exit(runStreamRole(role))
	}
	goleak.VerifyTestMain(m)
}

// harness is a router behind an httptest server, with a client for it.
type harness struct {
	t      *testing.T
	r      *Router
	front  *httptest.Server
	client *http.Client
}

func newHarness(t *testing.T, cfg Config, ds ...Deployment) *harness {
	t.Helper()
	r, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := r.SetDeployments(ds); err != nil {
		t.Fatalf("SetDeployments: %v", err)
	}
	front := httptest.NewServer(r)
	h := &harness{t: t, r: r, front: front, client: front.Client()}
	t.Cleanup(func() {
		front.Close()
		r.Close()
	})
	return h
}

// answer is a response read whole.
type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a answer) echo(t *testing.T) echoAnswer {
	t.Helper()
	var e echoAnswer
	if err := json.Unmarshal(a.body, &e); err != nil {
		t.Fatalf("status %d, body %q: %v", a.status, a.body, err)
	}
	return e
}

// openAIError is OpenAI's error shape.
type openAIError struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

func (a answer) apiError(t *testing.T) openAIError {
	t.Helper()
	var e openAIError
	dec := json.NewDecoder(bytes.NewReader(a.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		t.Fatalf("status %d: body %q is not an OpenAI error: %v", a.status, a.body, err)
	}
	if e.Error.Message == "" || e.Error.Type == "" {
		t.Fatalf("status %d: error %q lacks message or type", a.status, a.body)
	}
	if ct := a.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("error Content-Type = %q, want application/json", ct)
	}
	return e
}

// do sends a request to the router and reads the answer whole.
func (h *harness) do(ctx context.Context, method, path string, body io.Reader, header http.Header) (answer, error) {
	req, err := http.NewRequestWithContext(ctx, method, h.front.URL+path, body)
	if err != nil {
		return answer{}, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, header: resp.Header, body: b}, err
}

// chat posts a chat completion for model and fails the test on a transport error.
func (h *harness) chat(model string, header http.Header) answer {
	h.t.Helper()
	a, err := h.do(context.Background(), http.MethodPost, "/v1/chat/completions", strings.NewReader(chatBody(model, "hello")), header)
	if err != nil {
		h.t.Fatalf("POST: %v", err)
	}
	return a
}

// goChat posts a chat completion on a goroutine; the answer arrives on the channel.
func (h *harness) goChat(ctx context.Context, model string, header http.Header) <-chan answer {
	ch := make(chan answer, 1)
	go func() {
		a, err := h.do(ctx, http.MethodPost, "/v1/chat/completions", strings.NewReader(chatBody(model, "hello")), header)
		if err != nil {
			a = answer{status: -1, body: []byte(err.Error())}
		}
		ch <- a
	}()
	return ch
}

func chatBody(model, text string) string {
	b, _ := json.Marshal(map[string]any{
		"model":    model,
		"messages": []map[string]string{{"role": "user", "content": text}},
	})
	return string(b)
}

func receive(t *testing.T, ch <-chan answer) answer {
	t.Helper()
	select {
	case a := <-ch:
		return a
	case <-time.After(10 * time.Second):
		t.Fatal("no answer within 10 s")
		return answer{}
	}
}

// waitFor polls cond until it holds, failing the test after a deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// Peeks at the router's state without starting a Stats interval.

func (h *harness) waiting(name string) int {
	d := h.dep(name)
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.queue.Len()
}

func (h *harness) outstanding(name, id string) int {
	d := h.dep(name)
	d.mu.Lock()
	defer d.mu.Unlock()
	in := d.byID[id]
	if in == nil {
		return -1
	}
	return in.outstanding
}

// idle waits until the deployment has no request left. A client has its whole answer a
// moment before the router counts the request finished.
func (h *harness) idle(name string) {
	h.t.Helper()
	d := h.dep(name)
	waitFor(h.t, "deployment "+name+" to be idle", func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.active == 0
	})
}

func (h *harness) dep(name string) *deployment {
	h.r.mu.Lock()
	defer h.r.mu.Unlock()
	d := h.r.all[name]
	if d == nil {
		h.t.Fatalf("no deployment %q", name)
	}
	return d
}

func deploymentStats(t *testing.T, s Snapshot, name string) DeploymentStats {
	t.Helper()
	for _, d := range s.Deployments {
		if d.Name == name {
			return d
		}
	}
	t.Fatalf("snapshot has no deployment %q", name)
	return DeploymentStats{}
}

func instanceStats(t *testing.T, d DeploymentStats, id string) InstanceStats {
	t.Helper()
	for _, in := range d.Instances {
		if in.ID == id {
			return in
		}
	}
	t.Fatalf("deployment %q has no instance %q in the snapshot", d.Name, id)
	return InstanceStats{}
}

func ep(id string, e interface{ url() string }, kv float64) Endpoint {
	return Endpoint{ID: id, URL: e.url(), KVCache: kv}
}

func header(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

// hideLength hides a reader's length so that the request goes chunked.
type hideLength struct{ io.Reader }

func bigPrompt(n int) string {
	var b strings.Builder
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "word%d ", i)
	}
	return b.String()[:n]
}

// counterValue reads a counter.
func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
