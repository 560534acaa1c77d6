package router

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestModelRouting(t *testing.T) {
	a, b := newEchoEngine(t, "a"), newEchoEngine(t, "b")
	h := newHarness(t, Config{},
		Deployment{Name: "dep-a", Models: []string{"a1", "a2"}, Endpoints: []Endpoint{ep("a-0", a, 0)}},
		Deployment{Name: "dep-b", Models: []string{"b1"}, Endpoints: []Endpoint{ep("b-0", b, 0)}},
	)
	cases := []struct {
		name, path, body, engine, model string
	}{
		{"chat a1", "/v1/chat/completions", chatBody("a1", "hi"), "a", "a1"},
		{"chat a2", "/v1/chat/completions", chatBody("a2", "hi"), "a", "a2"},
		{"completions b1", "/v1/completions", `{"model":"b1","prompt":"hi"}`, "b", "b1"},
		{"model after other keys", "/v1/completions", `{"prompt":"hi","max_tokens":3,"stop":["}"],"model":"b1"}`, "b", "b1"},
		{"escaped model name", "/v1/completions", `{"model":"a\u0031","prompt":"x"}`, "a", "a1"},
		{"whitespace", "/v1/completions", " \n{ \"model\" : \"a2\" ,\"prompt\":\"x\"}\n", "a", "a2"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ans, err := h.do(context.Background(), http.MethodPost, tc.path, strings.NewReader(tc.body), nil)
			if err != nil {
				t.Fatal(err)
			}
			if ans.status != http.StatusOK {
				t.Fatalf("status %d: %s", ans.status, ans.body)
			}
			e := ans.echo(t)
			if e.Engine != tc.engine || e.Model != tc.model || e.Path != tc.path {
				t.Errorf("reached engine %q model %q path %q; want %q %q %q", e.Engine, e.Model, e.Path, tc.engine, tc.model, tc.path)
			}
			if e.BodyLen != len(tc.body) {
				t.Errorf("engine got %d body bytes, want %d", e.BodyLen, len(tc.body))
			}
		})
	}

	t.Run("models list", func(t *testing.T) {
		ans, err := h.do(context.Background(), http.MethodGet, "/v1/models", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		var list struct {
			Object string `json:"object"`
			Data   []struct {
				ID      string `json:"id"`
				Object  string `json:"object"`
				OwnedBy string `json:"owned_by"`
			} `json:"data"`
		}
		if err := json.Unmarshal(ans.body, &list); err != nil || ans.status != http.StatusOK {
			t.Fatalf("status %d body %s: %v", ans.status, ans.body, err)
		}
		var got []string
		for _, m := range list.Data {
			if m.Object != "model" {
				t.Errorf("model %q has object %q", m.ID, m.Object)
			}
			got = append(got, m.ID+"@"+m.OwnedBy)
		}
		want := []string{"a1@dep-a", "a2@dep-a", "b1@dep-b"}
		if list.Object != "list" || !slices.Equal(got, want) {
			t.Errorf("list %q of %v, want list of %v", list.Object, got, want)
		}
	})
}

func TestRequestErrors(t *testing.T) {
	e := newEchoEngine(t, "e")
	h := newHarness(t, Config{MaxBodyBytes: 4096, ReplayBytes: 1024},
		Deployment{Name: "d", Models: []string{"m"}, Endpoints: []Endpoint{ep("e-0", e, 0)}})
	big := `{"model":"m","prompt":"` + bigPrompt(5000) + `"}`
	cases := []struct {
		name, method, path string
		body               io.Reader
		status             int
		typ, code, param   string
	}{
		{"unknown model", "POST", "/v1/chat/completions", strings.NewReader(chatBody("nope", "x")), 404, "invalid_request_error", "model_not_found", "model"},
		{"broken JSON", "POST", "/v1/chat/completions", strings.NewReader(`{"model":"m","messages":[`), 400, "invalid_request_error", "invalid_json", ""},
		{"broken after model", "POST", "/v1/completions", strings.NewReader(`{"model":"m","prompt":"x",}`), 400, "invalid_request_error", "invalid_json", ""},
		{"not an object", "POST", "/v1/completions", strings.NewReader(`["model","m"]`), 400, "invalid_request_error", "invalid_json", ""},
		{"empty body", "POST", "/v1/completions", nil, 400, "invalid_request_error", "invalid_json", ""},
		{"missing model", "POST", "/v1/completions", strings.NewReader(`{"prompt":"x"}`), 400, "invalid_request_error", "", "model"},
		{"model not a string", "POST", "/v1/completions", strings.NewReader(`{"model":5,"prompt":"x"}`), 400, "invalid_request_error", "", "model"},
		{"too large by Content-Length", "POST", "/v1/completions", strings.NewReader(big), 413, "invalid_request_error", "request_too_large", ""},
		{"too large, chunked", "POST", "/v1/completions", hideLength{strings.NewReader(big)}, 413, "invalid_request_error", "request_too_large", ""},
		{"too large, model last", "POST", "/v1/completions", hideLength{strings.NewReader(`{"prompt":"` + bigPrompt(5000) + `","model":"m"}`)}, 413, "invalid_request_error", "request_too_large", ""},
		{"wrong method", "GET", "/v1/chat/completions", nil, 405, "invalid_request_error", "method_not_allowed", ""},
		{"unknown path", "POST", "/v1/embeddings", strings.NewReader(chatBody("m", "x")), 404, "invalid_request_error", "unknown_url", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ans, err := h.do(context.Background(), tc.method, tc.path, tc.body, nil)
			if err != nil {
				t.Fatal(err)
			}
			if ans.status != tc.status {
				t.Fatalf("status %d, want %d: %s", ans.status, tc.status, ans.body)
			}
			got := ans.apiError(t).Error
			str := func(p *string) string {
				if p == nil {
					return ""
				}
				return *p
			}
			if got.Type != tc.typ || str(got.Code) != tc.code || str(got.Param) != tc.param {
				t.Errorf("error type %q code %q param %q, want %q %q %q (%s)", got.Type, str(got.Code), str(got.Param), tc.typ, tc.code, tc.param, got.Message)
			}
		})
	}
	if n := e.hits.Load(); n != 0 {
		t.Errorf("the engine got %d requests; none was valid", n)
	}
}

