package transport

import "context"

// Receive runs a stream's receive loop on its own goroutine, so that the caller's one select
// loop can wait on received messages alongside everything else and stay the only sender.
// Messages arrive on msgs; the first receive error arrives on errs (buffered, so the
// goroutine never blocks on it); done is closed when the goroutine has returned, which it
// does after an error or once ctx ends.
func Receive[T any](ctx context.Context, recv func() (T, error)) (msgs <-chan T, errs <-chan error, done <-chan struct{}) {
	m := make(chan T)
	e := make(chan error, 1)
	d := make(chan struct{})
	go func() {
		defer close(d)
		for {
			v, err := recv()
			if err != nil {
				e <- err
				return
			}
			select {
			case m <- v:
			case <-ctx.Done():
				return
			}
		}
	}()
	return m, e, d
}
