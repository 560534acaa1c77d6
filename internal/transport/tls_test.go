package transport_test

import (
	"context"
	"crypto/x509"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/llmscaler/llmscaler/internal/pki"
	"github.com/llmscaler/llmscaler/internal/transport"
)

func TestParseIdentity(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    transport.Identity
		wantErr string
	}{
		{"spiffe://llmscaler/admin", transport.Identity{Role: transport.RoleAdmin}, ""},
		{"readonly", transport.Identity{Role: transport.RoleReadonly}, ""},
		{"spiffe://llmscaler/controller", transport.Identity{Role: transport.RoleController}, ""},
		{"spiffe://llmscaler/router", transport.Identity{Role: transport.RoleRouter}, ""},
		{"spiffe://llmscaler/node/gpu-01.dc1", transport.NodeIdentity("gpu-01.dc1"), ""},
		{"node/n1", transport.NodeIdentity("n1"), ""},
		{"spiffe://other/admin", transport.Identity{}, "want spiffe://llmscaler/<role>"},
		{"https://llmscaler/admin", transport.Identity{}, "want spiffe://llmscaler/<role>"},
		{"spiffe://llmscaler/root", transport.Identity{}, `unknown role "root"`},
		{"spiffe://llmscaler/admin/x", transport.Identity{}, "takes no id"},
		{"spiffe://llmscaler/node/", transport.Identity{}, "node id is empty"},
		{"spiffe://llmscaler/node/../x", transport.Identity{}, "node id"},
		{"spiffe://llmscaler/admin?x=1", transport.Identity{}, "want spiffe://llmscaler/<role>"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := transport.ParseIdentity(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseIdentity = %v, %v; want error with %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseIdentity = %v, %v; want %v", got, err, tc.want)
			}
			if back, err := transport.ParseIdentity(got.URI()); err != nil || back != got {
				t.Errorf("URI %s does not read back: %v, %v", got.URI(), back, err)
			}
		})
	}
}

func TestIdentityOf(t *testing.T) {
	uris := func(ss ...string) []*url.URL {
		var out []*url.URL
		for _, s := range ss {
			u, err := url.Parse(s)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, u)
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		uris    []*url.URL
		want    string
		wantErr string
	}{
		{"one", uris("spiffe://llmscaler/node/n1"), "node/n1", ""},
		{"others ignored", uris("https://example.com/x", "spiffe://corp/admin", "spiffe://llmscaler/readonly"), "readonly", ""},
		{"none", nil, "", "has no spiffe://llmscaler/ URI SAN"},
		{"only another trust domain", uris("spiffe://corp/admin"), "", "has no spiffe://llmscaler/ URI SAN"},
		{"two", uris("spiffe://llmscaler/admin", "spiffe://llmscaler/readonly"), "", "2 spiffe://llmscaler/ URI SANs"},
		{"bad", uris("spiffe://llmscaler/boss"), "", `unknown role "boss"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := transport.IdentityOf(&x509.Certificate{URIs: tc.uris})
			switch {
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("IdentityOf = %v, %v; want error with %q", id, err, tc.wantErr)
			case tc.wantErr == "" && (err != nil || id.String() != tc.want):
				t.Fatalf("IdentityOf = %v, %v; want %s", id, err, tc.want)
			}
		})
	}
}

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:7400": true, "[::1]:7400": true, "localhost:7400": true, "127.1.2.3:1": true,
		"0.0.0.0:7400": false, ":7400": false, "10.0.0.5:7400": false, "controller-1:7400": false, "[::]:7400": false,
	} {
		if got := transport.IsLoopback(addr); got != want {
			t.Errorf("IsLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
}

// pair is one end's credentials from a development set.
type set struct {
	dir string
}

func newSet(t *testing.T) set {
	t.Helper()
	dir := t.TempDir()
	if _, err := pki.Write(pki.Set{Dir: dir, Nodes: []string{"n1"}}); err != nil {
		t.Fatal(err)
	}
	return set{dir}
}

func (s set) creds(t *testing.T, name string) (transport.Credentials, transport.Identity) {
	t.Helper()
	c, id, err := transport.LoadMutualTLS(s.dir+"/ca.crt", s.dir+"/"+name+".crt", s.dir+"/"+name+".key")
	if err != nil {
		t.Fatal(err)
	}
	return c, id
}

// serve runs a gRPC health server with creds on a loopback port; it records the identity of
// each caller.
func serve(t *testing.T, creds transport.Credentials) (addr string, callers chan transport.Identity) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	callers = make(chan transport.Identity, 16)
	srv := grpc.NewServer(append(transport.ServerOptions(creds), grpc.UnaryInterceptor(
		func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			id, err := transport.PeerIdentity(ctx)
			if err != nil {
				return nil, status.Error(codes.Unauthenticated, err.Error())
			}
			callers <- id
			return h(ctx, req)
		}))...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return ln.Addr().String(), callers
}

func check(t *testing.T, addr string, creds transport.Credentials) error {
	t.Helper()
	conn, err := grpc.NewClient(addr, transport.DialOptions(creds)...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

// TestMutualTLS: the server learns the client's identity from its certificate; clients
// without a certificate the CA signed, with an expired one, or in plaintext get no answer.
func TestMutualTLS(t *testing.T) {
	s := newSet(t)
	server, id := s.creds(t, "controller")
	if id.Role != transport.RoleController {
		t.Fatalf("controller.crt carries %v", id)
	}
	addr, callers := serve(t, server)

	for _, name := range []string{"admin", "readonly", "router", "node-n1", "controller"} {
		client, want := s.creds(t, name)
		if err := check(t, addr, client); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := <-callers; got != want {
			t.Errorf("%s: server saw %v, want %v", name, got, want)
		}
	}

	// Both bad clients trust the server, so that the refusal is the server's.
	other := newSet(t)
	otherAdmin := issue(t, other.dir, s.dir, pki.Leaf{Identity: transport.Identity{Role: transport.RoleAdmin},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)})
	expired := issue(t, s.dir, s.dir, pki.Leaf{Identity: transport.Identity{Role: transport.RoleAdmin},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	for _, tc := range []struct {
		name  string
		creds transport.Credentials
		want  string
	}{
		{"another CA's client", otherAdmin, `connection error: desc = "error reading server preface: remote error: tls: unknown certificate authority"`},
		{"expired client certificate", expired, `connection error: desc = "error reading server preface: remote error: tls: expired certificate"`},
		// The server hangs up on bytes that are no TLS handshake: EOF or a reset, by timing.
		{"plaintext client", transport.Plaintext, `connection error: desc = "error reading server preface: `},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := refusal(t, addr, tc.creds)
			if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Check = %v, want Unavailable with %q", err, tc.want)
			}
			select {
			case id := <-callers:
				t.Errorf("the server answered %v", id)
			default:
			}
		})
	}
}

