// Package controller is llmscaler's control plane: controllers campaign for leadership in
// etcd; the leader serves agent streams, keeps the fleet view, and (in later issues) runs
// the scaling policy. Any controller serves the admin API, forwarding live-state calls to
// the leader.
package controller

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/llmscaler/llmscaler/internal/backoff"
	"github.com/llmscaler/llmscaler/internal/buildinfo"
	"github.com/llmscaler/llmscaler/internal/embedetcd"
	"github.com/llmscaler/llmscaler/internal/transport"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// Config is a controller's configuration. Zero values take the defaults noted.
type Config struct {
	// ID names this controller in the election; default "<hostname>-<grpc port>".
	ID string
	// GRPCAddr is where the agent and admin gRPC services listen; default 127.0.0.1:7400.
	GRPCAddr string
	// AdvertiseAddr is the address other controllers and agents are told to reach this one at;
	// default the bound GRPCAddr.
	AdvertiseAddr string
	// HTTPAddr serves the status page at /, and /healthz, /readyz and /metrics; default
	// 127.0.0.1:7401; "-" disables it.
	HTTPAddr string
	// DataDir holds the embedded etcd member's data. Required with embedded etcd.
	DataDir string
	// EtcdEndpoints, when set, use that etcd cluster instead of the embedded member.
	EtcdEndpoints []string
	// EtcdClientAddr and EtcdPeerAddr are where the embedded member listens;
	// defaults 127.0.0.1:2379 and 127.0.0.1:2380.
	EtcdClientAddr string
	EtcdPeerAddr   string
	// EtcdDialTimeout bounds the check that etcd is reachable at start; default 5 s.
	EtcdDialTimeout time.Duration
	// Prefix is the etcd key prefix of this llmscaler installation; default "/llmscaler".
	Prefix string
	// SessionTTL is the leader lease: how long a dead leader keeps the lead; default 3 s (1 s to 60 s).
	SessionTTL time.Duration
	// ReportInterval is the agents' report interval, sent in each welcome; default 1 s.
	ReportInterval time.Duration
	// HeartbeatInterval is how often each side of an agent stream sends a heartbeat; default 5 s.
	HeartbeatInterval time.Duration
	// NodeGrace is how long a node's stream may be gone before the node is marked lost; default 15 s.
	NodeGrace time.Duration
	// ShutdownTimeout bounds the graceful stop of the gRPC server; default 10 s.
	ShutdownTimeout time.Duration
	// Credentials secure gRPC; default transport.Plaintext, with which every caller is
	// treated as admin (there is no identity to check). With transport.MutualTLS each call is
	// authorized by the identity of its client certificate (see authz.go).
	Credentials transport.Credentials
	// AdminRate and AdminBurst bound the changing admin calls (apply, delete, scale, cordon,
	// uncordon, drain) of each caller identity: AdminRate a second, in bursts of AdminBurst;
	// default 10 and 50. A negative AdminRate sets no limit.
	AdminRate  float64
	AdminBurst int
	// Backoff paces retries of etcd sessions and watches; default backoff.Default.
	Backoff backoff.Config
	// Now is the clock; default time.Now.
	Now func() time.Time
}

