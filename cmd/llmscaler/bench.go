package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/hashicorp/go-hclog"

	"github.com/llmscaler/llmscaler/internal/embedetcd"
	"github.com/llmscaler/llmscaler/internal/flagfile"
	"github.com/llmscaler/llmscaler/internal/fleetbench"
	"github.com/llmscaler/llmscaler/internal/logging"
)

const benchUsage = `usage: llmscaler bench <fleet|agent> [flags]

  fleet   run a real controller against thousands of simulated agents (a second process,
          one gRPC stream each) and measure connect, reports/s, ingest and decision
          latency, admin calls, CPU and memory, and optionally a leader failover
  agent   run one real agent with fake GPUs and fakeserver instances under a real
          controller and measure the agent's own CPU and memory and its reports/s

Run 'llmscaler bench fleet -h' or 'llmscaler bench agent -h' for their flags.
`

// runBench is `llmscaler bench`. Its agents and etcd subcommands are the processes that
// `bench fleet` starts; they are not for people.
func runBench(ctx context.Context, args []string, out io.Writer) error {
	if len(args) < 1 {
		fmt.Fprint(os.Stderr, benchUsage)
		return errors.New("bench: no benchmark given")
	}
	switch args[0] {
	case "fleet":
		return runBenchFleet(ctx, args[1:], out)
	case "agent":
		return runBenchAgent(ctx, args[1:], out)
	case "agents":
		return runBenchAgents(ctx, args[1:], out)
	case "etcd":
		return runBenchEtcd(ctx, args[1:], out)
	case "help", "-h", "--help":
		fmt.Fprint(out, benchUsage)
		return nil
	default:
		fmt.Fprint(os.Stderr, benchUsage)
		return fmt.Errorf("bench: unknown benchmark %q", args[0])
	}
}

// benchFleetFlags registers `bench fleet`'s flags; bin, jsonPath and logLevel are the
// command's own, the rest fill cfg.
func benchFleetFlags(cfg *fleetbench.Config) (fs *flag.FlagSet, bin, jsonPath, logLevel *string) {
	fs = flag.NewFlagSet("llmscaler bench fleet", flag.ContinueOnError)
	fs.IntVar(&cfg.Agents, "agents", 1000, "simulated agents, each with its own gRPC connection and stream")
	fs.IntVar(&cfg.GPUs, "gpus", 8, fmt.Sprintf("GPUs of each agent (1 to %d)", fleetbench.MaxGPUs))
	fs.IntVar(&cfg.Instances, "instances", 2, "READY instances each agent runs, one GPU each (at most --gpus; below it for decision trials)")
	fs.IntVar(&cfg.Probes, "probes", fleetbench.DefaultProbes, "decision-latency trials, each on a probe deployment of its own, a second apart")
	fs.BoolVar(&cfg.Storm, "storm", false, "every agent dials and sends its hello at once (else they ramp at --ramp)")
	fs.Float64Var(&cfg.RampPerSecond, "ramp", fleetbench.DefaultRamp, "agents that start connecting a second, without --storm")
	fs.IntVar(&cfg.AgentsCPUs, "agents-cpus", 0, "GOMAXPROCS of the agents process, so that the simulation leaves the controller the rest of the machine (default half the CPUs, at least 1)")
	fs.BoolVar(&cfg.Failover, "failover", false, "run an etcd and two controllers, kill -9 the leader after the trials and time the other's takeover")
	fs.DurationVar(&cfg.Duration, "duration", fleetbench.DefaultDuration, "steady window after every agent connected, over which rates, CPU and memory are measured")
	fs.DurationVar(&cfg.Interval, "interval", fleetbench.DefaultInterval, "report interval the controller hands agents (its --report-interval)")
	fs.DurationVar(&cfg.ConnectTimeout, "connect-timeout", fleetbench.DefaultConnectTimeout, "fail unless every agent is connected and reporting within this")
	fs.DurationVar(&cfg.TrialTimeout, "trial-timeout", fleetbench.DefaultTrialTimeout, "a decision trial without a start within this counts as timed out")
	fs.DurationVar(&cfg.FailoverTimeout, "failover-timeout", 0, "with --failover, the wait for each takeover figure (default 2m)")
	fs.IntVar(&cfg.AdminCalls, "admin-calls", fleetbench.DefaultAdminCalls, "calls of each admin method timed at fleet size")
	fs.BoolVar(&cfg.RequireLeadership, "require-leadership", false, "fail if the leader or its epoch changed (before a --failover kill)")
	fs.BoolVar(&cfg.Pprof, "pprof", false, "run the controller with --pprof-addr and fetch CPU, heap and mutex profiles over the steady window")
	fs.StringVar(&cfg.PprofDir, "pprof-dir", "bench-out", "directory for the --pprof profiles")
	fs.StringVar(&cfg.LogDir, "log-dir", "", "keep the controller, agents and etcd logs in this directory (default: a temporary one, removed)")
	fs.DurationVar(&cfg.ProgressInterval, "progress-interval", 0, "time between progress lines on stderr (default 2s; negative: none)")
	bin = fs.String("bin", "", "directory of llmscaler-controller (default the directory of this llmscaler binary)")
	jsonPath = fs.String("json", "", "also write every figure and the parameters as JSON to this file")
	logLevel = fs.String("log-level", "info", "log level: trace, debug, info, warn, error")
	return fs, bin, jsonPath, logLevel
}

