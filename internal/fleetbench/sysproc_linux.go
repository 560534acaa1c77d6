package fleetbench

import "syscall"

// sysProcAttr puts a child in its own process group, so that killing the group takes
// whatever it started with it, and has the kernel kill it if the bench dies, Ctrl-C and
// kill -9 included.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// killGroup sends SIGKILL to the process group of pid, as a crash would.
func killGroup(pid int) { _ = syscall.Kill(-pid, syscall.SIGKILL) }

// termGroup sends SIGTERM to the process group of pid.
func termGroup(pid int) { _ = syscall.Kill(-pid, syscall.SIGTERM) }

// RaiseFileLimit raises this process's open-file limit to its hard limit: every simulated
// agent holds a socket, and so does the controller for each. It returns the limit now.
func RaiseFileLimit() (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	if l.Cur < l.Max {
		l.Cur = l.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
			return 0, err
		}
	}
	return l.Cur, nil
}
