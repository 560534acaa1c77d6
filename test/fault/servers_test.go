//go:build linux

package fault

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// stallCatalog's server models llama.cpp's llama-server, whose /health stops answering in
// time while it works through a queue (--health-stall-busy), and starts in 3 s, so that a
// restarted instance is STARTING, with the reason of its restart as its message, long enough
// for a poll to see it.
const stallCatalog = `profiles:
  - name: fake-llm
    command: [%q, "fakeserver", "--host", "{host}", "--port", "{port}", "--model", "{deployment}", "--hardware", "cpu-tiny", "--cold-start", "3s", "--health-stall-busy", "30s"]
    dialect: vllm
    gpus: 1
    gpu_memory_mib: 1000
    startup_timeout: 60s
    drain_timeout: 20s
    stop_grace: 5s
    max_in_flight: 8
`

// TestServerFaults runs one deployment of three servers, one on each agent host, under load
// through the router, and breaks two of them at once while the third is only busy:
//   - crash: kill -9 of the server process, as an engine that aborts on a CUDA error or is
//     killed by the kernel's OOM killer;
//   - hang: SIGSTOP of the server process, as an engine wedged in a driver call or deadlocked:
//     the process lives, but neither /health nor /metrics answer;
//   - busy: a second load sent straight to the server, above what it serves, so it has a
//     queue the whole time and its /health stalls (as llama-server's does) while its metrics
//     show it working.
//
// The agents check health every second and take three silent checks without progress for a
// hang. The crashed and the hung server must be replaced (a new process READY, the count back
// at three) with the reason (the exit signal; the hang and its failed health checks) in the
// instance's message; the busy one must be left alone: the same instance and process READY
// throughout, and every request sent straight to it answered. Requests through the router
// that were in flight on the two broken servers may fail; they are counted, and bounded by
// the router's cap on each server's requests.
func TestServerFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a nine-host fleet")
	}
	f := newFleetWith(t, "sf", fleetConfig{catalog: stallCatalog, agentArgs: []string{"--health-interval", "1s", "--unhealthy-checks", "3"}})
	addr := f.ctrlHosts[0].at(grpcPort)
	servers := f.deploy(t, addr, 3, 3, 3)
	slices.SortFunc(servers, func(a, b *llmscalerv1.InstanceStatus) int { return strings.Compare(a.GetEndpoint(), b.GetEndpoint()) })
	hosts := map[string]bool{}
	for _, in := range servers {
		hosts[strings.Split(in.GetEndpoint(), ":")[0]] = true
	}
	if len(hosts) != 3 {
		t.Fatalf("instances on %d hosts, want one on each agent: %v", len(hosts), servers)
	}
	crash, hang, busy := servers[0], servers[1], servers[2]
	t.Logf("crash %s (pid %d at %s), hang %s (pid %d at %s), busy %s (pid %d at %s)",
		crash.GetInstanceId(), crash.GetPid(), crash.GetEndpoint(), hang.GetInstanceId(), hang.GetPid(), hang.GetEndpoint(),
		busy.GetInstanceId(), busy.GetPid(), busy.GetEndpoint())

	const loadFor = 25 * time.Second
	dir := t.TempDir()
	routed, direct := filepath.Join(dir, "routed.json"), filepath.Join(dir, "direct.json")
	loadRouted := f.router.start(t, "load-router", bin(t, "llmscaler"), "load", "--router", "http://"+f.router.at(routerPort),
		"--deployment", f.model, "--rps", "6", "--duration", loadFor.String(), "--json", routed, "--progress-interval", "5s")
	// cpu-tiny serves about 5 req/s of 128 tokens in a full batch of 8: with the router's share
	// on top, 5 req/s keep a queue.
	loadDirect := f.router.start(t, "load-direct", bin(t, "llmscaler"), "load", "--url", "http://"+busy.GetEndpoint(),
		"--model", f.model, "--rps", "5", "--prompt-tokens", "64", "--output-tokens", "128", "--duration", loadFor.String(),
		"--json", direct, "--progress-interval", "5s")

	// The busy server is left alone: checked on every poll from here to the end.
	sawBusy := false
	checkBusy := func(all []*llmscalerv1.InstanceStatus) {
		t.Helper()
		for _, in := range all {
			if in.GetInstanceId() != busy.GetInstanceId() {
				continue
			}
			if in.GetPhase() != llmscalerv1.InstancePhase_INSTANCE_PHASE_READY || in.GetPid() != busy.GetPid() || in.GetRestarts() != 0 {
				t.Fatalf("the busy server was not left alone: %s %v pid %d (was %d) restarts %d: %q",
					in.GetInstanceId(), in.GetPhase(), in.GetPid(), busy.GetPid(), in.GetRestarts(), in.GetMessage())
			}
			sawBusy = sawBusy || strings.Contains(in.GetMessage(), "making progress")
			return
		}
		t.Fatalf("the busy server %s is no longer listed", busy.GetInstanceId())
	}
	eventually(t, 20*time.Second, "the agent seeing the busy server's health check fail while it works", func() error {
		all, err := f.instances(addr)
		if err != nil {
			return err
		}
		checkBusy(all)
		if !sawBusy {
			return fmt.Errorf("not seen busy yet")
		}
		return nil
	})

	// The fleet's events from before the faults to after the recovery: each restart must
	// be there with its reason, which the instance's own message loses once READY again.
	evctx, stopEvents := context.WithCancel(context.Background())
	defer stopEvents()
	eventsOut := make(chan string, 1)
	go func() {
		out, _ := f.router.run(evctx, grpcurlPath(t), "-plaintext", "-connect-timeout", "2", addr, "llmscaler.v1.AdminService/WatchEvents")
		eventsOut <- out
	}()
	time.Sleep(time.Second) // the watch is up before the faults

	broke := time.Now()
	if err := syscall.Kill(int(crash.GetPid()), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(int(hang.GetPid()), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// Until both are replaced: the reasons the instances give while they are not READY, and
	// when each was back.
	type broken struct {
		in            *llmscalerv1.InstanceStatus
		reasons       []string
		down, back    time.Duration // first seen not READY; READY again with another process
		pid, restarts int64
	}
	watch := map[string]*broken{crash.GetInstanceId(): {in: crash}, hang.GetInstanceId(): {in: hang}}
	eventually(t, 90*time.Second, "the crashed and the hung server replaced", func() error {
		all, err := f.instances(addr)
		if err != nil {
			return err
		}
		checkBusy(all)
		now := time.Since(broke)
		ready := 0
		for _, in := range all {
			if in.GetPhase() == llmscalerv1.InstancePhase_INSTANCE_PHASE_READY {
				ready++
			}
			b := watch[in.GetInstanceId()]
			if b == nil {
				continue
			}
			if m := in.GetMessage(); m != "" && !slices.Contains(b.reasons, m) {
				b.reasons = append(b.reasons, m)
			}
			if in.GetPhase() != llmscalerv1.InstancePhase_INSTANCE_PHASE_READY && b.down == 0 {
				b.down = now
			}
			if in.GetPhase() == llmscalerv1.InstancePhase_INSTANCE_PHASE_READY && in.GetPid() != b.in.GetPid() && b.back == 0 {
				b.back, b.pid, b.restarts = now, in.GetPid(), int64(in.GetRestarts())
			}
		}
		for id, b := range watch {
			if b.back == 0 {
				return fmt.Errorf("%s not READY with a new process yet", id)
			}
		}
		if ready != 3 {
			return fmt.Errorf("%d READY", ready)
		}
		return nil
	})
	stopEvents()
	events := <-eventsOut
	for _, c := range []struct {
		name string
		in   *llmscalerv1.InstanceStatus
		want []string
	}{
		{"crashed", crash, []string{"killed by signal 9"}},
		{"hung", hang, []string{"hung", "not healthy"}},
	} {
		b := watch[c.in.GetInstanceId()]
		t.Logf("%s server %s: not READY %v after the fault, READY again %v after it as pid %d (restarts %d); its messages: %q",
			c.name, c.in.GetInstanceId(), b.down.Round(100*time.Millisecond), b.back.Round(100*time.Millisecond), b.pid, b.restarts, b.reasons)
		reason := strings.Join(b.reasons, " | ")
		var evs []string
		for _, line := range strings.Split(events, "\n") {
			if strings.Contains(line, `"message"`) && strings.Contains(line, c.in.GetInstanceId()) {
				evs = append(evs, strings.TrimSpace(line))
			}
		}
		for _, w := range c.want {
			if !strings.Contains(reason, w) {
				t.Errorf("%s server %s: no message says %q: %q", c.name, c.in.GetInstanceId(), w, b.reasons)
			}
			if !strings.Contains(strings.Join(evs, " | "), w) {
				t.Errorf("%s server %s: no event says %q: %q", c.name, c.in.GetInstanceId(), w, evs)
			}
		}
		if err := syscall.Kill(int(c.in.GetPid()), 0); err == nil {
			t.Errorf("%s server's process %d still lives", c.name, c.in.GetPid())
		}
	}

	// The busy server stays alone to the end of the load.
	for _, l := range []*proc{loadRouted, loadDirect} {
		for running := true; running; {
			select {
			case <-l.done:
				running = false
			case <-time.After(time.Second):
				if all, err := f.instances(addr); err == nil {
					checkBusy(all)
				}
			}
		}
	}
	sr, sd := readLoadSummary(t, routed), readLoadSummary(t, direct)
	t.Logf("load through the router: %d sent, %d ok, errors %v; straight to the busy server: %d sent, %d ok, errors %v, TTFT p99 %.1fs",
		sr.Sent, sr.OK, sr.ByKind, sd.Sent, sd.OK, sd.ByKind, sd.TTFT.P99)
	if sd.Sent < 90 || sd.OK != sd.Sent {
		t.Errorf("straight to the busy server: %d sent, %d ok (%v): want every request answered", sd.Sent, sd.OK, sd.ByKind)
	}
	// Only requests in flight on the two broken servers may fail: at most the router's cap of
	// each (max_in_flight 8).
	if sr.Sent < 100 || sr.Sent-sr.OK > 16 {
		t.Errorf("through the router: %d sent, %d ok (%v): want at most the 16 in flight on the broken servers failed", sr.Sent, sr.OK, sr.ByKind)
	}
}
