package sim

import (
	"math"
	"slices"
	"time"

	"github.com/llmscaler/llmscaler/internal/servermodel"
	"github.com/llmscaler/llmscaler/internal/trace"
)

// checkpoint is the simulator's state at one instant, for the references' trial runs: the
// replicas (their engines' queues and batches), the front queue, the next arrival, and the
// first tokens judged so far. Nothing at or after now has been processed yet. Trials need no
// scaling loop and no per-request record, so the run inside holds neither: a trial sets the
// count itself (advance) or plays a plan's (play), and the judge counts.
type checkpoint struct {
	r   *run
	now time.Duration
	j   judge
	// tooLong[i] counts the requests before i that no replica can hold (run.dispatch rejects
	// them); shared by every clone.
	tooLong []int
}

// judge counts first tokens against the TTFT target.
type judge struct {
	slo time.Duration
	// met and late count first tokens within and over the target.
	met, late int
	// mark is set (below math.MaxInt) during the look-ahead past a window that holds the
	// requests below it: the first tokens of the requests from mark on are counted in
	// metAfter and lateAfter too, so that the window can be judged on its own.
	mark                int
	metAfter, lateAfter int
	// maxMisses stops a trial as soon as more requests than this (below mark) are known to
	// have missed: late or rejected; < 0 never.
	maxMisses int
}

func (j *judge) firstToken(id int, ttft time.Duration) {
	// As run.step compares, in seconds.
	met := ttft.Seconds() <= j.slo.Seconds()
	if met {
		j.met++
	} else {
		j.late++
	}
	if id >= j.mark {
		if met {
			j.metAfter++
		} else {
			j.lateAfter++
		}
	}
}

// setMark starts counting the requests from mark on apart; math.MaxInt stops it.
func (j *judge) setMark(mark int) { j.mark, j.metAfter, j.lateAfter = mark, 0, 0 }

// newCheckpoint is time zero of cfg (defaults applied) with no replica.
func newCheckpoint(cfg Config, maxMisses int) *checkpoint {
	reqs := cfg.Workload.Requests
	tooLong := make([]int, len(reqs)+1)
	for i, q := range reqs {
		tooLong[i+1] = tooLong[i]
		if rejects(cfg.Params, q) {
			tooLong[i+1]++
		}
	}
	return &checkpoint{r: &run{cfg: cfg}, j: judge{slo: cfg.SLOTarget, mark: math.MaxInt, maxMisses: maxMisses}, tooLong: tooLong}
}

// rejects reports whether engine.Submit refuses q, so that run.dispatch rejects it.
func rejects(p servermodel.Params, q trace.Request) bool {
	return q.PromptTokens < 1 || q.OutputTokens < 1 || q.PromptTokens+q.OutputTokens > p.KVCacheTokens
}

// clone is a checkpoint that evolves as c does and independently of it.
func (c *checkpoint) clone() *checkpoint {
	r := c.r
	nr := &run{cfg: r.cfg, nextID: r.nextID, front: slices.Clone(r.front), next: r.next,
		inflight: r.inflight, met: r.met, gpuTime: r.gpuTime, lastStart: r.lastStart}
	nr.res.Rejected = r.res.Rejected
	nr.reps = make([]*replica, len(r.reps))
	for i, rep := range r.reps {
		cp := &replica{id: rep.id, eng: rep.eng.Clone(), phase: rep.phase, started: rep.started,
			readyAt: rep.readyAt, busyUntil: rep.busyUntil}
		nr.reps[i] = cp
	}
	return &checkpoint{r: nr, now: c.now, j: c.j, tooLong: c.tooLong}
}

// misses is how many requests below the judge's mark are known to have missed the target:
// late first tokens and rejections.
func (c *checkpoint) misses() int {
	return c.j.late - c.j.lateAfter + c.tooLong[min(c.r.next, c.j.mark)]
}

// metBelowMark is how many requests below the judge's mark have met the target.
func (c *checkpoint) metBelowMark() int { return c.j.met - c.j.metAfter }