// benchBinaries finds this executable (why says what for) and the directory of the named
// binaries: bin, or by default this executable's, which must hold every one.
func benchBinaries(bin, why string, names ...string) (self, dir string, err error) {
	self, err = os.Executable()
	if err != nil {
		return "", "", fmt.Errorf("find this executable (%s): %w", why, err)
	}
	dir = bin
	if dir == "" {
		dir = filepath.Dir(self)
	}
	for _, n := range names {
		if _, err := os.Stat(filepath.Join(dir, n)); err != nil {
			return "", "", fmt.Errorf("--bin %s: no %s there (go build -o %s ./cmd/...): %w", dir, n, dir, err)
		}
	}
	return self, dir, nil
}

// runBenchFleet runs the fleet benchmark, prints its table and writes its JSON, also when
// it failed (the figures so far say where).
func runBenchFleet(ctx context.Context, args []string, out io.Writer) error {
	var cfg fleetbench.Config
	fs, bin, jsonPath, logLevel := benchFleetFlags(&cfg)
	log, err := parseBenchFlags(fs, args, logLevel)
	if err != nil {
		return err
	}
	self, dir, err := benchBinaries(*bin, "to run the agents process", "llmscaler-controller")
	if err != nil {
		return err
	}
	cfg.Self = self
	cfg.Controller = filepath.Join(dir, "llmscaler-controller")
	switch {
	case cfg.ProgressInterval >= 0:
		cfg.Progress = os.Stderr
	default:
		cfg.ProgressInterval = 0
	}
	b, err := fleetbench.New(cfg, log)
	if err != nil {
		return err
	}
	res, runErr := b.Run(ctx)
	return report(res, runErr, out, *jsonPath)
}

// benchAgentFlags registers `bench agent`'s flags; bin, jsonPath and logLevel are the
// command's own, the rest fill cfg.
func benchAgentFlags(cfg *fleetbench.AgentBenchConfig) (fs *flag.FlagSet, bin, jsonPath, logLevel *string) {
	fs = flag.NewFlagSet("llmscaler bench agent", flag.ContinueOnError)
	fs.IntVar(&cfg.GPUs, "gpus", fleetbench.DefaultAgentGPUs, "fake GPUs of the agent (its --fake-gpus)")
	fs.IntVar(&cfg.Instances, "instances", fleetbench.DefaultAgentInstances, "READY fakeserver instances the agent runs, one GPU each (at most --gpus)")
	fs.DurationVar(&cfg.Duration, "duration", fleetbench.DefaultAgentDuration, "steady window, once every instance is READY, over which CPU, memory and reports/s are measured")
	fs.DurationVar(&cfg.Interval, "interval", fleetbench.DefaultInterval, "report interval of the agent and the controller (the agent scrapes its servers at it too)")
	fs.Float64Var(&cfg.Load, "load", fleetbench.DefaultAgentLoad, "requests/s sent to the servers, spread over them, so that the metrics the agent scrapes move (0: none)")
	fs.DurationVar(&cfg.ReadyTimeout, "ready-timeout", fleetbench.DefaultAgentReadyTimeout, "fail unless every instance is READY within this of the apply")
	fs.BoolVar(&cfg.Pprof, "pprof", false, "run the agent with --pprof-addr and fetch its CPU profile over the window and its heap after")
	fs.StringVar(&cfg.PprofDir, "pprof-dir", "bench-out", "directory for the --pprof profiles")
	fs.StringVar(&cfg.LogDir, "log-dir", "", "keep the controller and agent logs, the catalog and the agent's data (its servers' logs) here (default: a temporary directory, removed)")
	bin = fs.String("bin", "", "directory of llmscaler-controller and llmscaler-agent (default the directory of this llmscaler binary)")
	jsonPath = fs.String("json", "", "also write every figure and the parameters as JSON to this file")
	logLevel = fs.String("log-level", "info", "log level: trace, debug, info, warn, error")
	return fs, bin, jsonPath, logLevel
}