func TestStreamArrivesIncrementally(t *testing.T) {
	const tokens = 5
	step := make(chan struct{})
	e := newSSEEngine(t, "sse", tokens, step)
	h := newHarness(t, Config{}, Deployment{Name: "d", Models: []string{"m"}, Endpoints: []Endpoint{ep("e-0", e, 0)}})

	// A router that held events back would leave the engine waiting for a step that never
	// comes; the deadline turns that into a failure.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, h.front.URL+"/v1/chat/completions",
		strings.NewReader(`{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	rd := bufio.NewReader(resp.Body)
	var events []string
	for len(events) < tokens+1 {
		line, err := rd.ReadString('\n')
		if err != nil {
			t.Fatalf("after %d events: %v", len(events), err)
		}
		if !strings.HasPrefix(line, "data: ") {
			continue
		}
		events = append(events, strings.TrimSpace(line))
		if len(events) < tokens {
			// The engine sends the next token only now: the client must have seen this one
			// while the engine still held the rest.
			if n := int64(len(events)); e.inFlight.Load() != 1 {
				t.Fatalf("event %d arrived after the engine finished", n)
			}
			step <- struct{}{}
		}
	}
	if !strings.Contains(events[0], "tok0") || events[tokens] != "data: [DONE]" {
		t.Errorf("events %q", events)
	}
	if _, err := io.ReadAll(rd); err != nil {
		t.Fatal(err)
	}
	h.idle("d")
	d := deploymentStats(t, h.r.Stats(time.Now()), "d")
	if d.Total.CompletionTokens != tokens || d.Interval.TTFT.Count != 1 || d.Interval.E2E.Count != 1 {
		t.Errorf("tokens %d ttft count %d e2e count %d, want %d 1 1", d.Total.CompletionTokens, d.Interval.TTFT.Count, d.Interval.E2E.Count, tokens)
	}
	if d.Interval.TTFT.P50 > d.Interval.E2E.P50 {
		t.Errorf("TTFT %s after E2E %s", d.Interval.TTFT.P50, d.Interval.E2E.P50)
	}
}

func TestLargePromptForwardedIntact(t *testing.T) {
	e := newEchoEngine(t, "e")
	h := newHarness(t, Config{}, Deployment{Name: "d", Models: []string{"m"}, Endpoints: []Endpoint{ep("e-0", e, 0)}})
	prompt := bigPrompt(200 << 10)
	messages := `[{"role":"system","content":"be brief"},{"role":"user","content":"` + prompt + `"}]`
	cases := []struct {
		name    string
		body    string
		chunked bool
		// whole: the router read it all to find the model, so it knows the length.
		whole bool
	}{
		{"model first", `{"model":"m","messages":` + messages + `}`, false, false},
		{"model last, as openai-python orders it", `{"messages":` + messages + `,"model":"m"}`, false, true},
		{"model first, chunked", `{"model":"m","messages":` + messages + `}`, true, false},
		{"model last, chunked", `{"messages":` + messages + `,"model":"m","max_tokens":5}`, true, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader = strings.NewReader(tc.body)
			if tc.chunked {
				body = hideLength{body}
			}
			ans, err := h.do(context.Background(), http.MethodPost, "/v1/chat/completions", body, nil)
			if err != nil {
				t.Fatal(err)
			}
			if ans.status != http.StatusOK {
				t.Fatalf("status %d: %.200s", ans.status, ans.body)
			}
			got := ans.echo(t)
			sum := sha256.Sum256([]byte(tc.body))
			if got.BodyLen != len(tc.body) || got.BodySHA256 != hex.EncodeToString(sum[:]) {
				t.Errorf("engine got %d bytes %s, want %d %x", got.BodyLen, got.BodySHA256, len(tc.body), sum)
			}
			wantLen := int64(len(tc.body))
			if tc.chunked && !tc.whole {
				wantLen = -1
			}
			if got.ContentLength != wantLen {
				t.Errorf("engine saw Content-Length %d, want %d", got.ContentLength, wantLen)
			}
		})
	}
}

func TestBodyLimitWhileStreaming(t *testing.T) {
	// The limit is met after the router found the model and began streaming the body.
	e := newEchoEngine(t, "e")
	h := newHarness(t, Config{MaxBodyBytes: 100 << 10, ReplayBytes: 1 << 10},
		Deployment{Name: "d", Models: []string{"m"}, Endpoints: []Endpoint{ep("e-0", e, 0), ep("e-1", newEchoEngine(t, "f"), 0)}})
	body := `{"model":"m","prompt":"` + bigPrompt(200<<10) + `"}`
	a, err := h.do(context.Background(), http.MethodPost, "/v1/completions", hideLength{strings.NewReader(body)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if a.status != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d: %.300s", a.status, a.body)
	}
	if e := a.apiError(t); *e.Error.Code != "request_too_large" {
		t.Errorf("code %q", *e.Error.Code)
	}
	h.idle("d")
	s := deploymentStats(t, h.r.Stats(time.Now()), "d")
	for _, in := range s.Instances {
		if in.Ejected || in.Total.Errors != 0 {
			t.Errorf("instance %s blamed for the client's body: %+v", in.ID, in)
		}
	}
	if s.Total.Retries != 0 || s.Total.Errors != 0 {
		t.Errorf("deployment %+v", s.Total)
	}
}

func TestSniffHoldsOneCopy(t *testing.T) {
	prompt := bigPrompt(200 << 10)
	t.Run("model first: only a prefix is held", func(t *testing.T) {
		body := `{"model":"m","prompt":"` + prompt + `"}`
		src := strings.NewReader(body)
		sn, apiErr := sniff(src, int64(len(body)), 0, DefaultReplayBytes)
		if apiErr != nil {
			t.Fatal(apiErr)
		}
		if sn.model != "m" || sn.complete || len(sn.held) >= len(body)/2 {
			t.Fatalf("model %q complete %v held %d of %d bytes", sn.model, sn.complete, len(sn.held), len(body))
		}
		rest, _ := io.ReadAll(src)
		if string(sn.held)+string(rest) != body {
			t.Error("held prefix and the rest of the stream do not make the body")
		}
	})
	t.Run("model last: one buffer sized by Content-Length", func(t *testing.T) {
		body := `{"prompt":"` + prompt + `","model":"m"}`
		sn, apiErr := sniff(strings.NewReader(body), int64(len(body)), 0, DefaultReplayBytes)
		if apiErr != nil {
			t.Fatal(apiErr)
		}
		if sn.model != "m" || !sn.complete || string(sn.held) != body {
			t.Fatalf("model %q complete %v held %d of %d bytes", sn.model, sn.complete, len(sn.held), len(body))
		}
		if cap(sn.held) != len(body) {
			t.Errorf("buffer capacity %d for a %d-byte body: it was grown and copied", cap(sn.held), len(body))
		}
	})
	t.Run("prompt prefix for affinity", func(t *testing.T) {
		body := `{"model":"m","max_tokens":4,"prompt":"` + prompt + `"}`
		sn, apiErr := sniff(strings.NewReader(body), -1, 64, 0)
		if apiErr != nil {
			t.Fatal(apiErr)
		}
		at := strings.Index(body, `"word0`)
		if sn.promptAt != at || len(sn.held) < at+64 {
			t.Errorf("prompt at %d with %d bytes held, want %d and at least %d", sn.promptAt, len(sn.held), at, at+64)
		}
	})
}

