// Command llmscaler-router is the OpenAI-compatible front door of an llmscaler fleet: it
// sends each request to a READY replica of the deployment its "model" names, holds requests
// while none is free (scale from zero included), measures every request, and reports what it
// measured to the controllers. Several run side by side; none keeps state that matters.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/llmscaler/llmscaler/internal/cli"
	"github.com/llmscaler/llmscaler/internal/flagfile"
	"github.com/llmscaler/llmscaler/internal/router"
	"github.com/llmscaler/llmscaler/internal/routerlink"
	"github.com/llmscaler/llmscaler/internal/transport"
)

func main() { cli.Main("llmscaler-router", run) }

func run(ctx context.Context, args []string) error {
	fs, s := newFlags()
	if ok, err := s.common.Parse(fs, args); !ok {
		return err
	}
	log, err := s.common.Logger()
	if err != nil {
		return err
	}
	if err := s.common.StartPprof(ctx, log); err != nil {
		return err
	}
	rt, err := router.New(router.Config{Logger: log.Named("router")})
	if err != nil {
		return err
	}
	creds, id, err := s.tls.Credentials(log, cli.Endpoint{Flag: "--controller", Addr: s.controller})
	if err != nil {
		return err
	}
	if creds != transport.Plaintext && id.Role != transport.RoleRouter {
		return fmt.Errorf("--tls-cert: the certificate is %s's (%s), not a router's: the controller would refuse its calls", id, id.URI())
	}
	conn, err := grpc.NewClient(s.controller, transport.DialOptions(creds)...)
	if err != nil {
		return fmt.Errorf("--controller %q: %w", s.controller, err)
	}
	defer conn.Close()
	link, err := routerlink.New(routerlink.Config{ID: s.id, Interval: s.interval, MaxQueue: s.maxQueue, Deployments: s.deployments}, conn, rt, log)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", rt.MetricsHandler())
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	mux.Handle("/", rt)
	ln, err := net.Listen("tcp", s.listen)
	if err != nil {
		return fmt.Errorf("--listen %q: %w", s.listen, err)
	}
	srv := router.NewServer(mux)
	log.Info("router listening", "addr", ln.Addr().String(), "controller", s.controller, "router_id", s.id)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return link.Run(gctx) })
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), s.shutdown)
		defer cancel()
		return srv.Shutdown(sctx)
	})
	return g.Wait()
}

// settings are what the flags fill in.
type settings struct {
	controller  string
	listen      string
	id          string
	interval    time.Duration
	maxQueue    int
	deployments flagfile.List
	shutdown    time.Duration
	tls         cli.TLS
	common      cli.Common
}

// newFlags registers the router's flags, which are also the keys of its config file.
func newFlags() (*flag.FlagSet, *settings) {
	fs := flag.NewFlagSet("llmscaler-router", flag.ContinueOnError)
	s := &settings{}
	host, _ := os.Hostname()
	fs.StringVar(&s.controller, "controller", "127.0.0.1:7400", "a controller's gRPC address (any controller: followers forward to the leader)")
	fs.StringVar(&s.listen, "listen", "127.0.0.1:7410", "listen address of the OpenAI API, /metrics and /healthz")
	fs.StringVar(&s.id, "router-id", "router-"+host, "this router's name in its reports")
	fs.DurationVar(&s.interval, "report-interval", time.Second, "how often the router reports its figures to the controller")
	fs.IntVar(&s.maxQueue, "max-queue", 1000, "requests each deployment may have waiting in the router")
	fs.Var(&s.deployments, "deployments", "comma-separated deployments to serve (default all)")
	fs.DurationVar(&s.shutdown, "shutdown-timeout", 30*time.Second, "how long requests in flight may finish after SIGTERM")
	s.tls.Register(fs)
	s.common.Register(fs)
	return fs, s
}
