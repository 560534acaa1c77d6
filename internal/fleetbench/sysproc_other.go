//go:build !linux

package fleetbench

import (
	"errors"
	"os"
	"syscall"
)

// The bench reads /proc and relies on Linux's parent-death signal; elsewhere it builds but
// its children are killed one by one and not if the bench itself is killed.

func sysProcAttr() *syscall.SysProcAttr { return nil }

func killGroup(pid int) {
	if p, err := os.FindProcess(pid); err == nil {
		_ = p.Kill()
	}
}

func termGroup(pid int) { killGroup(pid) }

// RaiseFileLimit is Linux-only.
func RaiseFileLimit() (uint64, error) {
	return 0, errors.New("raising the open-file limit is implemented on Linux only")
}
