package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/llmscaler/llmscaler/internal/cli"
	"github.com/llmscaler/llmscaler/internal/loadgen"
	"github.com/llmscaler/llmscaler/internal/logging"
)

// runLoad sends an open-loop workload to one server, to a deployment's READY instances or
// through a router, shows progress on stderr and prints a summary when it ends (or is
// interrupted).
func runLoad(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("llmscaler load", flag.ContinueOnError)
	var cfg loadgen.Config
	fs.StringVar(&cfg.URL, "url", "", "base URL of one server, e.g. http://127.0.0.1:8000")
	fs.StringVar(&cfg.Router, "router", "", "base URL of an OpenAI-compatible router (llmscaler-router), e.g. http://127.0.0.1:7410: send every request there, with model --model (default --deployment), and let it pick the instance; no --controller needed (if given, it is not used); its 503s (no instance in time) and 429s count by status")
	fs.StringVar(&cfg.Controller, "controller", "", "controller gRPC address; send to the READY instances of --deployment (least outstanding requests)")
	fs.StringVar(&cfg.Deployment, "deployment", "", "deployment that takes the load (with --controller, or --router: the model it routes by)")
	fs.StringVar(&cfg.Model, "model", "", "model field of the requests (default: the deployment's name; none with --url)")
	fs.Float64Var(&cfg.RPS, "rps", 0, "constant Poisson arrival rate, requests/s")
	fs.StringVar(&cfg.Schedule, "schedule", "", "Poisson arrival rate over time: "+loadgen.ScheduleSyntax)
	fs.StringVar(&cfg.TraceFile, "trace", "", "replay a trace: Azure (TIMESTAMP,ContextTokens,GeneratedTokens) or Mooncake (timestamp_ms,input_length,output_length) requests, or a rate series (window_start_s,aggregate_rate_rps: Poisson arrivals per window)")
	fs.Float64Var(&cfg.RateScale, "rate-scale", 1, "with --trace: compress time by K: inter-arrival gaps (and rate-series windows) are divided by K, so the rate is K times the trace's and its shape is kept (2: an hour of trace in 30 minutes at twice the rate)")
	fs.DurationVar(&cfg.TraceStart, "start", 0, "with --trace: skip the trace up to this offset (trace time, before --rate-scale)")
	fs.IntVar(&cfg.PromptTokens, "prompt-tokens", 0, fmt.Sprintf("prompt length of every request (default %d; with a request trace: the trace's)", loadgen.DefaultPromptTokens))
	fs.IntVar(&cfg.OutputTokens, "output-tokens", 0, fmt.Sprintf("output length (max_tokens) of every request (default %d; with a request trace: the trace's)", loadgen.DefaultOutputTokens))
	fs.Uint64Var(&cfg.Seed, "seed", 1, "seed of the random arrival times: the same seed gives the same arrivals")
	fs.DurationVar(&cfg.Duration, "duration", 0, "stop sending after this long (0: at the end of the trace, or on Ctrl-C)")
	fs.IntVar(&cfg.MaxInFlight, "max-in-flight", loadgen.DefaultMaxInFlight, "most requests in flight; arrivals above it are dropped and counted, not queued")
	fs.DurationVar(&cfg.RequestTimeout, "request-timeout", loadgen.DefaultRequestTimeout, "timeout of each request")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", loadgen.DefaultDrainTimeout, "how long requests in flight when sending stops may finish before they are cancelled")
	fs.DurationVar(&cfg.ProgressInterval, "progress-interval", loadgen.DefaultProgressInterval, "time between progress lines on stderr (0: none)")
	var tlsFlags cli.TLS
	tlsFlags.Register(fs)
	jsonPath := fs.String("json", "", "also write the summary as JSON to this file")
	logLevel := fs.String("log-level", "info", "log level: trace, debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if cfg.ProgressInterval > 0 {
		cfg.Progress = os.Stderr
	}
	log, err := logging.New("llmscaler", *logLevel, false, os.Stderr)
	if err != nil {
		return err
	}
	if cfg.Controller != "" && cfg.Router == "" && cfg.URL == "" {
		// The instances come from the controller: admin or readonly, over mutual TLS.
		creds, _, err := tlsFlags.Credentials(log, cli.Endpoint{Flag: "--controller", Addr: cfg.Controller})
		if err != nil {
			return err
		}
		cfg.Credentials = creds
	}
	g, err := loadgen.New(cfg, log)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "llmscaler load: %s to %s\n", g.Workload(), g.Target())
	sum, err := g.Run(ctx)
	if err != nil {
		return err
	}
	if err := sum.WriteText(out); err != nil {
		return err
	}
	if *jsonPath != "" {
		b, err := json.MarshalIndent(sum, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(*jsonPath, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}
