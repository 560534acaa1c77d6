package servermodel

import (
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// testParams are round numbers so expected times are easy to write down.
func testParams() Params {
	return Params{
		MaxConcurrency:  4,
		MaxBatchTokens:  1000,
		KVCacheTokens:   100_000,
		PrefillBase:     10 * time.Millisecond,
		PrefillPerToken: 100 * time.Microsecond,
		DecodeBase:      20 * time.Millisecond,
		DecodePerSeq:    5 * time.Millisecond,
	}
}

// timing is what a caller would measure for one request.
type timing struct {
	firstToken, done time.Time
	tokens           int
	start            time.Time
}

// drive steps the engine from start until it is idle, submitting reqs at their Arrival (which
// must be in order), and returns every event (copied) and the per-request timings.
func drive(t *testing.T, e *Engine, start time.Time, reqs []Request) ([]Event, map[uint64]*timing) {
	t.Helper()
	var all []Event
	tm := map[uint64]*timing{}
	now := start
	next := 0
	for steps := 0; ; steps++ {
		if steps > 1_000_000 {
			t.Fatal("engine did not finish")
		}
		for next < len(reqs) && !reqs[next].Arrival.After(now) {
			if err := e.Submit(reqs[next]); err != nil {
				t.Fatalf("submit %d: %v", reqs[next].ID, err)
			}
			next++
		}
		if !e.Busy() {
			if next == len(reqs) {
				return all, tm
			}
			now = reqs[next].Arrival
			continue
		}
		end, evs := e.Step(now)
		if !end.After(now) {
			t.Fatalf("step at %v ended at %v", now, end)
		}
		for _, ev := range evs {
			all = append(all, ev)
			x := tm[ev.ID]
			if x == nil {
				x = &timing{}
				tm[ev.ID] = x
			}
			switch ev.Kind {
			case EventFirstToken:
				x.firstToken, x.start = ev.Time, ev.Start
				x.tokens++
			case EventToken:
				x.tokens++
			case EventDone:
				x.done = ev.Time
			}
			if ev.Tokens != x.tokens {
				t.Fatalf("request %d: event says %d tokens, counted %d", ev.ID, ev.Tokens, x.tokens)
			}
		}
		now = end
	}
}

func TestSingleRequestTiming(t *testing.T) {
	for _, tc := range []struct {
		name           string
		prompt, output int
	}{
		{"one token", 100, 1},
		{"short", 10, 5},
		{"typical", 500, 128},
		{"prompt of a whole budget", 1000, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := testParams()
			e := NewEngine(p)
			_, tm := drive(t, e, t0, []Request{{ID: 1, PromptTokens: tc.prompt, OutputTokens: tc.output, Arrival: t0}})
			got := tm[1]
			wantTTFT := p.PrefillTime(tc.prompt)
			wantE2E := wantTTFT + time.Duration(tc.output-1)*p.DecodeTime(1)
			if d := got.firstToken.Sub(t0); d != wantTTFT {
				t.Errorf("TTFT %v, want prefill time %v", d, wantTTFT)
			}
			if d := got.done.Sub(t0); d != wantE2E {
				t.Errorf("e2e %v, want %v", d, wantE2E)
			}
			if got.tokens != tc.output {
				t.Errorf("%d tokens, want %d", got.tokens, tc.output)
			}
			c := e.Counters()
			if c != (Counters{PromptTokens: int64(tc.prompt), GenerationTokens: int64(tc.output), FinishedRequests: 1}) {
				t.Errorf("counters %+v", c)
			}
			if e.Busy() || e.Running() != 0 || e.Waiting() != 0 || e.KVUsage() != 0 {
				t.Errorf("not idle after: running %d waiting %d kv %v", e.Running(), e.Waiting(), e.KVUsage())
			}
		})
	}
}

