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
)

func main() { cli.Main("llmscaler-agent", run) }

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("llmscaler-agent", flag.ContinueOnError)
	var (
		cfg         agent.Config
		controllers string
		labels      string
		common      cli.Common
	)
	host, _ := os.Hostname()
	fs.StringVar(&controllers, "controller", "127.0.0.1:7400", "comma-separated controller gRPC addresses; the agent finds the leader among them")
	fs.StringVar(&cfg.NodeID, "node-id", host, "this node's id (default the host name)")
	fs.StringVar(&labels, "labels", "", "node labels as k=v,k=v (deployments select nodes by them)")
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
	common.Register(fs)
	if ok, err := common.Parse(fs, args); !ok {
		return err
	}
	if cfg.HealthInterval < 0 {
		return fmt.Errorf("--health-interval %v: must not be negative", cfg.HealthInterval)
	}
	if cfg.UnhealthyChecks < 0 {
		return fmt.Errorf("--unhealthy-checks %d: must not be negative", cfg.UnhealthyChecks)
	}
	for _, c := range strings.Split(controllers, ",") {
		if c = strings.TrimSpace(c); c == "" {
			return fmt.Errorf("--controller %q: empty address (stray comma?)", controllers)
		}
		cfg.Controllers = append(cfg.Controllers, strings.TrimSpace(c))
	}
	var err error
	if cfg.Labels, err = parseLabels(labels); err != nil {
		return err
	}
	log, err := common.Logger()
	if err != nil {
		return err
	}
	a, err := agent.New(cfg, log)
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

func parseLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	if s == "" {
		return out, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("--labels: %q is not key=value", kv)
		}
		out[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return out, nil
}
