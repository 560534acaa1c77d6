package cli

import (
	"bytes"
	"flag"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/llmscaler/llmscaler/internal/pki"
	"github.com/llmscaler/llmscaler/internal/transport"
)

func TestTLSCredentials(t *testing.T) {
	dir := t.TempDir()
	if _, err := pki.Write(pki.Set{Dir: dir, Nodes: []string{"n1"}}); err != nil {
		t.Fatal(err)
	}
	f := func(name string) string { return filepath.Join(dir, name) }
	tlsArgs := []string{"--tls-ca", f("ca.crt"), "--tls-cert", f("node-n1.crt"), "--tls-key", f("node-n1.key")}
	loop := []Endpoint{{"--grpc-addr", "127.0.0.1:7400"}, {"--controller", "[::1]:7400"}, {"--controller", "localhost:7400"}}
	remote := append(loop, Endpoint{"--controller", "10.0.0.5:7400"})
	for _, tc := range []struct {
		name      string
		args      []string
		endpoints []Endpoint
		wantErr   string
		wantID    string // "" for plaintext
		wantWarn  bool
	}{
		{"nothing chosen", nil, loop, "no transport security chosen: pass --tls-ca, --tls-cert and --tls-key for mutual TLS (`llmscaler certs` makes a development set), or --insecure for plaintext on loopback", "", false},
		{"mutual TLS", tlsArgs, remote, "", "node/n1", false},
		{"insecure on loopback", []string{"--insecure"}, loop, "", "", true},
		{"insecure to a remote address", []string{"--insecure"}, remote, "--insecure: plaintext is allowed on loopback only, and --controller 10.0.0.5:7400 is not; use mutual TLS, or add --insecure-allow-remote on a trusted network", "", false},
		{"insecure listening everywhere", []string{"--insecure"}, []Endpoint{{"--grpc-addr", "0.0.0.0:7400"}}, "--insecure: plaintext is allowed on loopback only, and --grpc-addr 0.0.0.0:7400 is not", "", false},
		{"insecure allowed remote", []string{"--insecure", "--insecure-allow-remote"}, remote, "", "", true},
		{"allow remote alone", []string{"--insecure-allow-remote"}, loop, "--insecure-allow-remote: only means something with --insecure", "", false},
		{"both", append([]string{"--insecure"}, tlsArgs...), loop, "--insecure with --tls-ca, --tls-cert or --tls-key: choose mutual TLS or plaintext", "", false},
		{"key missing", tlsArgs[:4], loop, "--tls-key: missing; mutual TLS takes --tls-ca, --tls-cert and --tls-key together", "", false},
		{"ca missing", tlsArgs[2:], loop, "--tls-ca: missing", "", false},
		{"bad file", []string{"--tls-ca", f("nope.crt"), "--tls-cert", f("admin.crt"), "--tls-key", f("admin.key")}, loop, "--tls-ca: open", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			var s TLS
			s.Register(fs)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			var logs bytes.Buffer
			log := hclog.New(&hclog.LoggerOptions{Output: &logs})
			creds, id, err := s.Credentials(log, tc.endpoints...)
			switch {
			case tc.wantErr != "":
				if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) {
					t.Fatalf("Credentials error %v, want %q", err, tc.wantErr)
				}
			case err != nil:
				t.Fatalf("Credentials: %v", err)
			case tc.wantID == "" && creds != transport.Plaintext:
				t.Errorf("credentials %T, want plaintext", creds)
			case tc.wantID != "" && (creds == transport.Plaintext || id.String() != tc.wantID):
				t.Errorf("credentials %T for %v, want mutual TLS for %s", creds, id, tc.wantID)
			}
			if warned := strings.Contains(logs.String(), "[WARN]  plaintext gRPC (--insecure)"); warned != tc.wantWarn {
				t.Errorf("warning logged %v, want %v:\n%s", warned, tc.wantWarn, logs.String())
			}
		})
	}
}
