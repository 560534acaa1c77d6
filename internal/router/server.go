package router

import (
	"net/http"
	"time"
)

// NewServer returns the HTTP server the router daemon serves h with. It speaks HTTP/1.1 and,
// on the same port, HTTP/2 without TLS (h2c with prior knowledge, as Envoy and gRPC-style
// front proxies send it), so a proxy or client holding thousands of streams multiplexes them
// over a few connections instead of holding a socket (a file descriptor in the router) for
// each. Header reads are bounded so an idle connection cannot hold a slot forever.
func NewServer(h http.Handler) *http.Server {
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		// HTTP/2's limit of streams per connection stays Go's default of 250: its write
		// scheduler visits every stream of a connection per frame, so at 1,000 streams
		// per connection it alone took a third of the router's CPU.
		Protocols: &p,
	}
}