func TestChunkedPrefill(t *testing.T) {
	p := testParams()
	p.MaxBatchTokens = 300
	e := NewEngine(p)
	_, tm := drive(t, e, t0, []Request{{ID: 1, PromptTokens: 700, OutputTokens: 2, Arrival: t0}})
	// 300 + 300 + 100 tokens in three prefill iterations.
	want := p.PrefillTime(300)*2 + p.PrefillTime(100)
	if d := tm[1].firstToken.Sub(t0); d != want {
		t.Errorf("TTFT %v, want %v", d, want)
	}
	if got := e.Counters().PromptTokens; got != 700 {
		t.Errorf("prompt tokens %d, want 700", got)
	}
}

// The mean gap between tokens of a request grows with the number running beside it.
func TestPerTokenLatencyGrowsWithBatch(t *testing.T) {
	p := testParams()
	p.MaxConcurrency = 64
	var prev time.Duration
	for _, batch := range []int{1, 2, 8, 32, 64} {
		e := NewEngine(p)
		reqs := make([]Request, batch)
		for i := range reqs {
			reqs[i] = Request{ID: uint64(i), PromptTokens: 10, OutputTokens: 50, Arrival: t0}
		}
		_, tm := drive(t, e, t0, reqs)
		x := tm[0]
		tpot := x.done.Sub(x.firstToken) / time.Duration(x.tokens-1)
		if tpot != p.DecodeTime(batch) {
			t.Errorf("batch %d: time per output token %v, want %v", batch, tpot, p.DecodeTime(batch))
		}
		if tpot <= prev {
			t.Errorf("batch %d: time per output token %v, not above %v", batch, tpot, prev)
		}
		prev = tpot
	}
}

// More concurrent requests than MaxConcurrency: the rest wait, and wait longer the later
// they are in the queue.
func TestQueueBuildsAboveMaxConcurrency(t *testing.T) {
	p := testParams()
	const n = 12
	reqs := make([]Request, n)
	for i := range reqs {
		reqs[i] = Request{ID: uint64(i), PromptTokens: 100, OutputTokens: 10, Arrival: t0}
	}

	e := NewEngine(p)
	for _, r := range reqs {
		if err := e.Submit(r); err != nil {
			t.Fatal(err)
		}
	}
	end, evs := e.Step(t0)
	if e.Running() != p.MaxConcurrency || e.Waiting() != n-p.MaxConcurrency {
		t.Fatalf("after one step: running %d waiting %d, want %d and %d", e.Running(), e.Waiting(), p.MaxConcurrency, n-p.MaxConcurrency)
	}
	if len(evs) != p.MaxConcurrency || end.Sub(t0) != p.PrefillTime(p.MaxConcurrency*100) {
		t.Fatalf("first step: %d events, ended after %v", len(evs), end.Sub(t0))
	}

	_, tm := drive(t, NewEngine(p), t0, reqs)
	// Requests run in waves of MaxConcurrency; TTFT and queue time rise from wave to wave.
	for wave := 1; wave < n/p.MaxConcurrency; wave++ {
		first := uint64(wave * p.MaxConcurrency)
		before := first - 1
		if !tm[first].firstToken.After(tm[before].firstToken) {
			t.Errorf("request %d TTFT %v not after request %d's %v", first, tm[first].firstToken, before, tm[before].firstToken)
		}
		if !tm[first].start.After(tm[before].start) {
			t.Errorf("request %d queued no longer than request %d", first, before)
		}
	}
}

