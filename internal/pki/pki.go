// Package pki makes the development certificates of an llmscaler fleet: a CA and, signed by
// it, one ECDSA P-256 certificate and key per identity (controller, router, admin, readonly,
// and node/<id> for each agent), each naming its identity in a spiffe://llmscaler/ URI SAN
// (see transport.Identity). `llmscaler certs` and the demo write them with Write; tests issue
// odd ones (expired, from another CA) with Authority.Issue.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/llmscaler/llmscaler/internal/names"
	"github.com/llmscaler/llmscaler/internal/transport"
)

// backdate starts every certificate's validity this long before now, so that a host whose
// clock is a little behind accepts it at once.
const backdate = time.Hour

// Authority is a certificate authority: its certificate and key.
type Authority struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// NewAuthority makes a self-signed CA valid from notBefore to notAfter.
func NewAuthority(commonName string, notBefore, notAfter time.Time) (*Authority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"llmscaler"}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("sign the CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &Authority{Cert: cert, Key: key}, nil
}

// LoadAuthority reads a CA's certificate and key from PEM files, as Write makes them, to
// issue more certificates (tests issue expired ones).
func LoadAuthority(certFile, keyFile string) (*Authority, error) {
	cb, err := os.ReadFile(certFile)
	if err != nil {
		return nil, err
	}
	kb, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, err
	}
	cblock, _ := pem.Decode(cb)
	kblock, _ := pem.Decode(kb)
	if cblock == nil || kblock == nil {
		return nil, fmt.Errorf("%s, %s: not PEM", certFile, keyFile)
	}
	cert, err := x509.ParseCertificate(cblock.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", certFile, err)
	}
	key, err := x509.ParseECPrivateKey(kblock.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", keyFile, err)
	}
	if !cert.IsCA || !key.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("%s, %s: not a CA certificate and its key", certFile, keyFile)
	}
	return &Authority{Cert: cert, Key: key}, nil
}

// Leaf describes one certificate to issue.
type Leaf struct {
	Identity transport.Identity
	// CommonName is for people; the identity is in the URI SAN. Default: the identity.
	CommonName string
	// Server makes it a server certificate too, for DNSNames and IPs.
	Server   bool
	DNSNames []string
	IPs      []net.IP
	// NotBefore and NotAfter bound its validity.
	NotBefore, NotAfter time.Time
}

// Issue signs a certificate for l with a new P-256 key, and returns both PEM-encoded.
func (a *Authority) Issue(l Leaf) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, nil, err
	}
	uri, err := url.Parse(l.Identity.URI())
	if err != nil {
		return nil, nil, err
	}
	cn := l.CommonName
	if cn == "" {
		cn = l.Identity.String()
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"llmscaler"}},
		NotBefore:    l.NotBefore,
		NotAfter:     l.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{uri},
	}
	if l.Server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
		tmpl.DNSNames, tmpl.IPAddresses = l.DNSNames, l.IPs
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.Cert, &key.PublicKey, a.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("sign %s: %w", l.Identity, err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pemBlock("CERTIFICATE", der), pemBlock("EC PRIVATE KEY", keyDER), nil
}

// IssueTLS is Issue for in-process use: the certificate and key as a tls.Certificate.
func (a *Authority) IssueTLS(l Leaf) (tls.Certificate, error) {
	crt, key, err := a.Issue(l)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(crt, key)
}

// Pool is a certificate pool that trusts this CA alone.
func (a *Authority) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(a.Cert)
	return p
}

// CertPEM is the CA's certificate, PEM-encoded.
func (a *Authority) CertPEM() []byte { return pemBlock("CERTIFICATE", a.Cert.Raw) }

// KeyPEM is the CA's private key, PEM-encoded.
func (a *Authority) KeyPEM() ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(a.Key)
	if err != nil {
		return nil, err
	}
	return pemBlock("EC PRIVATE KEY", der), nil
}

// pair is one certificate and key of a set, by file name.
type pair struct {
	name string
	leaf Leaf
}

func leafNames(ps []pair) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.name
	}
	return out
}

