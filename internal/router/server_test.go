package router

import (
	"bufio"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// The daemon's server takes HTTP/1.1 and h2c (HTTP/2 without TLS, prior knowledge) on one
// port, and streams over HTTP/2 as they are generated, event by event.
func TestServerSpeaksHTTP1AndH2C(t *testing.T) {
	const tokens = 3
	step := make(chan struct{})
	e := newSSEEngine(t, "sse", tokens, step)
	r, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.SetDeployments([]Deployment{{Name: "d", Models: []string{"m"}, Endpoints: []Endpoint{ep("e-0", e, 0)}}}); err != nil {
		t.Fatal(err)
	}
	front := httptest.NewUnstartedServer(nil)
	front.Config = NewServer(r)
	front.Start()
	defer front.Close()

	for _, tc := range []struct {
		name  string
		proto func(*http.Protocols)
		major int
	}{
		{"http1", func(p *http.Protocols) { p.SetHTTP1(true) }, 1},
		{"h2c", func(p *http.Protocols) { p.SetUnencryptedHTTP2(true) }, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p http.Protocols
			tc.proto(&p)
			tr := &http.Transport{Protocols: &p}
			defer tr.CloseIdleConnections()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, front.URL+"/v1/chat/completions",
				strings.NewReader(`{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`))
			resp, err := (&http.Client{Transport: tr}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.ProtoMajor != tc.major || resp.StatusCode != http.StatusOK {
				t.Fatalf("got %s %d, want HTTP/%d 200", resp.Proto, resp.StatusCode, tc.major)
			}
			rd := bufio.NewReader(resp.Body)
			for n := 0; n <= tokens; {
				line, err := rd.ReadString('\n')
				if err != nil {
					t.Fatalf("after %d events: %v", n, err)
				}
				if !strings.HasPrefix(line, "data: ") {
					continue
				}
				// The engine sends the next event only after this step: an event held back
				// by the server would leave both waiting until the deadline.
				if n++; n < tokens {
					step <- struct{}{}
				}
			}
		})
	}
}