func TestKVCapacityLimitsAdmission(t *testing.T) {
	p := testParams()
	p.MaxConcurrency = 10
	p.KVCacheTokens = 1000
	reqs := make([]Request, 5)
	for i := range reqs {
		reqs[i] = Request{ID: uint64(i), PromptTokens: 100, OutputTokens: 200, Arrival: t0}
	}
	e := NewEngine(p)
	for _, r := range reqs {
		if err := e.Submit(r); err != nil {
			t.Fatal(err)
		}
	}
	e.Step(t0)
	if e.Running() != 3 || e.Waiting() != 2 {
		t.Fatalf("running %d waiting %d, want 3 and 2: each needs 300 of 1000 KV tokens", e.Running(), e.Waiting())
	}
	if got := e.KVUsage(); got != 0.9 {
		t.Errorf("kv usage %v, want 0.9", got)
	}
	e = NewEngine(p)
	_, tm := drive(t, e, t0, reqs)
	// The fourth request starts only when the first three finish and free their KV.
	if !tm[3].start.Equal(tm[0].done) {
		t.Errorf("request 3 started at %v, want when request 0 finished, %v", tm[3].start, tm[0].done)
	}
	if e.KVUsage() != 0 {
		t.Errorf("kv usage %v after all finished", e.KVUsage())
	}
}

func TestSubmitRejects(t *testing.T) {
	p := testParams()
	p.KVCacheTokens = 1000
	for _, tc := range []struct {
		name string
		r    Request
		want error
	}{
		{"no prompt", Request{PromptTokens: 0, OutputTokens: 1}, ErrInvalidRequest},
		{"no output", Request{PromptTokens: 1, OutputTokens: 0}, ErrInvalidRequest},
		{"larger than the cache", Request{PromptTokens: 900, OutputTokens: 101}, ErrExceedsKVCache},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := NewEngine(p)
			if err := e.Submit(tc.r); !errors.Is(err, tc.want) {
				t.Errorf("Submit: %v, want %v", err, tc.want)
			}
			if e.Busy() {
				t.Error("rejected request was queued")
			}
		})
	}
	if err := NewEngine(p).Submit(Request{PromptTokens: 900, OutputTokens: 100}); err != nil {
		t.Errorf("request that fills the cache exactly: %v", err)
	}
}

func TestAbort(t *testing.T) {
	p := testParams()
	p.MaxConcurrency = 1
	e := NewEngine(p)
	for i := range 3 {
		if err := e.Submit(Request{ID: uint64(i), PromptTokens: 10, OutputTokens: 100, Arrival: t0}); err != nil {
			t.Fatal(err)
		}
	}
	now, _ := e.Step(t0)
	if !e.Abort(2) || !e.Abort(0) || e.Abort(7) {
		t.Fatal("abort of a waiting, a running and an unknown request")
	}
	if e.Running() != 0 || e.Waiting() != 1 || e.KVUsage() != 0 {
		t.Fatalf("running %d waiting %d kv %v", e.Running(), e.Waiting(), e.KVUsage())
	}
	evs, _ := drive(t, e, now, nil)
	for _, ev := range evs {
		if ev.ID != 1 {
			t.Fatalf("event for aborted request: %+v", ev)
		}
	}
}

func randomWorkload(seed uint64, n int) []Request {
	rng := rand.New(rand.NewPCG(seed, seed))
	reqs := make([]Request, n)
	at := t0
	for i := range reqs {
		at = at.Add(time.Duration(rng.ExpFloat64() * float64(20*time.Millisecond)))
		reqs[i] = Request{ID: uint64(i), PromptTokens: 1 + rng.IntN(3000), OutputTokens: 1 + rng.IntN(300), Arrival: at}
	}
	return reqs
}

func TestDeterminism(t *testing.T) {
	p := testParams()
	p.MaxConcurrency = 16
	p.KVCacheTokens = 20_000
	reqs := randomWorkload(42, 300)
	a, _ := drive(t, NewEngine(p), t0, reqs)
	b, _ := drive(t, NewEngine(p), t0, reqs)
	if !slices.Equal(a, b) {
		t.Fatal("two runs of the same workload differ")
	}
	done := 0
	for _, ev := range a {
		if ev.Kind == EventDone {
			done++
		}
	}
	if done != len(reqs) {
		t.Fatalf("%d of %d requests finished", done, len(reqs))
	}
}

