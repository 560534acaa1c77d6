package router

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// benchPair starts a backend that models an engine answering at once (it reads the body and
// sends a short completion with usage) and a router in front of it serving model "m"; it
// returns both base URLs.
func benchPair(b *testing.B) (backendURL, frontURL string) {
	b.Helper()
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
	return backend.url(), front.URL
}

// BenchmarkRouter measures the latency the router adds to a request: each pair of
// sub-benchmarks sends the same request, one at a time, straight to the backend
// ("direct") and through the router ("router"); the difference of their ns/op is the
// router's cost. The backend models an engine answering at once: it reads the body and
// sends a short completion with usage, so the figures are all HTTP and router overhead.
func BenchmarkRouter(b *testing.B) {
	backendURL, frontURL := benchPair(b)
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
		{"direct", backendURL, small},
		{"router", frontURL, small},
		{"direct-200KB", backendURL, large},
		{"router-200KB", frontURL, large},
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

// BenchmarkRouterOpenLoop sends requests at a fixed rate (open loop: a request leaves at
// its time whether or not earlier ones have been answered) for one second per iteration,
// straight to the backend and through the router, and reports each side's latency p50 and
// p99 in microseconds. Client, router and backend share this machine's cores, so at high
// rates the figures include their contention; compare the two sides of one run.
//
//	go test -run '^$' -bench RouterOpenLoop -benchtime 3x ./internal/router/
func BenchmarkRouterOpenLoop(b *testing.B) {
	backendURL, frontURL := benchPair(b)
	tr := &http.Transport{MaxIdleConnsPerHost: 512, MaxConnsPerHost: 0, DisableCompression: true}
	b.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr}
	body := []byte(`{"model":"m","prompt":"Say ok.","max_tokens":1}`)
	for _, rate := range []int{1000, 5000} {
		for _, side := range []struct{ name, url string }{{"direct", backendURL}, {"router", frontURL}} {
			b.Run(fmt.Sprintf("%drps-%s", rate, side.name), func(b *testing.B) {
				var all []time.Duration
				failed := 0
				for b.Loop() {
					lat, bad := openLoop(client, side.url+"/v1/completions", body, rate, time.Second)
					all = append(all, lat...)
					failed += bad
				}
				if failed > 0 {
					b.Fatalf("%d requests failed", failed)
				}
				slices.Sort(all)
				b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
				b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
			})
		}
	}
}

// openLoop sends rate requests/s for d and returns their latencies and how many failed.
func openLoop(client *http.Client, url string, body []byte, rate int, d time.Duration) ([]time.Duration, int) {
	n := int(d.Seconds() * float64(rate))
	gap := time.Second / time.Duration(rate)
	lat := make([]time.Duration, n)
	var failed atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		if w := time.Until(start.Add(time.Duration(i) * gap)); w > 0 {
			time.Sleep(w)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			resp, err := client.Post(url, "application/json", bytes.NewReader(body))
			if err != nil {
				failed.Add(1)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				failed.Add(1)
			}
			lat[i] = time.Since(t0)
		}()
	}
	wg.Wait()
	return lat, int(failed.Load())
}
