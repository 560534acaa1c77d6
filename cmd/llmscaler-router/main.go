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
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/llmscaler/llmscaler/internal/cli"
	"github.com/llmscaler/llmscaler/internal/router"
	"github.com/llmscaler/llmscaler/internal/routerlink"
	"github.com/llmscaler/llmscaler/internal/transport"
)

func main() { cli.Main("llmscaler-router", run) }

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("llmscaler-router", flag.ContinueOnError)
	host, _ := os.Hostname()
	var (
		controller  = fs.String("controller", "127.0.0.1:7400", "a controller's gRPC address (any controller: followers forward to the leader)")
		listen      = fs.String("listen", "127.0.0.1:7410", "listen address of the OpenAI API, /metrics and /healthz")
		id          = fs.String("router-id", "router-"+host, "this router's name in its reports")
		interval    = fs.Duration("report-interval", time.Second, "how often the router reports its figures to the controller")
		maxQueue    = fs.Int("max-queue", 1000, "requests each deployment may have waiting in the router")
		deployments = fs.String("deployments", "", "comma-separated deployments to serve (default all)")
		shutdown    = fs.Duration("shutdown-timeout", 30*time.Second, "how long requests in flight may finish after SIGTERM")
		common      cli.Common
	)
	common.Register(fs)
	if ok, err := common.Parse(fs, args); !ok {
		return err
	}
	log, err := common.Logger()
	if err != nil {
		return err
	}
	var only []string
	for _, d := range strings.Split(*deployments, ",") {
		if d = strings.TrimSpace(d); d != "" {
			only = append(only, d)
		}
	}
	rt, err := router.New(router.Config{Logger: log.Named("router")})
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(*controller, transport.DialOptions(transport.Plaintext)...)
	if err != nil {
		return fmt.Errorf("--controller %q: %w", *controller, err)
	}
	defer conn.Close()
	link, err := routerlink.New(routerlink.Config{ID: *id, Interval: *interval, MaxQueue: *maxQueue, Deployments: only}, conn, rt, log)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", rt.MetricsHandler())
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	mux.Handle("/", rt)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("--listen %q: %w", *listen, err)
	}
	srv := router.NewServer(mux)
	log.Info("router listening", "addr", ln.Addr().String(), "controller", *controller, "router_id", *id)

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
		sctx, cancel := context.WithTimeout(context.Background(), *shutdown)
		defer cancel()
		return srv.Shutdown(sctx)
	})
	return g.Wait()
}
