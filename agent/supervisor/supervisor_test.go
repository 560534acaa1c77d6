package supervisor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/llmscaler/llmscaler/agent/catalog"
	"github.com/llmscaler/llmscaler/internal/backoff"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

const (
	starting = llmscalerv1.InstancePhase_INSTANCE_PHASE_STARTING
	ready    = llmscalerv1.InstancePhase_INSTANCE_PHASE_READY
	draining = llmscalerv1.InstancePhase_INSTANCE_PHASE_DRAINING
	stopped  = llmscalerv1.InstancePhase_INSTANCE_PHASE_STOPPED
	failed   = llmscalerv1.InstancePhase_INSTANCE_PHASE_FAILED

	// waitLong bounds waits for things that take a process start or two under -race.
	waitLong = 20 * time.Second
)

// testCatalog runs the test binary itself as every model server; see fakeServer.
func testCatalog(t *testing.T) *catalog.Catalog {
	t.Helper()
	args := fmt.Sprintf(`[%s, --host, "{host}", --port, "{port}", --gpus, "{gpus}", --id, "{instance_id}", --deployment, "{deployment}"`,
		strconv.Quote(os.Args[0]))
	profile := func(name, mode string, extra string) string {
		return fmt.Sprintf(`  - name: %s
    command: %s%s]
    env: {%s: %s, TEST_EXTRA: "dep={deployment} id={instance_id}"}
    dialect: vllm
%s`, name, args, map[bool]string{true: `, --health-delay, 200ms`, false: ""}[mode == "serve"], serverModeEnv, mode, extra)
	}
	yaml := "profiles:\n" +
		profile("serve", "serve", "    gpus: 1\n    max_restarts: 2\n") +
		profile("two", "serve", "    gpus: 2\n") +
		profile("cpu", "serve", "    gpus: 0\n    max_restarts: 2\n") +
		profile("once", "serve", "    gpus: 0\n    max_restarts: 0\n") +
		profile("stubborn", "ignore-term", "    gpus: 0\n    stop_grace: 300ms\n") +
		profile("crash", "crash", "    gpus: 0\n    max_restarts: 1\n") +
		profile("crash0", "crash", "    gpus: 0\n    max_restarts: 0\n") +
		profile("spam", "spam", "    gpus: 0\n") +
		`  - name: slow
    command: ` + args + `, --health-delay, 1h]
    env: {` + serverModeEnv + `: serve}
    dialect: vllm
    gpus: 0
    startup_timeout: 500ms
`
	c, err := catalog.Parse("test-catalog.yaml", []byte(yaml))
	if err != nil {
		t.Fatalf("test catalog: %v\n%s", err, yaml)
	}
	return c
}

// harness runs one Supervisor and cleans up every process it started.
type harness struct {
	t      *testing.T
	s      *Supervisor
	dir    string
	cancel context.CancelFunc
	done   chan error

	mu   sync.Mutex
	pids []int
}

func testLogger() hclog.Logger {
	if os.Getenv("SUPERVISOR_TEST_LOG") != "" {
		return hclog.New(&hclog.LoggerOptions{Level: hclog.Debug, Output: os.Stderr})
	}
	return hclog.NewNullLogger()
}

// newHarness builds and runs a Supervisor; zero fields of cfg get test defaults.
func newHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	if cfg.Catalog == nil {
		cfg.Catalog = testCatalog(t)
	}
	if cfg.GPUs == nil {
		cfg.GPUs = []uint32{0, 1, 2, 3}
	}
	if cfg.Interval == 0 {
		cfg.Interval = 20 * time.Millisecond
	}
	if cfg.RestartBackoff == (backoff.Config{}) {
		cfg.RestartBackoff = backoff.Config{Base: 50 * time.Millisecond, Multiplier: 2, Max: time.Second}
	}
	s, err := New(cfg, testLogger())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	h := &harness{t: t, s: s, dir: cfg.DataDir, done: make(chan error, 1)}
	s.onSpawn = func(pid int) {
		h.mu.Lock()
		h.pids = append(h.pids, pid)
		h.mu.Unlock()
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- s.Run(ctx) }()
	t.Cleanup(h.close)
	return h
}

// stopRun ends Run, leaving the servers running.
func (h *harness) stopRun() {
	h.t.Helper()
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	if err := <-h.done; err != nil {
		h.t.Errorf("Run = %v, want nil", err)
	}
}

