package router

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The stream benchmark runs the engine and the router as child processes (this test binary
// re-executed with streamRoleEnv set), so each one's CPU time and RSS are read from /proc
// alone, and so each stays under this machine's limit of open files per process.
const (
	streamRoleEnv    = "LLMSCALER_STREAMBENCH_ROLE"
	streamBackendEnv = "LLMSCALER_STREAMBENCH_BACKEND"
)

// runStreamRole runs the child named role until killed; TestMain calls it.
func runStreamRole(role string) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var srv *http.Server
	switch role {
	case "engine":
		srv = &http.Server{Handler: http.HandlerFunc(slowSSE)}
	case "router":
		r, err := New(Config{})
		if err == nil {
			err = r.SetDeployments([]Deployment{{Name: "d", Models: []string{"m"},
				Endpoints: []Endpoint{{ID: "engine", URL: os.Getenv(streamBackendEnv)}}}})
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		srv = NewServer(r)
	default:
		fmt.Fprintf(os.Stderr, "unknown role %q\n", role)
		return 1
	}
	fmt.Printf("LISTEN http://%s\n", ln.Addr())
	if err := srv.Serve(ln); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	return 1
}

// slowSSE models an engine generating for a request that holds its stream open: one SSE
// chunk per second, max_tokens of them, then [DONE], as vLLM streams a completion.
func slowSSE(w http.ResponseWriter, r *http.Request) {
	var req struct {
		MaxTokens int `json:"max_tokens"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	rc := http.NewResponseController(w)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for i := range req.MaxTokens {
		fmt.Fprintf(w, "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"choices\":[{\"index\":0,\"text\":\" tok%d\"}]}\n\n", i)
		if rc.Flush() != nil {
			return
		}
		select {
		case <-tick.C:
		case <-r.Context().Done():
			return
		}
	}
	_, _ = io.WriteString(w, "data: [DONE]\n\n")
}

// child is a running child process of the benchmark.
type child struct {
	cmd *exec.Cmd
	url string
}

func startChild(b *testing.B, role string, env ...string) *child {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), streamRoleEnv+"="+role), env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "LISTEN ") {
		b.Fatalf("%s child: %q, %v", role, line, err)
	}
	return &child{cmd: cmd, url: strings.TrimSpace(strings.TrimPrefix(line, "LISTEN "))}
}

// usage is a process's CPU time (user and system) and resident set size.
type usage struct {
	cpu time.Duration
	rss int64 // bytes
}

func procUsage(b *testing.B, pid int) usage {
	b.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name (which may hold spaces) start at ") ".
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	rssPages, _ := strconv.ParseInt(f[21], 10, 64)
	const ticksPerSecond = 100 // USER_HZ on Linux
	return usage{
		cpu: time.Duration(utime+stime) * time.Second / ticksPerSecond,
		rss: rssPages * int64(os.Getpagesize()),
	}
}

// BenchmarkRouterStreams holds 10,000 concurrent streaming completions through the router
// (HTTP/2 without TLS from the client, one HTTP/1.1 connection per stream to the engine,
// one SSE chunk per stream per second) and reports, for the router process alone: its RSS
// idle and with every stream open, the RSS each stream adds, and its CPU (cores) over a
// 10 s window of steady streaming; beside it the engine process's CPU in the same window,
// which does the same per-chunk HTTP work, as the baseline.
//
//	go test -run '^$' -bench RouterStreams -benchtime 1x ./internal/router/
func BenchmarkRouterStreams(b *testing.B) {
	const (
		streams = 10000
		opening = 2000 // streams opened per second
		window  = 10 * time.Second
	)
	engine := startChild(b, "engine")
	rt := startChild(b, "router", streamBackendEnv+"="+engine.url)

	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &p, DisableCompression: true}
	b.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr}

	for b.Loop() {
		idle := procUsage(b, rt.cmd.Process.Pid)
		// Each stream lasts long enough to be open through the ramp and the window.
		tokens := int(float64(streams)/opening+window.Seconds()) + 10
		body := fmt.Sprintf(`{"model":"m","prompt":"hi","max_tokens":%d,"stream":true}`, tokens)
		ctx, cancel := context.WithCancel(context.Background())
		var open, chunks, failed atomic.Int64
		var wg sync.WaitGroup
		gap := time.Second / opening
		start := time.Now()
		for i := range streams {
			if w := time.Until(start.Add(time.Duration(i) * gap)); w > 0 {
				time.Sleep(w)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, rt.url+"/v1/completions", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				if err != nil {
					failed.Add(1)
					return
				}
				defer resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					failed.Add(1)
					return
				}
				sc := bufio.NewScanner(resp.Body)
				first := true
				for sc.Scan() {
					if strings.HasPrefix(sc.Text(), "data: ") {
						chunks.Add(1)
						if first {
							open.Add(1)
							first = false
						}
					}
				}
			}()
		}
		for open.Load()+failed.Load() < streams {
			time.Sleep(50 * time.Millisecond)
		}
		if n := failed.Load(); n > 0 {
			b.Fatalf("%d of %d streams failed", n, streams)
		}
		r0, e0, c0 := procUsage(b, rt.cmd.Process.Pid), procUsage(b, engine.cmd.Process.Pid), chunks.Load()
		t0 := time.Now()
		time.Sleep(window)
		r1, e1, c1 := procUsage(b, rt.cmd.Process.Pid), procUsage(b, engine.cmd.Process.Pid), chunks.Load()
		el := time.Since(t0).Seconds()
		cancel()
		wg.Wait()

		b.ReportMetric(float64(streams), "streams")
		b.ReportMetric(float64(c1-c0)/el, "chunks/s")
		b.ReportMetric(float64(idle.rss)/(1<<20), "router-idle-MiB")
		b.ReportMetric(float64(r1.rss)/(1<<20), "router-RSS-MiB")
		b.ReportMetric(float64(r1.rss-idle.rss)/streams/1024, "router-KiB/stream")
		b.ReportMetric((r1.cpu-r0.cpu).Seconds()/el, "router-cores")
		b.ReportMetric((e1.cpu-e0.cpu).Seconds()/el, "engine-cores")
	}
}
