package servermodel

import (
	"slices"
	"time"
)

// referenceEngine is Engine as it was before the finish heap: a slice of the batch in
// admission order, one pass over it per iteration and a token count kept per sequence. It is
// the oracle that the engine's every event, counter and gauge are checked against. Submit
// does no checks; callers submit only what Engine.Submit accepted.
type referenceEngine struct {
	p          Params
	waiting    []Request
	head       int
	running    []refSeq // admission order
	kvReserved int
	events     []Event
	counters   Counters
}

// refSeq is a request in the running batch of referenceEngine.
type refSeq struct {
	id        uint64
	prompt    int
	output    int
	prefilled int // prompt tokens prefilled so far
	generated int // output tokens generated so far
	chunk     int // prompt tokens being prefilled in the current iteration
	arrival   time.Time
	start     time.Time
}

func newReferenceEngine(p Params) *referenceEngine {
	return &referenceEngine{p: p}
}

func (e *referenceEngine) Submit(r Request) { e.waiting = append(e.waiting, r) }

func (e *referenceEngine) Abort(id uint64) bool {
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

func (e *referenceEngine) Busy() bool { return e.Waiting() > 0 || len(e.running) > 0 }

func (e *referenceEngine) Waiting() int { return len(e.waiting) - e.head }

func (e *referenceEngine) Running() int { return len(e.running) }

func (e *referenceEngine) KVUsage() float64 {
	return float64(e.kvReserved) / float64(e.p.KVCacheTokens)
}

func (e *referenceEngine) Step(now time.Time) (end time.Time, events []Event) {
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
		e.running = append(e.running, refSeq{
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
	first := slices.IndexFunc(e.running, func(s refSeq) bool { return s.generated == s.output })
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

func (e *referenceEngine) emit(k EventKind, s *refSeq, t time.Time) {
	e.events = append(e.events, Event{Kind: k, ID: s.id, Time: t, Tokens: s.generated, Arrival: s.arrival, Start: s.start})
}
