package scaling

import "time"

// Clock is where a Fleet takes time and timers from: the real clock in the controller, a
// fake one in tests.
type Clock interface {
	Now() time.Time
	// NewTicker fires every d until stopped.
	NewTicker(d time.Duration) Ticker
	// NewTimer fires once, d from now, unless stopped; Reset arms it again.
	NewTimer(d time.Duration) Timer
}

// Ticker is a time.Ticker behind an interface.
type Ticker interface {
	C() <-chan time.Time
	Stop()
}

// Timer is a time.Timer behind an interface.
type Timer interface {
	C() <-chan time.Time
	Reset(d time.Duration)
	Stop()
}

// RealClock is the system clock; Now may be replaced (the controller injects its own).
type RealClock struct {
	// NowFunc, when set, replaces time.Now.
	NowFunc func() time.Time
}

// Now is the current time.
func (c RealClock) Now() time.Time {
	if c.NowFunc != nil {
		return c.NowFunc()
	}
	return time.Now()
}

// NewTicker is time.NewTicker.
func (RealClock) NewTicker(d time.Duration) Ticker { return realTicker{time.NewTicker(d)} }

// NewTimer is time.NewTimer.
func (RealClock) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

type realTicker struct{ t *time.Ticker }

func (t realTicker) C() <-chan time.Time { return t.t.C }
func (t realTicker) Stop()               { t.t.Stop() }

type realTimer struct{ t *time.Timer }

func (t realTimer) C() <-chan time.Time   { return t.t.C }
func (t realTimer) Reset(d time.Duration) { t.t.Reset(d) }
func (t realTimer) Stop()                 { t.t.Stop() }