// engineMix is a kind of random workload for TestTokenEventsOff.
type engineMix struct {
	name string
	edit func(*Params)
	// request draws one request's lengths; gap the time to the next arrival.
	request func(*rand.Rand) (prompt, output int)
	gap     func(*rand.Rand) time.Duration
	// abort is the chance, at each step, that a random live request is aborted.
	abort float64
}

func engineMixes() []engineMix {
	exp := func(mean time.Duration) func(*rand.Rand) time.Duration {
		return func(rng *rand.Rand) time.Duration { return time.Duration(rng.ExpFloat64() * float64(mean)) }
	}
	// Up to 60 at once, then a pause long enough to drain some of them.
	bursts := func(rng *rand.Rand) time.Duration {
		if rng.IntN(60) == 0 {
			return time.Duration(rng.IntN(2000)) * time.Millisecond
		}
		return 0
	}
	shortOrLong := func(rng *rand.Rand) (int, int) {
		prompt := 1 + rng.IntN(64)
		if rng.IntN(3) == 0 {
			prompt = 1 + rng.IntN(3000) // several iterations of chunks
		}
		output := 1 + rng.IntN(300)
		switch rng.IntN(6) {
		case 0:
			output = 1 // done at its first token, in a prefill iteration
		case 1:
			output = 2
		}
		return prompt, output
	}
	return []engineMix{
		{name: "short requests", request: func(rng *rand.Rand) (int, int) { return 1 + rng.IntN(50), 1 + rng.IntN(20) }, gap: exp(5 * time.Millisecond)},
		{name: "short and long prompts", request: shortOrLong, gap: exp(20 * time.Millisecond)},
		{name: "kv pressure", edit: func(p *Params) { p.MaxConcurrency, p.KVCacheTokens = 32, 4000 }, request: func(rng *rand.Rand) (int, int) {
			return 1 + rng.IntN(2000), 1 + rng.IntN(1500)
		}, gap: exp(10 * time.Millisecond)},
		{name: "bursts", edit: func(p *Params) { p.MaxConcurrency, p.KVCacheTokens = 16, 20_000 }, request: shortOrLong, gap: bursts},
		{name: "one or two tokens", edit: func(p *Params) { p.MaxConcurrency = 64 }, request: func(rng *rand.Rand) (int, int) {
			return 1 + rng.IntN(800), 1 + rng.IntN(2)
		}, gap: bursts},
		{name: "aborts", edit: func(p *Params) { p.KVCacheTokens = 10_000 }, request: shortOrLong, gap: bursts, abort: 0.1},
		{name: "large batch", edit: func(p *Params) { p.MaxConcurrency, p.MaxBatchTokens = 256, 2048 }, request: shortOrLong, gap: exp(2 * time.Millisecond), abort: 0.01},
	}
}

// TestTokenEventsOff drives engines with token events on, off and switched at random side by
// side with referenceEngine, the engine as it was before token events could be turned off,
// over random workloads. After every step they all agree on the end, the counters and the
// waiting, running and KV gauges; with token events on the events are exactly the
// reference's, and with them off the same less the EventTokens.
func TestTokenEventsOff(t *testing.T) {
	for _, mix := range engineMixes() {
		t.Run(mix.name, func(t *testing.T) {
			for seed := range uint64(12) {
				checkTokenEventsOff(t, mix, seed, 250)
			}
		})
	}
}

// workload is n requests of mix from rng, and the engine parameters the mix runs on.
func (mix engineMix) workload(rng *rand.Rand, n int) (Params, []Request) {
	p := testParams()
	p.MaxConcurrency, p.MaxBatchTokens, p.KVCacheTokens = 8, 512, 50_000
	if mix.edit != nil {
		mix.edit(&p)
	}
	reqs := make([]Request, n)
	at := t0
	for i := range reqs {
		prompt, output := mix.request(rng)
		reqs[i] = Request{ID: uint64(i), PromptTokens: prompt, OutputTokens: output, Arrival: at}
		at = at.Add(mix.gap(rng))
	}
	return p, reqs
}

