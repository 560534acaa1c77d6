package servermodel

import (
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"
)

// cloneParams are small enough that a few hundred operations reach every limit: chunked
// prefill, the concurrency cap and a full KV cache.
func cloneParams() Params {
	return Params{
		MaxConcurrency:  4,
		MaxBatchTokens:  100,
		KVCacheTokens:   1500,
		PrefillBase:     2 * time.Millisecond,
		PrefillPerToken: 10 * time.Microsecond,
		DecodeBase:      5 * time.Millisecond,
		DecodePerSeq:    time.Millisecond,
	}
}

// history drives an engine with a random mix of submits, aborts and steps.
type history struct {
	rng    *rand.Rand
	now    time.Time
	nextID uint64
}

func newHistory(seed uint64, from uint64) *history {
	return &history{rng: rand.New(rand.NewPCG(seed, 1)), now: t0, nextID: from}
}

// step applies one operation to e and returns what it observed: the events of a Step (copied)
// and the engine's gauges after it.
func (h *history) step(t *testing.T, e *Engine) []Event {
	t.Helper()
	switch x := h.rng.IntN(10); {
	case x < 4:
		r := Request{ID: h.nextID, PromptTokens: 1 + h.rng.IntN(250), OutputTokens: 1 + h.rng.IntN(40), Arrival: h.now}
		h.nextID++
		if err := e.Submit(r); err != nil {
			t.Fatal(err)
		}
	case x < 5 && h.nextID > 0:
		e.Abort(h.rng.Uint64N(h.nextID))
	default:
		end, evs := e.Step(h.now)
		h.now = end.Add(time.Duration(h.rng.IntN(3)) * time.Millisecond)
		return slices.Clone(evs)
	}
	return nil
}

type gauges struct {
	busy             bool
	waiting, running int
	kv               float64
	counters         Counters
}

func gaugesOf(e *Engine) gauges {
	return gauges{e.Busy(), e.Waiting(), e.Running(), e.KVUsage(), e.Counters()}
}

func TestCloneEvolvesLikeOriginal(t *testing.T) {
	for _, tc := range []struct {
		name        string
		seed        uint64
		before      int // operations before the clone
		tokenEvents bool
	}{
		{"fresh engine", 1, 0, true},
		{"busy engine", 2, 300, true},
		{"long history", 3, 2000, true},
		{"token events off", 4, 500, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// orig and ref live through the same history; the clone is taken from orig, which
			// then goes on with a different future. The clone must match ref throughout, so
			// that neither the clone nor orig can have disturbed the other.
			orig, ref := NewEngine(cloneParams()), NewEngine(cloneParams())
			orig.SetTokenEvents(tc.tokenEvents)
			ref.SetTokenEvents(tc.tokenEvents)
			ho, hr := newHistory(tc.seed, 0), newHistory(tc.seed, 0)
			for range tc.before {
				ho.step(t, orig)
				hr.step(t, ref)
			}
			clone := orig.Clone()
			if got, want := gaugesOf(clone), gaugesOf(orig); got != want {
				t.Fatalf("clone reads %+v, original %+v", got, want)
			}
			// The original's other future, interleaved with the clone's own, with request IDs
			// of its own.
			other := newHistory(tc.seed+100, 1<<32)
			hc := *hr
			hc.rng = rand.New(rand.NewPCG(tc.seed+200, 1))
			hr.rng = rand.New(rand.NewPCG(tc.seed+200, 1))
			for i := range 3000 {
				other.step(t, orig)
				got, want := hc.step(t, clone), hr.step(t, ref)
				if !slices.Equal(got, want) {
					t.Fatalf("operation %d: clone's events %v, want %v", i, got, want)
				}
				if g, w := gaugesOf(clone), gaugesOf(ref); g != w {
					t.Fatalf("operation %d: clone reads %+v, want %+v", i, g, w)
				}
			}
		})
	}
}

// TestCloneSharesNothing guards Clone against a slice, map or pointer field added to Engine
// and left shared.
func TestCloneSharesNothing(t *testing.T) {
	e := NewEngine(cloneParams())
	h := newHistory(5, 0)
	for range 500 {
		h.step(t, e)
	}
	// Grow every slice, the waiting queue included.
	for i := range 20 {
		if err := e.Submit(Request{ID: uint64(1000 + i), PromptTokens: 50, OutputTokens: 5, Arrival: h.now}); err != nil {
			t.Fatal(err)
		}
	}
	e.Step(h.now)
	c := e.Clone()
	ev, cv := reflect.ValueOf(e).Elem(), reflect.ValueOf(c).Elem()
	for i := range ev.NumField() {
		f := ev.Type().Field(i)
		switch f.Type.Kind() {
		case reflect.Slice:
			if ev.Field(i).Cap() > 0 && cv.Field(i).Cap() > 0 && ev.Field(i).Pointer() == cv.Field(i).Pointer() {
				t.Errorf("field %s: the clone shares the original's array", f.Name)
			}
		case reflect.Map, reflect.Pointer, reflect.Chan:
			if !ev.Field(i).IsNil() && ev.Field(i).Pointer() == cv.Field(i).Pointer() {
				t.Errorf("field %s: the clone shares the original's %s", f.Name, f.Type.Kind())
			}
		}
	}
}