func TestLeastOutstandingSpreadsLoad(t *testing.T) {
	t.Run("concurrent requests spread evenly", func(t *testing.T) {
		engines := []*slowEngine{newSlowEngine(t, "0"), newSlowEngine(t, "1"), newSlowEngine(t, "2")}
		var eps []Endpoint
		for i, e := range engines {
			eps = append(eps, ep("i-"+e.name, e, float64(i)/10))
		}
		h := newHarness(t, Config{}, Deployment{Name: "d", Models: []string{"m"}, Endpoints: eps})
		var answers []<-chan answer
		for range 9 {
			answers = append(answers, h.goChat(context.Background(), "m", nil))
		}
		waitFor(t, "9 requests at the engines", func() bool {
			return engines[0].inFlight.Load()+engines[1].inFlight.Load()+engines[2].inFlight.Load() == 9
		})
		for _, e := range engines {
			if n := e.inFlight.Load(); n != 3 {
				t.Errorf("engine %s holds %d requests, want 3", e.name, n)
			}
		}
		for _, e := range engines {
			e.finish()
		}
		for _, ch := range answers {
			if a := receive(t, ch); a.status != http.StatusOK {
				t.Errorf("status %d: %s", a.status, a.body)
			}
		}
	})
	t.Run("ties go to the lower KV-cache use", func(t *testing.T) {
		full, empty := newEchoEngine(t, "full"), newEchoEngine(t, "empty")
		h := newHarness(t, Config{}, Deployment{Name: "d", Models: []string{"m"},
			Endpoints: []Endpoint{ep("full", full, 0.9), ep("empty", empty, 0.1)}})
		for range 5 {
			if a := h.chat("m", nil); a.echo(t).Engine != "empty" {
				t.Errorf("served by %q, want empty", a.echo(t).Engine)
			}
			h.idle("d")
		}
		if full.hits.Load() != 0 {
			t.Errorf("the fuller instance got %d requests", full.hits.Load())
		}
	})
}

func TestMaxInFlightWaitsInRouter(t *testing.T) {
	e := newSlowEngine(t, "e")
	h := newHarness(t, Config{}, Deployment{Name: "d", Models: []string{"m"},
		Endpoints: []Endpoint{{ID: "e-0", URL: e.url(), MaxInFlight: 2}}})
	var answers []<-chan answer
	for range 6 {
		answers = append(answers, h.goChat(context.Background(), "m", nil))
	}
	waitFor(t, "2 at the engine and 4 queued", func() bool { return e.inFlight.Load() == 2 && h.waiting("d") == 4 })
	d := deploymentStats(t, h.r.Stats(time.Now()), "d")
	if d.Waiting != 4 || d.InFlight != 2 || instanceStats(t, d, "e-0").InFlight != 2 {
		t.Errorf("stats: waiting %d in flight %d, want 4 2", d.Waiting, d.InFlight)
	}
	if w, f := h.r.Queued("d"); w != 4 || f != 2 {
		t.Errorf("Queued: waiting %d in flight %d, want 4 2", w, f)
	}
	if w, f := h.r.Queued("nope"); w != 0 || f != 0 {
		t.Errorf("Queued of an unknown deployment: %d %d", w, f)
	}
	e.finish()
	for _, ch := range answers {
		if a := receive(t, ch); a.status != http.StatusOK {
			t.Errorf("status %d: %s", a.status, a.body)
		}
	}
	if m := e.maxInFlight.Load(); m != 2 {
		t.Errorf("the engine held %d requests at once, want the cap 2", m)
	}
	h.idle("d")
	d = deploymentStats(t, h.r.Stats(time.Now()), "d")
	if d.Total.Arrivals != 6 || d.Total.Finished != 6 || d.Waiting != 0 || d.InFlight != 0 {
		t.Errorf("totals %+v waiting %d in flight %d", d.Total, d.Waiting, d.InFlight)
	}
}