func checkTokenEventsOff(t *testing.T, mix engineMix, seed uint64, n int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 99))
	p, reqs := mix.workload(rng, n)

	ref := newReferenceEngine(p)
	on, off, switched := NewEngine(p), NewEngine(p), NewEngine(p)
	off.SetTokenEvents(false)
	engines := []*Engine{on, off, switched}
	live := map[uint64]bool{}
	var done int
	var quiet []Event
	now := t0
	next := 0
	for step := 0; ; step++ {
		if step > 1_000_000 {
			t.Fatalf("seed %d: engines did not finish", seed)
		}
		for next < len(reqs) && !reqs[next].Arrival.After(now) {
			r := reqs[next]
			next++
			err := on.Submit(r)
			for _, e := range engines[1:] {
				if err2 := e.Submit(r); (err2 == nil) != (err == nil) {
					t.Fatalf("seed %d: submit %d: %v and %v", seed, r.ID, err, err2)
				}
			}
			if err == nil {
				ref.Submit(r)
				live[r.ID] = true
			}
		}
		if len(live) > 0 && rng.Float64() < mix.abort {
			id := uint64(rng.IntN(next))
			want := ref.Abort(id)
			for _, e := range engines {
				if got := e.Abort(id); got != want {
					t.Fatalf("seed %d step %d: abort %d: %v, reference %v", seed, step, id, got, want)
				}
			}
			delete(live, id)
		}
		if busy := ref.Busy(); !busy {
			for _, e := range engines {
				if e.Busy() {
					t.Fatalf("seed %d step %d: busy, reference idle", seed, step)
				}
			}
			if next == len(reqs) {
				break
			}
			now = reqs[next].Arrival
			continue
		}
		switchedOn := rng.IntN(2) == 0
		switched.SetTokenEvents(switchedOn)
		end, want := ref.Step(now)
		quiet = quiet[:0]
		for _, ev := range want {
			if ev.Kind != EventToken {
				quiet = append(quiet, ev)
			}
			if ev.Kind == EventDone {
				delete(live, ev.ID)
				done++
			}
		}
		for k, e := range engines {
			got, evs := e.Step(now)
			wantEvs := want
			if e == off || e == switched && !switchedOn {
				wantEvs = quiet
			}
			if !got.Equal(end) || !slices.Equal(evs, wantEvs) {
				t.Fatalf("seed %d step %d engine %d: ended %v with events\n%+v\nwant %v and\n%+v", seed, step, k, got, evs, end, wantEvs)
			}
			if e.Waiting() != ref.Waiting() || e.Running() != ref.Running() || e.KVUsage() != ref.KVUsage() || e.Counters() != ref.counters {
				t.Fatalf("seed %d step %d engine %d: waiting %d running %d kv %v counters %+v; reference %d %d %v %+v", seed, step, k,
					e.Waiting(), e.Running(), e.KVUsage(), e.Counters(), ref.Waiting(), ref.Running(), ref.KVUsage(), ref.counters)
			}
		}
		now = end
	}
	if len(live) > 0 || done == 0 {
		t.Fatalf("seed %d: %d requests finished, %d left", seed, done, len(live))
	}
}

