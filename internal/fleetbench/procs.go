package fleetbench

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// child is a process the bench started, its output in a log file.
type child struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error // set before done is closed
}

// startChild starts path with args, output to dir/name.log; stdin and stdout, when not
// nil, are the child's ends of pipes, closed here once the child holds them (so that the
// bench reads EOF when the child is gone). Plain files, not readers and writers: os/exec
// would copy those on goroutines that Wait waits for. env is added to the bench's own.
func startChild(dir, name, path string, args []string, stdin, stdout *os.File, env ...string) (*child, error) {
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	if stdin != nil {
		cmd.Stdin = stdin
	}
	if stdout != nil {
		cmd.Stdout = stdout
	}
	cmd.SysProcAttr = sysProcAttr()
	err = cmd.Start()
	for _, p := range []*os.File{stdin, stdout} {
		if p != nil {
			p.Close()
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s (%s): %w", name, path, err)
	}
	c := &child{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		f.Close()
		close(c.done)
	}()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL to the child's group and waits for it.
func (c *child) kill() {
	killGroup(c.pid())
	<-c.done
}

// stop asks the child to end and kills it if it has not within grace.
func (c *child) stop(grace time.Duration) {
	if c.exited() {
		return
	}
	termGroup(c.pid())
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C:
		c.kill()
	}
}

// tail is the last n lines of the child's log, to show why it failed.
func (c *child) tail(n int) string {
	b, err := os.ReadFile(c.log)
	if err != nil {
		return ""
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// exitError says how the child ended, with the end of its log.
func (c *child) exitError() error {
	return fmt.Errorf("%s exited (%v); last lines of %s:\n%s", c.name, c.err, c.log, indent(c.tail(15)))
}

func indent(s string) string {
	if s == "" {
		return "  (empty)"
	}
	return "  " + strings.ReplaceAll(s, "\n", "\n  ")
}

// freeAddr is a loopback address whose port was free a moment ago.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("pick a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}
