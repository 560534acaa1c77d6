package servermodel

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// ErrInvalidRequest is returned by Submit for a request with fewer than one prompt or output
// token.
var ErrInvalidRequest = errors.New("invalid request")

// ErrExceedsKVCache is returned by Submit for a request whose prompt and output together need
// more KV than the whole cache holds, so it could never be admitted.
var ErrExceedsKVCache = errors.New("request exceeds the KV cache")

// Request is one generation request as the engine sees it.
type Request struct {
	// ID names the request in events; the caller keeps IDs unique among live requests.
	ID uint64
	// PromptTokens is the prompt length; it must be at least 1.
	PromptTokens int
	// OutputTokens is exactly how many tokens to generate; it must be at least 1.
	OutputTokens int
	// Arrival is when the request arrived. The engine only copies it into the request's
	// events, for the caller's latency accounting; it admits in Submit order.
	Arrival time.Time
}

// EventKind says what happened to a request.
type EventKind uint8

const (
	// EventFirstToken is the first output token, at the end of the request's last prefill
	// iteration.
	EventFirstToken EventKind = iota + 1
	// EventToken is each later output token, one per decode iteration.
	EventToken
	// EventDone follows the last token, at the same time: the request has finished and its
	// KV is free.
	EventDone
)

// String returns the kind's name.
func (k EventKind) String() string {
	switch k {
	case EventFirstToken:
		return "first_token"
	case EventToken:
		return "token"
	case EventDone:
		return "done"
	}
	return fmt.Sprintf("EventKind(%d)", uint8(k))
}

// Event is something that happened to a request at the end of an iteration.
type Event struct {
	Kind EventKind
	ID   uint64
	// Time is the end of the iteration.
	Time time.Time
	// Tokens is how many output tokens the request has had so far, this one included.
	Tokens int
	// Arrival is the request's Arrival.
	Arrival time.Time
	// Start is the start of the request's first iteration: Start-Arrival is its queue time.
	Start time.Time
}

// Counters are cumulative totals since the engine was made.
type Counters struct {
	// PromptTokens counts prompt tokens prefilled.
	PromptTokens int64
	// GenerationTokens counts output tokens generated.
	GenerationTokens int64
	// FinishedRequests counts requests that generated all their output tokens.
	FinishedRequests int64
}

// seq is a request in the running batch.
type seq struct {
	id        uint64
	prompt    int
	output    int
	prefilled int // prompt tokens prefilled so far
	generated int // output tokens generated so far
	chunk     int // prompt tokens being prefilled in the current iteration
	arrival   time.Time
	start     time.Time
}

// Engine is the scheduler and timing model of one replica. It is not safe for concurrent use.
type Engine struct {
	p Params

	// waiting is a FIFO: waiting[head:] in arrival order. It is compacted in place rather
	// than reallocated, so steady-state Submit does not allocate.
	waiting []Request
	head    int

	running    []seq // admission order
	kvReserved int

	events   []Event // reused by every Step
	counters Counters
}

// NewEngine returns an idle engine. It panics if p is not valid (see Params.Validate):
// callers check user-supplied Params first.
func NewEngine(p Params) *Engine {
	if err := p.Validate(); err != nil {
		panic("servermodel: " + err.Error())
	}
	return &Engine{
		p:       p,
		running: make([]seq, 0, p.MaxConcurrency),
	}
}

// Params returns the engine's parameters.
func (e *Engine) Params() Params { return e.p }

// Submit queues a request at the back of the waiting queue. It fails, queuing nothing, for a
// request that could never run.
func (e *Engine) Submit(r Request) error {
	switch {
	case r.PromptTokens < 1 || r.OutputTokens < 1:
		return fmt.Errorf("%w: %d prompt and %d output tokens: want at least 1 of each", ErrInvalidRequest, r.PromptTokens, r.OutputTokens)
	case r.PromptTokens+r.OutputTokens > e.p.KVCacheTokens:
		return fmt.Errorf("%w: %d prompt + %d output tokens, cache holds %d", ErrExceedsKVCache, r.PromptTokens, r.OutputTokens, e.p.KVCacheTokens)
	}
	if e.head > 0 && len(e.waiting) == cap(e.waiting) {
		n := copy(e.waiting, e.waiting[e.head:])
		e.waiting = e.waiting[:n]
		e.head = 0
	}
	e.waiting = append(e.waiting, r)
	return nil
}