func TestScaleFromZero(t *testing.T) {
	t.Run("waits, then an endpoint is added", func(t *testing.T) {
		demand := make(chan string, 10)
		e := newEchoEngine(t, "e")
		h := newHarness(t, Config{OnDemand: func(d string) { demand <- d }},
			Deployment{Name: "d", Models: []string{"m"}, ColdStartWait: time.Minute})
		ch := h.goChat(context.Background(), "m", nil)
		waitFor(t, "the request to queue", func() bool { return h.waiting("d") == 1 })
		select {
		case got := <-demand:
			if got != "d" {
				t.Errorf("OnDemand(%q), want d", got)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("OnDemand not called")
		}
		d := deploymentStats(t, h.r.Stats(time.Now()), "d")
		if !d.NeedsInstance() || d.Endpoints != 0 || d.Waiting != 1 {
			t.Errorf("stats: endpoints %d waiting %d; NeedsInstance %v", d.Endpoints, d.Waiting, d.NeedsInstance())
		}
		if err := h.r.SetDeployments([]Deployment{{Name: "d", Models: []string{"m"}, Endpoints: []Endpoint{ep("e-0", e, 0)}}}); err != nil {
			t.Fatal(err)
		}
		if a := receive(t, ch); a.status != http.StatusOK || a.echo(t).Engine != "e" {
			t.Fatalf("status %d: %s", a.status, a.body)
		}
		h.idle("d")
		d = deploymentStats(t, h.r.Stats(time.Now()), "d")
		if d.NeedsInstance() || d.Total.Finished != 1 || d.Interval.E2E.Count != 1 {
			t.Errorf("after the cold start: NeedsInstance %v, totals %+v", d.NeedsInstance(), d.Total)
		}
	})
	t.Run("wait runs out: 503 with Retry-After", func(t *testing.T) {
		h := newHarness(t, Config{RetryAfter: 1500 * time.Millisecond},
			Deployment{Name: "d", Models: []string{"m"}, ColdStartWait: 20 * time.Millisecond})
		a := h.chat("m", nil)
		if a.status != http.StatusServiceUnavailable || a.header.Get("Retry-After") != "2" {
			t.Fatalf("status %d Retry-After %q", a.status, a.header.Get("Retry-After"))
		}
		if e := a.apiError(t); e.Error.Type != "server_error" || *e.Error.Code != "no_instance" {
			t.Errorf("error %+v", e.Error)
		}
		h.idle("d")
		d := deploymentStats(t, h.r.Stats(time.Now()), "d")
		if d.Total.Rejected != 1 || d.Total.Finished != 1 || !d.NeedsInstance() {
			t.Errorf("totals %+v; NeedsInstance %v", d.Total, d.NeedsInstance())
		}
	})
	t.Run("queue full: 503 at once; a client that leaves frees its place", func(t *testing.T) {
		h := newHarness(t, Config{}, Deployment{Name: "d", Models: []string{"m"}, ColdStartWait: time.Minute, MaxQueue: 1})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		first := h.goChat(ctx, "m", nil)
		waitFor(t, "the first request to queue", func() bool { return h.waiting("d") == 1 })
		a := h.chat("m", nil)
		if a.status != http.StatusServiceUnavailable || a.header.Get("Retry-After") != "5" {
			t.Fatalf("status %d Retry-After %q", a.status, a.header.Get("Retry-After"))
		}
		if e := a.apiError(t); *e.Error.Code != "queue_full" {
			t.Errorf("code %q", *e.Error.Code)
		}
		cancel()
		if a := receive(t, first); a.status != -1 {
			t.Errorf("cancelled request got status %d", a.status)
		}
		waitFor(t, "the cancelled request to leave the queue", func() bool { return h.waiting("d") == 0 })
		waitFor(t, "it to be counted", func() bool {
			d := h.dep("d")
			d.mu.Lock()
			defer d.mu.Unlock()
			return d.total.Finished == 2
		})
		d := deploymentStats(t, h.r.Stats(time.Now()), "d")
		if d.Total.Cancelled != 1 || d.Total.Rejected != 1 || d.Waiting != 0 || d.InFlight != 0 {
			t.Errorf("totals %+v waiting %d in flight %d", d.Total, d.Waiting, d.InFlight)
		}
	})
	t.Run("deployment removed while waiting: 404", func(t *testing.T) {
		h := newHarness(t, Config{}, Deployment{Name: "d", Models: []string{"m"}})
		ch := h.goChat(context.Background(), "m", nil)
		waitFor(t, "the request to queue", func() bool { return h.waiting("d") == 1 })
		if err := h.r.SetDeployments(nil); err != nil {
			t.Fatal(err)
		}
		if a := receive(t, ch); a.status != http.StatusNotFound {
			t.Errorf("status %d: %s", a.status, a.body)
		}
	})
}

func TestRetry(t *testing.T) {
	large := `{"model":"m","prompt":"` + bigPrompt(200<<10) + `"}`
	small := chatBody("m", "hello")
	cases := []struct {
		name string
		bad  func(t *testing.T) (url string, hits func() int64)
		body string
		// want is the status the client gets; good is whether the good instance served it.
		want int
		good bool
	}{
		{"503 before the first byte", unavailable, small, http.StatusOK, true},
		{"connection refused", refused, small, http.StatusOK, true},
		{"connection closed", dropping(0), small, http.StatusOK, true},
		{"connection refused, streamed body", refused, large, http.StatusOK, true},
		{"closed after consuming part of a streamed body: no retry", dropping(100 << 10), large, http.StatusBadGateway, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			badURL, badHits := tc.bad(t)
			good := newEchoEngine(t, "good")
			// The bad instance has the lower KV-cache use, so it is tried first.
			h := newHarness(t, Config{}, Deployment{Name: "d", Models: []string{"m"}, Endpoints: []Endpoint{
				{ID: "bad", URL: badURL}, {ID: "good", URL: good.url(), KVCache: 0.5},
			}})
			a, err := h.do(context.Background(), http.MethodPost, "/v1/completions", strings.NewReader(tc.body), nil)
			if err != nil {
				t.Fatal(err)
			}
			if a.status != tc.want {
				t.Fatalf("status %d, want %d: %.300s", a.status, tc.want, a.body)
			}
			if tc.good {
				if e := a.echo(t); e.Engine != "good" || e.BodyLen != len(tc.body) {
					t.Errorf("served by %q with %d bytes; want good with %d", e.Engine, e.BodyLen, len(tc.body))
				}
			} else {
				a.apiError(t)
				if good.hits.Load() != 0 {
					t.Errorf("the good instance got the unreplayable request")
				}
			}
			if n := badHits(); n > 1 {
				t.Errorf("bad instance hit %d times", n)
			}
			h.idle("d")
			s := deploymentStats(t, h.r.Stats(time.Now()), "d")
			bad := instanceStats(t, s, "bad")
			wantRetries := uint64(0)
			if tc.good {
				wantRetries = 1
			}
			if s.Total.Retries != wantRetries || bad.Total.Errors != 1 || !bad.Ejected {
				t.Errorf("retries %d, bad instance errors %d ejected %v; want %d 1 true", s.Total.Retries, bad.Total.Errors, bad.Ejected, wantRetries)
			}
			// Ejected: the next request goes straight to the good instance.
			if a := h.chat("m", nil); a.status != http.StatusOK || a.echo(t).Engine != "good" {
				t.Errorf("second request: status %d: %.300s", a.status, a.body)
			}
			if n := badHits(); n > 1 {
				t.Errorf("ejected instance hit again (%d)", n)
			}
			h.idle("d")
			if s := deploymentStats(t, h.r.Stats(time.Now()), "d"); s.Interval.Retries != 0 {
				t.Errorf("second request retried")
			}
		})
	}
	t.Run("only instance: 503 passes through, no ejection", func(t *testing.T) {
		bad := newUnavailableEngine(t, "bad")
		h := newHarness(t, Config{}, Deployment{Name: "d", Models: []string{"m"}, Endpoints: []Endpoint{ep("bad", bad, 0)}})
		for range 2 {
			a := h.chat("m", nil)
			// The engine's own error, as it sent it (vLLM's "code" is a number).
			if a.status != http.StatusServiceUnavailable || !strings.Contains(string(a.body), `"message":"engine bad unavailable"`) {
				t.Errorf("status %d: %s", a.status, a.body)
			}
		}
		h.idle("d")
		s := deploymentStats(t, h.r.Stats(time.Now()), "d")
		if in := instanceStats(t, s, "bad"); in.Ejected || in.Total.Errors != 2 || s.Total.Errors != 2 || s.Total.Retries != 0 {
			t.Errorf("instance %+v deployment %+v", in, s.Total)
		}
	})
}

