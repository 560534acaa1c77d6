package backoff

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestDelayGrowsAndCaps(t *testing.T) {
	c := Config{Base: time.Second, Multiplier: 1.6, Jitter: 0.2, Max: 10 * time.Second}
	tests := []struct {
		name     string
		retries  int
		min, max time.Duration
	}{
		{"first", 0, 800 * time.Millisecond, 1200 * time.Millisecond},
		{"third", 2, time.Duration(0.8 * 2.56 * float64(time.Second)), time.Duration(1.2 * 2.56 * float64(time.Second))},
		{"capped", 50, 8 * time.Second, 12 * time.Second},
		{"huge exponent stays capped", 100000, 8 * time.Second, 12 * time.Second},
		{"negative is first", -3, 800 * time.Millisecond, 1200 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for range 200 {
				d := c.Delay(tc.retries)
				if d < tc.min || d > tc.max {
					t.Fatalf("Delay(%d) = %v, want within [%v, %v]", tc.retries, d, tc.min, tc.max)
				}
			}
		})
	}
}

func TestDelayIsJittered(t *testing.T) {
	seen := map[time.Duration]bool{}
	for range 50 {
		seen[Default.Delay(3)] = true
	}
	if len(seen) < 10 {
		t.Fatalf("50 delays gave only %d distinct values; jitter is not applied", len(seen))
	}
}

func TestRetry(t *testing.T) {
	fast := Config{Base: time.Millisecond, Multiplier: 2, Max: 4 * time.Millisecond}
	boom := errors.New("boom")
	t.Run("succeeds after failures", func(t *testing.T) {
		calls, retries := 0, 0
		err := Retry(context.Background(), fast, func(context.Context) error {
			calls++
			if calls < 4 {
				return boom
			}
			return nil
		}, func(error, time.Duration) { retries++ })
		if err != nil || calls != 4 || retries != 3 {
			t.Fatalf("err=%v calls=%d retries=%d, want nil 4 3", err, calls, retries)
		}
	})
	t.Run("permanent stops at once", func(t *testing.T) {
		calls := 0
		err := Retry(context.Background(), fast, func(context.Context) error {
			calls++
			return Permanent(boom)
		}, nil)
		if !errors.Is(err, boom) || calls != 1 {
			t.Fatalf("err=%v calls=%d, want boom after 1 call", err, calls)
		}
	})
	t.Run("context end stops", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		calls := 0
		err := Retry(ctx, fast, func(context.Context) error {
			calls++
			if calls == 3 {
				cancel()
			}
			return boom
		}, nil)
		if !errors.Is(err, context.Canceled) || !errors.Is(err, boom) || calls != 3 {
			t.Fatalf("err=%v calls=%d, want canceled+boom after 3 calls", err, calls)
		}
	})
}
