package transport

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/llmscaler/llmscaler/internal/names"
)

// TrustDomain is the host part of every llmscaler identity URI: spiffe://llmscaler/<role>.
// A certificate whose URI names another trust domain is no llmscaler identity, so a CA that
// also signs other systems' SPIFFE certificates grants them nothing here.
const TrustDomain = "llmscaler"

// Role is what a certificate's holder is in the fleet.
type Role string

// The roles. A node's identity also carries its node id.
const (
	RoleController Role = "controller"
	RoleRouter     Role = "router"
	RoleAdmin      Role = "admin"
	RoleReadonly   Role = "readonly"
	RoleNode       Role = "node"
)

// Identity is who the holder of a certificate is: its role and, for a node, its node id.
type Identity struct {
	Role Role
	// Node is the node id of a RoleNode identity, empty otherwise.
	Node string
}

// NodeIdentity is the identity of the agent of node id.
func NodeIdentity(id string) Identity { return Identity{Role: RoleNode, Node: id} }

// String is the short form used in logs and the decision journal: "admin", "node/n1".
func (id Identity) String() string {
	if id.Role == RoleNode {
		return string(RoleNode) + "/" + id.Node
	}
	return string(id.Role)
}

// URI is the identity as a certificate's URI SAN carries it: spiffe://llmscaler/node/n1.
func (id Identity) URI() string { return "spiffe://" + TrustDomain + "/" + id.String() }

// ParseIdentity reads an identity from its URI (spiffe://llmscaler/admin) or its short form
// (admin, node/n1).
func ParseIdentity(s string) (Identity, error) {
	path := s
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil {
			return Identity{}, fmt.Errorf("identity %q: %w", s, err)
		}
		if u.Scheme != "spiffe" || u.Host != TrustDomain || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return Identity{}, fmt.Errorf("identity %q: want spiffe://%s/<role>", s, TrustDomain)
		}
		path = strings.TrimPrefix(u.Path, "/")
	}
	role, rest, hasRest := strings.Cut(path, "/")
	switch Role(role) {
	case RoleController, RoleRouter, RoleAdmin, RoleReadonly:
		if hasRest {
			return Identity{}, fmt.Errorf("identity %q: role %s takes no id", s, role)
		}
		return Identity{Role: Role(role)}, nil
	case RoleNode:
		if err := names.NodeID(rest); err != nil {
			return Identity{}, fmt.Errorf("identity %q: node id %w", s, err)
		}
		return NodeIdentity(rest), nil
	}
	return Identity{}, fmt.Errorf("identity %q: unknown role %q (want controller, router, admin, readonly or node/<id>)", s, role)
}

// IdentityOf reads the llmscaler identity of a certificate: its one URI SAN in the llmscaler
// trust domain. Other URI SANs are ignored; none, or two, is an error.
func IdentityOf(cert *x509.Certificate) (Identity, error) {
	var found []Identity
	for _, u := range cert.URIs {
		if u.Scheme != "spiffe" || u.Host != TrustDomain {
			continue
		}
		id, err := ParseIdentity(u.String())
		if err != nil {
			return Identity{}, err
		}
		found = append(found, id)
	}
	switch len(found) {
	case 0:
		return Identity{}, fmt.Errorf("certificate %q has no spiffe://%s/ URI SAN", cert.Subject.CommonName, TrustDomain)
	case 1:
		return found[0], nil
	}
	return Identity{}, fmt.Errorf("certificate %q has %d spiffe://%s/ URI SANs; want one", cert.Subject.CommonName, len(found), TrustDomain)
}

// ErrNoPeerCertificate is returned by PeerIdentity for a connection without a verified
// client certificate: a plaintext one.
var ErrNoPeerCertificate = errors.New("no verified client certificate")

// PeerIdentity returns the identity of the client certificate of the call in ctx, as the
// TLS handshake verified it.
func PeerIdentity(ctx context.Context) (Identity, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return Identity{}, ErrNoPeerCertificate
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return Identity{}, ErrNoPeerCertificate
	}
	return IdentityOf(info.State.VerifiedChains[0][0])
}
