package pki

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/llmscaler/llmscaler/internal/transport"
)

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("%s: no PEM certificate", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestWrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	paths, err := Write(Set{Dir: dir, Nodes: []string{"n1", "gpu-02"}, Hosts: []string{"10.0.0.5", "controller-1.example", "fd00::1"}, Days: 30, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range paths {
		names = append(names, filepath.Base(p))
	}
	want := []string{"ca.crt", "ca.key", "controller.crt", "controller.key", "router.crt", "router.key", "admin.crt", "admin.key",
		"readonly.crt", "readonly.key", "node-n1.crt", "node-n1.key", "node-gpu-02.crt", "node-gpu-02.key"}
	if !slices.Equal(names, want) {
		t.Fatalf("wrote %v, want %v", names, want)
	}
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		wantMode := os.FileMode(0o644)
		if strings.HasSuffix(p, ".key") {
			wantMode = 0o600
		}
		if fi.Mode().Perm() != wantMode {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode().Perm(), wantMode)
		}
	}

	ca := readCert(t, filepath.Join(dir, "ca.crt"))
	if !ca.IsCA || ca.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("ca.crt is not a CA")
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	for _, tc := range []struct {
		file   string
		id     string
		server bool
	}{
		{"controller", "controller", true},
		{"router", "router", false},
		{"admin", "admin", false},
		{"readonly", "readonly", false},
		{"node-n1", "node/n1", false},
		{"node-gpu-02", "node/gpu-02", false},
	} {
		t.Run(tc.file, func(t *testing.T) {
			c := readCert(t, filepath.Join(dir, tc.file+".crt"))
			id, err := transport.IdentityOf(c)
			if err != nil || id.String() != tc.id {
				t.Fatalf("identity %v, %v; want %s", id, err, tc.id)
			}
			if c.URIs[0].String() != "spiffe://llmscaler/"+tc.id || c.Subject.CommonName == "" {
				t.Errorf("URI SAN %s, CN %q", c.URIs[0], c.Subject.CommonName)
			}
			if !c.NotBefore.Equal(now.Add(-time.Hour)) || !c.NotAfter.Equal(now.Add(30*24*time.Hour)) {
				t.Errorf("valid %v to %v", c.NotBefore, c.NotAfter)
			}
			if _, err := c.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
				t.Errorf("not a client certificate of the CA: %v", err)
			}
			_, err = c.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now, DNSName: "controller-1.example"})
			if tc.server != (err == nil) {
				t.Errorf("as a server certificate for controller-1.example: %v, want server %v", err, tc.server)
			}
			if !tc.server {
				return
			}
			if !slices.Equal(c.DNSNames, []string{"localhost", "controller-1.example"}) {
				t.Errorf("DNS SANs %v", c.DNSNames)
			}
			for _, ip := range []string{"127.0.0.1", "::1", "10.0.0.5", "fd00::1"} {
				if !slices.ContainsFunc(c.IPAddresses, func(a net.IP) bool { return a.Equal(net.ParseIP(ip)) }) {
					t.Errorf("no IP SAN %s in %v", ip, c.IPAddresses)
				}
			}
		})
	}
	// The keys go with their certificates.
	if _, _, err := transport.LoadMutualTLS(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "node-n1.crt"), filepath.Join(dir, "node-n1.key")); err != nil {
		t.Errorf("node-n1: %v", err)
	}
}

func TestWriteRefusesToOverwrite(t *testing.T) {
	dir := t.TempDir()
	if _, err := Write(Set{Dir: dir, Nodes: []string{"n1"}}); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(dir, "ca.key"))
	// A set with a new node still holds ca.crt: nothing is written.
	_, err := Write(Set{Dir: dir, Nodes: []string{"n1", "n2"}})
	if err == nil || err.Error() != filepath.Join(dir, "ca.crt")+" exists; pass --force to overwrite the whole set" {
		t.Fatalf("Write over a set = %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node-n2.crt")); !os.IsNotExist(err) {
		t.Errorf("node-n2.crt written despite the refusal: %v", err)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "ca.key")); string(after) != string(before) {
		t.Error("ca.key changed")
	}
	if _, err := Write(Set{Dir: dir, Nodes: []string{"n1", "n2"}, Force: true}); err != nil {
		t.Fatalf("Write with Force: %v", err)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "ca.key")); string(after) == string(before) {
		t.Error("ca.key not replaced with Force")
	}
}

func TestWriteErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  Set
		want string
	}{
		{"bad node", Set{Nodes: []string{"../x"}}, `--nodes: node id "../x" must be`},
		{"node twice", Set{Nodes: []string{"n1", "n1"}}, `--nodes: "n1" given twice`},
		{"bad host", Set{Hosts: []string{"http://x"}}, `--hosts: "http://x" is neither an IP address nor a host name`},
		{"negative days", Set{Days: -1}, "--days -1: must be positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.set.Dir = t.TempDir()
			_, err := Write(tc.set)
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("Write = %v, want %q", err, tc.want)
			}
			if files, _ := os.ReadDir(tc.set.Dir); len(files) != 0 {
				t.Errorf("files written: %v", files)
			}
		})
	}
}
