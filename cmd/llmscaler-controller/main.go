// Command llmscaler-controller runs one llmscaler controller: it campaigns for leadership in
// etcd (embedded by default), serves agent streams while it leads, and serves the admin API.
package main

import (
	"context"
	"flag"

	"github.com/llmscaler/llmscaler/controller"
	"github.com/llmscaler/llmscaler/internal/cli"
	"github.com/llmscaler/llmscaler/internal/flagfile"
)

func main() { cli.Main("llmscaler-controller", run) }

func run(ctx context.Context, args []string) error {
	fs, s := newFlags()
	if ok, err := s.common.Parse(fs, args); !ok {
		return err
	}
	cfg := s.cfg
	cfg.EtcdEndpoints = s.endpoints
	log, err := s.common.Logger()
	if err != nil {
		return err
	}
	c, err := controller.New(cfg, log)
	if err != nil {
		return err
	}
	return c.Run(ctx)
}

// settings are what the flags fill in.
type settings struct {
	cfg       controller.Config
	endpoints flagfile.List
	common    cli.Common
}

// newFlags registers the controller's flags, which are also the keys of its config file.
func newFlags() (*flag.FlagSet, *settings) {
	fs := flag.NewFlagSet("llmscaler-controller", flag.ContinueOnError)
	s := &settings{}
	cfg := &s.cfg
	fs.StringVar(&cfg.ID, "id", "", "controller id in the leader election (default <hostname>-<grpc port>)")
	fs.StringVar(&cfg.GRPCAddr, "grpc-addr", "127.0.0.1:7400", "listen address of the agent and admin gRPC services")
	fs.StringVar(&cfg.AdvertiseAddr, "advertise-addr", "", "address agents and other controllers reach this controller at (default the bound --grpc-addr)")
	fs.StringVar(&cfg.HTTPAddr, "http-addr", "127.0.0.1:7401", "listen address of the status page (/), /healthz, /readyz and /metrics ('-' to disable)")
	fs.StringVar(&cfg.DataDir, "data-dir", "", "directory of the embedded etcd member's data (required without --etcd-endpoints)")
	fs.Var(&s.endpoints, "etcd-endpoints", "comma-separated endpoints of an external etcd cluster (host:port or http(s)://host:port); empty runs an embedded single member")
	fs.StringVar(&cfg.EtcdClientAddr, "etcd-client-addr", "127.0.0.1:2379", "client listen address of the embedded etcd member")
	fs.StringVar(&cfg.EtcdPeerAddr, "etcd-peer-addr", "127.0.0.1:2380", "peer listen address of the embedded etcd member")
	fs.StringVar(&cfg.Prefix, "etcd-prefix", "/llmscaler", "etcd key prefix of this installation")
	fs.DurationVar(&cfg.SessionTTL, "session-ttl", 0, "leader lease: how long a dead leader keeps the lead (default 3s)")
	fs.DurationVar(&cfg.ReportInterval, "report-interval", 0, "agents' report interval, sent to them on connect (default 1s)")
	fs.DurationVar(&cfg.HeartbeatInterval, "heartbeat-interval", 0, "heartbeat interval on agent streams (default 5s)")
	fs.DurationVar(&cfg.NodeGrace, "node-grace", 0, "how long a node's stream may be gone before it is marked lost (default 15s)")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", 0, "bound on the graceful stop of the gRPC server (default 10s)")
	s.common.Register(fs)
	return fs, s
}
