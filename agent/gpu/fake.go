package gpu

import (
	"context"
	"fmt"
	"hash/fnv"

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

// Fake is a set of simulated GPUs that always read idle. It lets the whole system run on a
// machine without GPUs: demos, tests and the controller's integration tests.
type Fake struct {
	gpus []*llmscalerv1.Gpu
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

// Sample reads every fake GPU as idle and healthy.
func (f *Fake) Sample(context.Context) []*llmscalerv1.GpuSample {
	out := make([]*llmscalerv1.GpuSample, len(f.gpus))
	for i, g := range f.gpus {
		out[i] = &llmscalerv1.GpuSample{
			Index:                    g.Index,
			Uuid:                     g.Uuid,
			UtilizationPercent:       proto.Float64(0),
			MemoryUtilizationPercent: proto.Float64(0),
			MemoryUsedMib:            proto.Uint64(0),
			MemoryTotalMib:           proto.Uint64(g.MemoryTotalMib),
			TemperatureCelsius:       proto.Float64(fakeIdleTemperature),
			PowerWatts:               proto.Float64(fakeIdlePower),
			PowerLimitWatts:          proto.Float64(fakePowerLimit),
			Healthy:                  proto.Bool(true),
		}
	}
	return out
}

// Close has nothing to release.
func (*Fake) Close() error { return nil }
