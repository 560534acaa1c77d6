// Package backoff is the one retry helper: jittered, capped exponential backoff selected
// against a context, with grpc-go's defaults.
package backoff

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"time"
)

// Config shapes the delays between retries.
type Config struct {
	// Base is the delay before the first retry.
	Base time.Duration
	// Multiplier grows the delay after each failed try.
	Multiplier float64
	// Jitter spreads each delay by up to this share either way, so that many clients
	// that failed together do not retry together.
	Jitter float64
	// Max caps the delay before jitter.
	Max time.Duration
}

// Default is grpc-go's backoff.DefaultConfig: 1 s base, x1.6, 0.2 jitter, 120 s cap.
var Default = Config{Base: time.Second, Multiplier: 1.6, Jitter: 0.2, Max: 120 * time.Second}

// Delay is the wait before retry number retries (0 for the first retry).
func (c Config) Delay(retries int) time.Duration {
	if retries < 0 {
		retries = 0
	}
	d := float64(c.Base) * math.Pow(c.Multiplier, float64(retries))
	if d > float64(c.Max) || math.IsInf(d, 0) || math.IsNaN(d) {
		d = float64(c.Max)
	}
	d *= 1 + c.Jitter*(rand.Float64()*2-1)
	if d < 0 {
		return 0
	}
	return time.Duration(d)
}

// Sleep waits for d or until ctx ends, whichever is first, and returns ctx's error if it ended.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// permanent marks an error that retrying cannot fix.
type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }
func (p permanent) Unwrap() error { return p.err }

// Permanent wraps err so that Retry returns it at once instead of trying again.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanent{err}
}

// Retry calls fn until it returns nil or a Permanent error, or ctx ends. onRetry, when not
// nil, is told about each failure and the delay before the next try.
func Retry(ctx context.Context, c Config, fn func(context.Context) error, onRetry func(err error, delay time.Duration)) error {
	for retries := 0; ; retries++ {
		err := fn(ctx)
		if err == nil {
			return nil
		}
		var p permanent
		if errors.As(err, &p) {
			return p.err
		}
		if ctx.Err() != nil {
			return errors.Join(ctx.Err(), err)
		}
		d := c.Delay(retries)
		if onRetry != nil {
			onRetry(err, d)
		}
		if serr := Sleep(ctx, d); serr != nil {
			return errors.Join(serr, err)
		}
	}
}
