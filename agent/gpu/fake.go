package gpu

import (
	"context"
	"fmt"
	"hash/fnv"
	"sync"

	"google.golang.org/protobuf/proto"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// Simulated A100 figures: the fake looks like the hardware the autoscaler is planned for, so
// that placement and memory checks behave as they would on a real node.
const (
	// FakeName is the model name of every fake GPU; it says "fake" so that no one mistakes a
	// simulated node for a real one in a listing.
	FakeName = "Fake GPU (simulated A100-SXM4-80GB)"
	// FakeMemoryMiB is the memory of every fake GPU.
	FakeMemoryMiB = 81920

	fakeIdleTemperature = 30
	fakeIdlePower       = 60
	fakePowerLimit      = 400
)

// Fake is a set of simulated GPUs. They read idle unless the agent tells them what the
// instances on them do (SetLoad), so that a demo's GPU gauges move with its load. It lets the
// whole system run on a machine without GPUs: demos, tests and the controller's integration
// tests.
type Fake struct {
	gpus []*llmscalerv1.Gpu

	mu    sync.Mutex
	loads map[uint32]FakeLoad
}

// FakeLoad is what a simulated GPU shows: the memory the instance on it holds, and how busy
// it is (0-100).
type FakeLoad struct {
	MemoryMiB   uint64
	Utilization float64
}

// SetLoad replaces the loads of the simulated GPUs, by index; a GPU without one reads idle.
func (f *Fake) SetLoad(loads map[uint32]FakeLoad) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.loads = loads
}

// NewFake returns n simulated GPUs for the node nodeID. Their UUIDs derive from the node id,
// so they stay the same across agent restarts and differ between nodes, as real UUIDs do.
func NewFake(nodeID string, n int) *Fake {
	h := fnv.New32a()
	h.Write([]byte(nodeID))
	node := h.Sum32()
	gpus := make([]*llmscalerv1.Gpu, n)
	for i := range gpus {
		gpus[i] = &llmscalerv1.Gpu{
			Index:          uint32(i),
			Uuid:           fmt.Sprintf("GPU-fake-%08x-%d", node, i),
			Name:           FakeName,
			MemoryTotalMib: FakeMemoryMiB,
		}
	}
	return &Fake{gpus: gpus}
}

// Name is "fake".
func (*Fake) Name() string { return "fake" }

// Inventory returns copies, so that a caller that changes one cannot change the next report.
func (f *Fake) Inventory() []*llmscalerv1.Gpu {
	out := make([]*llmscalerv1.Gpu, len(f.gpus))
	for i, g := range f.gpus {
		out[i] = proto.CloneOf(g)
	}
	return out
}

// Sample reads every fake GPU as healthy, idle or loaded as SetLoad said. Temperature and
// power rise with utilization, roughly as an A100's do.
func (f *Fake) Sample(context.Context) []*llmscalerv1.GpuSample {
	f.mu.Lock()
	loads := f.loads
	f.mu.Unlock()
	out := make([]*llmscalerv1.GpuSample, len(f.gpus))
	for i, g := range f.gpus {
		l := loads[g.Index]
		util := min(max(l.Utilization, 0), 100)
		mem := min(l.MemoryMiB, g.MemoryTotalMib)
		out[i] = &llmscalerv1.GpuSample{
			Index:                    g.Index,
			Uuid:                     g.Uuid,
			UtilizationPercent:       proto.Float64(util),
			MemoryUtilizationPercent: proto.Float64(util / 2),
			MemoryUsedMib:            proto.Uint64(mem),
			MemoryTotalMib:           proto.Uint64(g.MemoryTotalMib),
			TemperatureCelsius:       proto.Float64(fakeIdleTemperature + 0.4*util),
			PowerWatts:               proto.Float64(fakeIdlePower + (fakePowerLimit-fakeIdlePower)*util/100),
			PowerLimitWatts:          proto.Float64(fakePowerLimit),
			Healthy:                  proto.Bool(true),
		}
	}
	return out
}

// Close has nothing to release.
func (*Fake) Close() error { return nil }
