// Package cli holds what the llmscaler binaries share around their flags: the logging and
// version flags, the exit path, and the signal context.
package cli

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/hashicorp/go-hclog"

	"github.com/llmscaler/llmscaler/internal/buildinfo"
	"github.com/llmscaler/llmscaler/internal/logging"
)

// Common are the flags every binary takes.
type Common struct {
	LogLevel string
	LogJSON  bool
	Version  bool
}

// Register adds the common flags to fs.
func (c *Common) Register(fs *flag.FlagSet) {
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: trace, debug, info, warn, error")
	fs.BoolVar(&c.LogJSON, "log-json", false, "log JSON lines")
	fs.BoolVar(&c.Version, "version", false, "print the version and exit")
}

// Logger builds the root logger from the flags.
func (c *Common) Logger() (hclog.Logger, error) {
	return logging.New("llmscaler", c.LogLevel, c.LogJSON, os.Stderr)
}

// Parse parses args into fs, refuses stray arguments, and handles -version. It reports
// whether the binary should go on.
func (c *Common) Parse(fs *flag.FlagSet, args []string) (bool, error) {
	if err := fs.Parse(args); err != nil {
		return false, err
	}
	if fs.NArg() > 0 {
		return false, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if c.Version {
		fmt.Println(buildinfo.Version())
		return false, nil
	}
	return true, nil
}

// Main runs a binary's body with a context that ends on SIGINT or SIGTERM, and exits 1 with
// the error, prefixed by the binary's name, if there is one.
func Main(name string, run func(ctx context.Context, args []string) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err == flag.ErrHelp {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}
