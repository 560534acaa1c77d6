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
	// EventToken is each later output token, one per decode iteration, unless token events
	// are off (Engine.SetTokenEvents).
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
	chunk     int // prompt tokens being prefilled in the current iteration
	// doneAt is the decode iteration (Engine.decodes) that generates the last token, set when
	// the prompt is all prefilled. The token count is derived from it rather than kept, so
	// that a decode iteration need not touch every sequence.
	doneAt   uint64
	admitted uint64 // admission number: orders the batch, and sequences that finish together
	arrival  time.Time
	start    time.Time
	// prev and next are the slots of the neighbours in admission order, -1 at the ends.
	prev, next int
}

// due is an entry of Engine.finishing: when the sequence in slot generates its last token.
// It repeats the sequence's keys so that the heap is sifted without reading the slots.
type due struct {
	doneAt, admitted uint64
	slot             int
}

func (a due) before(b due) bool {
	return a.doneAt < b.doneAt || a.doneAt == b.doneAt && a.admitted < b.admitted
}

// Engine is the scheduler and timing model of one replica. It is not safe for concurrent use.
type Engine struct {
	p Params

	// waiting is a FIFO: waiting[head:] in arrival order. It is compacted in place rather
	// than reallocated, so steady-state Submit does not allocate.
	waiting []Request
	head    int

	// The running batch lives in slots, whose indices stay put while a sequence runs, so
	// that one finishing costs no copying; free holds the unused slots. oldest and newest
	// are the ends of the batch linked in admission order, -1 when it is empty.
	slots          []seq
	free           []int
	oldest, newest int
	batch          int    // sequences in the batch
	admissions     uint64 // sequences admitted so far
	kvReserved     int

	// prefilling holds the slots of the sequences whose prompts are not all prefilled, in
	// admission order.
	prefilling []int
	// decodes counts decode iterations. finishing is a min-heap of the sequences past their
	// first token, by the decode iteration of their last token and then by admission, so a
	// decode iteration finds the sequences that finish without a pass over the batch.
	decodes   uint64
	finishing []due

	tokenEvents bool
	events      []Event // reused by every Step
	counters    Counters
}

// NewEngine returns an idle engine, with token events on. It panics if p is not valid (see
// Params.Validate): callers check user-supplied Params first.
func NewEngine(p Params) *Engine {
	if err := p.Validate(); err != nil {
		panic("servermodel: " + err.Error())
	}
	return &Engine{
		p:           p,
		slots:       make([]seq, 0, p.MaxConcurrency),
		oldest:      -1,
		newest:      -1,
		tokenEvents: true,
	}
}

// Params returns the engine's parameters.
func (e *Engine) Params() Params { return e.p }

// SetTokenEvents turns EventToken on or off; it may be called at any time, and changes
// nothing else. With them off, a decode iteration costs O(1) plus O(log batch) per request
// that finishes, instead of O(batch): for a caller, such as the simulator, that needs only
// first tokens, completions and the counters.
func (e *Engine) SetTokenEvents(on bool) { e.tokenEvents = on }

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
	for i := e.oldest; i >= 0; i = e.slots[i].next {
		s := &e.slots[i]
		if s.id != id {
			continue
		}
		e.kvReserved -= s.prompt + s.output
		if s.prefilled < s.prompt {
			j := slices.Index(e.prefilling, i)
			e.prefilling = slices.Delete(e.prefilling, j, j+1)
		} else {
			e.removeFinishing(slices.IndexFunc(e.finishing, func(d due) bool { return d.slot == i }))
		}
		e.release(i)
		return true
	}
	return false
}

// Busy reports whether there is work: a Step now would run an iteration.
func (e *Engine) Busy() bool { return e.Waiting() > 0 || e.batch > 0 }

// Waiting is the number of requests not yet admitted.
func (e *Engine) Waiting() int { return len(e.waiting) - e.head }

// Running is the number of requests admitted and not finished, those still in prefill
// included.
func (e *Engine) Running() int { return e.batch }

// KVUsage is the fraction of the KV cache reserved by running requests, from 0 to 1.
func (e *Engine) KVUsage() float64 { return float64(e.kvReserved) / float64(e.p.KVCacheTokens) }

// Counters returns the cumulative totals.
func (e *Engine) Counters() Counters { return e.counters }

