// Command llmscaler-agent runs the llmscaler agent of one GPU host: it reports the host's
// GPUs to the leading controller over one gRPC stream and carries out its commands.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/llmscaler/llmscaler/agent"
	"github.com/llmscaler/llmscaler/internal/cli"
	"github.com/llmscaler/llmscaler/internal/flagfile"
	"github.com/llmscaler/llmscaler/internal/transport"
)

func main() { cli.Main("llmscaler-agent", run) }

func run(ctx context.Context, args []string) error {
	fs, s := newFlags()
	if ok, err := s.common.Parse(fs, args); !ok {
		return err
	}
	cfg, err := s.config()
	if err != nil {
		return err
	}
	log, err := s.common.Logger()
	if err != nil {
		return err
	}
	if err := s.common.StartPprof(ctx, log); err != nil {
		return err
	}
	var endpoints []cli.Endpoint
	for _, c := range cfg.Controllers {
		endpoints = append(endpoints, cli.Endpoint{Flag: "--controller", Addr: c})
	}
	creds, id, err := s.tls.Credentials(log, endpoints...)
	if err != nil {
		return err
	}
	if creds != transport.Plaintext && id != transport.NodeIdentity(cfg.NodeID) {
		return fmt.Errorf("--tls-cert: the certificate is %s's (%s), not node %s's: the controller would refuse it; give --node-id %s or node %s's certificate",
			id, id.URI(), cfg.NodeID, strings.TrimPrefix(id.String(), "node/"), cfg.NodeID)
	}
	cfg.Credentials = creds
	a, err := agent.New(cfg, log)
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

// settings are what the flags fill in.
type settings struct {
	cfg         agent.Config
	controllers flagfile.List
	labels      flagfile.Map
	tls         cli.TLS
	common      cli.Common
}

// newFlags registers the agent's flags, which are also the keys of its config file.
func newFlags() (*flag.FlagSet, *settings) {
	fs := flag.NewFlagSet("llmscaler-agent", flag.ContinueOnError)
	s := &settings{controllers: flagfile.List{"127.0.0.1:7400"}}
	cfg := &s.cfg
	host, _ := os.Hostname()
	fs.Var(&s.controllers, "controller", "comma-separated controller gRPC addresses; the agent finds the leader among them")
	fs.StringVar(&cfg.NodeID, "node-id", host, "this node's id (default the host name)")
	fs.Var(&s.labels, "labels", "node labels as k=v,k=v (deployments select nodes by them)")
	fs.DurationVar(&cfg.ReportInterval, "report-interval", 0, "report interval until the controller sets one (default 1s)")
	fs.StringVar(&cfg.DataDir, "data-dir", "/var/lib/llmscaler/agent", "directory of the agent's state")
	fs.StringVar(&cfg.HTTPAddr, "http-addr", "127.0.0.1:7402", "listen address of /healthz and /metrics ('' to disable)")
	fs.StringVar(&cfg.GPUBackend, "gpu-backend", "nvml", "GPU backend: nvml (real GPUs), fake (simulated GPUs) or none (CPU-only servers)")
	fs.StringVar(&cfg.Catalog, "catalog", "", "catalog of model-server profiles (YAML; see README); without it the agent runs no servers")
	fs.StringVar(&cfg.InstanceHost, "instance-host", "127.0.0.1", "address model servers bind to ({host} in the catalog)")
	fs.IntVar(&cfg.FakeGPUs, "fake-gpus", 8, "number of simulated GPUs with --gpu-backend fake")
	fs.IntVar(&cfg.ReportBuffer, "report-buffer", 0, "reports kept while disconnected (default 300)")
	fs.DurationVar(&cfg.HealthInterval, "health-interval", 0, "how often a READY server's health path is checked (default 10s)")
	fs.IntVar(&cfg.UnhealthyChecks, "unhealthy-checks", 0, "checks in a row with neither a health answer nor progress in the metrics before a server is taken for hung and killed (default 3)")
	s.tls.Register(fs)
	s.common.Register(fs)
	return fs, s
}

// config checks what agent.New leaves to the flags and returns the agent's config.
func (s *settings) config() (agent.Config, error) {
	cfg := s.cfg
	if cfg.HealthInterval < 0 {
		return cfg, fmt.Errorf("--health-interval %v: must not be negative", cfg.HealthInterval)
	}
	if cfg.UnhealthyChecks < 0 {
		return cfg, fmt.Errorf("--unhealthy-checks %d: must not be negative", cfg.UnhealthyChecks)
	}
	cfg.Controllers = s.controllers
	cfg.Labels = s.labels
	return cfg, nil
}
