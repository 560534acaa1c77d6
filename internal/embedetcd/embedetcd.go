// Package embedetcd runs a single-member etcd server inside the process: the controller's
// default storage, and the etcd of tests.
package embedetcd

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Config says where the member keeps its data and listens.
type Config struct {
	// Dir holds the member's data; it survives restarts.
	Dir string
	// Name is the member name.
	Name string
	// ClientAddr is the host:port clients use; port 0 picks a free one.
	ClientAddr string
	// PeerAddr is the host:port of the raft peer listener; port 0 picks a free one.
	PeerAddr string
	// InitialCluster lists every member of a new cluster as name=http://host:port,...;
	// empty starts a cluster of this one member. It is read only when Dir holds no data.
	InitialCluster string
	// StartTimeout bounds the wait for the member to be ready.
	StartTimeout time.Duration
}

// Server is a running embedded member.
type Server struct {
	etcd     *embed.Etcd
	endpoint string
}

// Start starts the member and waits until it serves.
func Start(c Config) (*Server, error) {
	if c.Name == "" {
		c.Name = "llmscaler"
	}
	if c.StartTimeout == 0 {
		c.StartTimeout = 30 * time.Second
	}
	cu, err := hostURL(c.ClientAddr)
	if err != nil {
		return nil, fmt.Errorf("etcd client address: %w", err)
	}
	pu, err := hostURL(c.PeerAddr)
	if err != nil {
		return nil, fmt.Errorf("etcd peer address: %w", err)
	}
	cfg := embed.NewConfig()
	cfg.Name = c.Name
	cfg.Dir = c.Dir
	cfg.ListenClientUrls = []url.URL{*cu}
	cfg.AdvertiseClientUrls = []url.URL{*cu}
	cfg.ListenPeerUrls = []url.URL{*pu}
	cfg.AdvertisePeerUrls = []url.URL{*pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	if c.InitialCluster != "" {
		cfg.InitialCluster = c.InitialCluster
	}
	// etcd logs through zap, and at every clean stop it logs closed listeners as errors.
	// It stays quiet; failures reach the caller through Start's error and Err().
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	// Keep an hour of history for watchers that fall behind, then compact, so the
	// database does not grow without bound.
	cfg.AutoCompactionMode = embed.CompactorModePeriodic
	cfg.AutoCompactionRetention = "1h"
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd in %s: %w", c.Dir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd: %w", err)
	case <-time.After(c.StartTimeout):
		e.Server.Stop()
		e.Close()
		return nil, fmt.Errorf("embedded etcd in %s not ready after %v", c.Dir, c.StartTimeout)
	}
	return &Server{etcd: e, endpoint: e.Clients[0].Addr().String()}, nil
}

// Endpoint is the host:port clients reach the member at.
func (s *Server) Endpoint() string { return s.endpoint }

// Err delivers an error if the member fails while it runs.
func (s *Server) Err() <-chan error { return s.etcd.Err() }

// Close stops the member.
func (s *Server) Close() { s.etcd.Close() }

func hostURL(addr string) (*url.URL, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if host == "" {
		return nil, errors.New("needs a host (use 127.0.0.1 for loopback)")
	}
	if port == "0" {
		// etcd advertises the URL it was given, so resolve a free port first.
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, err
		}
		addr = l.Addr().String()
		l.Close()
	}
	return url.Parse("http://" + addr)
}
