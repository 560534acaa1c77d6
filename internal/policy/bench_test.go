package policy

import (
	"fmt"
	"testing"
	"time"

	"github.com/llmscaler/llmscaler/internal/window"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// benchDeployment is one deployment of the benchmark: its windows, its policy and the ids of
// its replicas.
type benchDeployment struct {
	dep *window.Deployment
	as  *Autoscaler
	ids []string
}

// BenchmarkTick measures one controller tick over 1,000 deployments of 10 replicas each:
// every replica's report observed, the window ticked, the stable and panic windows read and
// the policy evaluated. The load is steady, so this is the steady state: no allocation.
// The warm-up runs past the slo policy's rise history (learned headroom), and min_replicas
// holds the count at 10, so that the evaluation is the whole of it but nothing changes.
func BenchmarkTick(b *testing.B) {
	policies := []struct {
		name string
		p    *llmscalerv1.Policy
	}{
		// 10 replicas serve 60 req/s with 12 in flight each: sized for exactly 10 with a
		// prior of 8 req/s and 20 % headroom, on target at 12 in flight.
		{NameSLO, sloPolicy(func(s *llmscalerv1.SloPolicy) { s.PriorRequestsPerSecond = ptr(8.0) })},
		// No prior: the capacity model is fitted on every evaluation and the probe runs.
		{NameSLO + "-noprior", sloPolicy(func(s *llmscalerv1.SloPolicy) { s.PriorRequestsPerSecond = nil })},
		{NameTarget, targetPolicy(func(p *llmscalerv1.TargetPolicy) { p.Target = 12 })},
		{NameThreshold, thresholdPolicy(nil)},
	}
	for _, pc := range policies {
		b.Run(pc.name, func(b *testing.B) {
			const deployments, replicas = 1000, 10
			// Without a prior the policy starts at 2 req/s a replica and wants 30 for the
			// load: max_replicas holds it at 10 while it probes.
			maxReplicas := 20
			if pc.name == NameSLO+"-noprior" {
				maxReplicas = replicas
			}
			fleet := make([]benchDeployment, deployments)
			for i := range fleet {
				as, err := NewAutoscaler(pc.p)
				if err != nil {
					b.Fatal(err)
				}
				cfg := as.Config()
				cfg.ReportInterval = time.Second
				fleet[i] = benchDeployment{dep: window.NewDeployment(cfg), as: as}
				for r := range replicas {
					fleet[i].ids = append(fleet[i].ids, fmt.Sprintf("d%d-r%d", i, r))
				}
			}
			now := epoch
			tick := func() {
				now = now.Add(time.Second)
				sec := now.Unix()
				for i := range fleet {
					bd := &fleet[i]
					for r, id := range bd.ids {
						// Steady load, a little different per replica and second.
						jitter := float64((sec+int64(r))%5) / 10
						bd.dep.Observe(id, window.Ready, window.Sample{
							Time: now, Waiting: 0, Running: 12 + 2*jitter, KVCache: 0.4 + jitter/10, HasKVCache: true,
							TTFT:           window.Summary{P50: 0.15 + jitter/10, P95: 0.4 + jitter/5, Count: 6},
							E2E:            window.Summary{P50: 2 + jitter, P95: 4 + jitter, Count: 6},
							FinishedPerSec: 6 + jitter, PromptTPS: 3000, GenerationTPS: 1200, GPUUtil: 60 + 10*jitter, HasGPUUtil: true,
						})
					}
					bd.dep.Tick(now)
					cfg := bd.as.Config()
					d := bd.as.Evaluate(Input{
						Now: now, Deployment: "bench", Ready: replicas, Min: replicas, Max: maxReplicas, ReportInterval: time.Second,
						ColdStart: time.Minute, Stable: bd.dep.Values(now, cfg.Stable), Panic: bd.dep.Values(now, cfg.Panic),
						Long: bd.dep.Totals(now, cfg.History),
					})
					if d.Change {
						b.Fatalf("deployment %d changed in steady state: %s", i, d.Reason)
					}
				}
			}
			// Warm up past the longest history: the slo policy's rise history (riseMinHistory
			// plus a horizon of a cold start and two stable windows), which also covers the
			// 300 s of target recommendations.
			for range int((riseMinHistory + 5*time.Minute) / time.Second) {
				tick()
			}
			if pc.name == NameSLO {
				if _, ok := fleet[0].as.slo.rise.headroom(60); !ok {
					b.Fatal("no learned headroom after the warm-up")
				}
			}
			if pc.name == NameSLO+"-noprior" {
				if _, ok := fleet[0].as.slo.model.costs(); !ok {
					b.Fatal("no capacity model after the warm-up")
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				tick()
			}
		})
	}
}