func unavailable(t *testing.T) (string, func() int64) {
	e := newUnavailableEngine(t, "bad")
	return e.url(), e.hits.Load
}

func refused(t *testing.T) (string, func() int64) {
	return refusedURL(t), func() int64 { return 0 }
}

func dropping(readFirst int) func(t *testing.T) (string, func() int64) {
	return func(t *testing.T) (string, func() int64) {
		e := newDroppingEngine(t, "bad", readFirst)
		return e.url(), e.hits.Load
	}
}

func TestBrokenStream(t *testing.T) {
	broken, good := newBreakingEngine(t, "broken", 3), newEchoEngine(t, "good")
	h := newHarness(t, Config{}, Deployment{Name: "d", Models: []string{"m"},
		Endpoints: []Endpoint{ep("broken", broken, 0), ep("good", good, 0.5)}})
	a, err := h.do(context.Background(), http.MethodPost, "/v1/chat/completions", strings.NewReader(`{"model":"m","stream":true}`), nil)
	if err == nil {
		t.Fatalf("the client read a complete answer (status %d, %q) from a stream that broke off", a.status, a.body)
	}
	if !strings.Contains(string(a.body), "tok2") {
		t.Errorf("the client did not get the events sent before the break: %q (%v)", a.body, err)
	}
	h.idle("d")
	s := deploymentStats(t, h.r.Stats(time.Now()), "d")
	in := instanceStats(t, s, "broken")
	// Bytes had reached the client: no retry.
	if good.hits.Load() != 0 || s.Total.Retries != 0 || s.Total.Errors != 1 || in.Total.Errors != 1 || !in.Ejected {
		t.Errorf("deployment %+v; instance %+v; good instance hits %d", s.Total, in, good.hits.Load())
	}
}

func TestEjectionLasts(t *testing.T) {
	clk := newClock()
	bad, good := newUnavailableEngine(t, "bad"), newEchoEngine(t, "good")
	h := newHarness(t, Config{Now: clk.Now, EjectFor: 5 * time.Second},
		Deployment{Name: "d", Models: []string{"m"}, Endpoints: []Endpoint{ep("bad", bad, 0), ep("good", good, 0.5)}})
	for i := range 5 {
		if a := h.chat("m", nil); a.status != http.StatusOK {
			t.Fatalf("request %d: status %d", i, a.status)
		}
		clk.Advance(time.Second) // 4 s in all: still ejected
	}
	if n := bad.hits.Load(); n != 1 {
		t.Fatalf("the failed instance got %d requests while ejected, want only the first", n)
	}
	clk.Advance(2 * time.Second)
	if a := h.chat("m", nil); a.status != http.StatusOK {
		t.Fatalf("status %d", a.status)
	}
	if n := bad.hits.Load(); n != 2 {
		t.Errorf("the instance got %d requests after its ejection ended, want 2", n)
	}
	if n := counterValue(t, h.r.metrics.ejections.WithLabelValues("d", "bad")); n != 2 {
		t.Errorf("ejections_total %v, want 2", n)
	}
}

