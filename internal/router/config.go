package router

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Defaults that New fills into a zero Config field.
const (
	DefaultMaxBodyBytes       = 16 << 20
	DefaultReplayBytes        = 64 << 10
	DefaultEjectFor           = 5 * time.Second
	DefaultColdStartWait      = 3 * time.Minute
	DefaultQueueTimeout       = time.Minute
	DefaultMaxQueue           = 256
	DefaultRetryAfter         = 5 * time.Second
	DefaultDialTimeout        = 5 * time.Second
	DefaultAffinityLoadFactor = 1.25
)

// ErrInvalid is wrapped by the errors of New and SetDeployments for a bad Config or table.
var ErrInvalid = errors.New("invalid")

// Config configures a Router. The zero value is usable: every zero field takes its default.
type Config struct {
	// Logger is the parent logger; nil means none. The router names it "router".
	Logger hclog.Logger

	// MaxBodyBytes caps request bodies; larger ones are answered 413. 0 means
	// DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// ReplayBytes is how much of a body the router reads before it forwards it. A body that
	// fits is held whole, so a retry can send it again; a longer one is streamed and can be
	// retried only if the failed attempt consumed none of what was not held. 0 means
	// DefaultReplayBytes.
	ReplayBytes int

	// EjectFor is how long an instance that failed (connection error or 5xx) is left out of
	// balancing. 0 means DefaultEjectFor.
	EjectFor time.Duration

	// DefaultColdStartWait is the wait of a Deployment whose ColdStartWait is 0.
	// 0 means DefaultColdStartWait.
	DefaultColdStartWait time.Duration
	// QueueTimeout bounds the wait of a request that arrived while the deployment had
	// endpoints but all were at MaxInFlight. 0 means DefaultQueueTimeout.
	QueueTimeout time.Duration
	// DefaultMaxQueue is the queue bound of a Deployment whose MaxQueue is 0.
	// 0 means DefaultMaxQueue.
	DefaultMaxQueue int
	// RetryAfter is what the Retry-After header of a 503 says, rounded up to whole seconds.
	// 0 means DefaultRetryAfter.
	RetryAfter time.Duration

	// AffinityHeader names a request header (such as "X-Session-ID") whose value picks a
	// preferred instance. "" turns header affinity off.
	AffinityHeader string
	// PrefixAffinityBytes, when positive, makes a request without the affinity header
	// prefer an instance by a hash of the first PrefixAffinityBytes bytes of its "prompt" or
	// "messages" JSON, so requests sharing a prompt prefix (a system prompt) land where that
	// prefix is cached. 0 turns it off.
	PrefixAffinityBytes int
	// AffinityLoadFactor is c of consistent hashing with bounded load: a preferred instance
	// takes the request only while that keeps its outstanding count within
	// ceil(c x (total outstanding + 1) / instances). Must be at least 1; 0 means
	// DefaultAffinityLoadFactor.
	AffinityLoadFactor float64

	// DialTimeout bounds connecting to an instance. 0 means DefaultDialTimeout. Ignored
	// when Transport is set.
	DialTimeout time.Duration
	// Transport sends requests to instances; nil means a transport of the router's own that
	// ignores proxy settings and passes encodings through.
	Transport http.RoundTripper

	// OnDemand, when set, is called with the deployment's name when a request arrives for a
	// deployment that has no endpoint. It runs on a goroutine of its own, at most one at a
	// time per deployment; calls that would overlap a running one are dropped.
	OnDemand func(deployment string)

	// Now is the clock of measurements and ejections; nil means time.Now.
	Now func() time.Time
}

// withDefaults fills the zero fields.
func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.ReplayBytes == 0 {
		c.ReplayBytes = DefaultReplayBytes
	}
	if c.EjectFor == 0 {
		c.EjectFor = DefaultEjectFor
	}
	if c.DefaultColdStartWait == 0 {
		c.DefaultColdStartWait = DefaultColdStartWait
	}
	if c.QueueTimeout == 0 {
		c.QueueTimeout = DefaultQueueTimeout
	}
	if c.DefaultMaxQueue == 0 {
		c.DefaultMaxQueue = DefaultMaxQueue
	}
	if c.RetryAfter == 0 {
		c.RetryAfter = DefaultRetryAfter
	}
	if c.AffinityLoadFactor == 0 {
		c.AffinityLoadFactor = DefaultAffinityLoadFactor
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// validate checks a Config after withDefaults.
func (c Config) validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w config: "+format, append([]any{ErrInvalid}, args...)...))
	}
	if c.MaxBodyBytes < 0 {
		bad("MaxBodyBytes %d: must not be negative", c.MaxBodyBytes)
	}
	if c.ReplayBytes < 0 {
		bad("ReplayBytes %d: must not be negative", c.ReplayBytes)
	}
	if c.MaxBodyBytes > 0 && int64(c.ReplayBytes) > c.MaxBodyBytes {
		bad("ReplayBytes %d: must not exceed MaxBodyBytes %d", c.ReplayBytes, c.MaxBodyBytes)
	}
	if c.EjectFor < 0 {
		bad("EjectFor %s: must not be negative", c.EjectFor)
	}
	if c.DefaultColdStartWait < 0 {
		bad("DefaultColdStartWait %s: must not be negative", c.DefaultColdStartWait)
	}
	if c.QueueTimeout < 0 {
		bad("QueueTimeout %s: must not be negative", c.QueueTimeout)
	}
	if c.DefaultMaxQueue < 0 {
		bad("DefaultMaxQueue %d: must not be negative", c.DefaultMaxQueue)
	}
	if c.RetryAfter < 0 {
		bad("RetryAfter %s: must not be negative", c.RetryAfter)
	}
	if c.AffinityHeader != "" && !isToken(c.AffinityHeader) {
		bad("AffinityHeader %q: not a valid header name", c.AffinityHeader)
	}
	if c.PrefixAffinityBytes < 0 {
		bad("PrefixAffinityBytes %d: must not be negative", c.PrefixAffinityBytes)
	}
	if math.IsNaN(c.AffinityLoadFactor) || c.AffinityLoadFactor < 1 {
		bad("AffinityLoadFactor %v: must be at least 1", c.AffinityLoadFactor)
	}
	if c.DialTimeout < 0 {
		bad("DialTimeout %s: must not be negative", c.DialTimeout)
	}
	return errors.Join(errs...)
}

// isToken reports whether s is an RFC 9110 token, which header names are.
func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c < 0x80 && c > ' ' && c != 0x7f && !isSeparator(c):
		default:
			return false
		}
	}
	return s != ""
}

func isSeparator(c byte) bool {
	switch c {
	case '(', ')', '<', '>', '@', ',', ';', ':', '\\', '"', '/', '[', ']', '?', '=', '{', '}':
		return true
	}
	return false
}
