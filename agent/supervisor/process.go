package supervisor

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// procStat is what the supervisor reads from /proc/<pid>/stat.
type procStat struct {
	// state is the one-letter process state; Z and X are dead.
	state byte
	// startTime is field 22, the start time in clock ticks since boot. With the pid it
	// names one process for the life of the host.
	startTime uint64
}

// readProcStat reads /proc/<pid>/stat. The comm field may hold spaces and parentheses, so
// the fields are counted from the last ')'.
func readProcStat(pid int) (procStat, error) {
	if pid <= 0 {
		return procStat{}, fmt.Errorf("pid %d: %w", pid, os.ErrNotExist)
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: no ')' in %q", pid, b)
	}
	// After ") " come fields 3 (state), 4, ... 22 (starttime).
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 || len(f[0]) != 1 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: %d fields after the command, want at least 20", pid, len(f))
	}
	st, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("/proc/%d/stat: start time: %w", pid, err)
	}
	return procStat{state: f[0][0], startTime: st}, nil
}

// processAlive reports whether pid is still the process that started at startTime and has
// not died.
func processAlive(pid int, startTime uint64) bool {
	st, err := readProcStat(pid)
	return err == nil && st.startTime == startTime && st.state != 'Z' && st.state != 'X'
}

// groupAlive reports whether any process is left in process group pgid.
func groupAlive(pgid int) bool {
	if pgid <= 0 {
		return false
	}
	// EPERM means the group exists but is not ours: not the server's any more.
	return syscall.Kill(-pgid, 0) == nil
}

// signalGroup sends sig to process group pgid. A group that is already gone is not an error.
func signalGroup(pgid int, sig syscall.Signal) error {
	if pgid <= 0 {
		return fmt.Errorf("signal %v: bad process group %d", sig, pgid)
	}
	if err := syscall.Kill(-pgid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %v to process group %d: %w", sig, pgid, err)
	}
	return nil
}

// freePort asks the kernel for a free TCP port on host. Another process may take it before
// the server binds it; the server then fails to start and is restarted on a new port.
func freePort(host string) (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("pick a free port on %s: %w", host, err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if err := ln.Close(); err != nil {
		return 0, fmt.Errorf("pick a free port on %s: %w", host, err)
	}
	return port, nil
}

// exitStatus turns a wait status into an exit code and words: the code the process exited
// with, or 128 plus the signal that killed it.
func exitStatus(ps *os.ProcessState) (int32, string) {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int32(ws.Signal()), fmt.Sprintf("killed by signal %d (%v)", int(ws.Signal()), ws.Signal())
	}
	code := int32(ps.ExitCode())
	return code, fmt.Sprintf("exited with code %d", code)
}

const (
	// tailLines is how many log lines a FAILED instance's message carries.
	tailLines = 20
	// tailBytes bounds the part of each log file read for them.
	tailBytes = 16 << 10
	// tailLineBytes bounds one line of them.
	tailLineBytes = 512
)

// logTail returns the last n lines of the log at path, reaching into its rotated copy
// path.1 when the log itself was just truncated.
func logTail(path string, n int) string {
	var lines []string
	for _, p := range []string{path, path + ".1"} {
		got := tailOf(p)
		lines = append(got, lines...)
		if len(lines) >= n {
			break
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	for i, l := range lines {
		if len(l) > tailLineBytes {
			lines[i] = l[:tailLineBytes] + "..."
		}
	}
	return strings.Join(lines, "\n")
}

// tailOf returns the complete lines in the last tailBytes of the file at path.
func tailOf(path string) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil
	}
	off := max(fi.Size()-tailBytes, 0)
	b, err := io.ReadAll(io.NewSectionReader(f, off, fi.Size()-off))
	if err != nil {
		return nil
	}
	if off > 0 {
		// Drop the partial first line.
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	s := strings.TrimRight(string(b), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// rotateLog copies the log at path to path.1 and truncates it, when it has grown past
// maxBytes. The server holds the log open with O_APPEND, so its next write lands at the new
// end, the start of the file. Lines written between the copy and the truncation are lost,
// as with logrotate's copytruncate.
func rotateLog(path string, maxBytes int64) (bool, error) {
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return false, nil
		}
		return false, err
	}
	if fi.Size() <= maxBytes {
		return false, nil
	}
	src, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer src.Close()
	tmp := path + ".1.tmp"
	dst, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return false, err
	}
	_, err = io.Copy(dst, src)
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path+".1")
	}
	if err != nil {
		os.Remove(tmp)
		return false, fmt.Errorf("copy log: %w", err)
	}
	if err := os.Truncate(path, 0); err != nil {
		return false, fmt.Errorf("truncate log: %w", err)
	}
	return true, nil
}