func TestRemovedEndpointDrains(t *testing.T) {
	a, b := newSlowEngine(t, "a"), newSlowEngine(t, "b")
	dep := Deployment{Name: "d", Models: []string{"m"}, Endpoints: []Endpoint{ep("a", a, 0), ep("b", b, 0.5)}}
	h := newHarness(t, Config{}, dep)
	first := h.goChat(context.Background(), "m", nil)
	waitFor(t, "the first request at a", func() bool { return a.inFlight.Load() == 1 })

	dep.Endpoints = dep.Endpoints[1:]
	if err := h.r.SetDeployments([]Deployment{dep}); err != nil {
		t.Fatal(err)
	}
	var rest []<-chan answer
	for range 3 {
		rest = append(rest, h.goChat(context.Background(), "m", nil))
	}
	waitFor(t, "3 requests at b", func() bool { return b.inFlight.Load() == 3 })
	if n := a.hits.Load(); n != 1 {
		t.Errorf("removed instance got %d requests, want 1", n)
	}
	s := deploymentStats(t, h.r.Stats(time.Now()), "d")
	if in := instanceStats(t, s, "a"); !in.Removed || in.InFlight != 1 || s.Endpoints != 1 {
		t.Errorf("draining instance %+v, endpoints %d", in, s.Endpoints)
	}
	a.finish()
	if got := receive(t, first); got.status != http.StatusOK || got.echo(t).Engine != "a" {
		t.Errorf("in-flight request on the removed instance: status %d %s", got.status, got.body)
	}
	b.finish()
	for _, ch := range rest {
		if got := receive(t, ch); got.status != http.StatusOK || got.echo(t).Engine != "b" {
			t.Errorf("status %d %s", got.status, got.body)
		}
	}
	h.idle("d")
	s = deploymentStats(t, h.r.Stats(time.Now()), "d")
	if in := instanceStats(t, s, "a"); !in.Removed || in.InFlight != 0 || in.Total.Finished != 1 {
		t.Errorf("drained instance %+v", in)
	}
	s = deploymentStats(t, h.r.Stats(time.Now()), "d")
	if len(s.Instances) != 1 || s.Instances[0].ID != "b" {
		t.Errorf("after reporting it drained, instances %+v", s.Instances)
	}
}

func TestClientCancelFreesSlot(t *testing.T) {
	t.Run("non-streaming", func(t *testing.T) {
		e := newSlowEngine(t, "e")
		h := newHarness(t, Config{}, Deployment{Name: "d", Models: []string{"m"}, Endpoints: []Endpoint{{ID: "e-0", URL: e.url(), MaxInFlight: 1}}})
		ctx, cancel := context.WithCancel(context.Background())
		ch := h.goChat(ctx, "m", nil)
		waitFor(t, "the request at the engine", func() bool { return e.inFlight.Load() == 1 })
		cancel()
		receive(t, ch)
		waitFor(t, "the slot to be freed", func() bool { return h.outstanding("d", "e-0") == 0 })
		waitFor(t, "the engine to see the cancellation", func() bool { return e.inFlight.Load() == 0 })
		// The slot is usable: a cap of 1 would hold the next request forever otherwise.
		e.finish()
		if a := h.chat("m", nil); a.status != http.StatusOK {
			t.Errorf("next request: status %d", a.status)
		}
		h.idle("d")
		s := deploymentStats(t, h.r.Stats(time.Now()), "d")
		in := instanceStats(t, s, "e-0")
		if s.InFlight != 0 || s.Total.Cancelled != 1 || in.InFlight != 0 || in.Total.Cancelled != 1 || in.Total.Errors != 0 {
			t.Errorf("deployment %+v in flight %d; instance %+v", s.Total, s.InFlight, in)
		}
		if n := counterValue(t, h.r.metrics.requests.WithLabelValues("d", "499")); n != 1 {
			t.Errorf("requests_total{code=499} %v", n)
		}
	})
	t.Run("mid-stream", func(t *testing.T) {
		step := make(chan struct{})
		e := newSSEEngine(t, "sse", 100, step)
		h := newHarness(t, Config{}, Deployment{Name: "d", Models: []string{"m"}, Endpoints: []Endpoint{ep("e-0", e, 0)}})
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, h.front.URL+"/v1/chat/completions", strings.NewReader(`{"model":"m","stream":true}`))
		resp, err := h.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(resp.Body).ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "data: ") {
			t.Fatalf("first line %q: %v", line, err)
		}
		cancel()
		resp.Body.Close()
		waitFor(t, "the slot to be freed", func() bool { return h.outstanding("d", "e-0") == 0 })
		waitFor(t, "the engine to stop", func() bool { return e.inFlight.Load() == 0 })
		h.idle("d")
		s := deploymentStats(t, h.r.Stats(time.Now()), "d")
		if s.InFlight != 0 || s.Total.Cancelled != 1 || instanceStats(t, s, "e-0").Total.Errors != 0 {
			t.Errorf("deployment %+v in flight %d", s.Total, s.InFlight)
		}
	})
}