// Invariants hold at every step of a busy random workload.
func TestInvariants(t *testing.T) {
	p := testParams()
	p.MaxConcurrency = 8
	p.MaxBatchTokens = 512
	p.KVCacheTokens = 8000
	e := NewEngine(p)
	reqs := randomWorkload(7, 200)
	for i := range reqs {
		reqs[i].PromptTokens = 1 + reqs[i].PromptTokens%2000
		if err := e.Submit(reqs[i]); err != nil {
			t.Fatal(err)
		}
	}
	var prompt, gen int64
	now := t0
	for e.Busy() {
		end, evs := e.Step(now)
		if e.Running() > p.MaxConcurrency || e.KVUsage() > 1 || e.KVUsage() < 0 {
			t.Fatalf("running %d kv %v", e.Running(), e.KVUsage())
		}
		for _, ev := range evs {
			if ev.Kind != EventDone {
				gen++
			}
		}
		now = end
	}
	for _, r := range reqs {
		prompt += int64(r.PromptTokens)
	}
	c := e.Counters()
	if c.PromptTokens != prompt || c.GenerationTokens != gen || c.FinishedRequests != int64(len(reqs)) {
		t.Errorf("counters %+v, want %d prompt, %d generation, %d finished", c, prompt, gen, len(reqs))
	}
}

func TestIdleStep(t *testing.T) {
	e := NewEngine(testParams())
	end, evs := e.Step(t0)
	if !end.Equal(t0) || len(evs) != 0 {
		t.Errorf("idle step: end %v, %d events", end, len(evs))
	}
}

func TestProfiles(t *testing.T) {
	for _, name := range ProfileNames() {
		t.Run(name, func(t *testing.T) {
			p, err := Profile(name)
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Validate(); err != nil {
				t.Fatal(err)
			}
		})
	}
	for _, want := range []string{"a100-80gb-llama3-8b", "h100-80gb-llama3-8b", "cpu-tiny"} {
		if _, ok := Profiles()[want]; !ok {
			t.Errorf("no profile %q", want)
		}
	}
	_, err := Profile("tpu-v9")
	if err == nil || !strings.Contains(err.Error(), "cpu-tiny") || !strings.Contains(err.Error(), "h100-80gb-llama3-8b") {
		t.Errorf("unknown profile error %v does not list the names", err)
	}
	// The GPU profiles reproduce the measurements they were fitted to.
	a100, _ := Profile("a100-80gb-llama3-8b")
	h100, _ := Profile("h100-80gb-llama3-8b")
	for _, tc := range []struct {
		name     string
		got      time.Duration
		min, max time.Duration
	}{
		{"a100 1369-token prefill ~127ms", a100.PrefillTime(1369), 120 * time.Millisecond, 135 * time.Millisecond},
		{"h100 1369-token prefill ~62ms", h100.PrefillTime(1369), 58 * time.Millisecond, 66 * time.Millisecond},
		{"a100 decode at 10 ~11.5ms", a100.DecodeTime(10), 11 * time.Millisecond, 12 * time.Millisecond},
		{"h100 decode at 10 ~7.2ms", h100.DecodeTime(10), 7 * time.Millisecond, 7500 * time.Microsecond},
		{"h100 decode at 256 ~25.6ms", h100.DecodeTime(256), 25 * time.Millisecond, 26500 * time.Microsecond},
	} {
		if tc.got < tc.min || tc.got > tc.max {
			t.Errorf("%s: got %v", tc.name, tc.got)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Params)
	}{
		{"no concurrency", func(p *Params) { p.MaxConcurrency = 0 }},
		{"no batch tokens", func(p *Params) { p.MaxBatchTokens = 0 }},
		{"no kv", func(p *Params) { p.KVCacheTokens = 1 }},
		{"negative time", func(p *Params) { p.DecodePerSeq = -1 }},
		{"free prefill", func(p *Params) { p.PrefillBase, p.PrefillPerToken = 0, 0 }},
		{"free decode", func(p *Params) { p.DecodeBase, p.DecodePerSeq = 0, 0 }},
		{"negative cold start", func(p *Params) { p.ColdStart = -time.Second }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := testParams()
			tc.edit(&p)
			if p.Validate() == nil {
				t.Error("Validate accepted it")
			}
		})
	}
}

// BenchmarkEngineStep measures one decode iteration over a full batch: the steady state of a
// loaded replica, which the simulator runs millions of times.
func BenchmarkEngineStep(b *testing.B) { benchmarkEngineStep(b, true) }

