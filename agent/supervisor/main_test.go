package supervisor

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/goleak"

	"github.com/llmscaler/llmscaler/internal/fakeserver"
	"github.com/llmscaler/llmscaler/internal/servermodel"
)

// serverModeEnv makes the test binary a fake model server instead of running the tests.
const serverModeEnv = "SUPERVISOR_TEST_SERVER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(serverModeEnv); mode != "" {
		os.Exit(fakeServer(mode, os.Args[1:]))
	}
	goleak.VerifyTestMain(m)
}

// fakeServer is the model server of the tests. Modes:
//
//	serve        /health (503 until --health-delay has passed), /count; exits 0 on SIGTERM
//	ignore-term  like serve, but SIGTERM is only logged, so that only SIGKILL stops it
//	crash        prints a few lines and exits with code 3
//	spam         like serve, and writes a 100-byte line every 2 ms
//	llm          the fake LLM server of internal/fakeserver (cpu-tiny timing, vLLM metrics,
//	             healthy after 100 ms), its /health stalling --health-stall-busy while busy
//
// It prints its arguments and environment first, for the tests to read in its log.
func fakeServer(mode string, args []string) int {
	fs := flag.NewFlagSet("fakeserver", flag.ContinueOnError)
	host := fs.String("host", "127.0.0.1", "")
	port := fs.String("port", "", "")
	fs.String("gpus", "", "")
	fs.String("id", "", "")
	fs.String("deployment", "", "")
	healthDelay := fs.Duration("health-delay", 0, "")
	healthStallBusy := fs.Duration("health-stall-busy", 0, "")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cvd, set := os.LookupEnv("CUDA_VISIBLE_DEVICES")
	fmt.Printf("fakeserver %s: args %q\n", mode, args)
	fmt.Printf("env CUDA_VISIBLE_DEVICES set=%t value=%q\n", set, cvd)
	fmt.Printf("env TEST_EXTRA=%q\n", os.Getenv("TEST_EXTRA"))
	if mode == "crash" {
		for i := range 5 {
			fmt.Printf("crash line %d\n", i)
		}
		return 3
	}
	if mode == "llm" {
		return serveLLM(*host, *port, *healthStallBusy)
	}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	start := time.Now()
	var count atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("/health", func(w http.ResponseWriter, _ *http.Request) {
		if time.Since(start) < *healthDelay {
			http.Error(w, "loading", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/count", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, count.Add(1))
	})
	ln, err := net.Listen("tcp", net.JoinHostPort(*host, *port))
	if err != nil {
		fmt.Println("listen:", err)
		return 1
	}
	go func() {
		if err := http.Serve(ln, mux); err != nil && !errors.Is(err, net.ErrClosed) {
			fmt.Println("serve:", err)
		}
	}()
	if mode == "spam" {
		line := strings.Repeat("x", 99)
		go func() {
			t := time.NewTicker(2 * time.Millisecond)
			defer t.Stop()
			for range t.C {
				fmt.Println(line)
			}
		}()
	}
	fmt.Println("listening")
	for sig := range sigs {
		fmt.Printf("got %v\n", sig)
		if mode != "ignore-term" {
			return 0
		}
		fmt.Println("ignoring it")
	}
	return 0
}

// serveLLM runs internal/fakeserver until SIGTERM.
func serveLLM(host, port string, healthStallBusy time.Duration) int {
	p, err := strconv.Atoi(port)
	if err != nil {
		fmt.Println("port:", err)
		return 2
	}
	params, err := servermodel.Profile(fakeserver.DefaultProfile)
	if err != nil {
		fmt.Println(err)
		return 2
	}
	log := hclog.New(&hclog.LoggerOptions{Output: os.Stdout, Level: hclog.Info})
	srv, err := fakeserver.New(fakeserver.Config{
		Host: host, Port: p, Params: params, ColdStart: 100 * time.Millisecond,
		ShutdownTimeout: time.Second, HealthStallBusy: healthStallBusy,
	}, log)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	fmt.Println("listening")
	if err := srv.Run(ctx); err != nil {
		fmt.Println("serve:", err)
		return 1
	}
	return 0
}
