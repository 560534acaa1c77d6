//go:build linux

package deploy_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// unit is a parsed systemd unit file: section -> key -> values in file order.
type unit map[string]map[string][]string

// last is the value of the last assignment to key in section, which is the one that counts
// for the single-valued settings the tests look at.
func (u unit) last(section, key string) string {
	v := u[section][key]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

func readUnit(t *testing.T, path string) unit {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unit{}
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
		case strings.HasSuffix(line, `\`):
			t.Fatalf("%s:%d: continuation lines are not used here; keep settings on one line", path, n)
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: not key=value in a section: %q", path, n, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

func unitPath(daemon string) string { return filepath.Join("systemd", daemon+".service") }

// systemdTool finds one of systemd's tools. Missing, it fails the test with the package that
// provides it, except with -short, where it skips.
func systemdTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		msg := fmt.Sprintf("%s not found: install the Debian package systemd (apt-get install systemd); it runs without systemd as PID 1", name)
		if testing.Short() {
			t.Skip(msg)
		}
		t.Fatal(msg)
	}
	return p
}

// TestUnitsVerify runs `systemd-analyze verify` on each unit, with ExecStart pointing at the
// built binary, since verify checks that the command exists. Any output fails the test: verify
// exits 0 on unknown keys and bad values, and only warns.
func TestUnitsVerify(t *testing.T) {
	analyze := systemdTool(t, "systemd-analyze")
	// With -short and no built binaries, a stand-in executable is enough for verify, which
	// only checks that the command can be executed.
	bins := ""
	if os.Getenv("LLMSCALER_BIN") == "" && testing.Short() {
		bins = t.TempDir()
		for _, d := range daemons {
			if err := os.WriteFile(filepath.Join(bins, d), []byte("#!/bin/sh\n"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	} else {
		bins = binDir(t)
	}
	dir := t.TempDir()
	for _, d := range daemons {
		t.Run(d, func(t *testing.T) {
			b, err := os.ReadFile(unitPath(d))
			if err != nil {
				t.Fatal(err)
			}
			installed := "ExecStart=/usr/local/bin/" + d + " "
			if !strings.Contains(string(b), installed) {
				t.Fatalf("%s: no %q", unitPath(d), installed)
			}
			text := strings.Replace(string(b), installed, "ExecStart="+filepath.Join(bins, d)+" ", 1)
			path := filepath.Join(dir, d+".service")
			if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(analyze, "verify", "--man=no", path).CombinedOutput()
			if err != nil || len(out) > 0 {
				t.Errorf("systemd-analyze verify %s: %v\n%s", unitPath(d), err, out)
			}
		})
	}
}

// TestUnitsShape checks what the units promise beyond systemd's syntax: the command line,
// restarts, and an agent whose stop leaves the model servers running.
func TestUnitsShape(t *testing.T) {
	for _, d := range daemons {
		t.Run(d, func(t *testing.T) {
			u := readUnit(t, unitPath(d))
			short := strings.TrimPrefix(d, "llmscaler-")
			want := fmt.Sprintf("/usr/local/bin/%s --config /etc/llmscaler/%s.yaml", d, short)
			if got := u.last("Service", "ExecStart"); got != want {
				t.Errorf("ExecStart=%s, want %s", got, want)
			}
			for key, want := range map[string]string{"User": "llmscaler", "NoNewPrivileges": "yes", "Type": "exec"} {
				if got := u.last("Service", key); got != want {
					t.Errorf("%s=%s, want %s", key, got, want)
				}
			}
			for _, key := range []string{"Restart", "RestartSec", "TimeoutStopSec", "LimitNOFILE"} {
				if u.last("Service", key) == "" {
					t.Errorf("no %s=", key)
				}
			}
			for _, key := range []string{"After", "Wants"} {
				if !contains(u["Unit"][key], "network-online.target") {
					t.Errorf("not %s=network-online.target", key)
				}
			}
		})
	}
	agent := readUnit(t, unitPath("llmscaler-agent"))
	if got := agent.last("Service", "KillMode"); got != "process" {
		t.Errorf("agent KillMode=%s: a stop or restart of the agent would kill its model servers; want process", got)
	}
	if got := agent.last("Service", "OOMPolicy"); got != "continue" {
		t.Errorf("agent OOMPolicy=%s: one OOM-killed model server would stop the unit; want continue", got)
	}
	for _, key := range []string{"PrivateTmp", "PrivateDevices", "DevicePolicy", "DynamicUser", "RemoveIPC"} {
		if v := agent.last("Service", key); v != "" && v != "no" && v != "auto" {
			t.Errorf("agent %s=%s: it would reach the model servers, which need /tmp, the GPUs and their IPC", key, v)
		}
	}
}

func contains(values []string, word string) bool {
	for _, v := range values {
		for _, f := range strings.Fields(v) {
			if f == word {
				return true
			}
		}
	}
	return false
}

// TestUnitsMatchDaemons checks the units against the daemons' own defaults: stop timeouts
// that outlast their graceful shutdowns, and the agent's state directory where the agent
// looks for it.
func TestUnitsMatchDaemons(t *testing.T) {
	stopTimeout := func(d string) time.Duration {
		s := readUnit(t, unitPath(d)).last("Service", "TimeoutStopSec")
		v, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("%s TimeoutStopSec=%s: write it as a Go duration (30s): %v", d, s, err)
		}
		return v
	}
	shutdown := func(d string) time.Duration {
		s := flagDefaults(t, d)["shutdown-timeout"]
		v, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("%s --shutdown-timeout default %q: %v", d, s, err)
		}
		return v
	}

	// The router lets requests in flight finish for --shutdown-timeout.
	if stop, sd := stopTimeout("llmscaler-router"), shutdown("llmscaler-router"); stop <= sd {
		t.Errorf("router TimeoutStopSec %v <= --shutdown-timeout %v: systemd would kill answers still streaming", stop, sd)
	}
	// The controller resigns (2 s), drains gRPC and then HTTP within --shutdown-timeout each,
	// then closes etcd.
	if stop, sd := stopTimeout("llmscaler-controller"), shutdown("llmscaler-controller"); stop < 2*sd+10*time.Second {
		t.Errorf("controller TimeoutStopSec %v < 2 x --shutdown-timeout %v + 10s: etcd may be killed before it closes", stop, sd)
	}

	agent := readUnit(t, unitPath("llmscaler-agent"))
	if got, want := "/var/lib/"+agent.last("Service", "StateDirectory"), flagDefaults(t, "llmscaler-agent")["data-dir"]; got != want {
		t.Errorf("agent StateDirectory is %s, --data-dir default %s", got, want)
	}
}

// TestSysusersAndTmpfiles applies llmscaler.sysusers and llmscaler.tmpfiles to an empty root
// directory, as a package install would to /, and checks the user and /etc/llmscaler.
func TestSysusersAndTmpfiles(t *testing.T) {
	sysusers, tmpfiles := systemdTool(t, "systemd-sysusers"), systemdTool(t, "systemd-tmpfiles")
	if os.Geteuid() != 0 {
		t.Skip("systemd-tmpfiles --root needs root to set owners")
	}
	root := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	conf, err := filepath.Abs("systemd/llmscaler.sysusers")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(sysusers, "--root="+root, conf).CombinedOutput(); err != nil {
		t.Fatalf("systemd-sysusers: %v\n%s", err, out)
	}
	passwd, err := os.ReadFile(filepath.Join(root, "etc/passwd"))
	if err != nil {
		t.Fatal(err)
	}
	var uid, gid int
	for _, line := range strings.Split(string(passwd), "\n") {
		f := strings.Split(line, ":")
		if len(f) == 7 && f[0] == "llmscaler" {
			fmt.Sscan(f[2], &uid)
			fmt.Sscan(f[3], &gid)
			if uid == 0 || uid >= 1000 || f[6] != "/usr/sbin/nologin" {
				t.Errorf("llmscaler is not a system user without a login shell: %q", line)
			}
		}
	}
	if gid == 0 {
		t.Fatalf("no llmscaler user in:\n%s", passwd)
	}

	conf, err = filepath.Abs("systemd/llmscaler.tmpfiles")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(tmpfiles, "--create", "--root="+root, conf).CombinedOutput(); err != nil {
		t.Fatalf("systemd-tmpfiles: %v\n%s", err, out)
	}
	fi, err := os.Stat(filepath.Join(root, "etc/llmscaler"))
	if err != nil {
		t.Fatal(err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		t.Fatalf("stat /etc/llmscaler: %T, not syscall.Stat_t", fi.Sys())
	}
	if !fi.IsDir() || fi.Mode().Perm() != 0o750 || st.Uid != 0 || int(st.Gid) != gid {
		t.Errorf("/etc/llmscaler: %v owner %d:%d, want a directory 0750 root:llmscaler (0:%d)", fi.Mode(), st.Uid, st.Gid, gid)
	}
	// The TLS files the example configs name live in /etc/llmscaler/tls, readable by the group.
	fi, err = os.Stat(filepath.Join(root, "etc/llmscaler/tls"))
	if err != nil {
		t.Fatal(err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || !fi.IsDir() || fi.Mode().Perm() != 0o750 || st.Uid != 0 || int(st.Gid) != gid {
		t.Errorf("/etc/llmscaler/tls: %v, want a directory 0750 root:llmscaler (0:%d)", fi.Mode(), gid)
	}
	for _, d := range daemons {
		short := strings.TrimPrefix(d, "llmscaler-")
		b, err := os.ReadFile(short + ".yaml")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), "\ntls-ca: /etc/llmscaler/tls/ca.crt\n") {
			t.Errorf("%s.yaml does not set tls-ca: /etc/llmscaler/tls/ca.crt, the directory the tmpfiles make", short)
		}
	}
}
