package router

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// engine is a fake model server behind an httptest.Server, written to behave as a real one
// does in the respect each constructor names.
type engine struct {
	name string
	srv  *httptest.Server

	hits        atomic.Int64 // requests that reached the handler
	inFlight    atomic.Int64
	maxInFlight atomic.Int64
}

func (e *engine) url() string { return e.srv.URL }

func (e *engine) enter() {
	e.hits.Add(1)
	n := e.inFlight.Add(1)
	for {
		m := e.maxInFlight.Load()
		if n <= m || e.maxInFlight.CompareAndSwap(m, n) {
			return
		}
	}
}

func (e *engine) leave() { e.inFlight.Add(-1) }

func startEngine(t testing.TB, name string, h func(e *engine, w http.ResponseWriter, r *http.Request)) *engine {
	t.Helper()
	e := &engine{name: name}
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.enter()
		defer e.leave()
		h(e, w, r)
	}))
	t.Cleanup(e.srv.Close)
	return e
}

// echoAnswer is what the echo engine answers.
type echoAnswer struct {
	Engine        string `json:"engine"`
	Path          string `json:"path"`
	Model         string `json:"model"`
	BodyLen       int    `json:"body_len"`
	BodySHA256    string `json:"body_sha256"`
	ContentLength int64  `json:"content_length"`
	Usage         struct {
		CompletionTokens int `json:"completion_tokens"`
	} `json:"usage"`
}

// echoTokens is the usage.completion_tokens every echo answer reports.
const echoTokens = 7

// newEchoEngine models vLLM answering a non-streaming completion: it reads the whole body,
// then answers 200 with a JSON object that carries usage.completion_tokens, as the OpenAI
// API does. Instead of generated text it reports what arrived (path, length, SHA-256 of
// the body, Content-Length), so tests can check what the router forwarded.
func newEchoEngine(t testing.TB, name string) *engine {
	return startEngine(t, name, func(e *engine, w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var req struct {
			Model string `json:"model"`
		}
		if err := json.Unmarshal(b, &req); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]any{"error": map[string]any{"message": err.Error()}})
			return
		}
		sum := sha256.Sum256(b)
		a := echoAnswer{Engine: e.name, Path: r.URL.Path, Model: req.Model, BodyLen: len(b),
			BodySHA256: hex.EncodeToString(sum[:]), ContentLength: r.ContentLength}
		a.Usage.CompletionTokens = echoTokens
		writeJSON(w, http.StatusOK, a)
	})
}

// newSSEEngine models vLLM streaming a chat completion ("stream": true): the status and
// headers go out at once, then one "data: {chunk}" event per generated token, each after
// a decode step, then "data: [DONE]". A decode step here is a value received on step, so
// the test sets the pace. The connection stays open between events, as with a real
// engine, so a router that buffers holds them all back.
func newSSEEngine(t testing.TB, name string, tokens int, step <-chan struct{}) *engine {
	return startEngine(t, name, func(e *engine, w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		for i := range tokens {
			if i > 0 {
				select {
				case <-step:
				case <-r.Context().Done():
					return
				}
			}
			fmt.Fprintf(w, "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tok%d \"}}]}\n\n", i)
			_ = rc.Flush()
		}
		fmt.Fprint(w, "data: [DONE]\n\n")
	})
}

// newUnavailableEngine models an engine that answers 503 before reading the body or
// sending any of an answer, as vLLM's API server does once its engine core has died and
// as a server that is still loading its weights behind a proxy does.
func newUnavailableEngine(t testing.TB, name string) *engine {
	return startEngine(t, name, func(e *engine, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"error": map[string]any{
			"message": "engine " + e.name + " unavailable", "type": "server_error", "param": nil, "code": 503,
		}})
	})
}

// newDroppingEngine models an engine process that dies under a request (OOM-killed, a CUDA
// fault): it accepts the connection and reads the request's headers and its first
// readFirst body bytes, then closes the connection without a byte of answer.
func newDroppingEngine(t testing.TB, name string, readFirst int) *engine {
	return startEngine(t, name, func(e *engine, w http.ResponseWriter, r *http.Request) {
		if readFirst > 0 {
			_, _ = io.ReadFull(r.Body, make([]byte, readFirst))
		}
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(err)
		}
		_ = conn.Close()
	})
}

// newBreakingEngine models an engine that crashes mid-generation: it streams events SSE
// events of a chat completion, then its connection drops without the end of the stream.
func newBreakingEngine(t testing.TB, name string, events int) *engine {
	return startEngine(t, name, func(e *engine, w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range events {
			fmt.Fprintf(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tok%d \"}}]}\n\n", i)
		}
		rc := http.NewResponseController(w)
		_ = rc.Flush()
		conn, _, err := rc.Hijack()
		if err != nil {
			panic(err)
		}
		_ = conn.Close()
	})
}

// slowEngine is a fake whose requests a test holds and lets go.
type slowEngine struct {
	*engine
	mu      sync.Mutex
	release chan struct{} // closed to let every held request finish
}

// newSlowEngine models an engine busy with long generations, the kind that fills an
// instance's in-flight cap: each request reads its body and then is held, headers unsent,
// until the test calls finish, and gives up when the client cancels (as vLLM aborts a
// request whose connection closed). Then it answers like the echo engine.
func newSlowEngine(t testing.TB, name string) *slowEngine {
	s := &slowEngine{release: make(chan struct{})}
	s.engine = startEngine(t, name, func(e *engine, w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		s.mu.Lock()
		release := s.release
		s.mu.Unlock()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		a := echoAnswer{Engine: e.name, Path: r.URL.Path}
		a.Usage.CompletionTokens = echoTokens
		writeJSON(w, http.StatusOK, a)
	})
	// Let held requests go before the server's Close waits for them.
	t.Cleanup(s.finish)
	return s
}

// finish lets every held request, and any that arrives later, finish.
func (s *slowEngine) finish() {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.release:
	default:
		close(s.release)
	}
}

// refusedURL is the URL of a port nothing listens on: connections to it are refused, as
// they are to an instance whose process has exited.
func refusedURL(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return "http://" + addr
}

// clock is a settable clock for Config.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}
