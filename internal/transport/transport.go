// Package transport holds the gRPC settings that every llmscaler server and client shares:
// keepalives, message limits both ways, and the transport credentials: mutual TLS 1.3
// (MutualTLS) whose certificates carry the holder's identity (Identity), or plaintext for
// loopback.
package transport

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
)

// Credentials supplies the transport security of both ends of a connection.
type Credentials interface {
	// Server returns the credentials a gRPC server listens with.
	Server() credentials.TransportCredentials
	// Client returns the credentials a gRPC client dials with.
	Client() credentials.TransportCredentials
}

type plaintext struct{}

func (plaintext) Server() credentials.TransportCredentials { return insecure.NewCredentials() }
func (plaintext) Client() credentials.TransportCredentials { return insecure.NewCredentials() }

// Plaintext is no transport security: for loopback and trusted networks only.
var Plaintext Credentials = plaintext{}

const (
	// MaxMessageBytes bounds one gRPC message, received or sent, on every server and client: a
	// report of a large node fits many times over.
	MaxMessageBytes = 4 << 20

	// The client pings an idle connection every clientPingInterval and gives up on it when
	// the ping is not answered within pingTimeout. The server allows pings every
	// minPingInterval, below the client's rate, so it never answers a ping with GOAWAY.
	clientPingInterval = 10 * time.Second
	serverPingInterval = 15 * time.Second
	pingTimeout        = 5 * time.Second
	minPingInterval    = 5 * time.Second

	// readBufferBytes is each connection's read buffer. gRPC's default of 32 KiB, with as
	// much again for writing, cost a controller with 10,000 agent connections 640 MiB for
	// messages of a few KiB; a larger message is read in several calls. The write buffer
	// is shared (taken from a pool for each flush and given back).
	readBufferBytes = 8 << 10

	// windowBytes is the HTTP/2 flow-control window of every stream and connection, fixed.
	// A fixed window turns off gRPC's bandwidth estimation, which answers a data frame with
	// a ping whenever no ping is out: with agents reporting every second, that was a ping
	// written and an ack read per report, 10,000 of each a second at 10,000 agents. 1 MiB
	// is above what a report stream needs and keeps a 4 MiB admin reply to four windows.
	windowBytes = 1 << 20
)

// ServerOptions are the options of every llmscaler gRPC server.
func ServerOptions(c Credentials) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.Creds(c.Server()),
		grpc.MaxRecvMsgSize(MaxMessageBytes),
		grpc.MaxSendMsgSize(MaxMessageBytes),
		grpc.ReadBufferSize(readBufferBytes),
		grpc.SharedWriteBuffer(true),
		grpc.StaticStreamWindowSize(windowBytes),
		grpc.StaticConnWindowSize(windowBytes),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: serverPingInterval, Timeout: pingTimeout}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: minPingInterval, PermitWithoutStream: true}),
	}
}

// DialOptions are the options of every llmscaler gRPC client.
func DialOptions(c Credentials) []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithTransportCredentials(c.Client()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageBytes), grpc.MaxCallSendMsgSize(MaxMessageBytes)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: clientPingInterval, Timeout: pingTimeout, PermitWithoutStream: true}),
		grpc.WithReadBufferSize(readBufferBytes),
		grpc.WithSharedWriteBuffer(true),
		grpc.WithStaticStreamWindowSize(windowBytes),
		grpc.WithStaticConnWindowSize(windowBytes),
	}
}