// Step runs one scheduling iteration that starts at now and returns when it ends and what
// happened, all stamped with the end time. When the engine is idle it returns now and no
// events. The caller must not call Step again before now reaches end if it wants wall-clock
// or simulated time to be consistent; the engine itself does not check.
//
// The events of an iteration come in this order: first tokens, or tokens (one per running
// sequence, in admission order, unless token events are off), then completions in admission
// order.
//
// The returned slice is owned by the engine and reused by the next Step or StepUntil, so
// that stepping does not allocate: use or copy the events before stepping again. Submit and
// Abort do not touch it.
func (e *Engine) Step(now time.Time) (end time.Time, events []Event) {
	e.events = e.events[:0]
	return e.step(now)
}

// StepUntil runs iterations back to back from now, as Step called again at each one's end
// would, for as long as the engine is busy and the next iteration would start before until.
// It returns when the last iteration started and ended (both now if there was none) and
// the events of them all, each stamped with its own iteration's end, in order, in the
// engine's slice as Step's are. A caller that submits nothing before until (a simulator
// whose next arrival is at until) gets what Step at every iteration end would have given.
//
// With token events off, a stretch of decode iterations in which no sequence finishes and
// none can be admitted (nothing waiting, or the head of the queue blocked by the batch
// limit or the KV cache) is taken in one stride, so a loaded replica costs O(1) per request
// that starts or finishes rather than per iteration.
func (e *Engine) StepUntil(now, until time.Time) (start, end time.Time, events []Event) {
	e.events = e.events[:0]
	start = now
	for now.Before(until) && e.Busy() {
		if !e.tokenEvents && len(e.prefilling) == 0 && e.batch > 0 && !e.canAdmit() {
			// Every sequence in the batch is past its first token, so all are in finishing.
			// Iterations j = 0..k-1 of the stride start at now + j d, each before until.
			d := e.p.DecodeTime(e.batch)
			k := min(e.finishing[0].doneAt-e.decodes-1, uint64((until.Sub(now)+d-1)/d))
			if k > 0 {
				e.decodes += k
				e.counters.GenerationTokens += int64(k) * int64(e.batch)
				start = now.Add(time.Duration(k-1) * d)
				now = start.Add(d)
				continue
			}
		}
		start = now
		now, _ = e.step(now)
	}
	return start, now, e.events
}

// canAdmit reports whether an iteration would admit the head of the waiting queue.
func (e *Engine) canAdmit() bool {
	if e.Waiting() == 0 || e.batch >= e.p.MaxConcurrency {
		return false
	}
	r := &e.waiting[e.head]
	return e.kvReserved+r.PromptTokens+r.OutputTokens <= e.p.KVCacheTokens
}

// step is one iteration from now; it appends its events to e.events.
func (e *Engine) step(now time.Time) (end time.Time, events []Event) {
	budget := e.p.MaxBatchTokens
	prefill := 0

	// Chunked prefills admitted earlier go first.
	for _, i := range e.prefilling {
		if budget == 0 {
			break
		}
		s := &e.slots[i]
		s.chunk = min(s.prompt-s.prefilled, budget)
		budget -= s.chunk
		prefill += s.chunk
	}
	// Then admit FCFS; the head of the queue blocks those behind it, as in vLLM.
	for budget > 0 && e.Waiting() > 0 && e.batch < e.p.MaxConcurrency {
		r := &e.waiting[e.head]
		need := r.PromptTokens + r.OutputTokens
		if e.kvReserved+need > e.p.KVCacheTokens {
			break
		}
		e.kvReserved += need
		chunk := min(r.PromptTokens, budget)
		budget -= chunk
		prefill += chunk
		e.prefilling = append(e.prefilling, e.admit(seq{
			id: r.ID, prompt: r.PromptTokens, output: r.OutputTokens,
			chunk: chunk, arrival: r.Arrival, start: now,
		}))
		e.head++
		if e.head == len(e.waiting) {
			e.waiting, e.head = e.waiting[:0], 0
		}
	}

	switch {
	case prefill > 0:
		end = now.Add(e.p.PrefillTime(prefill))
		e.counters.PromptTokens += int64(prefill)
		oneToken := false
		for _, i := range e.prefilling {
			s := &e.slots[i]
			if s.chunk == 0 {
				continue
			}
			s.prefilled += s.chunk
			s.chunk = 0
			if s.prefilled < s.prompt {
				continue
			}
			e.counters.GenerationTokens++
			e.emit(EventFirstToken, s, 1, end)
			if s.output == 1 {
				oneToken = true
				continue
			}
			s.doneAt = e.decodes + uint64(s.output-1)
			e.pushFinishing(due{doneAt: s.doneAt, admitted: s.admitted, slot: i})
		}
		// Drop the prompts now prefilled, keeping order; requests for one token are done.
		kept := e.prefilling[:0]
		for _, i := range e.prefilling {
			switch s := &e.slots[i]; {
			case s.prefilled < s.prompt:
				kept = append(kept, i)
			case oneToken && s.output == 1:
				e.finish(i, end)
			}
		}
		e.prefilling = kept
	case e.batch > 0:
		e.decodes++
		end = now.Add(e.p.DecodeTime(e.batch))
		e.counters.GenerationTokens += int64(e.batch)
		if e.tokenEvents {
			// The hot loop of a loaded replica: write the events in place.
			k := len(e.events)
			e.events = slices.Grow(e.events, e.batch)[:k+e.batch]
			for i := e.oldest; i >= 0; i = e.slots[i].next {
				s := &e.slots[i]
				e.events[k] = Event{Kind: EventToken, ID: s.id, Time: end, Tokens: s.output - int(s.doneAt-e.decodes), Arrival: s.arrival, Start: s.start}
				k++
			}
		}
		for len(e.finishing) > 0 && e.finishing[0].doneAt == e.decodes {
			e.finish(e.popFinishing(), end)
		}
	default:
		return now, e.events
	}
	return end, e.events
}

