package fleetbench

import (
	"container/heap"
	"context"
	"math/rand/v2"
	"time"
)

// schedule is the one timer of all simulated agents: a heap of the next report time of each
// agent, handed to a few workers when due. One goroutine and one heap entry an agent cost
// far less than 10,000 tickers, and the workers bound how many sends run at once.
type schedule struct {
	h    dueHeap
	work chan *simConn
	// interval is the report interval of agent c (the welcome's, or the default before one).
	interval func(c *simConn) time.Duration
}

type dueEntry struct {
	at time.Time
	c  *simConn
}

type dueHeap []dueEntry

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h dueHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)        { *h = append(*h, x.(dueEntry)) }
func (h *dueHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// newSchedule puts every agent at a random phase of its first interval, so that reports
// spread over the second instead of arriving in one burst.
func newSchedule(agents []*simConn, now time.Time, interval func(*simConn) time.Duration, workers int) *schedule {
	s := &schedule{h: make(dueHeap, 0, len(agents)), work: make(chan *simConn, workers*4), interval: interval}
	for _, c := range agents {
		s.h = append(s.h, dueEntry{at: now.Add(time.Duration(rand.Int64N(int64(interval(c)) + 1))), c: c})
	}
	heap.Init(&s.h)
	return s
}

// jittered is d spread by up to 10% either way, as the real agent's ticker drifts.
func jittered(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.9 + 0.2*rand.Float64()))
}

// run hands each agent to the workers when its report is due, until ctx ends; it closes
// work when it returns. A worker that falls behind delays the agents queued behind it, not
// the timer: entries are rescheduled from their due time, not from when they were taken.
func (s *schedule) run(ctx context.Context) {
	defer close(s.work)
	if len(s.h) == 0 {
		<-ctx.Done()
		return
	}
	t := time.NewTimer(time.Until(s.h[0].at))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		for len(s.h) > 0 && !s.h[0].at.After(now) {
			e := &s.h[0]
			select {
			case s.work <- e.c:
			case <-ctx.Done():
				return
			}
			e.at = e.at.Add(jittered(s.interval(e.c)))
			if e.at.Before(now) {
				// More than an interval behind: skip the missed reports rather than burst.
				e.at = now.Add(jittered(s.interval(e.c)))
			}
			heap.Fix(&s.h, 0)
		}
		t.Reset(time.Until(s.h[0].at))
	}
}
