package transport

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"

	"google.golang.org/grpc/credentials"
)

type mutualTLS struct {
	server, client credentials.TransportCredentials
}

func (m mutualTLS) Server() credentials.TransportCredentials { return m.server.Clone() }
func (m mutualTLS) Client() credentials.TransportCredentials { return m.client.Clone() }

// MutualTLS is mutual TLS 1.3 with cert as this end's certificate and ca as the only
// authority trusted for the other end. A server requires a client certificate that ca
// verifies; a client verifies the server's certificate against ca and the dialled host name,
// and accepts only a controller's identity (spiffe://llmscaler/controller): an agent or a
// router talks to nothing else.
func MutualTLS(ca *x509.CertPool, cert tls.Certificate) Credentials {
	server := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ca,
	}
	client := &tls.Config{
		MinVersion:       tls.VersionTLS13,
		Certificates:     []tls.Certificate{cert},
		RootCAs:          ca,
		VerifyConnection: verifyController,
	}
	return mutualTLS{server: credentials.NewTLS(server), client: credentials.NewTLS(client)}
}

// verifyController runs after the chain and host name checks of a client's handshake.
func verifyController(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("server sent no certificate")
	}
	id, err := IdentityOf(cs.PeerCertificates[0])
	if err != nil {
		return fmt.Errorf("server certificate: %w", err)
	}
	if id.Role != RoleController {
		return fmt.Errorf("server certificate is %s's, not a controller's (%s)", id, Identity{Role: RoleController}.URI())
	}
	return nil
}

// LoadMutualTLS reads the PEM files of MutualTLS: the CA certificates, this end's
// certificate (with any intermediates after it) and its private key. It returns the
// credentials and the identity the certificate carries. Errors name the file and the flag
// that gives it.
func LoadMutualTLS(caFile, certFile, keyFile string) (Credentials, Identity, error) {
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, Identity{}, fmt.Errorf("--tls-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, Identity{}, fmt.Errorf("--tls-ca %s: no PEM certificate in it", caFile)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, Identity{}, fmt.Errorf("--tls-cert %s, --tls-key %s: %w", certFile, keyFile, err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, Identity{}, fmt.Errorf("--tls-cert %s: %w", certFile, err)
		}
	}
	id, err := IdentityOf(leaf)
	if err != nil {
		return nil, Identity{}, fmt.Errorf("--tls-cert %s: %w", certFile, err)
	}
	return MutualTLS(pool, cert), id, nil
}

// IsLoopback reports whether a host:port address can only be reached from this machine: its
// host is a loopback IP or "localhost". An empty host (":7400") listens everywhere.
func IsLoopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