func (e *Engine) emit(k EventKind, s *seq, tokens int, t time.Time) {
	e.events = append(e.events, Event{Kind: k, ID: s.id, Time: t, Tokens: tokens, Arrival: s.arrival, Start: s.start})
}

// admit puts s at the end of the batch and returns its slot.
func (e *Engine) admit(s seq) int {
	s.admitted = e.admissions
	e.admissions++
	s.prev, s.next = e.newest, -1
	var i int
	if n := len(e.free); n > 0 {
		i = e.free[n-1]
		e.free = e.free[:n-1]
		e.slots[i] = s
	} else {
		i = len(e.slots)
		e.slots = append(e.slots, s)
	}
	if e.newest >= 0 {
		e.slots[e.newest].next = i
	} else {
		e.oldest = i
	}
	e.newest = i
	e.batch++
	return i
}

// finish completes the sequence in slot i, which must be out of prefilling and finishing.
func (e *Engine) finish(i int, t time.Time) {
	s := &e.slots[i]
	e.kvReserved -= s.prompt + s.output
	e.counters.FinishedRequests++
	e.emit(EventDone, s, s.output, t)
	e.release(i)
}

// release takes slot i, which must be out of prefilling and finishing, out of the batch.
func (e *Engine) release(i int) {
	s := &e.slots[i]
	if s.prev >= 0 {
		e.slots[s.prev].next = s.next
	} else {
		e.oldest = s.next
	}
	if s.next >= 0 {
		e.slots[s.next].prev = s.prev
	} else {
		e.newest = s.prev
	}
	e.free = append(e.free, i)
	e.batch--
}

func (e *Engine) pushFinishing(d due) {
	e.finishing = append(e.finishing, d)
	e.up(len(e.finishing) - 1)
}

// popFinishing removes the first sequence to finish and returns its slot.
func (e *Engine) popFinishing() int {
	slot := e.finishing[0].slot
	e.removeFinishing(0)
	return slot
}

func (e *Engine) removeFinishing(j int) {
	h := e.finishing
	n := len(h) - 1
	h[j] = h[n]
	e.finishing = h[:n]
	if j < n {
		e.down(j)
		e.up(j)
	}
}

func (e *Engine) up(j int) {
	h := e.finishing
	for j > 0 {
		parent := (j - 1) / 2
		if !h[j].before(h[parent]) {
			return
		}
		h[j], h[parent] = h[parent], h[j]
		j = parent
	}
}

func (e *Engine) down(j int) {
	h := e.finishing
	for {
		c := 2*j + 1
		if c >= len(h) {
			return
		}
		if r := c + 1; r < len(h) && h[r].before(h[c]) {
			c = r
		}
		if !h[c].before(h[j]) {
			return
		}
		h[j], h[c] = h[c], h[j]
		j = c
	}
}