// Abort drops a waiting or running request and frees its KV; it emits no event. It reports
// whether the request was there. It costs O(waiting + running).
func (e *Engine) Abort(id uint64) bool {
	for i := e.head; i < len(e.waiting); i++ {
		if e.waiting[i].ID == id {
			copy(e.waiting[i:], e.waiting[i+1:])
			e.waiting = e.waiting[:len(e.waiting)-1]
			if e.head == len(e.waiting) {
				e.waiting, e.head = e.waiting[:0], 0
			}
			return true
		}
	}
	for i := range e.running {
		if e.running[i].id == id {
			e.kvReserved -= e.running[i].prompt + e.running[i].output
			e.running = append(e.running[:i], e.running[i+1:]...)
			return true
		}
	}
	return false
}

// Busy reports whether there is work: a Step now would run an iteration.
func (e *Engine) Busy() bool { return e.Waiting() > 0 || len(e.running) > 0 }

// Waiting is the number of requests not yet admitted.
func (e *Engine) Waiting() int { return len(e.waiting) - e.head }

// Running is the number of requests admitted and not finished, those still in prefill
// included.
func (e *Engine) Running() int { return len(e.running) }

// KVUsage is the fraction of the KV cache reserved by running requests, from 0 to 1.
func (e *Engine) KVUsage() float64 { return float64(e.kvReserved) / float64(e.p.KVCacheTokens) }

// Counters returns the cumulative totals.
func (e *Engine) Counters() Counters { return e.counters }

// Step runs one scheduling iteration that starts at now and returns when it ends and what
// happened, all stamped with the end time. When the engine is idle it returns now and no
// events. The caller must not call Step again before now reaches end if it wants wall-clock
// or simulated time to be consistent; the engine itself does not check.
//
// The returned slice is owned by the engine and reused by the next Step, so that stepping does
// not allocate: use or copy the events before calling Step again. Submit and Abort do not
// touch it.
func (e *Engine) Step(now time.Time) (end time.Time, events []Event) {
	e.events = e.events[:0]
	budget := e.p.MaxBatchTokens
	prefill := 0

	// Chunked prefills admitted earlier go first.
	for i := range e.running {
		s := &e.running[i]
		if budget == 0 {
			break
		}
		if s.prefilled < s.prompt {
			s.chunk = min(s.prompt-s.prefilled, budget)
			budget -= s.chunk
			prefill += s.chunk
		}
	}
	// Then admit FCFS; the head of the queue blocks those behind it, as in vLLM.
	for budget > 0 && e.Waiting() > 0 && len(e.running) < e.p.MaxConcurrency {
		r := &e.waiting[e.head]
		need := r.PromptTokens + r.OutputTokens
		if e.kvReserved+need > e.p.KVCacheTokens {
			break
		}
		e.kvReserved += need
		chunk := min(r.PromptTokens, budget)
		budget -= chunk
		prefill += chunk
		e.running = append(e.running, seq{
			id: r.ID, prompt: r.PromptTokens, output: r.OutputTokens,
			chunk: chunk, arrival: r.Arrival, start: now,
		})
		e.head++
		if e.head == len(e.waiting) {
			e.waiting, e.head = e.waiting[:0], 0
		}
	}

	switch {
	case prefill > 0:
		end = now.Add(e.p.PrefillTime(prefill))
		e.counters.PromptTokens += int64(prefill)
		for i := range e.running {
			s := &e.running[i]
			if s.chunk == 0 {
				continue
			}
			s.prefilled += s.chunk
			s.chunk = 0
			if s.prefilled == s.prompt {
				s.generated = 1
				e.counters.GenerationTokens++
				e.emit(EventFirstToken, s, end)
			}
		}
	case len(e.running) > 0:
		end = now.Add(e.p.DecodeTime(len(e.running)))
		e.counters.GenerationTokens += int64(len(e.running))
		// The hot loop of a loaded replica: write the events in place.
		e.events = slices.Grow(e.events, len(e.running))[:len(e.running)]
		for i := range e.running {
			s := &e.running[i]
			s.generated++
			e.events[i] = Event{Kind: EventToken, ID: s.id, Time: end, Tokens: s.generated, Arrival: s.arrival, Start: s.start}
		}
	default:
		return now, e.events
	}

	// Drop finished sequences, keeping admission order; most steps finish none.
	first := slices.IndexFunc(e.running, func(s seq) bool { return s.generated == s.output })
	if first < 0 {
		return end, e.events
	}
	kept := e.running[:first]
	for i := first; i < len(e.running); i++ {
		s := &e.running[i]
		if s.generated < s.output {
			kept = append(kept, *s)
			continue
		}
		e.kvReserved -= s.prompt + s.output
		e.counters.FinishedRequests++
		e.emit(EventDone, s, end)
	}
	e.running = kept
	return end, e.events
}

func (e *Engine) emit(k EventKind, s *seq, t time.Time) {
	e.events = append(e.events, Event{Kind: k, ID: s.id, Time: t, Tokens: s.generated, Arrival: s.arrival, Start: s.start})
}
