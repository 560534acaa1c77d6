package agent

import (
	"sync"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// reportQueue holds reports between the sampler that makes them and the stream that sends
// them. It is bounded because an agent may be cut off for hours: when it is full the oldest
// report goes, since the controller cares more about the present than the distant past.
type reportQueue struct {
	// ready has room for one signal: the sender only needs to know that there is something
	// to send, not how much.
	ready chan struct{}

	mu      sync.Mutex
	ring    []queuedReport
	head    int // index of the oldest report
	n       int // number of reports held
	dropped uint64
}

// queuedReport is a report and the stream session that was up when it was made (0 for none).
type queuedReport struct {
	report  *llmscalerv1.Report
	session uint64
}

func newReportQueue(capacity int) *reportQueue {
	if capacity < 1 {
		capacity = 1
	}
	return &reportQueue{ready: make(chan struct{}, 1), ring: make([]queuedReport, capacity)}
}

// push appends r, dropping the oldest report if the queue is full, and stamps r with the
// number of reports dropped so far, this drop included. It reports whether it dropped one.
//
// A report that the stream is sending as push drops it may still arrive; it is counted as
// dropped all the same. That overstates the loss by one in a rare race, and never hides one.
func (q *reportQueue) push(r *llmscalerv1.Report, session uint64) (dropped bool) {
	q.mu.Lock()
	if q.n == len(q.ring) {
		q.ring[q.head] = queuedReport{}
		q.head = (q.head + 1) % len(q.ring)
		q.n--
		q.dropped++
		dropped = true
	}
	r.DroppedReports = q.dropped
	q.ring[(q.head+q.n)%len(q.ring)] = queuedReport{report: r, session: session}
	q.n++
	q.mu.Unlock()

	select {
	case q.ready <- struct{}{}:
	default:
	}
	return dropped
}

// peek returns the oldest report without removing it, so that a failed send loses nothing.
func (q *reportQueue) peek() (queuedReport, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.n == 0 {
		return queuedReport{}, false
	}
	return q.ring[q.head], true
}

// pop removes r if it is still the oldest report. push may have dropped it while it was being
// sent, and then the oldest report is one that has not been sent yet and must stay.
func (q *reportQueue) pop(r *llmscalerv1.Report) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.n == 0 || q.ring[q.head].report != r {
		return false
	}
	q.ring[q.head] = queuedReport{}
	q.head = (q.head + 1) % len(q.ring)
	q.n--
	return true
}

// len is the number of reports held.
func (q *reportQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}

// droppedTotal is the number of reports dropped since the agent started.
func (q *reportQueue) droppedTotal() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.dropped
}