// BenchmarkEngineStepQuiet is BenchmarkEngineStep with token events off, as the simulator
// runs the engine.
func BenchmarkEngineStepQuiet(b *testing.B) { benchmarkEngineStep(b, false) }

func benchmarkEngineStep(b *testing.B, tokenEvents bool) {
	for _, profile := range []string{"cpu-tiny", "a100-80gb-llama3-8b", "h100-80gb-llama3-8b"} {
		b.Run(profile, func(b *testing.B) {
			p, _ := Profile(profile)
			p.KVCacheTokens = 1 << 50 // so the batch is limited by MaxConcurrency alone
			e := NewEngine(p)
			e.SetTokenEvents(tokenEvents)
			for i := range p.MaxConcurrency {
				if err := e.Submit(Request{ID: uint64(i), PromptTokens: 1, OutputTokens: 1 << 30, Arrival: t0}); err != nil {
					b.Fatal(err)
				}
			}
			now := t0
			for e.Running() < p.MaxConcurrency || e.Waiting() > 0 {
				now, _ = e.Step(now)
			}
			want := 0
			if tokenEvents {
				want = p.MaxConcurrency
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				var evs []Event
				now, evs = e.Step(now)
				if len(evs) != want {
					b.Fatalf("%d events, want %d", len(evs), want)
				}
			}
		})
	}
}

// BenchmarkEngineChurn keeps a full batch of short requests: every step some finish and new
// ones are submitted and prefilled, so Submit, admission and removal are in the loop too.
func BenchmarkEngineChurn(b *testing.B) { benchmarkEngineChurn(b, true) }

// BenchmarkEngineChurnQuiet is BenchmarkEngineChurn with token events off, as the simulator
// runs the engine.
func BenchmarkEngineChurnQuiet(b *testing.B) { benchmarkEngineChurn(b, false) }

func benchmarkEngineChurn(b *testing.B, tokenEvents bool) {
	p, _ := Profile("a100-80gb-llama3-8b")
	e := NewEngine(p)
	e.SetTokenEvents(tokenEvents)
	var id uint64
	submit := func(now time.Time) {
		id++
		if err := e.Submit(Request{ID: id, PromptTokens: 200 + int(id%400), OutputTokens: 50 + int(id%200), Arrival: now}); err != nil {
			b.Fatal(err)
		}
	}
	now := t0
	for range p.MaxConcurrency {
		submit(now)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		var evs []Event
		now, evs = e.Step(now)
		for _, ev := range evs {
			if ev.Kind == EventDone {
				submit(now)
			}
		}
	}
}

// StepUntil gives what Step at every iteration's end would: the same events, the same end,
// the start of the last iteration and the same state, with token events off (where it takes
// quiet decode stretches in one stride) and on (where it does not). The bound is the next
// arrival, a random instant before it, or a whole number of decode iterations ahead, so runs
// end on the bound, exactly at it, and on an idle engine. Every mix of engineMixes, without
// its aborts.
func TestStepUntilMatchesStep(t *testing.T) {
	for _, mix := range engineMixes() {
		t.Run(mix.name, func(t *testing.T) {
			for seed := range uint64(8) {
				for _, tokens := range []bool{false, true} {
					checkStepUntil(t, mix, seed, 300, tokens)
				}
			}
		})
	}
}