// close ends Run and kills every process group the supervisor started.
func (h *harness) close() {
	h.stopRun()
	h.mu.Lock()
	for _, pid := range h.pids {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
	h.mu.Unlock()
	h.s.waiters.Wait()
}

func (h *harness) spawned() []int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]int(nil), h.pids...)
}

func (h *harness) status(id string) *llmscalerv1.InstanceStatus {
	for _, st := range h.s.Instances() {
		if st.GetInstanceId() == id {
			return st
		}
	}
	return nil
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	waitForf(t, timeout, func() string { return what }, cond)
}

// waitForf is waitFor with a description made when the wait fails.
func waitForf(t *testing.T, timeout time.Duration, what func() string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tk := time.NewTicker(5 * time.Millisecond)
	defer tk.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what())
		}
		<-tk.C
	}
}

// waitStatus waits until the instance's status satisfies cond and returns it.
func (h *harness) waitStatus(id string, what string, cond func(*llmscalerv1.InstanceStatus) bool) *llmscalerv1.InstanceStatus {
	h.t.Helper()
	var st *llmscalerv1.InstanceStatus
	waitForf(h.t, waitLong, func() string { return fmt.Sprintf("%s %s (last status %v)", id, what, st) }, func() bool {
		st = h.status(id)
		return st != nil && cond(st)
	})
	return st
}

func (h *harness) waitPhase(id string, p llmscalerv1.InstancePhase) *llmscalerv1.InstanceStatus {
	h.t.Helper()
	return h.waitStatus(id, "to be "+p.String(), func(st *llmscalerv1.InstanceStatus) bool { return st.GetPhase() == p })
}

func (h *harness) start(id, dep, profile string, gpus ...uint32) {
	h.t.Helper()
	if err := h.s.Start(&llmscalerv1.StartInstance{InstanceId: id, Deployment: dep, Profile: profile, GpuIndices: gpus}); err != nil {
		h.t.Fatalf("Start %s: %v", id, err)
	}
}

func (h *harness) logOf(id string) string {
	b, _ := os.ReadFile(filepath.Join(h.dir, "logs", id+".log"))
	return string(b)
}

// waitLog waits until the instance's log holds want.
func (h *harness) waitLog(id, want string) {
	h.t.Helper()
	waitFor(h.t, waitLong, fmt.Sprintf("log of %s to hold %q", id, want), func() bool {
		return strings.Contains(h.logOf(id), want)
	})
}

// groupGone waits until process group pgid is empty.
func groupGone(t *testing.T, pgid int) {
	t.Helper()
	waitFor(t, waitLong, fmt.Sprintf("process group %d to be gone", pgid), func() bool {
		return errors.Is(syscall.Kill(-pgid, 0), syscall.ESRCH)
	})
}

// get fetches a path of a fake server without keeping connections open.
func get(t *testing.T, endpoint, path string) string {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + endpoint + path)
	if err != nil {
		t.Fatalf("GET %s%s: %v", endpoint, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s%s: %s", endpoint, path, resp.Status)
	}
	return strings.TrimSpace(string(b))
}

// fakeMetrics is a MetricsSource whose answers the test sets.
type fakeMetrics struct {
	running atomic.Int64
	fail    atomic.Bool
	scrapes atomic.Int64
}

func (f *fakeMetrics) Scrape(_ context.Context, _, dialect, url string) (*llmscalerv1.QueueMetrics, error) {
	f.scrapes.Add(1)
	if dialect != "vllm" || !strings.HasSuffix(url, "/metrics") {
		return nil, fmt.Errorf("unexpected dialect %q or url %q", dialect, url)
	}
	if f.fail.Load() {
		return nil, errors.New("scrape failed")
	}
	return &llmscalerv1.QueueMetrics{Running: float64(f.running.Load())}, nil
}

