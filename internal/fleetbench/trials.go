package fleetbench

import (
	"context"
	"fmt"
	"time"
)

// decisions runs one trial per probe, a second apart: the probe's agent reports its queue
// overloaded, and the trial lasts until a start for the probe reaches an agent.
func (b *Bench) decisions(ctx context.Context) error {
	d := &b.res.Decisions
	d.TimeoutS = b.cfg.TrialTimeout.Seconds()
	if b.cfg.Probes == 0 {
		return nil
	}
	got := map[string]Trial{}
	collect := func(t Trial) { got[t.Deployment] = t }
	every := time.NewTicker(time.Second)
	defer every.Stop()
	for k := range b.cfg.Probes {
		if err := b.agents.send(command{Cmd: cmdOverload, Deployment: b.layout.Probes[k].Name}); err != nil {
			return err
		}
		if err := b.alive(); err != nil {
			return err
		}
	spaced:
		for {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case t := <-b.agents.trials:
				collect(t)
			case <-every.C:
				break spaced
			}
		}
	}
	// The agents process ends a trial without a start after TrialTimeout; a little more
	// here covers its half-second sweep.
	deadline := time.NewTimer(b.cfg.TrialTimeout + 3*time.Second)
	defer deadline.Stop()
	for len(got) < b.cfg.Probes {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case t := <-b.agents.trials:
			collect(t)
		case <-deadline.C:
			b.note("%d trials got no answer from the agents process", b.cfg.Probes-len(got))
			d.TimedOut += b.cfg.Probes - len(got)
			return b.summarizeTrials(got)
		}
	}
	return b.summarizeTrials(got)
}

func (b *Bench) summarizeTrials(got map[string]Trial) error {
	d := &b.res.Decisions
	var took []time.Duration
	for _, t := range got {
		if t.T0 == 0 || t.T1 == 0 {
			d.TimedOut++
			continue
		}
		took = append(took, time.Duration(t.T1-t.T0))
	}
	d.Trials = b.cfg.Probes
	d.Latency = Summarize(took)
	for _, x := range took {
		d.SamplesMs = append(d.SamplesMs, float64(x)/float64(time.Millisecond))
	}
	return nil
}

// failover kills the leader with SIGKILL and times the other controller: until it leads,
// until every agent is connected to it, and until a start it sent for a probe overloaded
// right after the kill reaches the agent.
func (b *Bench) failover(ctx context.Context) error {
	victim, st, err := b.leader(ctx)
	if err != nil {
		return err
	}
	var other *controllerProc
	for _, cp := range b.ctrls {
		if cp != victim {
			other = cp
		}
	}
	f := &FailoverResult{Killed: victim.id, DeadlineS: b.cfg.FailoverTimeout.Seconds()}
	b.res.Failover = f
	probe := b.layout.Probes[len(b.layout.Probes)-1].Name
	oldEpoch := st.GetEpoch()

	b.victim.Store(victim)
	killed := time.Now()
	victim.kill()
	if err := b.agents.send(command{Cmd: cmdOverload, Deployment: probe, TimeoutMs: b.cfg.FailoverTimeout.Milliseconds()}); err != nil {
		return err
	}
	since := func(at time.Time) *float64 { return ptr(at.Sub(killed).Seconds()) }
	err = b.waitFor(ctx, b.cfg.FailoverTimeout, 50*time.Millisecond, "failover", func() (bool, error) {
		if err := b.alive(); err != nil {
			return false, err
		}
		if f.LeadS == nil {
			if st, err := other.status(ctx); err == nil && st.GetLeader().GetId() == other.id && st.GetEpoch() > oldEpoch {
				f.LeadS = since(time.Now())
				f.NewLeader, f.NewEpoch = other.id, st.GetEpoch()
			}
		}
		if f.AllConnectedS == nil {
			if at := b.agents.latest().AllOn[other.id]; at > killed.UnixNano() {
				f.AllConnectedS = since(time.Unix(0, at))
			}
		}
		if t, ok := b.trialOf(probe); ok && f.CommandS == nil {
			if t.T1 == 0 {
				return false, fmt.Errorf("no start for %s reached its agent within %v of the kill", probe, b.cfg.FailoverTimeout)
			}
			if t.ControllerID != other.id {
				b.note("failover: the start for %s came from %s, not the new leader %s", probe, t.ControllerID, other.id)
			}
			f.CommandS = since(time.Unix(0, t.T1))
		}
		return f.LeadS != nil && f.AllConnectedS != nil && f.CommandS != nil, nil
	})
	if err != nil {
		b.fail("failover: %v", err)
	}
	return nil
}

// trialOf takes the trial of deployment from those the agents process sent, if it came;
// others are dropped (their wait is over).
func (b *Bench) trialOf(deployment string) (Trial, bool) {
	for {
		select {
		case t := <-b.agents.trials:
			if t.Deployment == deployment {
				return t, true
			}
		default:
			return Trial{}, false
		}
	}
}