// runBenchAgent runs the agent benchmark, prints its table and writes its JSON, also when it
// failed.
func runBenchAgent(ctx context.Context, args []string, out io.Writer) error {
	var cfg fleetbench.AgentBenchConfig
	fs, bin, jsonPath, logLevel := benchAgentFlags(&cfg)
	log, err := parseBenchFlags(fs, args, logLevel)
	if err != nil {
		return err
	}
	self, dir, err := benchBinaries(*bin, "the catalog runs its fakeserver", "llmscaler-controller", "llmscaler-agent")
	if err != nil {
		return err
	}
	cfg.Self = self
	cfg.Controller = filepath.Join(dir, "llmscaler-controller")
	cfg.Agent = filepath.Join(dir, "llmscaler-agent")
	b, err := fleetbench.NewAgentBench(cfg, log)
	if err != nil {
		return err
	}
	res, runErr := b.Run(ctx)
	return report(res, runErr, out, *jsonPath)
}

// report prints a bench's result and writes its JSON, also when the run failed (the figures
// so far say where); the error is the run's, joined with any from writing.
func report(res interface{ WriteText(io.Writer) error }, runErr error, out io.Writer, jsonPath string) error {
	if err := res.WriteText(out); err != nil {
		return errors.Join(runErr, err)
	}
	if jsonPath != "" {
		if err := writeJSON(jsonPath, res); err != nil {
			return errors.Join(runErr, err)
		}
	}
	return runErr
}

// writeJSON writes v, indented, to path.
func writeJSON(path string, v any) error {
	buf, err := json.MarshalIndent(v, "", "  ")
	if err == nil {
		err = os.WriteFile(path, append(buf, '\n'), 0o644)
	}
	if err != nil {
		return fmt.Errorf("--json %s: %w", path, err)
	}
	return nil
}

// runBenchAgents is the agents process that `bench fleet` starts: the simulated agents,
// driven by JSON lines on stdin, answering on out.
func runBenchAgents(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("llmscaler bench agents", flag.ContinueOnError)
	agents := fs.Int("agents", 0, "simulated agents")
	gpus := fs.Int("gpus", 8, "GPUs of each agent")
	instances := fs.Int("instances", 2, "instances of each agent")
	probes := fs.Int("probes", 0, "probe deployments")
	var controllers flagfile.List
	fs.Var(&controllers, "controllers", "comma-separated controller gRPC addresses")
	storm := fs.Bool("storm", false, "dial all at once")
	ramp := fs.Float64("ramp", fleetbench.DefaultRamp, "agents started a second without --storm")
	trialTimeout := fs.Duration("trial-timeout", fleetbench.DefaultTrialTimeout, "wait for a probe's start")
	logLevel := fs.String("log-level", "warn", "log level")
	log, err := parseBenchFlags(fs, args, logLevel)
	if err != nil {
		return err
	}
	l, err := fleetbench.NewLayout(*agents, *gpus, *instances, *probes)
	if err != nil {
		return err
	}
	if _, err := fleetbench.RaiseFileLimit(); err != nil {
		log.Warn("open-file limit not raised", "error", err)
	}
	a, err := fleetbench.NewAgents(fleetbench.AgentsConfig{Layout: l, Controllers: controllers, Storm: *storm, RampPerSecond: *ramp, TrialTimeout: *trialTimeout}, log)
	if err != nil {
		return err
	}
	return a.Run(ctx, os.Stdin, out)
}

// runBenchEtcd is the etcd process of `bench fleet --failover`.
func runBenchEtcd(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("llmscaler bench etcd", flag.ContinueOnError)
	var cfg embedetcd.Config
	fs.StringVar(&cfg.Dir, "data-dir", "", "member data directory")
	fs.StringVar(&cfg.ClientAddr, "client-addr", "127.0.0.1:0", "client listen address")
	fs.StringVar(&cfg.PeerAddr, "peer-addr", "127.0.0.1:0", "peer listen address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if cfg.Dir == "" {
		return errors.New("--data-dir: required")
	}
	return fleetbench.RunEtcd(ctx, cfg, out)
}

// parseBenchFlags parses a bench subcommand's flags, refuses stray arguments and builds its
// logger at the --log-level given.
func parseBenchFlags(fs *flag.FlagSet, args []string, logLevel *string) (hclog.Logger, error) {
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return logging.New("llmscaler", *logLevel, false, os.Stderr)
}
