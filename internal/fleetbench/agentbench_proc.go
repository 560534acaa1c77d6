package fleetbench

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// IsServerOf reports whether a /proc/PID/cmdline (arguments separated by NULs) is an
// `llmscaler fakeserver` of the deployment: the agent bench's catalog passes the deployment
// as --model.
func IsServerOf(cmdline []byte, deployment string) bool {
	args := bytes.Split(bytes.TrimRight(cmdline, "\x00"), []byte{0})
	fake := false
	for i, a := range args {
		switch {
		case string(a) == "fakeserver":
			fake = true
		case string(a) == "--model" && i+1 < len(args) && string(args[i+1]) == deployment:
			if fake {
				return true
			}
		}
	}
	return false
}

func cmdline(pid int) []byte {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return b
}

// pids lists the processes in /proc.
func pids() []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

// childPIDs are the processes whose parent is pid.
func childPIDs(parent int) []int {
	var out []int
	for _, pid := range pids() {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		if ppid, err := ParseStatPPID(string(stat)); err == nil && ppid == parent {
			out = append(out, pid)
		}
	}
	return out
}

// serverPIDs are the live servers of the deployment, found by their command lines.
func serverPIDs(deployment string) []int {
	var out []int
	for _, pid := range pids() {
		if IsServerOf(cmdline(pid), deployment) {
			out = append(out, pid)
		}
	}
	return out
}