func (cfg *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if cfg.GRPCAddr == "" {
		cfg.GRPCAddr = "127.0.0.1:7400"
	}
	if cfg.HTTPAddr == "" {
		cfg.HTTPAddr = "127.0.0.1:7401"
	}
	if cfg.EtcdClientAddr == "" {
		cfg.EtcdClientAddr = "127.0.0.1:2379"
	}
	if cfg.EtcdPeerAddr == "" {
		cfg.EtcdPeerAddr = "127.0.0.1:2380"
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "/llmscaler"
	}
	def(&cfg.EtcdDialTimeout, 5*time.Second)
	def(&cfg.SessionTTL, 3*time.Second)
	def(&cfg.ReportInterval, time.Second)
	def(&cfg.HeartbeatInterval, 5*time.Second)
	def(&cfg.NodeGrace, 15*time.Second)
	def(&cfg.ShutdownTimeout, 10*time.Second)
	if cfg.Credentials == nil {
		cfg.Credentials = transport.Plaintext
	}
	if cfg.AdminRate == 0 {
		cfg.AdminRate = DefaultAdminRate
	}
	if cfg.AdminBurst == 0 {
		cfg.AdminBurst = DefaultAdminBurst
	}
	if cfg.Backoff == (backoff.Config{}) {
		cfg.Backoff = backoff.Default
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
}

func (cfg *Config) validate() error {
	if cfg.SessionTTL < time.Second || cfg.SessionTTL > time.Minute {
		return fmt.Errorf("--session-ttl %v: must lie between 1s and 1m", cfg.SessionTTL)
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{{"--report-interval", cfg.ReportInterval}, {"--heartbeat-interval", cfg.HeartbeatInterval}, {"--node-grace", cfg.NodeGrace}} {
		if d.v < 10*time.Millisecond || d.v > time.Hour {
			return fmt.Errorf("%s %v: must lie between 10ms and 1h", d.flag, d.v)
		}
	}
	if cfg.AdminBurst < 1 {
		return fmt.Errorf("--admin-burst %d: must be at least 1", cfg.AdminBurst)
	}
	if len(cfg.EtcdEndpoints) == 0 && cfg.DataDir == "" {
		return errors.New("--data-dir: required for the embedded etcd (or give --etcd-endpoints)")
	}
	for _, e := range cfg.EtcdEndpoints {
		if err := checkEndpoint(e); err != nil {
			return fmt.Errorf("--etcd-endpoints: %w", err)
		}
	}
	if !strings.HasPrefix(cfg.Prefix, "/") || strings.HasSuffix(cfg.Prefix, "/") {
		return fmt.Errorf("--etcd-prefix %q: must start with '/' and not end with one", cfg.Prefix)
	}
	return nil
}

// checkEndpoint accepts host:port or an http(s) URL with a host and a port.
func checkEndpoint(e string) error {
	if e == "" {
		return errors.New("empty endpoint (stray comma?)")
	}
	hostport := e
	if strings.Contains(e, "://") {
		u, err := url.Parse(e)
		if err != nil {
			return fmt.Errorf("%q: %w", e, err)
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			return fmt.Errorf("%q: scheme must be http or https", e)
		}
		if u.Path != "" && u.Path != "/" {
			return fmt.Errorf("%q: an endpoint has no path", e)
		}
		hostport = u.Host
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return fmt.Errorf("%q is not host:port or http(s)://host:port", e)
	}
	if host == "" {
		return fmt.Errorf("%q has no host", e)
	}
	if _, err := net.LookupPort("tcp", port); err != nil || port == "0" {
		return fmt.Errorf("%q has no valid port", e)
	}
	return nil
}

// Controller is one controller process.
type Controller struct {
	cfg     Config
	log     hclog.Logger
	now     func() time.Time
	info    *llmscalerv1.ControllerInfo
	grpcLis net.Listener
	httpLis net.Listener
	metrics *metrics
	events  *eventHub
	changes *notifier // wakes waiters when leadership or the observed leader changes
	store   *store
	health  *health.Server
	limits  *limiters
	// admitting holds a token for each agent stream being admitted (maxAdmitting).
	admitting chan struct{}
	// etcdStatus caches the etcd part of GetClusterStatus.
	etcdStatus etcdStatusCache

	mu   sync.Mutex
	term *term
	view leaderView

	etcdErr <-chan error // failures of the embedded member; nil with external etcd

	fwdMu   sync.Mutex
	fwdConn *grpc.ClientConn
	fwdAddr string
}

// New checks the configuration and binds the listeners, so that a bad address fails here
// with a clear error and the bound addresses are known before Run.
func New(cfg Config, log hclog.Logger) (*Controller, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	gl, err := net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		return nil, fmt.Errorf("--grpc-addr %s: %w", cfg.GRPCAddr, err)
	}
	var hl net.Listener
	if cfg.HTTPAddr != "-" {
		if hl, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
			gl.Close()
			return nil, fmt.Errorf("--http-addr %s: %w", cfg.HTTPAddr, err)
		}
	}
	adv := cfg.AdvertiseAddr
	if adv == "" {
		adv = advertisable(gl.Addr().(*net.TCPAddr))
	}
	if cfg.ID == "" {
		host, _ := os.Hostname()
		cfg.ID = fmt.Sprintf("%s-%d", host, gl.Addr().(*net.TCPAddr).Port)
	}
	c := &Controller{
		cfg:       cfg,
		log:       log.Named("controller").With("controller_id", cfg.ID),
		now:       cfg.Now,
		grpcLis:   gl,
		admitting: make(chan struct{}, maxAdmitting),
		httpLis:   hl,
		events:    newEventHub(),
		changes:   newNotifier(),
		health:    health.NewServer(),
		limits:    newLimiters(cfg.AdminRate, cfg.AdminBurst),
	}
	c.info = &llmscalerv1.ControllerInfo{Id: cfg.ID, GrpcAddress: adv, Version: buildinfo.Version()}
	if hl != nil {
		c.info.HttpAddress = hl.Addr().String()
	}
	c.metrics = newMetrics(c)
	c.health.SetServingStatus(llmscalerv1.AgentService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
	c.health.SetServingStatus(llmscalerv1.AdminService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	return c, nil
}

// advertisable turns a bound address into one others can dial: a wildcard listen address is
// advertised under the host name.
func advertisable(a *net.TCPAddr) string {
	if a.IP.IsUnspecified() {
		host, err := os.Hostname()
		if err == nil {
			return net.JoinHostPort(host, fmt.Sprint(a.Port))
		}
	}
	return a.String()
}

// GRPCAddr is the bound gRPC address.
func (c *Controller) GRPCAddr() string { return c.grpcLis.Addr().String() }

// HTTPAddr is the bound HTTP address, "" when HTTP is off.
func (c *Controller) HTTPAddr() string {
	if c.httpLis == nil {
		return ""
	}
	return c.httpLis.Addr().String()
}

// ID is the controller's id in the election.
func (c *Controller) ID() string { return c.cfg.ID }

// IsLeader reports whether this controller leads now.
func (c *Controller) IsLeader() bool { return c.currentTerm() != nil }

// Run serves until ctx ends, then stops leader work, resigns, and stops the servers
// gracefully within the shutdown timeout. It returns nil after a clean stop.
func (c *Controller) Run(ctx context.Context) error {
	defer c.grpcLis.Close()
	if c.httpLis != nil {
		defer c.httpLis.Close()
	}
	cli, closeEtcd, err := c.openEtcd(ctx)
	if err != nil {
		return err
	}
	defer closeEtcd()
	c.store = &store{cli: cli, prefix: c.cfg.Prefix, now: c.now}
	defer c.closeForwarding()

	srv := grpc.NewServer(append(transport.ServerOptions(c.cfg.Credentials),
		// Authorization comes first: a follower refuses what the caller may not do before
		// forwarding anything.
		grpc.ChainUnaryInterceptor(c.unaryAuth, c.unaryForward),
		grpc.ChainStreamInterceptor(c.streamAuth, c.streamForward))...)
	llmscalerv1.RegisterAgentServiceServer(srv, agentService{c: c})
	llmscalerv1.RegisterAdminServiceServer(srv, adminService{c: c})
	llmscalerv1.RegisterRouterServiceServer(srv, routerService{c: c})
	healthpb.RegisterHealthServer(srv, c.health)
	reflection.Register(srv)

	var hsrv *http.Server
	if c.httpLis != nil {
		hsrv = &http.Server{Handler: c.httpHandler(), ReadHeaderTimeout: 10 * time.Second}
	}

	g, gctx := errgroup.WithContext(ctx)
	leaderDone := make(chan struct{})
	g.Go(func() error {
		if err := srv.Serve(c.grpcLis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("grpc serve: %w", err)
		}
		return nil
	})
	if hsrv != nil {
		g.Go(func() error {
			if err := hsrv.Serve(c.httpLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("http serve: %w", err)
			}
			return nil
		})
	}
	g.Go(func() error { return c.observe(gctx) })
	if c.etcdErr != nil {
		g.Go(func() error {
			select {
			case err := <-c.etcdErr:
				return fmt.Errorf("embedded etcd failed: %w", err)
			case <-gctx.Done():
				return nil
			}
		})
	}
	g.Go(func() error {
		defer close(leaderDone)
		return c.campaign(gctx)
	})
	g.Go(func() error {
		<-gctx.Done()
		// Leader work stops and the lead is resigned first, so that another controller can
		// take over while this one drains its connections.
		<-leaderDone
		c.health.Shutdown()
		c.gracefulStop(srv)
		if hsrv != nil {
			sctx, cancel := context.WithTimeout(context.Background(), c.cfg.ShutdownTimeout)
			defer cancel()
			_ = hsrv.Shutdown(sctx)
		}
		return nil
	})
	c.log.Info("controller started", "grpc_addr", c.GRPCAddr(), "advertise_addr", c.info.GetGrpcAddress(),
		"http_addr", c.HTTPAddr(), "etcd", strings.Join(cli.Endpoints(), ","), "session_ttl", c.cfg.SessionTTL)
	err = g.Wait()
	c.log.Info("controller stopped")
	return err
}

func (c *Controller) gracefulStop(srv *grpc.Server) {
	done := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(done)
	}()
	t := time.NewTimer(c.cfg.ShutdownTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		c.log.Warn("graceful stop timed out; closing connections", "timeout", c.cfg.ShutdownTimeout)
		srv.Stop()
	}
}

// openEtcd starts the embedded member or connects to the external cluster, and checks that
// etcd answers before the controller goes on.
func (c *Controller) openEtcd(ctx context.Context) (*clientv3.Client, func(), error) {
	endpoints := c.cfg.EtcdEndpoints
	closeFn := func() {}
	if len(endpoints) == 0 {
		srv, err := embedetcd.Start(embedetcd.Config{
			Dir:        filepath.Join(c.cfg.DataDir, "etcd"),
			Name:       "llmscaler",
			ClientAddr: c.cfg.EtcdClientAddr,
			PeerAddr:   c.cfg.EtcdPeerAddr,
		})
		if err != nil {
			return nil, nil, err
		}
		endpoints = []string{srv.Endpoint()}
		closeFn = srv.Close
		c.etcdErr = srv.Err()
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: c.cfg.EtcdDialTimeout,
		Logger:      zap.NewNop(),
		// Keepalives notice a dead etcd member and move the client to another.
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
	})
	if err != nil {
		closeFn()
		return nil, nil, fmt.Errorf("etcd at %s: %w", strings.Join(endpoints, ","), err)
	}
	cctx, cancel := context.WithTimeout(ctx, c.cfg.EtcdDialTimeout)
	defer cancel()
	var errs []error
	ok := false
	for _, ep := range endpoints {
		if _, err := cli.Status(cctx, ep); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", ep, err))
			continue
		}
		ok = true
		break
	}
	if !ok {
		cli.Close()
		closeFn()
		return nil, nil, fmt.Errorf("etcd unreachable within %v (check --etcd-endpoints and that etcd runs): %w", c.cfg.EtcdDialTimeout, errors.Join(errs...))
	}
	return cli, func() {
		cli.Close()
		closeFn()
	}, nil
}

func (c *Controller) httpHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		v := c.currentView()
		switch {
		case !v.synced:
			http.Error(w, "not ready: election not read from etcd yet", http.StatusServiceUnavailable)
		case v.leader == nil:
			http.Error(w, "not ready: no leader elected", http.StatusServiceUnavailable)
		case c.currentTerm() != nil:
			fmt.Fprintf(w, "ok: leader at epoch %d\n", v.epoch)
		default:
			fmt.Fprintf(w, "ok: follower of %s at epoch %d\n", v.leader.GetId(), v.epoch)
		}
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(c.metrics.reg, promhttp.HandlerOpts{}))
	// The status page is read-only: other methods get 405 from the mux.
	mux.HandleFunc("GET /{$}", c.serveStatus)
	return mux
}
