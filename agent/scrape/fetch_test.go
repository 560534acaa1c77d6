package scrape

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestFetch(t *testing.T) {
	body := readTestdata(t, "sglang_2.txt")
	tests := []struct {
		name    string
		handler http.HandlerFunc
		max     int64
		wantErr error // nil with wantAny false: success
		wantAny bool
	}{
		{
			name: "ok",
			handler: func(w http.ResponseWriter, r *http.Request) {
				if !strings.HasPrefix(r.Header.Get("Accept"), "text/plain") {
					http.Error(w, "want text", http.StatusNotAcceptable)
					return
				}
				w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
				_, _ = w.Write(body)
			},
		},
		{
			name: "server error",
			handler: func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, "engine dead", http.StatusInternalServerError)
			},
			wantAny: true,
		},
		{
			name: "metrics not enabled",
			handler: func(w http.ResponseWriter, r *http.Request) {
				http.NotFound(w, r)
			},
			wantAny: true,
		},
		{
			name: "oversized body with a length",
			handler: func(w http.ResponseWriter, r *http.Request) {
				_, _ = w.Write(body)
			},
			max:     int64(len(body)) - 1,
			wantErr: ErrBodyTooLarge,
		},
		{
			name: "oversized body streamed without a length",
			handler: func(w http.ResponseWriter, r *http.Request) {
				for range 4 {
					_, _ = w.Write(body)
					w.(http.Flusher).Flush()
				}
			},
			max:     int64(len(body)) * 2,
			wantErr: ErrBodyTooLarge,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.handler)
			defer srv.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()

			got, err := Fetch(ctx, srv.Client(), srv.URL+"/metrics", tc.max)
			switch {
			case tc.wantErr != nil:
				if !errors.Is(err, tc.wantErr) {
					t.Errorf("error %v, want %v", err, tc.wantErr)
				}
			case tc.wantAny:
				if err == nil {
					t.Errorf("no error, want one")
				}
			default:
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, body) {
					t.Errorf("body of %d bytes, want the %d served", len(got), len(body))
				}
			}
			if err != nil && got != nil {
				t.Errorf("body returned with error %v", err)
			}
		})
	}
}

func TestFetchCancelled(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Fetch(ctx, srv.Client(), srv.URL, 0); !errors.Is(err, context.Canceled) {
		t.Errorf("error %v, want context.Canceled", err)
	}
}

// TestFetchThenUpdate is the way the agent uses the package: fetch, then parse.
func TestFetchThenUpdate(t *testing.T) {
	bodies := [][]byte{readTestdata(t, "tgi_1.txt"), readTestdata(t, "tgi_2.txt")}
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write(bodies[n])
		n++
	}))
	defer srv.Close()

	s := New(TGI, 0)
	for i := range bodies {
		raw, err := Fetch(context.Background(), srv.Client(), srv.URL+"/metrics", 0)
		if err != nil {
			t.Fatal(err)
		}
		m := mustUpdate(t, s, raw, t0.Add(time.Duration(i)*10*time.Second))
		if i == 1 && m.GetFinishedRequestsPerSecond() != 2 {
			t.Errorf("finished requests/s = %v, want 2", m.GetFinishedRequestsPerSecond())
		}
	}
}
