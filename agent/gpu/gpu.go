// Package gpu is the agent's view of the GPUs on its host. The agent owns this narrow
// interface so that the stream, the reports and the tests never depend on a driver library:
// NVML reads real NVIDIA GPUs behind it, and a host without GPUs or a laptop demo uses the fake.
package gpu

import (
	"context"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// Backend finds the host's GPUs once and reads them on demand.
type Backend interface {
	// Name is what the agent reports as its gpu_backend: "nvml", "fake" or "none".
	Name() string
	// Inventory is the GPUs found when the backend was built, in index order. It does not
	// change while the agent runs: the controller places instances by index.
	Inventory() []*llmscalerv1.Gpu
	// Sample reads every GPU of the inventory. A value the backend could not read is left
	// unset rather than reported as zero, so that the controller can tell "idle" from "unknown".
	Sample(ctx context.Context) []*llmscalerv1.GpuSample
	// Close releases what the backend holds (the NVML handle, for one).
	Close() error
}

// None is the backend of a host without GPUs: CPU-only model servers still run there.
type None struct{}

// NewNone returns the backend of a host without GPUs.
func NewNone() *None { return &None{} }

// Name is "none".
func (*None) Name() string { return "none" }

// Inventory is empty.
func (*None) Inventory() []*llmscalerv1.Gpu { return nil }

// Sample is empty.
func (*None) Sample(context.Context) []*llmscalerv1.GpuSample { return nil }

// Close has nothing to release.
func (*None) Close() error { return nil }

var (
	_ Backend = (*None)(nil)
	_ Backend = (*Fake)(nil)
)
