//go:build linux

// Package e2e runs the real binaries as OS processes against real etcd and drives them with
// real grpcurl, as a user would.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// bin returns the path of one of the binaries: from $LLMSCALER_BIN (make test builds them),
// else built once for this test run.
func bin(t *testing.T, name string) string {
	t.Helper()
	if d := os.Getenv("LLMSCALER_BIN"); d != "" {
		return filepath.Join(d, name)
	}
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "llmscaler-e2e-bin-")
		if buildErr != nil {
			return
		}
		for _, b := range []string{"llmscaler-controller", "llmscaler-agent", "llmscaler-router", "llmscaler"} {
			out, err := exec.Command("go", "build", "-o", filepath.Join(binDir, b), "github.com/llmscaler/llmscaler/cmd/"+b).CombinedOutput()
			if err != nil {
				buildErr = fmt.Errorf("build %s: %v\n%s", b, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, name)
}

// grpcurlPath finds grpcurl. Under `make test` (LLMSCALER_BIN set) its absence is a failure,
// since the Makefile installs it; a bare `go test` without it skips.
func grpcurlPath(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("grpcurl")
	if err != nil {
		if os.Getenv("LLMSCALER_BIN") != "" {
			t.Fatal("grpcurl not on PATH; make test installs it into .tools/bin")
		}
		t.Skip("grpcurl not on PATH; run `make test`")
	}
	return p
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// proc is a started binary whose output goes to a log file shown when the test fails.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func start(t *testing.T, name, path string, args ...string) *proc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = f, f
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
			t.Logf("---- %s log ----\n%s", name, b)
		}
	})
	return p
}

// kill sends SIGKILL, as a crash would, and waits for the process to be gone.
func (p *proc) kill() {
	if p.cmd.Process != nil {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	}
	<-p.done
}

// grpcurlTLS holds grpcurl's -cacert, -cert and -key flags for each controller address that
// speaks mutual TLS (see useTLS); grpcurl reaches every other address in plaintext.
var grpcurlTLS sync.Map

// useTLS makes grpcurl, and the helpers built on it, reach the controller at addr with the
// certificate NAME.crt (admin, readonly, ...) of the set in dir, for the rest of the test.
func useTLS(t *testing.T, addr, dir, name string) {
	grpcurlTLS.Store(addr, tlsArgs(dir, name, "-"))
	t.Cleanup(func() { grpcurlTLS.Delete(addr) })
}

// tlsArgs are the flags that hand the set in dir's CA and the NAME.crt pair to a command:
// prefix "-" for grpcurl (-cacert, -cert, -key), "--" for llmscaler's binaries.
func tlsArgs(dir, name, prefix string) []string {
	if prefix == "-" {
		return []string{"-cacert", filepath.Join(dir, "ca.crt"), "-cert", filepath.Join(dir, name+".crt"), "-key", filepath.Join(dir, name+".key")}
	}
	return []string{"--tls-ca", filepath.Join(dir, "ca.crt"), "--tls-cert", filepath.Join(dir, name+".crt"), "--tls-key", filepath.Join(dir, name+".key")}
}

// certs makes a development set for the nodes with the real `llmscaler certs` and returns
// its directory.
func certs(t *testing.T, nodes ...string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tls")
	out, err := exec.Command(bin(t, "llmscaler"), "certs", "--out", dir, "--nodes", strings.Join(nodes, ",")).CombinedOutput()
	if err != nil {
		t.Fatalf("llmscaler certs: %v\n%s", err, out)
	}
	return dir
}

// grpcurl runs grpcurl against addr and returns its stdout; on failure the error holds stderr.
// An address useTLS named is reached with its certificate, any other in plaintext.
func grpcurl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	conn := []string{"-plaintext"}
	for _, a := range args {
		if v, ok := grpcurlTLS.Load(a); ok {
			conn = v.([]string)
			break
		}
	}
	return grpcurlWith(t, conn, args...)
}

// grpcurlWith runs grpcurl with the connection flags conn (-plaintext, or -cacert, -cert and
// -key) and args.
func grpcurlWith(t *testing.T, conn []string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, grpcurlPath(t), append(append(slices.Clip(conn), "-connect-timeout", "2"), args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("grpcurl %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// call runs one AdminService method with a JSON request and decodes the JSON reply into out.
func call(t *testing.T, addr, method, req string, out proto.Message) error {
	t.Helper()
	args := []string{}
	if req != "" {
		args = append(args, "-d", req)
	}
	args = append(args, addr, "llmscaler.v1.AdminService/"+method)
	s, err := grpcurl(t, args...)
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
		time.Sleep(50 * time.Millisecond) // polling an external process: nothing to select on
	}
	t.Fatalf("%s: not within %v: last error: %v", what, d, err)
	return 0
}

// serversOf returns the pids of the fakeservers that serve model: servers outlive their
// agent by design, so a test checks that none is left, and kills what is.
func serversOf(model string) []int {
	var pids []int
	out, _ := os.ReadDir("/proc")
	for _, e := range out {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if strings.Contains(string(b), "fakeserver") && strings.Contains(string(b), "--model\x00"+model+"\x00") {
			pids = append(pids, pid)
		}
	}
	return pids
}

// killServers kills the fakeservers of a deployment.
func killServers(model string) {
	for _, pid := range serversOf(model) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}
