package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/llmscaler/llmscaler/internal/fakeserver"
	"github.com/llmscaler/llmscaler/internal/logging"
	"github.com/llmscaler/llmscaler/internal/servermodel"
)

// runFakeserver serves a simulated OpenAI-compatible LLM server with vLLM-style metrics until
// interrupted; on SIGTERM it stops accepting, lets in-flight requests finish and exits 0.
func runFakeserver(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("llmscaler fakeserver", flag.ContinueOnError)
	host := fs.String("host", "127.0.0.1", "address to listen on")
	port := fs.Int("port", -1, "port to listen on (required; 0: any free port)")
	model := fs.String("model", fakeserver.DefaultModel, "model id to serve")
	hardware := fs.String("hardware", fakeserver.DefaultProfile, "hardware profile: "+strings.Join(servermodel.ProfileNames(), ", "))
	coldStart := fs.Duration("cold-start", 0, "time from start to healthy (default: the profile's)")
	maxConcurrency := fs.Int("max-concurrency", 0, "most requests running at once (default: the profile's)")
	shutdownTimeout := fs.Duration("shutdown-timeout", fakeserver.DefaultShutdownTimeout, "how long in-flight requests may run on after SIGTERM")
	metricsDialect := fs.String("metrics", "vllm", "dialect of /metrics: vllm (histograms and counters) or llamacpp (llama-server's gauges and token counters, no latency histograms, no finished-request counter)")
	healthStallBusy := fs.Duration("health-stall-busy", 0, "model llama.cpp's llama-server: while requests are in flight, /health answers only after this long (0: at once)")
	logLevel := fs.String("log-level", "info", "log level: trace, debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *port < 0 {
		return errors.New("--port is required (0: any free port)")
	}
	params, err := servermodel.Profile(*hardware)
	if err != nil {
		return fmt.Errorf("--hardware: %w", err)
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["cold-start"] {
		if *coldStart < 0 {
			return fmt.Errorf("--cold-start %s: must not be negative", *coldStart)
		}
		params.ColdStart = *coldStart
	}
	if *healthStallBusy < 0 {
		return fmt.Errorf("--health-stall-busy %s: must not be negative", *healthStallBusy)
	}
	if set["max-concurrency"] {
		if *maxConcurrency < 1 {
			return fmt.Errorf("--max-concurrency %d: want at least 1", *maxConcurrency)
		}
		params.MaxConcurrency = *maxConcurrency
	}
	log, err := logging.New("llmscaler", *logLevel, false, os.Stderr)
	if err != nil {
		return err
	}
	srv, err := fakeserver.New(fakeserver.Config{
		Host: *host, Port: *port, Model: *model, Params: params, ShutdownTimeout: *shutdownTimeout,
		HealthStallBusy: *healthStallBusy, Metrics: *metricsDialect,
	}, log)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "llmscaler fakeserver (simulated): listening on http://%s (model %q, hardware %s, max concurrency %d, healthy after %s)\n",
		srv.Addr(), *model, *hardware, params.MaxConcurrency, params.ColdStart.Round(time.Millisecond))
	return srv.Run(ctx)
}