// Set is what Write makes.
type Set struct {
	// Dir receives the files; it is created 0700 if missing.
	Dir string
	// Nodes are the node ids to make node-<id> certificates for.
	Nodes []string
	// Hosts are extra DNS names and IP addresses of the controller certificate, besides
	// localhost, 127.0.0.1 and ::1.
	Hosts []string
	// Days is how long the certificates are valid; 0 means 365.
	Days int
	// Force overwrites existing files; without it Write refuses before writing anything.
	Force bool
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Fixed names of the files Write makes, besides node-<id>.crt and .key.
const (
	CAName         = "ca"
	ControllerName = "controller"
	RouterName     = "router"
	AdminName      = "admin"
	ReadonlyName   = "readonly"
)

// NodeName is the file name (without extension) of node id's certificate and key.
func NodeName(id string) string { return "node-" + id }

// Write makes a CA (ca.crt, ca.key) and a certificate and key (NAME.crt, NAME.key) for the
// controller, the router, admin, readonly and each node. Keys are written 0600. It returns
// the paths written, in order.
func Write(s Set) ([]string, error) {
	if s.Now == nil {
		s.Now = time.Now
	}
	if s.Days == 0 {
		s.Days = 365
	}
	if s.Days < 0 {
		return nil, fmt.Errorf("--days %d: must be positive", s.Days)
	}
	if s.Dir == "" {
		return nil, errors.New("--out: is empty")
	}
	seen := map[string]bool{}
	for _, id := range s.Nodes {
		if err := names.NodeID(id); err != nil {
			return nil, fmt.Errorf("--nodes: node id %w", err)
		}
		if seen[id] {
			return nil, fmt.Errorf("--nodes: %q given twice", id)
		}
		seen[id] = true
	}
	dns := []string{"localhost"}
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	for _, h := range s.Hosts {
		h = strings.TrimSpace(h)
		switch ip := net.ParseIP(h); {
		case ip != nil:
			ips = append(ips, ip)
		case h == "" || strings.ContainsAny(h, " /:@*"):
			return nil, fmt.Errorf("--hosts: %q is neither an IP address nor a host name", h)
		default:
			dns = append(dns, h)
		}
	}

	now := s.Now()
	from, to := now.Add(-backdate), now.Add(time.Duration(s.Days)*24*time.Hour)
	pairs := []pair{
		{ControllerName, Leaf{Identity: transport.Identity{Role: transport.RoleController}, CommonName: "llmscaler controller", Server: true, DNSNames: dns, IPs: ips}},
		{RouterName, Leaf{Identity: transport.Identity{Role: transport.RoleRouter}, CommonName: "llmscaler router"}},
		{AdminName, Leaf{Identity: transport.Identity{Role: transport.RoleAdmin}, CommonName: "llmscaler admin"}},
		{ReadonlyName, Leaf{Identity: transport.Identity{Role: transport.RoleReadonly}, CommonName: "llmscaler readonly"}},
	}
	for _, id := range s.Nodes {
		pairs = append(pairs, pair{NodeName(id), Leaf{Identity: transport.NodeIdentity(id), CommonName: "llmscaler node " + id}})
	}
	type file struct {
		path string
		data []byte
		mode os.FileMode
	}
	var files []file
	add := func(name string, crt, key []byte) {
		files = append(files, file{filepath.Join(s.Dir, name+".crt"), crt, 0o644}, file{filepath.Join(s.Dir, name+".key"), key, 0o600})
	}
	if !s.Force {
		for _, n := range append([]string{CAName}, leafNames(pairs)...) {
			for _, ext := range []string{".crt", ".key"} {
				p := filepath.Join(s.Dir, n+ext)
				if _, err := os.Lstat(p); err == nil {
					return nil, fmt.Errorf("%s exists; pass --force to overwrite the whole set", p)
				} else if !errors.Is(err, fs.ErrNotExist) {
					return nil, err
				}
			}
		}
	}
	ca, err := NewAuthority("llmscaler development CA", from, to)
	if err != nil {
		return nil, err
	}
	caKey, err := ca.KeyPEM()
	if err != nil {
		return nil, err
	}
	add(CAName, ca.CertPEM(), caKey)
	for _, p := range pairs {
		p.leaf.NotBefore, p.leaf.NotAfter = from, to
		crt, key, err := ca.Issue(p.leaf)
		if err != nil {
			return nil, err
		}
		add(p.name, crt, key)
	}
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return nil, err
	}
	var paths []string
	for _, f := range files {
		if err := writeFile(f.path, f.data, f.mode); err != nil {
			return nil, err
		}
		paths = append(paths, f.path)
	}
	return paths, nil
}

// writeFile replaces path with data, with mode whatever the umask and a file there before.
func writeFile(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func serialNumber() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
