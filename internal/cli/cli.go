// Package cli holds what the llmscaler binaries share around their flags: the logging,
// version and config-file flags, the exit path, and the signal context.
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
	"github.com/llmscaler/llmscaler/internal/flagfile"
	"github.com/llmscaler/llmscaler/internal/logging"
)

// Common are the flags every daemon takes.
type Common struct {
	LogLevel string
	LogJSON  bool
	Version  bool
	Config   string
}

// fileless are the common flags a config file may not set: a file does not name another
// file, and asking for the version is a command, not a setting.
var fileless = []string{"config", "version"}

// Register adds the common flags to fs.
func (c *Common) Register(fs *flag.FlagSet) {
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: trace, debug, info, warn, error")
	fs.BoolVar(&c.LogJSON, "log-json", false, "log JSON lines")
	fs.BoolVar(&c.Version, "version", false, "print the version and exit")
	fs.StringVar(&c.Config, "config", "", "YAML file of settings keyed by flag name (see deploy/); flags on the command line override it")
}

// Logger builds the root logger from the flags.
func (c *Common) Logger() (hclog.Logger, error) {
	return logging.New("llmscaler", c.LogLevel, c.LogJSON, os.Stderr)
}

// Parse parses args into fs, refuses stray arguments, handles -version, and then sets the
// flags the command line left alone from the -config file, if there is one. It reports
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
	if c.Config != "" {
		if err := flagfile.Load(fs, c.Config, fileless...); err != nil {
			return false, err
		}
	}
	return true, nil
}

// CheckExample reports where the example config file at path has drifted from the flags
// that newFlags registers (see flagfile.CheckExample); a daemon's tests call it.
func CheckExample(path string, newFlags func() *flag.FlagSet) error {
	return flagfile.CheckExample(path, newFlags, fileless...)
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