func TestStartReady(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{})
	select {
	case <-h.s.Changed():
	default:
	}
	h.start("i-1", "llama", "serve", 2)
	st := h.status("i-1")
	if st.GetPhase() != starting || st.GetPid() == 0 || !strings.HasPrefix(st.GetEndpoint(), "127.0.0.1:") {
		t.Fatalf("right after Start: %v; want STARTING with a pid and an endpoint", st)
	}
	if got := h.s.UsedGPUs(); len(got) != 1 || got[2] != "i-1" {
		t.Errorf("UsedGPUs = %v, want map[2:i-1]", got)
	}

	st = h.waitPhase("i-1", ready)
	cold := st.GetColdStart().AsDuration()
	if cold < 200*time.Millisecond || cold > waitLong {
		t.Errorf("cold start %s; the server is healthy after 200ms", cold)
	}
	if got := st.GetReadyAt().AsTime().Sub(st.GetStartedAt().AsTime()); (got - cold).Abs() > time.Millisecond {
		t.Errorf("ready_at - started_at = %s, cold_start = %s", got, cold)
	}
	select {
	case <-h.s.Changed():
	default:
		t.Error("Changed was not signalled")
	}
	if got := get(t, st.GetEndpoint(), "/count"); got != "1" {
		t.Errorf("GET /count = %q, want 1", got)
	}

	// The state file has what the next agent needs, once the write that follows the change
	// is done: it is made outside the lock that Instances takes.
	var b []byte
	waitForf(t, waitLong, func() string {
		return fmt.Sprintf("the state file to hold the READY instance with pid %d and its start time; it has\n%s", st.GetPid(), b)
	}, func() bool {
		var err error
		if b, err = os.ReadFile(filepath.Join(h.dir, "instances.json")); err != nil {
			return false
		}
		var sf stateFile
		if err := json.Unmarshal(b, &sf); err != nil {
			return false
		}
		return len(sf.Instances) == 1 && sf.Instances[0].PID == int(st.GetPid()) && sf.Instances[0].StartTime != 0 &&
			sf.Instances[0].Phase == ready && bytes.Contains(b, []byte(`"phase": "INSTANCE_PHASE_READY"`)) &&
			strings.HasSuffix(st.GetEndpoint(), ":"+strconv.Itoa(sf.Instances[0].Port))
	})
}

func TestPlaceholdersReachTheServer(t *testing.T) {
	// Not parallel: it sets the agent's own CUDA_VISIBLE_DEVICES, which must not leak.
	t.Setenv("CUDA_VISIBLE_DEVICES", "7")
	h := newHarness(t, Config{})
	tests := []struct {
		id, profile string
		gpus        []uint32
		wantCVD     string
	}{
		{"one-gpu", "serve", []uint32{2}, "2"},
		{"two-gpus", "two", []uint32{3, 1}, "3,1"},
		{"cpu-only", "cpu", nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.id, func(t *testing.T) {
			h.start(tc.id, "llama", tc.profile, tc.gpus...)
			st := h.status(tc.id)
			port := st.GetEndpoint()[strings.LastIndex(st.GetEndpoint(), ":")+1:]
			h.waitLog(tc.id, "listening")
			log := h.logOf(tc.id)
			gpus := strings.Trim(strings.ReplaceAll(fmt.Sprint(tc.gpus), " ", ","), "[]")
			for _, want := range []string{
				fmt.Sprintf(`env CUDA_VISIBLE_DEVICES set=true value=%q`, tc.wantCVD),
				fmt.Sprintf(`"--host" "127.0.0.1" "--port" %q "--gpus" %q "--id" %q "--deployment" "llama"`, port, gpus, tc.id),
				fmt.Sprintf(`env TEST_EXTRA="dep=llama id=%s"`, tc.id),
			} {
				if !strings.Contains(log, want) {
					t.Errorf("log does not hold %s:\n%s", want, log)
				}
			}
			if err := h.s.Stop(&llmscalerv1.StopInstance{InstanceId: tc.id}); err != nil {
				t.Fatal(err)
			}
			h.waitPhase(tc.id, stopped)
		})
	}
}