// stopped reports whether the judge has seen enough misses to stop.
func (c *checkpoint) stopped() bool { return c.j.maxMisses >= 0 && c.misses() > c.j.maxMisses }

// advance processes every event from c.now to before end and leaves c.now at end, with
// ready replicas ready from its first instant if ready > 0: replicas added then are ready at
// once, as a plan starts them one cold start ahead, and those removed are drained, least
// loaded first, as run.scale does. It returns false if the judge stopped it early.
func (c *checkpoint) advance(end time.Duration, ready int) bool {
	return c.simulate(end, ready, nil)
}

// play runs c from time zero to the end of the workload under the plan, as Run does with
// the plan as its scaler: the plan's count is applied at every report tick, the replicas
// warm at the start are InitialReplicas of Run's. It leaves c.now at the end of the run, with
// every replica stopped, so that c.r.gpuTime is the run's GPU time.
func (c *checkpoint) play(p *OraclePlan) {
	c.grow(min(max(p.at(0), c.r.cfg.MinReplicas), c.r.cfg.MaxReplicas), 0)
	c.simulate(math.MaxInt64, 0, p)
}

// simulate is run.loop, step for step, without the windows and the per-request record:
// replicas coming up, the front queue, arrivals, the scaling decision (resize at the first
// instant, or the plan's count at report ticks), then the engines. With a plan it runs
// until every request has finished and stops the replicas then, as run.loop does;
// TestOracleCheckpointMatchesRun holds it to all that.
func (c *checkpoint) simulate(end time.Duration, ready int, plan *OraclePlan) bool {
	r := c.r
	reqs := r.cfg.Workload.Requests
	tick := r.cfg.ReportInterval
	nextTick := time.Duration(math.MaxInt64)
	if plan != nil {
		nextTick = (c.now/tick + 1) * tick
	}
	now := c.now
	first := true
	// Trials start no replica but through grow, whose replicas are ready at once, so most
	// never see one starting; the scan for them is skipped then.
	starting := slices.ContainsFunc(r.reps, func(rep *replica) bool { return rep.phase == phaseStarting })
	// Most instants are the end of one replica's iteration, and nothing else: those step the
	// replicas due, from a heap of iteration ends, rather than look at every replica as
	// run.loop does. Only arrivals and scaling give an idle replica work, and the instants
	// with those look at every replica. The order in which replicas step at one instant
	// changes nothing: each steps its own engine.
	var busy iterationEnds
	for _, rep := range r.reps {
		if rep.busyUntil > now {
			busy.push(rep)
		}
	}
	var due []*replica
	for now < end {
		all := first
		if starting {
			var up bool
			up, starting = r.comeUp(now)
			all = all || up
		}
		var drain int
		if first && ready > 0 {
			drain = c.grow(ready, now)
		}
		if all && len(r.front) > 0 && slices.ContainsFunc(r.reps, func(rep *replica) bool { return rep.phase == phaseReady }) {
			for _, i := range r.front {
				r.dispatch(i, now)
			}
			r.front = r.front[:0]
		}
		for r.next < len(reqs) && reqs[r.next].At <= now {
			r.dispatch(r.next, now)
			r.next++
			all = true
		}
		if drain > 0 {
			cur := c.live()
			r.scale(cur, cur-drain, now)
		}
		if now >= nextTick {
			// report's decision with a scaling.Counter: clamped to the bounds, acted on when
			// it differs from the count.
			cur := c.live()
			want := min(max(plan.at(now), r.cfg.MinReplicas), r.cfg.MaxReplicas)
			if want != cur {
				r.scale(cur, want, now)
				for _, rep := range r.reps {
					rep.eng.SetTokenEvents(false)
				}
				starting = starting || want > cur
				all = true
			}
			nextTick += tick
		}
		first = false
		// As in run.loop: nothing reaches a replica before the next arrival, tick, replica
		// coming up or the end, so each runs its iterations back to back until then.
		until := r.horizon(min(end, nextTick), starting)
		due = due[:0]
		for busy.len() > 0 && busy.next() <= now {
			due = append(due, busy.pop())
		}
		if all {
			due = r.reps
		}
		stopped := false
		for _, rep := range due {
			if rep.busyUntil > now {
				continue
			}
			if rep.eng.Busy() {
				c.step(rep, now, until)
				busy.push(rep) // an iteration takes time: it ends after now
			} else if rep.phase == phaseDraining {
				r.stop(rep, now)
				stopped = true
			}
		}
		if all {
			due = nil
		}
		if stopped {
			r.compact()
		}
		if plan != nil && r.next >= len(reqs) && r.inflight == 0 && len(r.front) == 0 {
			c.now = r.stopAll(now)
			return true
		}
		if c.stopped() {
			c.now = now
			return false
		}
		t := until
		if busy.len() > 0 {
			t = min(t, busy.next())
		}
		now = t
	}
	c.now = end
	return true
}

