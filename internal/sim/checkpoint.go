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
// scaling loop and no per-request record, so the run inside holds neither: the plan acts
// through resize, and the judge counts.
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
		inflight: r.inflight, met: r.met, gpuTime: r.gpuTime}
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
// once, as the plan starts them one cold start ahead, and those removed are drained, least
// loaded first, as run.scale does. It is run.loop without the report ticks, step for step:
// replicas coming up, the front queue, arrivals, the scaling decision (here, resize), then
// the engines; TestCheckpointMatchesRun holds it to that. It returns false if the judge
// stopped it early.
func (c *checkpoint) advance(end time.Duration, ready int) bool {
	r := c.r
	reqs := r.cfg.Workload.Requests
	now := c.now
	first := true
	// Trials start no replica but through grow, whose replicas are ready at once, so most
	// never see one starting; the scan for them is skipped then.
	starting := slices.ContainsFunc(r.reps, func(rep *replica) bool { return rep.phase == phaseStarting })
	for now < end {
		up := false
		if starting {
			starting = false
			for _, rep := range r.reps {
				if rep.phase == phaseStarting {
					if rep.readyAt <= now {
						rep.phase = phaseReady
						up = true
					} else {
						starting = true
					}
				}
			}
		}
		var drain int
		if first && ready > 0 {
			drain = c.grow(ready, now)
			up = up || drain < 0
		}
		if up && len(r.front) > 0 {
			for _, i := range r.front {
				r.dispatch(i, now)
			}
			r.front = r.front[:0]
		}
		for r.next < len(reqs) && reqs[r.next].At <= now {
			r.dispatch(r.next, now)
			r.next++
		}
		if drain > 0 {
			cur := 0
			for _, rep := range r.reps {
				if rep.phase == phaseReady || rep.phase == phaseStarting {
					cur++
				}
			}
			r.scale(cur, cur-drain, now)
		}
		first = false
		stopped := false
		for _, rep := range r.reps {
			if rep.busyUntil > now {
				continue
			}
			if rep.eng.Busy() {
				c.step(rep, now)
			} else if rep.phase == phaseDraining {
				r.stop(rep, now)
				stopped = true
			}
		}
		if stopped {
			r.compact()
		}
		if c.stopped() {
			c.now = now
			return false
		}
		t := end
		if r.next < len(reqs) {
			t = min(t, reqs[r.next].At)
		}
		for _, rep := range r.reps {
			if rep.phase == phaseStarting {
				t = min(t, rep.readyAt)
			}
			if rep.busyUntil > now {
				t = min(t, rep.busyUntil)
			}
		}
		now = t
	}
	c.now = end
	return true
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
func (c *checkpoint) step(rep *replica, now time.Duration) {
	end, evs := rep.eng.Step(epoch.Add(now))
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

// queued is the requests waiting for admission: in the front queue and the engines' queues.
func (c *checkpoint) queued() int {
	n := len(c.r.front)
	for _, rep := range c.r.reps {
		n += rep.eng.Waiting()
	}
	return n
}
