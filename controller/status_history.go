package controller

import (
	"context"
	"sync"
	"time"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// Replica history bounds: the leader samples every deployment's desired and ready counts
// every historyStep and keeps historySpan of them (240 points, a few KiB per deployment) in
// memory for the status page. It is not stored: a new leader starts an empty history.
const (
	historyStep = 15 * time.Second
	historySpan = time.Hour
)

// historyPoint is one sample of a deployment's replica counts.
type historyPoint struct {
	at             time.Time
	desired, ready uint32
}

// replicaHistory is the leader's per-deployment ring of replica counts.
type replicaHistory struct {
	mu   sync.Mutex
	size int
	by   map[string]*historyRing
}

// historyRing holds the last len(pts) points once full; start is the oldest then.
type historyRing struct {
	pts   []historyPoint
	start int
}

func newReplicaHistory(step, span time.Duration) *replicaHistory {
	return &replicaHistory{size: max(int(span/step), 1), by: map[string]*historyRing{}}
}

// record adds one sample of every deployment; a deployment missing from it is gone, and so
// is its history.
func (h *replicaHistory) record(pts map[string]historyPoint) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for name := range h.by {
		if _, ok := pts[name]; !ok {
			delete(h.by, name)
		}
	}
	for name, p := range pts {
		r := h.by[name]
		if r == nil {
			r = &historyRing{pts: make([]historyPoint, 0, h.size)}
			h.by[name] = r
		}
		if len(r.pts) < h.size {
			r.pts = append(r.pts, p)
			continue
		}
		r.pts[r.start] = p
		r.start = (r.start + 1) % h.size
	}
}

// points returns a deployment's samples, oldest first.
func (h *replicaHistory) points(name string) []historyPoint {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.by[name]
	if r == nil {
		return nil
	}
	out := make([]historyPoint, 0, len(r.pts))
	out = append(out, r.pts[r.start:]...)
	return append(out, r.pts[:r.start]...)
}

// runHistory samples the replica counts at the start of the term and every historyStep.
func (e *engine) runHistory(ctx context.Context) error {
	tk := time.NewTicker(historyStep)
	defer tk.Stop()
	for {
		e.sampleHistory()
		select {
		case <-ctx.Done():
			return nil
		case <-tk.C:
		}
	}
}

// sampleHistory records each deployment's desired count (as the reconciler drives it, which
// covers counts held by hand) and its READY instances.
func (e *engine) sampleHistory() {
	now := e.c.now()
	e.mu.Lock()
	deps := make([]*llmscalerv1.Deployment, 0, len(e.specs))
	for _, d := range e.specs {
		deps = append(deps, d)
	}
	e.mu.Unlock()
	phases := e.t.fleet.phases()
	pts := make(map[string]historyPoint, len(deps))
	for _, d := range deps {
		name := d.GetSpec().GetName()
		pts[name] = historyPoint{at: now, desired: e.t.reconciler.desired(d), ready: phases[name][llmscalerv1.InstancePhase_INSTANCE_PHASE_READY]}
	}
	e.history.record(pts)
}
