package router

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkRouter measures the latency the router adds to a request: each pair of
// sub-benchmarks sends the same request, one at a time, straight to the backend
// ("direct") and through the router ("router"); the difference of their ns/op is the
// router's cost. The backend models an engine answering at once: it reads the body and
// sends a short completion with usage, so the figures are all HTTP and router overhead.
func BenchmarkRouter(b *testing.B) {
	backend := startEngine(b, "bench", func(_ *engine, w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"id":"cmpl-1","object":"text_completion","choices":[{"index":0,"text":"ok","finish_reason":"length"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}`)
	})
	r, err := New(Config{})
	if err != nil {
		b.Fatal(err)
	}
	if err := r.SetDeployments([]Deployment{{Name: "d", Models: []string{"m"},
		Endpoints: []Endpoint{{ID: "bench", URL: backend.url()}}}}); err != nil {
		b.Fatal(err)
	}
	front := httptest.NewServer(r)
	b.Cleanup(func() {
		front.Close()
		r.Close()
	})
	tr := &http.Transport{MaxIdleConnsPerHost: 16, DisableCompression: true}
	b.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr}

	small := []byte(`{"model":"m","prompt":"Say ok.","max_tokens":1}`)
	large := []byte(`{"messages":[{"role":"user","content":"` + bigPrompt(200<<10) + `"}],"model":"m","max_tokens":1}`)
	for _, tc := range []struct {
		name string
		url  string
		body []byte
	}{
		{"direct", backend.url(), small},
		{"router", front.URL, small},
		{"direct-200KB", backend.url(), large},
		{"router-200KB", front.URL, large},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.SetBytes(int64(len(tc.body)))
			b.ReportAllocs()
			for b.Loop() {
				resp, err := client.Post(tc.url+"/v1/completions", "application/json", bytes.NewReader(tc.body))
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
		})
	}
}
