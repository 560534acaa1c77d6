package fleetbench

import (
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// probeMaxReplicas bounds a probe's scale-up: a trial needs one start, and a probe agent has
// GPUs - instances free.
const probeMaxReplicas = 4

// DeploymentSpecs are the deployments the bench applies before agents connect. A fleet
// deployment holds its count (min = max = what the agents run) and can place nothing new
// (its selector matches no agent), so that neither the ramp nor the steady state gives the
// controller a reason to command anything. A probe may scale up, onto its own agent only,
// as soon as its queue exceeds the threshold: no stabilization, the shortest windows the
// policy allows at a 1 s report interval, and a cooldown and down thresholds that keep it
// from ever scaling down during a run.
func DeploymentSpecs(l Layout) []*llmscalerv1.DeploymentSpec {
	var out []*llmscalerv1.DeploymentSpec
	for _, d := range l.Fleet {
		n := uint32(d.Replicas)
		out = append(out, &llmscalerv1.DeploymentSpec{
			Name: d.Name, Profile: Profile, GpusPerReplica: 1, GpuMemoryMib: 1000,
			MinReplicas: n, MaxReplicas: n,
			NodeSelector: map[string]string{poolLabel: poolNowhere},
			Policy:       queuePolicy(),
		})
	}
	free := uint32(l.GPUs - l.Instances)
	for _, p := range l.Probes {
		out = append(out, &llmscalerv1.DeploymentSpec{
			Name: p.Name, Profile: Profile, GpusPerReplica: 1, GpuMemoryMib: 1000,
			MinReplicas: 1, MaxReplicas: min(probeMaxReplicas, 1+free),
			NodeSelector: map[string]string{probeLabel: p.Name},
			Policy:       queuePolicy(),
		})
	}
	return out
}

// queuePolicy is the threshold rule reduced to its queue: up by one as soon as the queue
// of the panic window exceeds 10; GPU utilization and response time can never trigger it,
// and it never scales down (queue_down 0, and an hour's cooldown after the first step).
func queuePolicy() *llmscalerv1.Policy {
	return &llmscalerv1.Policy{
		Kind: &llmscalerv1.Policy_Threshold{Threshold: &llmscalerv1.ThresholdPolicy{
			QueueUp:                   proto.Float64(10),
			QueueDown:                 proto.Float64(0),
			ResponseTimeUp:            durationpb.New(time.Hour),
			ResponseTimeDown:          durationpb.New(0),
			GpuUtilizationUpPercent:   proto.Float64(100),
			GpuUtilizationDownPercent: proto.Float64(0),
			Cooldown:                  durationpb.New(time.Hour),
		}},
		StableWindow: durationpb.New(2 * time.Second),
		PanicWindow:  durationpb.New(time.Second),
	}
}