// refusal is check's error once the server's word is in it. In TLS 1.3 the client finishes
// its handshake before the server has checked the client's certificate, so a call can fail
// writing (broken pipe) before the server's alert is read: then the call is made again.
func refusal(t *testing.T, addr string, creds transport.Credentials) error {
	t.Helper()
	var err error
	for range 10 {
		if err = check(t, addr, creds); err == nil || !strings.Contains(err.Error(), "write: ") {
			return err
		}
	}
	return err
}

// TestClientAcceptsOnlyController: a client refuses a server whose certificate, though the CA
// signed it and it names the host, is not a controller's.
func TestClientAcceptsOnlyController(t *testing.T) {
	s := newSet(t)
	fake := issue(t, s.dir, s.dir, pki.Leaf{Identity: transport.Identity{Role: transport.RoleAdmin}, Server: true,
		IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)})
	addr, callers := serve(t, fake)
	client, _ := s.creds(t, "node-n1")
	err := check(t, addr, client)
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "server certificate is admin's, not a controller's") {
		t.Fatalf("Check = %v, want Unavailable: server certificate is admin's, not a controller's", err)
	}
	if len(callers) != 0 {
		t.Error("the client sent its call anyway")
	}
}

func TestLoadMutualTLSErrors(t *testing.T) {
	s := newSet(t)
	for _, tc := range []struct {
		name          string
		ca, cert, key string
		want          string
	}{
		{"missing ca", "nope.crt", "admin.crt", "admin.key", "--tls-ca: open"},
		{"ca not PEM", "admin.key", "admin.crt", "admin.key", "no PEM certificate in it"},
		{"key of another cert", "ca.crt", "admin.crt", "router.key", "--tls-cert"},
		{"no identity", "ca.crt", "ca.crt", "ca.key", "has no spiffe://llmscaler/ URI SAN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := transport.LoadMutualTLS(s.dir+"/"+tc.ca, s.dir+"/"+tc.cert, s.dir+"/"+tc.key)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("LoadMutualTLS = %v, want %q", err, tc.want)
			}
		})
	}
}

// issue signs l with the CA in dir and returns it as credentials that trust the CA in trust.
func issue(t *testing.T, dir, trust string, l pki.Leaf) transport.Credentials {
	t.Helper()
	ca, err := pki.LoadAuthority(dir+"/ca.crt", dir+"/ca.key")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.IssueTLS(l)
	if err != nil {
		t.Fatal(err)
	}
	trusted, err := pki.LoadAuthority(trust+"/ca.crt", trust+"/ca.key")
	if err != nil {
		t.Fatal(err)
	}
	return transport.MutualTLS(trusted.Pool(), cert)
}
