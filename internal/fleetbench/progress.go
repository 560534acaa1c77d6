package fleetbench

import (
	"context"
	"fmt"
	"time"
)

// progress prints a line every cfg.ProgressInterval: the phase, the agents connected, the
// reports they send a second, and the leader's CPU and memory.
func (b *Bench) progress(ctx context.Context) {
	if b.cfg.Progress == nil {
		return
	}
	t := time.NewTicker(b.cfg.ProgressInterval)
	defer t.Stop()
	var prev AgentsStats
	var prevCtrl ProcSample
	prevPID := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s := b.agents.latest()
		rate := 0.0
		if dt := time.Duration(s.Time - prev.Time).Seconds(); prev.Time != 0 && dt > 0 {
			rate = float64(s.Reports-prev.Reports) / dt
		}
		prev = s
		ctrl := "controller: none leads"
		b.lead.mu.Lock()
		leaderID := b.lead.id
		b.lead.mu.Unlock()
		for _, cp := range b.live() {
			if cp.id != leaderID {
				continue
			}
			p, err := ReadProc(cp.pid())
			if err != nil {
				break
			}
			cores := 0.0
			if prevPID == cp.pid() {
				cores = CPUCores(prevCtrl, p, b.ticks)
			}
			prevCtrl, prevPID = p, cp.pid()
			ctrl = fmt.Sprintf("%s: CPU %.2f cores, RSS %.0f MiB", cp.id, cores, float64(p.RSSKiB)/1024)
		}
		fmt.Fprintf(b.cfg.Progress, "bench: %-11s connected %d/%d, reporting %d, %.0f reports/s sent; %s\n",
			b.phase.Load(), s.Connected, b.cfg.Agents, s.Reporting, rate, ctrl)
	}
}
