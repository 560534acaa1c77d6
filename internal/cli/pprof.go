package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
	"time"

	"github.com/hashicorp/go-hclog"
)

// StartPprof serves Go's profiles (net/http/pprof: CPU, heap, goroutines, mutex, block) on
// the --pprof-addr listener, apart from the daemon's own HTTP port so that a profile is never
// exposed by accident: off unless the flag is given, and a warning when it is not loopback
// (a profile shows memory contents such as request paths). Mutex and block profiling are
// switched on with it, at a sampling rate cheap enough to leave on while measuring. It
// serves until ctx ends.
func (c *Common) StartPprof(ctx context.Context, log hclog.Logger) error {
	if c.PprofAddr == "" {
		return nil
	}
	l, err := net.Listen("tcp", c.PprofAddr)
	if err != nil {
		return fmt.Errorf("--pprof-addr %s: %w", c.PprofAddr, err)
	}
	if ap, ok := l.Addr().(*net.TCPAddr); ok && !ap.IP.IsLoopback() {
		log.Warn("profiles served beyond loopback: anyone who reaches the address can read them", "pprof_addr", l.Addr().String())
	}
	runtime.SetMutexProfileFraction(100)
	runtime.SetBlockProfileRate(int(time.Millisecond))
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("pprof server stopped", "error", err)
		}
	}()
	context.AfterFunc(ctx, func() { _ = srv.Close() })
	log.Info("serving profiles", "pprof_addr", l.Addr().String())
	return nil
}