// iterationEnds is a min-heap of busy replicas by the end of their iteration. Each entry
// holds the end as well, so that sifting compares values in the heap's own array rather than
// reading every replica it passes.
type iterationEnds []iterationEnd

type iterationEnd struct {
	end time.Duration
	rep *replica
}

func (h iterationEnds) len() int { return len(h) }

// next is the earliest iteration end; the heap must not be empty.
func (h iterationEnds) next() time.Duration { return h[0].end }

// push adds r, at its busyUntil.
func (h *iterationEnds) push(r *replica) {
	*h = append(*h, iterationEnd{r.busyUntil, r})
	s := *h
	for i := len(s) - 1; i > 0; {
		p := (i - 1) / 2
		if s[p].end <= s[i].end {
			break
		}
		s[p], s[i] = s[i], s[p]
		i = p
	}
}

func (h *iterationEnds) pop() *replica {
	s := *h
	top := s[0].rep
	n := len(s) - 1
	s[0] = s[n]
	s = s[:n]
	for i := 0; ; {
		c := 2*i + 1
		if c >= n {
			break
		}
		if c+1 < n && s[c+1].end < s[c].end {
			c++
		}
		if s[i].end <= s[c].end {
			break
		}
		s[i], s[c] = s[c], s[i]
		i = c
	}
	*h = s
	return top
}

// live counts the replicas that are ready or starting: the count a scaling decision acts on.
func (c *checkpoint) live() int {
	n := 0
	for _, rep := range c.r.reps {
		if rep.phase == phaseReady || rep.phase == phaseStarting {
			n++
		}
	}
	return n
}

// grow adds ready replicas, started one cold start before now (not before zero), until there
// are want ready, and returns how many ready ones are to be drained (> 0), or -1 if it added
// some.
func (c *checkpoint) grow(want int, now time.Duration) int {
	r := c.r
	ready := 0
	for _, rep := range r.reps {
		if rep.phase == phaseReady {
			ready++
		}
	}
	if ready >= want {
		return ready - want
	}
	for ; ready < want; ready++ {
		rep := r.start(max(now-r.cfg.Params.ColdStart, 0))
		rep.phase, rep.readyAt = phaseReady, now
		// Trials read first tokens and completions only; a decode iteration then costs
		// O(1), not one event per sequence.
		rep.eng.SetTokenEvents(false)
	}
	return -1
}

// step is run.step with the first tokens counted by the judge instead of recorded.
func (c *checkpoint) step(rep *replica, now, until time.Duration) {
	last, end, evs := rep.eng.StepUntil(epoch.Add(now), epoch.Add(until))
	c.r.lastStart = max(c.r.lastStart, last.Sub(epoch))
	rep.busyUntil = end.Sub(epoch)
	for i := range evs {
		ev := &evs[i]
		switch ev.Kind {
		case servermodel.EventFirstToken:
			c.j.firstToken(int(ev.ID), ev.Time.Sub(ev.Arrival))
		case servermodel.EventDone:
			c.r.inflight--
		}
	}
}
