package controller

import (
	"sync"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// eventQueue is the number of events a watcher may fall behind by before it is cut off.
const eventQueue = 1024

// eventHub fans events out to WatchEvents streams. Publishing never blocks: a watcher that
// falls eventQueue events behind is cut off and told so, rather than slowing the leader.
type eventHub struct {
	mu   sync.Mutex
	subs map[*subscription]struct{}
}

type subscription struct {
	ch       chan *llmscalerv1.Event
	overflow chan struct{} // closed when the watcher fell too far behind
	filter   *llmscalerv1.WatchEventsRequest
}

func newEventHub() *eventHub {
	return &eventHub{subs: map[*subscription]struct{}{}}
}

func (h *eventHub) subscribe(filter *llmscalerv1.WatchEventsRequest) (*subscription, func()) {
	s := &subscription{ch: make(chan *llmscalerv1.Event, eventQueue), overflow: make(chan struct{}), filter: filter}
	h.mu.Lock()
	h.subs[s] = struct{}{}
	h.mu.Unlock()
	return s, func() {
		h.mu.Lock()
		delete(h.subs, s)
		h.mu.Unlock()
	}
}

func (h *eventHub) publish(e *llmscalerv1.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		if f := s.filter; f.GetDeployment() != "" && f.GetDeployment() != e.GetDeployment() ||
			f.GetNodeId() != "" && f.GetNodeId() != e.GetNodeId() {
			continue
		}
		select {
		case s.ch <- e:
		default:
			close(s.overflow)
			delete(h.subs, s)
		}
	}
}

// notifier wakes every waiter when something changes (a broadcast that can be selected on).
type notifier struct {
	mu sync.Mutex
	ch chan struct{}
}

func newNotifier() *notifier { return &notifier{ch: make(chan struct{})} }

// wait returns a channel that is closed at the next notify.
func (n *notifier) wait() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ch
}

func (n *notifier) notify() {
	n.mu.Lock()
	defer n.mu.Unlock()
	close(n.ch)
	n.ch = make(chan struct{})
}
