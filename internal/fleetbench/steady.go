package fleetbench

import (
	"context"
	"fmt"
	"time"

	"github.com/llmscaler/llmscaler/internal/backoff"
)

// Metrics the steady window reads from the controller.
const (
	messagesMetric    = "llmscaler_controller_agent_messages_total"
	ingestMetric      = "llmscaler_controller_report_ingest_seconds"
	desiredSentMetric = "llmscaler_controller_desired_states_sent_total"
)

// reportSeries matches the report series of the message counter, whichever label name the
// controller gives the message type.
var reportSeries = LabelAny{Names: []string{"type", "kind"}, Value: "report"}

// window is what the bench reads at each end of the steady window.
type window struct {
	at          time.Time
	metrics     Metrics
	ctrl, agent ProcSample
	stats       AgentsStats
}

func (b *Bench) readWindow(ctx context.Context, leader *controllerProc) (window, error) {
	w := window{at: time.Now()}
	var err error
	if w.metrics, err = leader.metrics(ctx); err != nil {
		return w, err
	}
	if w.ctrl, err = ReadProc(leader.pid()); err != nil {
		return w, fmt.Errorf("controller %s: %w", leader.id, err)
	}
	if w.agent, err = ReadProc(b.agents.pid()); err != nil {
		return w, fmt.Errorf("agents process: %w", err)
	}
	w.stats = b.agents.latest()
	return w, nil
}

// steady lets the fleet settle for two report intervals, then measures a window of
// cfg.Duration: the rate of reports the controller took, their ingest latency, the desired
// states it sent, and the CPU and memory of the controller and of the agents process.
func (b *Bench) steady(ctx context.Context) error {
	if err := backoff.Sleep(ctx, 2*b.cfg.Interval+statsLag); err != nil {
		return err
	}
	leader, _, err := b.leader(ctx)
	if err != nil {
		return err
	}
	w0, err := b.readWindow(ctx, leader)
	if err != nil {
		return err
	}
	profiles := b.startProfiles(ctx, leader)
	var maxCtrl, maxAgents uint64
	err = sampleEverySecond(ctx, b.cfg.Duration, b.alive, func() {
		if p, err := ReadProc(leader.pid()); err == nil {
			maxCtrl = max(maxCtrl, p.RSSKiB)
		}
		if p, err := ReadProc(b.agents.pid()); err == nil {
			maxAgents = max(maxAgents, p.RSSKiB)
		}
	})
	if err != nil {
		return err
	}
	// The agents' stats come every half second: wait for a line from after the window.
	if err := backoff.Sleep(ctx, statsLag); err != nil {
		return err
	}
	w1, err := b.readWindow(ctx, leader)
	if err != nil {
		return err
	}
	b.res.Profiles = append(b.res.Profiles, profiles()...)
	s := &b.res.Steady
	wall := w1.at.Sub(w0.at).Seconds()
	s.WindowS = wall
	r0, ok0 := w0.metrics.Value(messagesMetric, reportSeries)
	r1, ok1 := w1.metrics.Value(messagesMetric, reportSeries)
	if ok0 && ok1 && wall > 0 {
		s.ReportsPerSecond = (r1 - r0) / wall
	} else {
		b.note("%s{type=\"report\"} missing from the controller's /metrics: reports/s received unknown", messagesMetric)
	}
	if dt := time.Duration(w1.stats.Time - w0.stats.Time).Seconds(); dt > 0 {
		s.SentPerSecond = float64(w1.stats.Reports-w0.stats.Reports) / dt
	}
	h0, ok0 := w0.metrics.Histogram(ingestMetric)
	h1, ok1 := w1.metrics.Histogram(ingestMetric)
	if ok0 && ok1 {
		d := h1.Since(h0)
		if v, ok := d.Quantile(0.5); ok {
			s.IngestP50Ms = ptr(v * 1000)
		}
		if v, ok := d.Quantile(0.99); ok {
			s.IngestP99Ms = ptr(v * 1000)
		}
	} else {
		b.note("%s missing from the controller's /metrics: ingest latency n/a", ingestMetric)
	}
	if d0, ok := w0.metrics.Value(desiredSentMetric); ok {
		if d1, ok := w1.metrics.Value(desiredSentMetric); ok {
			s.DesiredSent = ptr(d1 - d0)
		}
	}
	s.Desired = w1.stats.Desired - w0.stats.Desired
	s.DesiredChanges = w1.stats.DesiredChanges - w0.stats.DesiredChanges
	s.Disconnects = w1.stats.Disconnects - w0.stats.Disconnects
	s.SkippedReports = w1.stats.SkippedReports - w0.stats.SkippedReports
	s.Controller = procResult(w0.ctrl, w1.ctrl, maxCtrl, b.ticks)
	s.AgentsProcess = procResult(w0.agent, w1.agent, maxAgents, b.ticks)
	if s.DesiredChanges > 0 {
		b.fail("the steady state issued commands: %d desired states with starts or stops reached agents (%d starts, %d drains)",
			s.DesiredChanges, w1.stats.Starts-w0.stats.Starts, w1.stats.Drains-w0.stats.Drains)
	}
	return nil
}

// statsLag is how old the agents process's latest stats line may be.
const statsLag = 600 * time.Millisecond

func procResult(a, b ProcSample, maxRSS uint64, ticks float64) ProcResult {
	return ProcResult{
		CPUCores:   CPUCores(a, b, ticks),
		RSSMiB:     float64(b.RSSKiB) / 1024,
		RSSMaxMiB:  float64(max(maxRSS, a.RSSKiB, b.RSSKiB)) / 1024,
		PeakRSSMiB: float64(b.HWMKiB) / 1024,
	}
}

func ptr[T any](v T) *T { return &v }

// sampleEverySecond calls each once a second for d, after alive says every process is
// still up; it ends early with ctx's error or alive's.
func sampleEverySecond(ctx context.Context, d time.Duration, alive func() error, each func()) error {
	t := time.NewTicker(time.Second)
	end := time.NewTimer(d)
	defer t.Stop()
	defer end.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-end.C:
			return nil
		case <-t.C:
			if err := alive(); err != nil {
				return err
			}
			each()
		}
	}
}
