package fleetbench

import (
	"context"
	"sync"
	"time"
)

// leadership tracks who leads, as polled, until it is closed (at the end of the run, or
// just before the failover's kill, which is a change on purpose).
type leadership struct {
	mu         sync.Mutex
	closed     bool
	id         string
	epoch      int64
	changes    int
	pollErrors int
	// termsBefore is the controllers' llmscaler_controller_terms_total at the start.
	termsBefore float64
}

// observe records one poll.
func (l *leadership) observe(id string, epoch int64, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	if err != nil {
		l.pollErrors++
		return
	}
	if id != l.id || epoch != l.epoch {
		l.changes++
		l.id, l.epoch = id, epoch
	}
}

func (l *leadership) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

const termsMetric = "llmscaler_controller_terms_total"

// terms is the sum of the live controllers' won terms: a leader that lost and won again
// between two polls shows here, if not in the epoch (it does there too: a new term is a new
// election key).
func (b *Bench) terms(ctx context.Context) float64 {
	var sum float64
	for _, cp := range b.live() {
		if m, err := cp.metrics(ctx); err == nil {
			v, _ := m.Value(termsMetric)
			sum += v
		}
	}
	return sum
}

func (b *Bench) initLeadership(ctx context.Context) error {
	_, st, err := b.leader(ctx)
	if err != nil {
		return err
	}
	b.lead.mu.Lock()
	b.lead.id, b.lead.epoch = st.GetLeader().GetId(), st.GetEpoch()
	b.lead.mu.Unlock()
	b.lead.termsBefore = b.terms(ctx)
	b.res.Leadership.LeaderBefore, b.res.Leadership.EpochBefore = st.GetLeader().GetId(), st.GetEpoch()
	return nil
}

func (b *Bench) pollLeadership(ctx context.Context) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		_, st, err := b.askLeader(ctx)
		if ctx.Err() != nil {
			return
		}
		b.lead.observe(st.GetLeader().GetId(), st.GetEpoch(), err)
	}
}

// closeLeadership takes a last poll and fills in the result.
func (b *Bench) closeLeadership(ctx context.Context) {
	_, st, err := b.leader(ctx)
	b.lead.observe(st.GetLeader().GetId(), st.GetEpoch(), err)
	terms := b.terms(ctx)
	b.lead.mu.Lock()
	b.lead.closed = true
	l := &b.res.Leadership
	l.LeaderAfter, l.EpochAfter = b.lead.id, b.lead.epoch
	l.Changes, l.PollErrors = b.lead.changes, b.lead.pollErrors
	b.lead.mu.Unlock()
	l.TermsDelta = terms - b.lead.termsBefore
	l.Held = l.Changes == 0 && l.TermsDelta == 0 && l.LeaderAfter == l.LeaderBefore && l.EpochAfter == l.EpochBefore
	if !l.Held && b.cfg.RequireLeadership {
		b.fail("leadership lost: %s epoch %d before, %s epoch %d after, %d changes", l.LeaderBefore, l.EpochBefore, l.LeaderAfter, l.EpochAfter, l.Changes)
	}
}
