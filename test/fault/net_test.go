//go:build linux

// Package fault runs the control plane across hosts that the tests build themselves out of
// network namespaces (one per host, joined by veth pairs to a bridge in a namespace of its
// own, so the machine's own network is never touched) and injects the failures a fleet sees:
// a leader killed, a link cut. Every process is a real binary, run in its host's namespace.
// The tests need root (CAP_NET_ADMIN) and iproute2; without them they skip, saying so.
package fault

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// subnet is the hosts' network: 10.77.0.0/24, host N at 10.77.0.N.
const subnet = "10.77.0"

var nets atomic.Int64

// network is a set of hosts on one bridge.
type network struct {
	t     *testing.T
	id    string // prefix of every namespace and interface name: short, unique per test
	sw    string // the namespace that holds the bridge
	hosts int
}

// newNetwork makes the bridge's namespace, or skips the test where namespaces cannot be made.
func newNetwork(t *testing.T) *network {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the fault suite builds hosts out of network namespaces: it needs root (CAP_NET_ADMIN)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("the fault suite needs iproute2's ip (Debian package iproute2)")
	}
	n := &network{t: t, id: fmt.Sprintf("lf%d%d", os.Getpid()%1000, nets.Add(1))}
	n.sw = n.id + "-sw"
	if out, err := exec.Command("ip", "netns", "add", n.sw).CombinedOutput(); err != nil {
		t.Skipf("cannot make a network namespace here (%v: %s): the fault suite needs CAP_NET_ADMIN", err, bytes.TrimSpace(out))
	}
	t.Cleanup(n.close)
	n.ip(n.sw, "link", "add", "br0", "type", "bridge")
	n.ip(n.sw, "link", "set", "br0", "up")
	n.ip(n.sw, "link", "set", "lo", "up")
	return n
}

// close removes every namespace of the network; their interfaces go with them.
func (n *network) close() {
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], n.id+"-") {
			_ = exec.Command("ip", "netns", "del", f[0]).Run()
		}
	}
}

// ip runs `ip -n ns args...` (ns "" is the machine's own namespace) and fails the test on error.
func (n *network) ip(ns string, args ...string) {
	n.t.Helper()
	if ns != "" {
		args = append([]string{"-n", ns}, args...)
	}
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		n.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// host is one machine of the network.
type host struct {
	n    *network
	name string
	ns   string
	addr string // its IP address
}

// host adds a machine: a namespace with loopback and eth0 at the next address, cabled to
// the bridge.
func (n *network) host(name string) *host {
	n.t.Helper()
	n.hosts++
	h := &host{n: n, name: name, ns: n.id + "-" + name, addr: fmt.Sprintf("%s.%d", subnet, n.hosts)}
	n.ip("", "netns", "add", h.ns)
	a, b := fmt.Sprintf("%sa%d", n.id, n.hosts), fmt.Sprintf("%sb%d", n.id, n.hosts)
	n.ip("", "link", "add", a, "type", "veth", "peer", "name", b)
	n.ip("", "link", "set", a, "netns", h.ns)
	n.ip("", "link", "set", b, "netns", n.sw)
	n.ip(h.ns, "link", "set", a, "name", "eth0")
	n.ip(h.ns, "addr", "add", h.addr+"/24", "dev", "eth0")
	n.ip(h.ns, "link", "set", "eth0", "up")
	n.ip(h.ns, "link", "set", "lo", "up")
	n.ip(n.sw, "link", "set", b, "master", "br0")
	n.ip(n.sw, "link", "set", b, "up")
	return h
}

// at is the host's address with a port.
func (h *host) at(port int) string { return h.addr + ":" + strconv.Itoa(port) }

// cut takes the host's link down (its processes keep running, cut off) and restore brings
// it back.
func (h *host) cut()     { h.n.ip(h.ns, "link", "set", "eth0", "down") }
func (h *host) restore() { h.n.ip(h.ns, "link", "set", "eth0", "up") }

// proc is a process running on a host.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// start runs a binary on the host; its output goes to a log shown when the test fails.
func (h *host) start(t *testing.T, name, bin string, args ...string) *proc {
	t.Helper()
	return h.startEnv(t, name, nil, bin, args...)
}

// startEnv is start with variables added to the process's environment.
func (h *host) startEnv(t *testing.T, name string, env []string, bin string, args ...string) *proc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	// ip netns exec enters the namespace and execs the binary: the pid is the binary's.
	cmd := exec.Command("ip", append([]string{"netns", "exec", h.ns, bin}, args...)...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			if len(b) > 16<<10 {
				b = append([]byte("...\n"), b[len(b)-16<<10:]...)
			}
			t.Logf("---- %s log (%s) ----\n%s", name, h.name, b)
		}
	})
	return p
}

// kill sends SIGKILL to the process group, as a crash would, and waits for the process.
func (p *proc) kill() {
	if p.cmd.Process != nil {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	}
	<-p.done
}

// run runs a command on the host to its end and returns its stdout.
func (h *host) run(ctx context.Context, bin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.ns, bin}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s on %s: %v: %s", filepath.Base(bin), strings.Join(args, " "), h.name, err, stderr.String())
	}
	return stdout.String(), nil
}

// call runs one AdminService method with the real grpcurl from the host and decodes the
// reply into out.
func (h *host) call(t *testing.T, addr, method, req string, out proto.Message) error {
	t.Helper()
	args := []string{"-plaintext", "-connect-timeout", "2", "-max-time", "5"}
	if req != "" {
		args = append(args, "-d", req)
	}
	args = append(args, addr, "llmscaler.v1.AdminService/"+method)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := h.run(ctx, grpcurlPath(t), args...)
	if err != nil {
		return err
	}
	if out != nil {
		if err := protojson.Unmarshal([]byte(s), out); err != nil {
			return fmt.Errorf("decode %s reply %q: %w", method, s, err)
		}
	}
	return nil
}

// eventually polls f until it returns nil or d passes, and returns how long it took.
func eventually(t *testing.T, d time.Duration, what string, f func() error) time.Duration {
	t.Helper()
	start := time.Now()
	var err error
	for time.Since(start) < d {
		if err = f(); err == nil {
			return time.Since(start)
		}
		time.Sleep(100 * time.Millisecond) // polling processes in other namespaces
	}
	t.Fatalf("%s: not within %v: last error: %v", what, d, err)
	return 0
}

// bin is one of the binaries `make test` builds (LLMSCALER_BIN).
func bin(t *testing.T, name string) string {
	t.Helper()
	d := os.Getenv("LLMSCALER_BIN")
	if d == "" {
		t.Skip("the fault suite runs the built binaries: run `make test`, or set LLMSCALER_BIN to bin/ after `make build`")
	}
	return filepath.Join(d, name)
}

func grpcurlPath(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("grpcurl")
	if err != nil {
		t.Fatal("grpcurl not on PATH; make test installs it into .tools/bin")
	}
	return p
}

// killServers kills the fakeservers of a deployment: servers outlive their agent by design.
func killServers(model string) {
	out, _ := os.ReadDir("/proc")
	for _, e := range out {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if strings.Contains(string(b), "fakeserver") && strings.Contains(string(b), "--model\x00"+model+"\x00") {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}