func checkStepUntil(t *testing.T, mix engineMix, seed uint64, n int, tokens bool) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 7))
	p, reqs := mix.workload(rng, n)
	step, until := NewEngine(p), NewEngine(p)
	step.SetTokenEvents(tokens)
	until.SetTokenEvents(tokens)
	now, next, calls, strides := t0, 0, 0, 0
	var want []Event
	for {
		for next < len(reqs) && !reqs[next].Arrival.After(now) {
			err := step.Submit(reqs[next])
			if err2 := until.Submit(reqs[next]); (err == nil) != (err2 == nil) {
				t.Fatalf("seed %d: submit %d: %v and %v", seed, next, err, err2)
			}
			next++
		}
		if !step.Busy() {
			if until.Busy() {
				t.Fatalf("seed %d: StepUntil's engine busy, Step's idle", seed)
			}
			if next == len(reqs) {
				break
			}
			now = reqs[next].Arrival
			continue
		}
		bound := now.Add(time.Hour)
		if next < len(reqs) {
			bound = reqs[next].Arrival
		}
		switch rng.IntN(3) {
		case 0:
			bound = now.Add(time.Duration(1 + rng.Int64N(int64(bound.Sub(now)))))
		case 1:
			// A whole number of the batch's decode iterations: a stride must stop
			// short of an iteration that would start on the bound.
			if b := until.Running(); b > 0 {
				if at := now.Add(time.Duration(1+rng.IntN(20)) * p.DecodeTime(b)); at.Before(bound) {
					bound = at
				}
			}
		}
		// Step's engine, one iteration at a time.
		want = want[:0]
		last, end := now, now
		iterations := 0
		for end.Before(bound) && step.Busy() {
			last = end
			var evs []Event
			end, evs = step.Step(end)
			want = append(want, evs...)
			iterations++
		}
		gotLast, gotEnd, got := until.StepUntil(now, bound)
		calls++
		if iterations > 1 {
			strides++
		}
		if !gotLast.Equal(last) || !gotEnd.Equal(end) || !slices.Equal(got, want) {
			i := 0
			for i < min(len(got), len(want)) && got[i] == want[i] {
				i++
			}
			t.Fatalf("seed %d tokens %v call %d (bound %v after now): StepUntil gave last %v end %v and %d events; Step gave %v %v and %d; first difference at event %d",
				seed, tokens, calls, bound.Sub(now), gotLast.Sub(now), gotEnd.Sub(now), len(got), last.Sub(now), end.Sub(now), len(want), i)
		}
		if until.Waiting() != step.Waiting() || until.Running() != step.Running() || until.KVUsage() != step.KVUsage() || until.Counters() != step.Counters() {
			t.Fatalf("seed %d call %d: waiting %d running %d kv %v counters %+v; Step's %d %d %v %+v", seed, calls,
				until.Waiting(), until.Running(), until.KVUsage(), until.Counters(), step.Waiting(), step.Running(), step.KVUsage(), step.Counters())
		}
		now = end
	}
	if strides == 0 {
		t.Fatalf("seed %d: no call ran more than one iteration: the test exercises nothing", seed)
	}
}

// BenchmarkEngineDrain serves a batch of 32 requests (outputs of 64 to 2,048 tokens, token
// events off) from submission to the last completion, one iteration per Step against one
// StepUntil with nothing arriving: the simulator's two ways of running a replica between
// arrivals. One op is the whole batch.
func BenchmarkEngineDrain(b *testing.B) {
	p, _ := Profile("a100-80gb-llama3-8b")
	for _, mode := range []string{"step", "stepuntil"} {
		b.Run(mode, func(b *testing.B) {
			e := NewEngine(p)
			e.SetTokenEvents(false)
			now := t0
			var id uint64
			b.ReportAllocs()
			for b.Loop() {
				for i := range 32 {
					id++
					if err := e.Submit(Request{ID: id, PromptTokens: 256, OutputTokens: 64 * (1 + i), Arrival: now}); err != nil {
						b.Fatal(err)
					}
				}
				if mode == "step" {
					for e.Busy() {
						now, _ = e.Step(now)
					}
				} else {
					_, now, _ = e.StepUntil(now, now.Add(time.Hour))
				}
				if e.Busy() || e.Counters().FinishedRequests != int64(id) {
					b.Fatalf("%d of %d finished", e.Counters().FinishedRequests, id)
				}
			}
		})
	}
}