func TestAffinity(t *testing.T) {
	t.Run("a session sticks while load is balanced", func(t *testing.T) {
		var eps []Endpoint
		for _, n := range []string{"0", "1", "2"} {
			eps = append(eps, ep("i-"+n, newEchoEngine(t, n), 0))
		}
		h := newHarness(t, Config{AffinityHeader: "X-Session-ID"}, Deployment{Name: "d", Models: []string{"m"}, Endpoints: eps})
		served := map[string]map[string]int{} // session -> engine -> count
		for _, session := range []string{"alice", "bob", "carol", "dave", "erin", "frank"} {
			served[session] = map[string]int{}
			for range 5 {
				served[session][h.chat("m", header("X-Session-ID", session)).echo(t).Engine]++
				h.idle("d")
			}
		}
		used := map[string]bool{}
		for session, engines := range served {
			if len(engines) != 1 {
				t.Errorf("session %s spread over %v", session, engines)
			}
			for e := range engines {
				used[e] = true
			}
		}
		if len(used) < 2 {
			t.Errorf("six sessions all on %v", used)
		}
	})
	t.Run("gives way under load", func(t *testing.T) {
		engines := []*slowEngine{newSlowEngine(t, "0"), newSlowEngine(t, "1"), newSlowEngine(t, "2")}
		var eps []Endpoint
		for _, e := range engines {
			eps = append(eps, ep("i-"+e.name, e, 0))
		}
		h := newHarness(t, Config{AffinityHeader: "X-Session-ID"}, Deployment{Name: "d", Models: []string{"m"}, Endpoints: eps})
		hdr := header("X-Session-ID", "hot")
		var answers []<-chan answer
		for i := range 6 {
			answers = append(answers, h.goChat(context.Background(), "m", hdr))
			waitFor(t, "the request at an engine", func() bool {
				var n int64
				for _, e := range engines {
					n += e.inFlight.Load()
				}
				return n == int64(i+1)
			})
		}
		var counts []int
		for _, e := range engines {
			counts = append(counts, int(e.inFlight.Load()))
		}
		slices.Sort(counts)
		// ceil(1.25 x (total+1) / 3) lets the preferred instance take 1, 1, 2, 2, 3, 3 of
		// the six: it alternates with the next on the ring.
		if !slices.Equal(counts, []int{0, 3, 3}) {
			t.Errorf("six requests of one session held %v by the three instances, want [0 3 3]", counts)
		}
		for _, e := range engines {
			e.finish()
		}
		for _, ch := range answers {
			if a := receive(t, ch); a.status != http.StatusOK {
				t.Errorf("status %d", a.status)
			}
		}
	})
	t.Run("prompt prefix", func(t *testing.T) {
		var eps []Endpoint
		for _, n := range []string{"0", "1", "2", "3"} {
			eps = append(eps, ep("i-"+n, newEchoEngine(t, n), 0))
		}
		h := newHarness(t, Config{PrefixAffinityBytes: 128}, Deployment{Name: "d", Models: []string{"m"}, Endpoints: eps})
		system := strings.Repeat("You are a careful assistant. ", 10)
		served := map[string]int{}
		for i := range 8 {
			body := `{"model":"m","messages":[{"role":"system","content":"` + system + `"},{"role":"user","content":"question ` + strings.Repeat("x", i) + `"}]}`
			a, err := h.do(context.Background(), http.MethodPost, "/v1/chat/completions", strings.NewReader(body), nil)
			if err != nil {
				t.Fatal(err)
			}
			served[a.echo(t).Engine]++
			h.idle("d")
		}
		if len(served) != 1 {
			t.Errorf("requests sharing a system prompt went to %v", served)
		}
	})
}

func TestStatsCounts(t *testing.T) {
	clk := newClock()
	e0, e1 := newEchoEngine(t, "0"), newEchoEngine(t, "1")
	h := newHarness(t, Config{Now: clk.Now}, Deployment{Name: "d", Models: []string{"m"},
		Endpoints: []Endpoint{ep("i-0", e0, 0), ep("i-1", e1, 0)}})
	const n = 6
	for range n {
		if a := h.chat("m", nil); a.status != http.StatusOK {
			t.Fatalf("status %d", a.status)
		}
		h.idle("d")
	}
	if a := h.chat("other", nil); a.status != http.StatusNotFound {
		t.Fatalf("unknown model: status %d", a.status)
	}
	clk.Advance(10 * time.Second)
	s := h.r.Stats(clk.Now())
	if got := s.Time.Sub(s.Since); got != 10*time.Second {
		t.Errorf("interval %s, want 10s", got)
	}
	d := deploymentStats(t, s, "d")
	wantTotal := Counters{Arrivals: n, Finished: n, CompletionTokens: n * echoTokens}
	if d.Total != wantTotal || d.Interval.Counters != wantTotal {
		t.Errorf("total %+v interval %+v, want %+v", d.Total, d.Interval.Counters, wantTotal)
	}
	if d.Interval.TTFT.Count != n || d.Interval.E2E.Count != n || d.Interval.TokensPerSecond != float64(n*echoTokens)/10 {
		t.Errorf("interval %+v", d.Interval)
	}
	var sum Counters
	for _, in := range d.Instances {
		sum.Arrivals += in.Total.Arrivals
		sum.Finished += in.Total.Finished
		sum.CompletionTokens += in.Total.CompletionTokens
		if in.Total.Arrivals != n/2 || in.Interval.E2E.Count != n/2 {
			t.Errorf("instance %s: %+v; sequential requests alternate, want %d each", in.ID, in.Total, n/2)
		}
	}
	if sum != wantTotal {
		t.Errorf("instances sum to %+v, want %+v", sum, wantTotal)
	}

	next := deploymentStats(t, h.r.Stats(clk.Now()), "d")
	if next.Total != wantTotal || next.Interval.Counters != (Counters{}) || next.Interval.E2E.Count != 0 {
		t.Errorf("second snapshot: total %+v interval %+v", next.Total, next.Interval)
	}

	// The same counts on /metrics.
	if v := counterValue(t, h.r.metrics.requests.WithLabelValues("d", "200")); v != n {
		t.Errorf("requests_total{d,200} %v", v)
	}
	if v := counterValue(t, h.r.metrics.requests.WithLabelValues(noDeployment, "404")); v != 1 {
		t.Errorf("requests_total{404} %v", v)
	}
	if v := counterValue(t, h.r.metrics.tokens.WithLabelValues("d")); v != n*echoTokens {
		t.Errorf("completion_tokens_total %v", v)
	}
	rec := httptest.NewRecorder()
	h.r.MetricsHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	text := rec.Body.String()
	for _, want := range []string{
		`llmscaler_router_e2e_request_latency_seconds_count{deployment="d"} 6`,
		`llmscaler_router_time_to_first_token_seconds_count{deployment="d"} 6`,
		`llmscaler_router_queue_length{deployment="d"} 0`,
		`llmscaler_router_endpoints{deployment="d"} 2`,
		`llmscaler_router_instance_in_flight{deployment="d",instance="i-0"} 0`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func TestSSEMeter(t *testing.T) {
	cases := []struct {
		name   string
		stream string
		want   uint64
	}{
		{"events without usage", "data: {\"a\":1}\n\ndata: {\"a\":2}\n\n: comment\n\ndata: [DONE]\n\n", 2},
		{"usage wins", "data: {\"a\":1}\n\ndata: {\"a\":2}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":9}}\n\ndata: [DONE]\n\n", 9},
		{"null usage is not usage", "data: {\"usage\":null,\"x\":\"completion_tokens\"}\n\ndata: {\"a\":2}\n\n", 2},
		{"CRLF", "data: {\"a\":1}\r\n\r\ndata:[DONE]\r\n\r\n", 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Fed one byte at a time, as the worst split of reads would.
			m := &sseMeter{}
			for i := range len(tc.stream) {
				m.feed([]byte{tc.stream[i]}, time.Unix(int64(i), 0))
			}
			if got := m.tokens(); got != tc.want {
				t.Errorf("tokens %d, want %d", got, tc.want)
			}
			if want := strings.Index(tc.stream, "\n"); m.firstData() != time.Unix(int64(want), 0) {
				t.Errorf("first data at %v, want byte %d", m.firstData(), want)
			}
		})
	}
}

