// Package cli holds what the llmscaler binaries share around their flags: the logging,
// version and config-file flags, the transport security flags, the exit path, and the
// signal context.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/hashicorp/go-hclog"

	"github.com/llmscaler/llmscaler/internal/buildinfo"
	"github.com/llmscaler/llmscaler/internal/flagfile"
	"github.com/llmscaler/llmscaler/internal/logging"
	"github.com/llmscaler/llmscaler/internal/transport"
)

// Common are the flags every daemon takes.
type Common struct {
	LogLevel string
	LogJSON  bool
	Version  bool
	Config   string
	// PprofAddr serves Go's profiles there when set (StartPprof).
	PprofAddr string
}

// fileless are the common flags a config file may not set: a file does not name another
// file, and asking for the version is a command, not a setting.
var fileless = []string{"config", "version"}

// Register adds the common flags to fs.
func (c *Common) Register(fs *flag.FlagSet) {
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: trace, debug, info, warn, error")
	fs.BoolVar(&c.LogJSON, "log-json", false, "log JSON lines")
	fs.BoolVar(&c.Version, "version", false, "print the version and exit")
	fs.StringVar(&c.PprofAddr, "pprof-addr", "", "serve Go's profiles (net/http/pprof) on this address, e.g. 127.0.0.1:6060; off when empty")
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

// TLS are the transport security flags of every binary that speaks gRPC: mutual TLS from
// three PEM files, or plaintext with an explicit --insecure.
type TLS struct {
	CA, Cert, Key string
	Insecure      bool
	AllowRemote   bool
}

// Register adds the TLS flags to fs.
func (t *TLS) Register(fs *flag.FlagSet) {
	fs.StringVar(&t.CA, "tls-ca", "", "PEM file of the CA that signs every llmscaler certificate (mutual TLS; see `llmscaler certs`)")
	fs.StringVar(&t.Cert, "tls-cert", "", "PEM file of this process's certificate, whose spiffe://llmscaler/ URI SAN is its identity")
	fs.StringVar(&t.Key, "tls-key", "", "PEM file of the private key of --tls-cert")
	fs.BoolVar(&t.Insecure, "insecure", false, "plaintext gRPC without TLS: no identities, a controller treats every caller as admin; only on loopback addresses")
	fs.BoolVar(&t.AllowRemote, "insecure-allow-remote", false, "with --insecure, allow plaintext on addresses other than loopback (a trusted network only)")
}

// Endpoint is a gRPC address the binary listens on or dials, with the flag that sets it.
type Endpoint struct {
	Flag string
	Addr string
}

// ErrNoTransportSecurity is returned by Credentials when neither mutual TLS nor --insecure
// was chosen.
var ErrNoTransportSecurity = errors.New("no transport security chosen: pass --tls-ca, --tls-cert and --tls-key for mutual TLS (`llmscaler certs` makes a development set), or --insecure for plaintext on loopback")

// Credentials checks the flags against the gRPC addresses the binary listens on and dials,
// and returns its transport credentials with the identity of its certificate (the zero
// Identity with --insecure). Plaintext is logged as a warning.
func (t *TLS) Credentials(log hclog.Logger, endpoints ...Endpoint) (transport.Credentials, transport.Identity, error) {
	given := t.CA != "" || t.Cert != "" || t.Key != ""
	switch {
	case t.Insecure && given:
		return nil, transport.Identity{}, errors.New("--insecure with --tls-ca, --tls-cert or --tls-key: choose mutual TLS or plaintext")
	case t.AllowRemote && !t.Insecure:
		return nil, transport.Identity{}, errors.New("--insecure-allow-remote: only means something with --insecure")
	case t.Insecure:
		if !t.AllowRemote {
			for _, e := range endpoints {
				if !transport.IsLoopback(e.Addr) {
					return nil, transport.Identity{}, fmt.Errorf("--insecure: plaintext is allowed on loopback only, and %s %s is not; use mutual TLS, or add --insecure-allow-remote on a trusted network", e.Flag, e.Addr)
				}
			}
		}
		log.Warn("plaintext gRPC (--insecure): no transport security and no identities; controllers treat every caller as admin", "insecure_allow_remote", t.AllowRemote)
		return transport.Plaintext, transport.Identity{}, nil
	case !given:
		return nil, transport.Identity{}, ErrNoTransportSecurity
	}
	for _, f := range []struct{ flag, v string }{{"--tls-ca", t.CA}, {"--tls-cert", t.Cert}, {"--tls-key", t.Key}} {
		if f.v == "" {
			return nil, transport.Identity{}, fmt.Errorf("%s: missing; mutual TLS takes --tls-ca, --tls-cert and --tls-key together", f.flag)
		}
	}
	return transport.LoadMutualTLS(t.CA, t.Cert, t.Key)
}
