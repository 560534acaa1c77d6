// Command llmscaler-controller runs one llmscaler controller: it campaigns for leadership in
// etcd (embedded by default), serves agent streams while it leads, and serves the admin API.
package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/llmscaler/llmscaler/controller"
	"github.com/llmscaler/llmscaler/internal/cli"
	"github.com/llmscaler/llmscaler/internal/flagfile"
	"github.com/llmscaler/llmscaler/internal/transport"
)

func main() { cli.Main("llmscaler-controller", run) }

func run(ctx context.Context, args []string) error {
	fs, s := newFlags()
	if ok, err := s.common.Parse(fs, args); !ok {
		return err
	}
	cfg := s.cfg
	cfg.EtcdEndpoints = s.endpoints
	switch {
	case s.adminRate < 0:
		return fmt.Errorf("--admin-rate %g: must not be negative (0: no limit)", s.adminRate)
	case s.adminRate == 0:
		cfg.AdminRate = -1 // the library's "no limit"; its zero is the default
	default:
		cfg.AdminRate = s.adminRate
	}
	log, err := s.common.Logger()
	if err != nil {
		return err
	}
	if err := s.common.StartPprof(ctx, log); err != nil {
		return err
	}
	endpoints := []cli.Endpoint{{Flag: "--grpc-addr", Addr: cfg.GRPCAddr}}
	if cfg.AdvertiseAddr != "" {
		endpoints = append(endpoints, cli.Endpoint{Flag: "--advertise-addr", Addr: cfg.AdvertiseAddr})
	}
	creds, id, err := s.tls.Credentials(log, endpoints...)
	if err != nil {
		return err
	}
	if creds != transport.Plaintext && id.Role != transport.RoleController {
		return fmt.Errorf("--tls-cert: the certificate is %s's (%s), not a controller's", id, id.URI())
	}
	cfg.Credentials = creds
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
	adminRate float64
	tls       cli.TLS
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
	fs.Float64Var(&s.adminRate, "admin-rate", controller.DefaultAdminRate, "changing admin calls (apply, delete, scale, cordon, uncordon, drain) allowed to each caller identity a second; more get ResourceExhausted (0: no limit)")
	fs.IntVar(&cfg.AdminBurst, "admin-burst", controller.DefaultAdminBurst, "changing admin calls each caller identity may make at once above --admin-rate")
	s.tls.Register(fs)
	s.common.Register(fs)
	return fs, s
}