func TestStartIsIdempotentAndChecked(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{})
	h.start("i-1", "llama", "serve", 0)
	first := h.status("i-1")
	h.start("i-1", "llama", "serve", 0) // resent: nothing happens
	if got := h.status("i-1"); got.GetPid() != first.GetPid() || len(h.spawned()) != 1 {
		t.Errorf("repeated Start started another process: pid %d then %d, %d spawned", first.GetPid(), got.GetPid(), len(h.spawned()))
	}

	tests := []struct {
		name    string
		req     *llmscalerv1.StartInstance
		wantErr error
		wantMsg string
	}{
		{"bad instance id", &llmscalerv1.StartInstance{InstanceId: "no spaces", Deployment: "llama", Profile: "cpu"},
			ErrInvalidInstanceID, `"no spaces"`},
		{"bad deployment", &llmscalerv1.StartInstance{InstanceId: "i-2", Deployment: "Llama_3", Profile: "cpu"},
			ErrInvalidDeployment, `"Llama_3"`},
		{"unknown profile", &llmscalerv1.StartInstance{InstanceId: "i-2", Deployment: "llama", Profile: "vllm-70b"},
			ErrUnknownProfile, `"vllm-70b": this node's catalog has cpu, crash, crash0, once, serve, slow, spam, stubborn, two`},
		{"same id other gpus", &llmscalerv1.StartInstance{InstanceId: "i-1", Deployment: "llama", Profile: "serve", GpuIndices: []uint32{1}},
			ErrInstanceConflict, `instance "i-1" already exists`},
		{"same id other deployment", &llmscalerv1.StartInstance{InstanceId: "i-1", Deployment: "mistral", Profile: "serve", GpuIndices: []uint32{0}},
			ErrInstanceConflict, `deployment "llama"`},
		{"same id other profile", &llmscalerv1.StartInstance{InstanceId: "i-1", Deployment: "llama", Profile: "cpu"},
			ErrInstanceConflict, `profile "serve"`},
		{"too few gpus", &llmscalerv1.StartInstance{InstanceId: "i-2", Deployment: "llama", Profile: "serve"},
			ErrGPUCount, `profile "serve" takes 1 GPUs per instance, got 0`},
		{"too many gpus", &llmscalerv1.StartInstance{InstanceId: "i-2", Deployment: "llama", Profile: "serve", GpuIndices: []uint32{1, 2}},
			ErrGPUCount, "got 2"},
		{"gpus for a cpu profile", &llmscalerv1.StartInstance{InstanceId: "i-2", Deployment: "llama", Profile: "cpu", GpuIndices: []uint32{1}},
			ErrGPUCount, `profile "cpu" takes 0 GPUs`},
		{"gpu twice", &llmscalerv1.StartInstance{InstanceId: "i-2", Deployment: "llama", Profile: "two", GpuIndices: []uint32{1, 1}},
			ErrGPUCount, "lists GPU 1 twice"},
		{"gpu not on node", &llmscalerv1.StartInstance{InstanceId: "i-2", Deployment: "llama", Profile: "serve", GpuIndices: []uint32{9}},
			ErrGPUNotOnNode, "GPU 9 is not on this node, which has GPUs [0 1 2 3]"},
		{"gpu in use", &llmscalerv1.StartInstance{InstanceId: "i-2", Deployment: "llama", Profile: "two", GpuIndices: []uint32{1, 0}},
			ErrGPUInUse, `GPU 0 is used by instance "i-1"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := h.s.Start(tc.req)
			if !errors.Is(err, tc.wantErr) || !strings.Contains(fmt.Sprint(err), tc.wantMsg) {
				t.Errorf("Start = %v, want %v with %q", err, tc.wantErr, tc.wantMsg)
			}
		})
	}
	if n := len(h.spawned()); n != 1 {
		t.Errorf("%d processes started, want 1", n)
	}
	if err := h.s.Stop(&llmscalerv1.StopInstance{InstanceId: "i-9"}); !errors.Is(err, ErrUnknownInstance) {
		t.Errorf("Stop of an unknown instance = %v, want ErrUnknownInstance", err)
	}
}

func TestStopDrains(t *testing.T) {
	t.Parallel()
	m := &fakeMetrics{}
	m.running.Store(2)
	h := newHarness(t, Config{Metrics: m})
	h.start("i-1", "llama", "serve", 1)
	st := h.waitStatus("i-1", "to be READY with metrics", func(st *llmscalerv1.InstanceStatus) bool {
		return st.GetPhase() == ready && st.GetMetrics().GetRunning() == 2
	})
	pid := int(st.GetPid())

	// A failed scrape counts and keeps the last values.
	m.fail.Store(true)
	st = h.waitStatus("i-1", "to count a scrape error", func(st *llmscalerv1.InstanceStatus) bool {
		return st.GetMetrics().GetScrapeErrors() > 0
	})
	if st.GetMetrics().GetRunning() != 2 {
		t.Errorf("after a failed scrape running = %v, want the last value 2", st.GetMetrics().GetRunning())
	}
	m.fail.Store(false)

	if err := h.s.Stop(&llmscalerv1.StopInstance{InstanceId: "i-1", Reason: "scale down"}); err != nil {
		t.Fatal(err)
	}
	if got := h.status("i-1").GetPhase(); got != draining {
		t.Fatalf("right after Stop the phase is %v, want DRAINING", got)
	}
	// While requests run, it keeps draining and its process keeps running.
	n := m.scrapes.Load()
	waitFor(t, waitLong, "more scrapes", func() bool { return m.scrapes.Load() >= n+5 })
	if st := h.status("i-1"); st.GetPhase() != draining || syscall.Kill(pid, 0) != nil {
		t.Fatalf("with requests running: %v; want DRAINING with the process alive", st)
	}
	if got := h.s.UsedGPUs(); got[1] != "i-1" {
		t.Errorf("UsedGPUs while draining = %v, want GPU 1 held", got)
	}
	if err := h.s.Stop(&llmscalerv1.StopInstance{InstanceId: "i-1"}); err != nil {
		t.Errorf("second Stop = %v, want nil", err)
	}

	m.running.Store(0)
	st = h.waitPhase("i-1", stopped)
	groupGone(t, pid)
	if !strings.Contains(h.logOf("i-1"), "got terminated") {
		t.Errorf("the server did not get SIGTERM; log:\n%s", h.logOf("i-1"))
	}
	if st.GetMessage() != "stopped: scale down" {
		t.Errorf("message = %q, want %q", st.GetMessage(), "stopped: scale down")
	}
	if got := h.s.UsedGPUs(); len(got) != 0 {
		t.Errorf("UsedGPUs after the stop = %v, want none", got)
	}
	if err := h.s.Stop(&llmscalerv1.StopInstance{InstanceId: "i-1"}); err != nil {
		t.Errorf("Stop of a stopped instance = %v, want nil", err)
	}
}

func TestStopDrainTimeout(t *testing.T) {
	t.Parallel()
	m := &fakeMetrics{}
	m.running.Store(5) // never drains
	h := newHarness(t, Config{Metrics: m})
	h.start("i-1", "llama", "cpu")
	h.waitPhase("i-1", ready)
	begin := time.Now()
	if err := h.s.Stop(&llmscalerv1.StopInstance{InstanceId: "i-1", DrainTimeout: durationpb.New(300 * time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	h.waitPhase("i-1", stopped)
	if took := time.Since(begin); took < 300*time.Millisecond {
		t.Errorf("stopped after %s, before the 300ms drain timeout", took)
	}
}

func TestStopStartingSkipsDrain(t *testing.T) {
	t.Parallel()
	m := &fakeMetrics{}
	m.running.Store(5)
	h := newHarness(t, Config{Metrics: m})
	h.start("i-1", "llama", "slow")
	pid := int(h.status("i-1").GetPid())
	if err := h.s.Stop(&llmscalerv1.StopInstance{InstanceId: "i-1"}); err != nil {
		t.Fatal(err)
	}
	h.waitPhase("i-1", stopped) // the profile's 60s drain timeout would fail the wait
	groupGone(t, pid)
}

func TestStopKillsAfterGrace(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{})
	h.start("i-1", "llama", "stubborn")
	st := h.waitPhase("i-1", ready)
	pid := int(st.GetPid())
	h.waitLog("i-1", "listening") // its SIGTERM handler is in place
	begin := time.Now()
	if err := h.s.Stop(&llmscalerv1.StopInstance{InstanceId: "i-1"}); err != nil {
		t.Fatal(err)
	}
	st = h.waitPhase("i-1", stopped)
	if took := time.Since(begin); took < 300*time.Millisecond {
		t.Errorf("stopped after %s, before stop_grace 300ms", took)
	}
	groupGone(t, pid)
	if log := h.logOf("i-1"); !strings.Contains(log, "got terminated\nignoring it") {
		t.Errorf("the server was not sent SIGTERM first; log:\n%s", log)
	}
	if st.GetExitCode() != 128+int32(syscall.SIGKILL) {
		t.Errorf("exit code %d, want %d (SIGKILL)", st.GetExitCode(), 128+int32(syscall.SIGKILL))
	}
}

func TestRestartAfterKill(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{})
	h.start("i-1", "llama", "serve", 3)
	first := h.waitPhase("i-1", ready)
	if err := syscall.Kill(-int(first.GetPid()), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	st := h.waitStatus("i-1", "to be READY again after one restart", func(st *llmscalerv1.InstanceStatus) bool {
		return st.GetPhase() == ready && st.GetRestarts() == 1
	})
	if st.GetPid() == first.GetPid() || st.GetExitCode() != 128+int32(syscall.SIGKILL) {
		t.Errorf("after the restart: pid %d (was %d), exit code %d; want a new pid and exit code 137", st.GetPid(), first.GetPid(), st.GetExitCode())
	}
	if got := h.s.UsedGPUs(); got[3] != "i-1" {
		t.Errorf("UsedGPUs = %v, want GPU 3 still held", got)
	}
	get(t, st.GetEndpoint(), "/count")
}

func TestCrashLoopFails(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{})
	h.start("i-1", "llama", "crash")
	st := h.waitPhase("i-1", failed)
	if st.GetRestarts() != 1 || st.GetExitCode() != 3 || len(h.spawned()) != 2 {
		t.Errorf("FAILED with restarts %d, exit code %d, %d processes; want 1, 3, 2", st.GetRestarts(), st.GetExitCode(), len(h.spawned()))
	}
	for _, want := range []string{"exited with code 3 after 1 restarts", "last lines of its log:\n", "crash line 0\ncrash line 1\ncrash line 2\ncrash line 3\ncrash line 4"} {
		if !strings.Contains(st.GetMessage(), want) {
			t.Errorf("message does not hold %q:\n%s", want, st.GetMessage())
		}
	}
	if n := strings.Count(st.GetMessage(), "\n"); n > tailLines {
		t.Errorf("message has %d lines of log, want at most %d", n, tailLines)
	}
	if err := h.s.Stop(&llmscalerv1.StopInstance{InstanceId: "i-1"}); err != nil {
		t.Fatal(err)
	}
	if st := h.status("i-1"); st.GetPhase() != stopped {
		t.Errorf("a FAILED instance that is stopped is %v, want STOPPED", st.GetPhase())
	}
}

func TestStartupTimeout(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{})
	h.start("i-1", "llama", "slow")
	pid := int(h.status("i-1").GetPid())
	st := h.waitPhase("i-1", failed)
	if !strings.Contains(st.GetMessage(), "not healthy within startup_timeout 500ms") {
		t.Errorf("message = %q", st.GetMessage())
	}
	groupGone(t, pid)
	if len(h.spawned()) != 1 {
		t.Errorf("%d processes started, want 1: a startup timeout is not restarted", len(h.spawned()))
	}
}

func TestReadopt(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	h1 := newHarness(t, Config{DataDir: dir})
	h1.start("i-1", "llama", "serve", 0)
	first := h1.waitPhase("i-1", ready)
	h1.stopRun() // the agent goes away; the server stays

	m := &fakeMetrics{}
	h2 := newHarness(t, Config{DataDir: dir, Metrics: m,
		RestartBackoff: backoff.Config{Base: time.Second, Multiplier: 2, Max: time.Second}})
	st := h2.status("i-1")
	if st.GetPhase() != ready || st.GetPid() != first.GetPid() || st.GetEndpoint() != first.GetEndpoint() {
		t.Fatalf("after New: %v; want READY with pid %d at %s", st, first.GetPid(), first.GetEndpoint())
	}
	if got := h2.s.UsedGPUs(); got[0] != "i-1" {
		t.Errorf("UsedGPUs = %v, want GPU 0 held by the adopted instance", got)
	}
	// Several ticks later it still runs as it was: nothing was started.
	waitFor(t, waitLong, "scrapes of the adopted instance", func() bool { return m.scrapes.Load() >= 5 })
	st = h2.status("i-1")
	if st.GetPhase() != ready || st.GetPid() != first.GetPid() || st.GetRestarts() != 0 || len(h2.spawned()) != 0 {
		t.Fatalf("adopted: %v, %d started; want READY with pid %d, no restarts", st, len(h2.spawned()), first.GetPid())
	}
	if got := get(t, st.GetEndpoint(), "/count"); got != "1" {
		t.Errorf("GET /count = %s, want 1", got)
	}

	// An adopted server that dies is restarted; its exit code is unknown.
	if err := syscall.Kill(-int(first.GetPid()), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	st = h2.waitStatus("i-1", "to be restarting", func(st *llmscalerv1.InstanceStatus) bool { return st.GetRestarts() == 1 })
	if st.GetExitCode() != -1 || !strings.Contains(st.GetMessage(), "exit code is unknown") {
		t.Errorf("after the adopted process died: exit code %d, message %q; want -1 and an unknown exit code", st.GetExitCode(), st.GetMessage())
	}
	st = h2.waitPhase("i-1", ready)
	if st.GetPid() == first.GetPid() || len(h2.spawned()) != 1 {
		t.Errorf("restarted with pid %d (was %d), %d started", st.GetPid(), first.GetPid(), len(h2.spawned()))
	}
}

func TestReadoptDrainingContinues(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	m1 := &fakeMetrics{}
	m1.running.Store(1)
	h1 := newHarness(t, Config{DataDir: dir, Metrics: m1})
	h1.start("i-1", "llama", "cpu")
	first := h1.waitPhase("i-1", ready)
	if err := h1.s.Stop(&llmscalerv1.StopInstance{InstanceId: "i-1"}); err != nil {
		t.Fatal(err)
	}
	h1.stopRun()

	m2 := &fakeMetrics{} // reports idle
	h2 := newHarness(t, Config{DataDir: dir, Metrics: m2})
	if st := h2.status("i-1"); st.GetPhase() != draining || st.GetPid() != first.GetPid() {
		t.Fatalf("after New: %v; want DRAINING with pid %d", st, first.GetPid())
	}
	h2.waitPhase("i-1", stopped)
	groupGone(t, int(first.GetPid()))
	if len(h2.spawned()) != 0 {
		t.Errorf("%d processes started, want none", len(h2.spawned()))
	}
}

func TestNotAdoptedWhenStartTimeDiffers(t *testing.T) {
	t.Parallel()
	// An unrelated live process that happens to have the recorded pid.
	other := exec.Command(os.Args[0], "--port", "0")
	other.Env = append(os.Environ(), serverModeEnv+"=serve")
	other.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-other.Process.Pid, syscall.SIGKILL)
		_ = other.Wait()
	})
	ps, err := readProcStat(other.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	rec := record{
		InstanceID: "i-1", Deployment: "llama", Profile: "cpu", Phase: ready,
		PID: other.Process.Pid, StartTime: ps.startTime + 1, Running: true, Port: 1, StartedAt: time.Now().Add(-time.Hour),
	}
	if err := writeState(dir, []record{rec}); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, Config{DataDir: dir})
	st := h.waitStatus("i-1", "to be READY after a restart", func(st *llmscalerv1.InstanceStatus) bool {
		return st.GetPhase() == ready && st.GetRestarts() == 1
	})
	if st.GetPid() == int64(other.Process.Pid) || len(h.spawned()) != 1 {
		t.Errorf("pid %d, %d started; want a new process, not the unrelated pid %d", st.GetPid(), len(h.spawned()), other.Process.Pid)
	}
	if !processAlive(other.Process.Pid, ps.startTime) {
		t.Error("the unrelated process was signalled")
	}
}

func TestLogCopyTruncate(t *testing.T) {
	t.Parallel()
	const max = 4096
	h := newHarness(t, Config{LogMaxBytes: max})
	h.start("i-1", "llama", "spam")
	logPath := filepath.Join(h.dir, "logs", "i-1.log")
	var cur, old []byte
	waitFor(t, waitLong, "a rotated log and writes after it", func() bool {
		var err error
		old, err = os.ReadFile(logPath + ".1")
		if err != nil || len(old) <= max {
			return false
		}
		cur, err = os.ReadFile(logPath)
		return err == nil && bytes.Count(cur, []byte("\n")) >= 3
	})
	if bytes.IndexByte(cur, 0) >= 0 {
		t.Errorf("the log has NUL bytes after the truncation: the server does not append")
	}
	if !bytes.HasPrefix(cur, bytes.Repeat([]byte("x"), 99)) && !bytes.HasPrefix(cur, []byte("fakeserver")) {
		t.Errorf("the log does not start with a server line: %.120q", cur)
	}
	if !bytes.Contains(old, []byte("xxxx\n")) {
		t.Errorf("the rotated log does not hold the server's lines: %.120q", old)
	}
}

func TestForgetEndedInstances(t *testing.T) {
	t.Parallel()
	var offset atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	h := newHarness(t, Config{Now: now})
	h.start("done", "llama", "cpu")
	h.waitPhase("done", ready)
	if err := h.s.Stop(&llmscalerv1.StopInstance{InstanceId: "done"}); err != nil {
		t.Fatal(err)
	}
	h.waitPhase("done", stopped)
	h.start("bad", "llama", "crash0")
	h.waitPhase("bad", failed)

	offset.Add(int64(StoppedRetention + time.Second))
	waitFor(t, waitLong, "the stopped instance to be forgotten", func() bool { return h.status("done") == nil })
	if h.status("bad") == nil {
		t.Fatal("the FAILED instance was forgotten after a minute")
	}
	offset.Add(int64(FailedRetention))
	waitFor(t, waitLong, "the failed instance to be forgotten", func() bool { return h.status("bad") == nil })

	h.stopRun()
	recs, err := readState(h.dir)
	if err != nil || len(recs) != 0 {
		t.Errorf("state file holds %v (%v), want no instances", recs, err)
	}
}

func TestProcStat(t *testing.T) {
	t.Parallel()
	st, err := readProcStat(os.Getpid())
	if err != nil || st.startTime == 0 || st.state == 0 {
		t.Fatalf("readProcStat(self) = %+v, %v", st, err)
	}
	if !processAlive(os.Getpid(), st.startTime) || processAlive(os.Getpid(), st.startTime+1) {
		t.Error("processAlive does not tell the start time apart")
	}
	if _, err := readProcStat(0); err == nil {
		t.Error("readProcStat(0) succeeded")
	}
}

func TestLostProfileIsNotRestarted(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	rec := record{
		InstanceID: "i-1", Deployment: "llama", Profile: "removed", GPUs: []uint32{1}, Phase: starting,
		PID: 1, Restarts: 1, ExitCode: 9, RestartAt: time.Now(), StartedAt: time.Now().Add(-time.Hour),
	}
	if err := writeState(dir, []record{rec}); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, Config{DataDir: dir})
	st := h.waitPhase("i-1", failed)
	if !strings.Contains(st.GetMessage(), `profile "removed" is no longer in the catalog`) || len(h.spawned()) != 0 {
		t.Errorf("message %q, %d started; want FAILED for the lost profile, nothing started", st.GetMessage(), len(h.spawned()))
	}
	if got := h.s.UsedGPUs(); len(got) != 0 {
		t.Errorf("UsedGPUs = %v, want none", got)
	}
}

func TestHungServerIsKilledAndRestarted(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{HealthInterval: 100 * time.Millisecond, UnhealthyChecks: 3,
		RestartBackoff: backoff.Config{Base: time.Second, Multiplier: 2, Max: time.Second}})
	h.start("i-1", "llama", "serve", 2)
	first := h.waitPhase("i-1", ready)
	// SIGSTOP freezes the server as a deadlock would: the process lives, nothing answers.
	if err := syscall.Kill(-int(first.GetPid()), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waiting := h.waitStatus("i-1", "to wait for a restart, saying it hung", func(st *llmscalerv1.InstanceStatus) bool {
		return st.GetPhase() == starting && strings.Contains(st.GetMessage(), "hung: not healthy for 3 checks")
	})
	if !strings.Contains(waiting.GetMessage(), "restart 1 of") {
		t.Errorf("message %q, want the restart it waits for", waiting.GetMessage())
	}
	st := h.waitStatus("i-1", "to be READY again after the restart", func(st *llmscalerv1.InstanceStatus) bool {
		return st.GetPhase() == ready && st.GetRestarts() == 1
	})
	if st.GetPid() == first.GetPid() || st.GetExitCode() != 128+int32(syscall.SIGKILL) {
		t.Errorf("after the restart: pid %d (was %d), exit code %d; want a new pid and 137", st.GetPid(), first.GetPid(), st.GetExitCode())
	}
	if len(h.spawned()) != 2 {
		t.Errorf("%d processes started, want 2", len(h.spawned()))
	}
	get(t, st.GetEndpoint(), "/count")
}

func TestHealthyServerIsLeftAlone(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{HealthInterval: 50 * time.Millisecond, UnhealthyChecks: 2})
	h.start("i-1", "llama", "serve", 1)
	first := h.waitPhase("i-1", ready)
	time.Sleep(time.Second) // twenty checks
	if st := h.status("i-1"); st.GetPhase() != ready || st.GetPid() != first.GetPid() || st.GetRestarts() != 0 {
		t.Errorf("a healthy server was touched: %v", st)
	}
}

func TestOldLogsOfForgottenInstancesAreDeleted(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{})
	// The watch loop sweeps on its first tick, with its own (empty) set of instances: wait
	// for that sweep, or it races this test's and deletes live.log.
	deadline := time.Now().Add(10 * time.Second)
	for {
		h.s.mu.Lock()
		swept := !h.s.sweptAt.IsZero()
		h.s.mu.Unlock()
		if swept {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the watch loop never swept the logs")
		}
		time.Sleep(5 * time.Millisecond)
	}
	dir := filepath.Join(h.dir, "logs")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	old := now.Add(-LogRetention - time.Hour)
	files := map[string]time.Time{
		"gone.log":   old, // forgotten and old: deleted
		"gone.log.1": old,
		"recent.log": now.Add(-time.Hour), // forgotten but recent: kept
		"live.log":   old,                 // an instance still known: kept
		"notes.txt":  old,                 // not a log: kept
		".log":       old,                 // no instance id: kept
	}
	for name, mtime := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("x\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	h.s.sweepLogs(map[string]bool{"live": true}, now)
	for name := range files {
		_, err := os.Stat(filepath.Join(dir, name))
		deleted := errors.Is(err, os.ErrNotExist)
		if want := name == "gone.log" || name == "gone.log.1"; deleted != want {
			t.Errorf("%s: deleted %v, want %v", name, deleted, want)
		}
	}
}
