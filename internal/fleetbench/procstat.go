package fleetbench

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// ProcSample is one reading of a process's CPU time and memory.
type ProcSample struct {
	At time.Time
	// CPUTicks is user plus system time in clock ticks.
	CPUTicks uint64
	// RSSKiB is the resident set now, HWMKiB its peak (VmHWM) over the process's life.
	RSSKiB, HWMKiB uint64
}

// statFields is the fields of /proc/PID/stat text after "pid (comm) ", at least want of
// them. The command name may hold spaces and parentheses, so the fields are counted from
// the last ')'; the state is the first of them (field 3).
func statFields(s string, want int) ([]string, error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, fmt.Errorf("/proc stat: no ')' after the command name in %.60q", s)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < want {
		return nil, fmt.Errorf("/proc stat: %d fields after the command name, want at least %d", len(f), want)
	}
	return f, nil
}

// ParseStat reads utime+stime (clock ticks, fields 14 and 15) from the text of
// /proc/PID/stat.
func ParseStat(s string) (uint64, error) {
	f, err := statFields(s, 13)
	if err != nil {
		return 0, err
	}
	utime, err := strconv.ParseUint(f[11], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("/proc stat utime %q: %w", f[11], err)
	}
	stime, err := strconv.ParseUint(f[12], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("/proc stat stime %q: %w", f[12], err)
	}
	return utime + stime, nil
}

// ParseStatPPID reads the parent's pid (field 4) from the text of /proc/PID/stat.
func ParseStatPPID(s string) (int, error) {
	f, err := statFields(s, 2)
	if err != nil {
		return 0, err
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return 0, fmt.Errorf("/proc stat ppid %q: %w", f[1], err)
	}
	return ppid, nil
}

// ParseStatus reads VmRSS and VmHWM (KiB) from the text of /proc/PID/status.
func ParseStatus(s string) (rss, hwm uint64, err error) {
	var haveRSS bool
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		f := strings.Fields(val)
		if len(f) != 2 || f[1] != "kB" {
			return 0, 0, fmt.Errorf("/proc status %s: %q is not '<n> kB'", key, strings.TrimSpace(val))
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc status %s: %w", key, err)
		}
		if key == "VmRSS" {
			rss, haveRSS = n, true
		} else {
			hwm = n
		}
	}
	if !haveRSS {
		return 0, 0, fmt.Errorf("/proc status: no VmRSS line (a kernel thread, or the process is a zombie)")
	}
	return rss, hwm, nil
}

// CPUCores is the CPU a process used between two samples, in cores.
func CPUCores(a, b ProcSample, ticksPerSecond float64) float64 {
	wall := b.At.Sub(a.At).Seconds()
	if wall <= 0 || b.CPUTicks < a.CPUTicks || ticksPerSecond <= 0 {
		return 0
	}
	return float64(b.CPUTicks-a.CPUTicks) / ticksPerSecond / wall
}

// ReadProc samples process pid from /proc.
func ReadProc(pid int) (ProcSample, error) {
	now := time.Now()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ProcSample{}, err
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ProcSample{}, err
	}
	ticks, err := ParseStat(string(stat))
	if err != nil {
		return ProcSample{}, err
	}
	rss, hwm, err := ParseStatus(string(status))
	if err != nil {
		return ProcSample{}, err
	}
	return ProcSample{At: now, CPUTicks: ticks, RSSKiB: rss, HWMKiB: hwm}, nil
}

// ClockTicks is the kernel's USER_HZ from `getconf CLK_TCK`, 100 (every Linux
// architecture's value) if getconf is missing.
func ClockTicks() float64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err != nil {
		return 100
	}
	n, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
	if err != nil || n <= 0 {
		return 100
	}
	return n
}
