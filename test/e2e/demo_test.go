//go:build linux

package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestDemo runs `llmscaler demo` as a user would: first interrupted with Ctrl-C (SIGINT) once
// it has scaled up, then straight after on the same ports to its end. Each run must leave no
// model server behind; the full one must scale up and down, serve every request, print its
// summary and write the PNG.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the three-minute demo")
	}
	ports := []string{freePort(t), freePort(t), freePort(t)}
	args := func(out string) []string {
		return []string{"demo", "--grpc-addr", ports[0], "--http-addr", ports[1], "--router-addr", ports[2], "--out", out}
	}
	t.Cleanup(func() { killServers("demo") })

	t.Run("interrupted", func(t *testing.T) {
		var out syncBuffer
		cmd := exec.Command(bin(t, "llmscaler"), args(t.TempDir())...)
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		eventually(t, 90*time.Second, "the demo's first scale-up", func() error {
			if !regexp.MustCompile(`last decision \S+ \d+->\d+: scale`).MatchString(out.String()) {
				return fmt.Errorf("output so far:\n%s", out.String())
			}
			return nil
		})
		if len(serversOf("demo")) == 0 {
			t.Fatal("the demo runs no model server")
		}
		_ = cmd.Process.Signal(syscall.SIGINT)
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("interrupted demo: %v\n%s", err, out.String())
			}
		case <-time.After(60 * time.Second):
			_ = cmd.Process.Kill()
			t.Fatalf("the demo did not stop within 60 s of Ctrl-C:\n%s", out.String())
		}
		if !strings.Contains(out.String(), "Summary (interrupted") {
			t.Errorf("no summary after Ctrl-C:\n%s", out.String())
		}
		if pids := serversOf("demo"); len(pids) > 0 {
			t.Errorf("model servers %v outlived the interrupted demo", pids)
		}
	})

	t.Run("whole", func(t *testing.T) {
		dir := t.TempDir()
		cmd := exec.Command(bin(t, "llmscaler"), args(dir)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		start := time.Now()
		b, err := cmd.Output()
		took := time.Since(start)
		out := string(b)
		if err != nil {
			t.Fatalf("demo: %v\n%s\n%s", err, out, stderr.String())
		}
		t.Logf("the demo took %v:\n%s", took.Round(time.Second), out)
		if took > 5*time.Minute {
			t.Errorf("the demo took %v, more than 5 minutes", took)
		}
		var rep struct {
			Requests     int     `json:"requests"`
			OK           int     `json:"ok"`
			Failed       int     `json:"failed"`
			ScaleUps     int     `json:"scale_ups"`
			ScaleDowns   int     `json:"scale_downs"`
			PeakReplicas int     `json:"peak_replicas"`
			Attainment   float64 `json:"slo_attainment"`
			GPUMinutes   float64 `json:"gpu_minutes"`
			Fixed        float64 `json:"fixed_pool_gpu_minutes"`
			Interrupted  bool    `json:"interrupted"`
		}
		js, err := os.ReadFile(filepath.Join(dir, "summary.json"))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(js, &rep); err != nil {
			t.Fatalf("summary.json: %v\n%s", err, js)
		}
		// The workload goes from 4 to 16 req/s and back, with cpu-tiny replicas serving about
		// 3.5 each: it must take the deployment well above its one replica and back down,
		// and the router must lose nothing on the way.
		if rep.Interrupted || rep.Requests < 1000 || rep.Failed != 0 || rep.OK != rep.Requests {
			t.Errorf("requests %d, ok %d, failed %d, interrupted %v", rep.Requests, rep.OK, rep.Failed, rep.Interrupted)
		}
		if rep.ScaleUps < 2 || rep.ScaleDowns < 2 || rep.PeakReplicas < 4 {
			t.Errorf("%d scale-ups, %d scale-downs, peak %d replicas: the demo did not show autoscaling", rep.ScaleUps, rep.ScaleDowns, rep.PeakReplicas)
		}
		if rep.Attainment < 0.95 || !(rep.GPUMinutes > 0 && rep.GPUMinutes < rep.Fixed) {
			t.Errorf("attainment %.3f, %.1f GPU-minutes against %.1f for the fixed pool", rep.Attainment, rep.GPUMinutes, rep.Fixed)
		}
		for _, want := range []string{"offered", "TTFT p95", "replicas desired", "Summary (the whole workload", "GPU-minutes", "plot of the run: ",
			"every gRPC connection is mutual TLS", "grpcurl -cacert ", "/tls/admin.crt -key "} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q", want)
			}
		}
		png := filepath.Join(dir, "demo-slo.png")
		if f, err := os.Open(png); err != nil {
			t.Error(err)
		} else {
			head := make([]byte, 8)
			_, _ = bufio.NewReader(f).Read(head)
			f.Close()
			if !bytes.Equal(head, []byte("\x89PNG\r\n\x1a\n")) {
				t.Errorf("%s is not a PNG", png)
			}
		}
		if strings.Contains(stderr.String(), "warning:") {
			t.Errorf("the demo printed warnings:\n%s", stderr.String())
		}
		if pids := serversOf("demo"); len(pids) > 0 {
			t.Errorf("model servers %v outlived the demo", pids)
		}
	})
}

// syncBuffer is a bytes.Buffer that a process writes while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