func TestNewValidates(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"negative body limit", Config{MaxBodyBytes: -1}, "MaxBodyBytes"},
		{"replay over body limit", Config{MaxBodyBytes: 10, ReplayBytes: 20}, "ReplayBytes"},
		{"bad header name", Config{AffinityHeader: "X Session"}, "AffinityHeader"},
		{"load factor below 1", Config{AffinityLoadFactor: 0.5}, "AffinityLoadFactor"},
		{"negative eject", Config{EjectFor: -time.Second}, "EjectFor"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: %v; want ErrInvalid naming %s", err, tc.want)
			}
		})
	}
	if r, err := New(Config{}); err != nil {
		t.Errorf("zero Config: %v", err)
	} else {
		r.Close()
	}
}

func TestSetDeploymentsValidates(t *testing.T) {
	e := newEchoEngine(t, "e")
	good := Deployment{Name: "d", Models: []string{"m"}, Endpoints: []Endpoint{ep("e-0", e, 0)}}
	h := newHarness(t, Config{}, good)
	cases := []struct {
		name  string
		table []Deployment
		want  string
	}{
		{"no name", []Deployment{{Models: []string{"x"}}}, "Name is required"},
		{"no models", []Deployment{{Name: "x"}}, "Models is empty"},
		{"model twice", []Deployment{good, {Name: "x", Models: []string{"m"}}}, `also served by deployment "d"`},
		{"bad URL", []Deployment{{Name: "x", Models: []string{"x"}, Endpoints: []Endpoint{{ID: "a", URL: "127.0.0.1:8000"}}}}, "URL"},
		{"endpoint twice", []Deployment{{Name: "x", Models: []string{"x"}, Endpoints: []Endpoint{ep("a", e, 0), ep("a", e, 0)}}}, "listed twice"},
		{"KV out of range", []Deployment{{Name: "x", Models: []string{"x"}, Endpoints: []Endpoint{ep("a", e, 1.5)}}}, "KVCache"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := h.r.SetDeployments(tc.table)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("SetDeployments: %v; want ErrInvalid naming %s", err, tc.want)
			}
			if a := h.chat("m", nil); a.status != http.StatusOK {
				t.Errorf("after a rejected table the old one should stand: status %d", a.status)
			}
		})
	}
}

// TestConcurrentTableChanges runs requests while the table changes under them; with -race
// it checks the locking, and every request must end in an answer the router stands by.
func TestConcurrentTableChanges(t *testing.T) {
	e0, e1 := newEchoEngine(t, "0"), newEchoEngine(t, "1")
	tables := [][]Deployment{
		{{Name: "d", Models: []string{"m"}, Endpoints: []Endpoint{ep("0", e0, 0), ep("1", e1, 0)}}},
		{{Name: "d", Models: []string{"m"}, Endpoints: []Endpoint{ep("1", e1, 0)}}},
		{{Name: "d", Models: []string{"m"}, Endpoints: []Endpoint{ep("0", e0, 0.2)}}},
	}
	h := newHarness(t, Config{}, tables[0]...)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := h.r.SetDeployments(tables[i%len(tables)]); err != nil {
				t.Error(err)
				return
			}
			h.r.Stats(time.Now())
		}
	})
	var statusMu sync.Mutex
	statuses := map[int]int{}
	var clients sync.WaitGroup
	for range 8 {
		clients.Go(func() {
			for range 25 {
				a, err := h.do(context.Background(), http.MethodPost, "/v1/chat/completions", strings.NewReader(chatBody("m", "x")), nil)
				if err != nil {
					t.Error(err)
					return
				}
				statusMu.Lock()
				statuses[a.status]++
				statusMu.Unlock()
			}
		})
	}
	clients.Wait()
	close(stop)
	wg.Wait()
	if statuses[http.StatusOK] != 200 {
		t.Errorf("statuses %v, want 200 answers of 200", statuses)
	}
	h.idle("d")
	d := deploymentStats(t, h.r.Stats(time.Now()), "d")
	if d.Total.Arrivals != d.Total.Finished || d.InFlight != 0 || d.Waiting != 0 {
		t.Errorf("totals %+v in flight %d waiting %d", d.Total, d.InFlight, d.Waiting)
	}
}
