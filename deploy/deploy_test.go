//go:build linux

// Package deploy_test keeps the files under deploy/ honest against the daemons they describe:
// the systemd units pass systemd-analyze verify, the Grafana dashboard queries only metrics
// the daemons expose, and the Prometheus scrape targets use the daemons' default ports.
package deploy_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// daemons are the binaries the deploy files describe.
var daemons = []string{"llmscaler-controller", "llmscaler-agent", "llmscaler-router"}

var (
	buildOnce sync.Once
	builtDir  string
	buildErr  error
)

// binDir returns the directory of the built binaries: $LLMSCALER_BIN (make test builds them),
// else a temporary directory they are built into once. In -short mode, with no
// $LLMSCALER_BIN, the test is skipped rather than build.
func binDir(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("LLMSCALER_BIN"); d != "" {
		return d
	}
	if testing.Short() {
		t.Skip("needs the binaries: set LLMSCALER_BIN (make test) or run without -short")
	}
	buildOnce.Do(func() {
		if builtDir, buildErr = os.MkdirTemp("", "llmscaler-deploy-bin-"); buildErr != nil {
			return
		}
		for _, b := range append([]string{"llmscaler"}, daemons...) {
			out, err := exec.Command("go", "build", "-o", filepath.Join(builtDir, b), "github.com/llmscaler/llmscaler/cmd/"+b).CombinedOutput()
			if err != nil {
				buildErr = fmt.Errorf("build %s: %v\n%s", b, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if builtDir != "" {
		os.RemoveAll(builtDir)
	}
	if err := goleak.Find(); code == 0 && err != nil {
		fmt.Fprintln(os.Stderr, "goleak:", err)
		code = 1
	}
	os.Exit(code)
}

// flagBlock matches one flag of the flag package's usage output: the "-name type" line and its
// indented usage lines.
var (
	flagBlock     = regexp.MustCompile(`(?m)^  -(\S+)[^\n]*\n((?:    \t[^\n]*\n?)*)`)
	flagDefault   = regexp.MustCompile(`\(default ("[^"]*"|[^)]*)\)\s*$`)
	defaultsCache sync.Map // binary path -> map[string]string
)

// flagDefaults runs a daemon with -help and returns each flag's default as the help states
// it: the flag package's "(default ...)", or one the usage text itself gives for flags whose
// zero value means a built-in default ("(default 10s)").
func flagDefaults(t *testing.T, name string) map[string]string {
	t.Helper()
	path := filepath.Join(binDir(t), name)
	if v, ok := defaultsCache.Load(path); ok {
		return v.(map[string]string)
	}
	out, err := exec.Command(path, "-help").CombinedOutput()
	if err != nil {
		t.Fatalf("%s -help: %v\n%s", name, err, out)
	}
	defaults := map[string]string{}
	for _, m := range flagBlock.FindAllStringSubmatch(string(out), -1) {
		if d := flagDefault.FindStringSubmatch(m[2]); d != nil {
			defaults[m[1]] = strings.Trim(d[1], `"`)
		}
	}
	if len(defaults) == 0 {
		t.Fatalf("%s -help: no flag defaults found in:\n%s", name, out)
	}
	defaultsCache.Store(path, defaults)
	return defaults
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

// startDaemon runs a binary in a process group of its own, its output in a log shown if the
// test fails, and kills the group when the test ends.
func startDaemon(t *testing.T, name string, args ...string) {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(binDir(t), name), args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(done)
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("---- %s log ----\n%s", name, b)
		}
	})
}

// waitFor polls f until it returns nil or d passes. The daemons are other processes: there
// is nothing to select on but time.
func waitFor(t *testing.T, d time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, d, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
