package gpu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxa100"
	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/proto"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// mockHost is a dgxa100 mock (8 x A100 40GB) with the calls it leaves nil filled in: every
// GPU reads busy and healthy, with figures that differ by index (see wantSample).
type mockHost struct {
	server *dgxa100.Server
	events *mock.EventSet
	queue  []nvml.EventData
	now    time.Time
}

func newMockHost() *mockHost {
	h := &mockHost{
		server: dgxa100.New(),
		now:    time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
	}
	h.events = &mock.EventSet{
		WaitFunc: func(uint32) (nvml.EventData, nvml.Return) {
			if len(h.queue) == 0 {
				return nvml.EventData{}, nvml.ERROR_TIMEOUT
			}
			e := h.queue[0]
			h.queue = h.queue[1:]
			return e, nvml.SUCCESS
		},
		FreeFunc: func() nvml.Return { return nvml.SUCCESS },
	}
	h.server.EventSetCreateFunc = func() (nvml.EventSet, nvml.Return) { return h.events, nvml.SUCCESS }
	for i := range h.server.Devices {
		d := h.device(i)
		d.MemoryInfo.Used = uint64(1024*(i+1)) * mib
		d.MemoryInfo.Free = d.MemoryInfo.Total - d.MemoryInfo.Used
		d.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) {
			return nvml.Utilization{Gpu: uint32(10 * i), Memory: uint32(5 * i)}, nvml.SUCCESS
		}
		d.GetTemperatureFunc = func(s nvml.TemperatureSensors) (uint32, nvml.Return) {
			if s != nvml.TEMPERATURE_GPU {
				return 0, nvml.ERROR_INVALID_ARGUMENT
			}
			return uint32(40 + i), nvml.SUCCESS
		}
		d.GetPowerUsageFunc = func() (uint32, nvml.Return) { return uint32(100000 + 500*i), nvml.SUCCESS }
		d.GetEnforcedPowerLimitFunc = func() (uint32, nvml.Return) { return 400000, nvml.SUCCESS }
		d.GetPowerManagementLimitFunc = func() (uint32, nvml.Return) { return 350000, nvml.SUCCESS }
		clocks := uint64(nvml.ClocksEventReasonGpuIdle)
		if i == 1 {
			clocks = nvml.ClocksEventReasonSwPowerCap | nvml.ClocksEventReasonApplicationsClocksSetting
		}
		d.GetCurrentClocksEventReasonsFunc = func() (uint64, nvml.Return) { return clocks, nvml.SUCCESS }
		d.GetCurrentClocksThrottleReasonsFunc = func() (uint64, nvml.Return) { return clocks, nvml.SUCCESS }
		d.GetTotalEccErrorsFunc = func(m nvml.MemoryErrorType, c nvml.EccCounterType) (uint64, nvml.Return) {
			if m != nvml.MEMORY_ERROR_TYPE_UNCORRECTED || c != nvml.VOLATILE_ECC {
				return 0, nvml.ERROR_INVALID_ARGUMENT
			}
			return 0, nvml.SUCCESS
		}
		d.RegisterEventsFunc = func(types uint64, set nvml.EventSet) nvml.Return {
			if types != nvml.EventTypeXidCriticalError || set != h.events {
				return nvml.ERROR_INVALID_ARGUMENT
			}
			return nvml.SUCCESS
		}
	}
	return h
}

func (h *mockHost) device(i int) *dgxa100.Device { return h.server.Devices[i].(*dgxa100.Device) }

func (h *mockHost) xid(i int, xid uint64) {
	h.queue = append(h.queue, nvml.EventData{
		Device:            h.server.Devices[i],
		EventType:         nvml.EventTypeXidCriticalError,
		EventData:         xid,
		GpuInstanceId:     0xFFFFFFFF,
		ComputeInstanceId: 0xFFFFFFFF,
	})
}

func (h *mockHost) open(t *testing.T, log hclog.Logger) *NVML {
	t.Helper()
	n, err := newNVML(log, h.server, func() time.Time { return h.now })
	if err != nil {
		t.Fatalf("newNVML: %v", err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n
}

// wantSample is what GPU i of a fresh mockHost reads.
func (h *mockHost) wantSample(i int) *llmscalerv1.GpuSample {
	s := &llmscalerv1.GpuSample{
		Index:                    uint32(i),
		Uuid:                     h.device(i).UUID,
		UtilizationPercent:       proto.Float64(float64(10 * i)),
		MemoryUtilizationPercent: proto.Float64(float64(5 * i)),
		MemoryUsedMib:            proto.Uint64(uint64(1024 * (i + 1))),
		MemoryTotalMib:           proto.Uint64(40960),
		TemperatureCelsius:       proto.Float64(float64(40 + i)),
		PowerWatts:               proto.Float64(100 + 0.5*float64(i)),
		PowerLimitWatts:          proto.Float64(400),
		Healthy:                  proto.Bool(true),
	}
	if i == 1 {
		s.ThrottleReasons = []string{"sw_power_cap"}
	}
	return s
}

func TestNVMLInventory(t *testing.T) {
	h := newMockHost()
	h.device(2).MigMode = nvml.DEVICE_MIG_ENABLE
	n := h.open(t, hclog.NewNullLogger())
	if n.Name() != "nvml" {
		t.Fatalf("Name() = %q, want nvml", n.Name())
	}
	inv := n.Inventory()
	if len(inv) != 8 {
		t.Fatalf("got %d GPUs, want 8", len(inv))
	}
	seen := map[string]bool{}
	for i, g := range inv {
		want := &llmscalerv1.Gpu{
			Index:          uint32(i),
			Uuid:           h.device(i).UUID,
			Name:           "Mock NVIDIA A100-SXM4-40GB",
			MemoryTotalMib: 40960,
			MigEnabled:     i == 2,
		}
		if !proto.Equal(g, want) {
			t.Errorf("gpu %d: got %v, want %v", i, g, want)
		}
		if !strings.HasPrefix(g.GetUuid(), "GPU-") || seen[g.GetUuid()] {
			t.Errorf("gpu %d: uuid %q is not a distinct GPU-... uuid", i, g.GetUuid())
		}
		seen[g.GetUuid()] = true
	}
	inv[0].Uuid = "changed"
	if n.Inventory()[0].GetUuid() == "changed" {
		t.Fatal("Inventory returned the backend's own messages")
	}
}

func TestNVMLInventorySkipsUnreadableGPU(t *testing.T) {
	tests := []struct {
		name  string
		setup func(h *mockHost)
	}{
		{
			name: "no handle",
			setup: func(h *mockHost) {
				get := h.server.DeviceGetHandleByIndexFunc
				h.server.DeviceGetHandleByIndexFunc = func(i int) (nvml.Device, nvml.Return) {
					if i == 3 {
						return nil, nvml.ERROR_UNKNOWN
					}
					return get(i)
				}
			},
		},
		{
			name: "no uuid",
			setup: func(h *mockHost) {
				h.device(3).GetUUIDFunc = func() (string, nvml.Return) { return "", nvml.ERROR_UNKNOWN }
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newMockHost()
			tc.setup(h)
			n := h.open(t, hclog.NewNullLogger())
			var got []uint32
			for _, g := range n.Inventory() {
				got = append(got, g.GetIndex())
			}
			if want := []uint32{0, 1, 2, 4, 5, 6, 7}; !slices.Equal(got, want) {
				t.Fatalf("inventory indices %v, want %v", got, want)
			}
			samples := n.Sample(context.Background())
			if len(samples) != 7 || samples[3].GetIndex() != 4 || samples[3].GetUuid() != h.device(4).UUID {
				t.Fatalf("samples do not follow the inventory: %v", samples)
			}
		})
	}
}

func TestNVMLSample(t *testing.T) {
	h := newMockHost()
	n := h.open(t, hclog.NewNullLogger())
	samples := n.Sample(context.Background())
	if len(samples) != 8 {
		t.Fatalf("got %d samples, want 8", len(samples))
	}
	for i, s := range samples {
		if want := h.wantSample(i); !proto.Equal(s, want) {
			t.Errorf("gpu %d:\n got %v\nwant %v", i, s, want)
		}
	}
	if calls := h.events.WaitCalls(); len(calls) == 0 || calls[0].V != 0 {
		t.Errorf("event set waits %v, want a poll with timeout 0", calls)
	}
}

func TestNVMLSampleOneCallFails(t *testing.T) {
	const bad = 2
	tests := []struct {
		name string
		// fail makes one call fail on GPU bad.
		fail func(d *dgxa100.Device)
		// unset clears from the wanted sample what the failing call would have given.
		unset func(s *llmscalerv1.GpuSample)
		// logs is the number of warnings expected, once per failing call.
		logs int
	}{
		{
			name: "utilization",
			fail: func(d *dgxa100.Device) {
				d.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) { return nvml.Utilization{}, nvml.ERROR_UNKNOWN }
			},
			unset: func(s *llmscalerv1.GpuSample) { s.UtilizationPercent, s.MemoryUtilizationPercent = nil, nil },
			logs:  1,
		},
		{
			name: "memory",
			fail: func(d *dgxa100.Device) {
				d.GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) { return nvml.Memory{}, nvml.ERROR_TIMEOUT }
			},
			unset: func(s *llmscalerv1.GpuSample) { s.MemoryUsedMib, s.MemoryTotalMib = nil, nil },
			logs:  1,
		},
		{
			name: "temperature",
			fail: func(d *dgxa100.Device) {
				d.GetTemperatureFunc = func(nvml.TemperatureSensors) (uint32, nvml.Return) { return 0, nvml.ERROR_UNKNOWN }
			},
			unset: func(s *llmscalerv1.GpuSample) { s.TemperatureCelsius = nil },
			logs:  1,
		},
		{
			name: "power draw",
			fail: func(d *dgxa100.Device) {
				d.GetPowerUsageFunc = func() (uint32, nvml.Return) { return 0, nvml.ERROR_NO_PERMISSION }
			},
			unset: func(s *llmscalerv1.GpuSample) { s.PowerWatts = nil },
			logs:  1,
		},
		{
			name: "power limit",
			fail: func(d *dgxa100.Device) {
				d.GetEnforcedPowerLimitFunc = func() (uint32, nvml.Return) { return 0, nvml.ERROR_UNKNOWN }
				d.GetPowerManagementLimitFunc = func() (uint32, nvml.Return) { return 0, nvml.ERROR_UNKNOWN }
			},
			unset: func(s *llmscalerv1.GpuSample) { s.PowerLimitWatts = nil },
			logs:  2,
		},
		{
			name: "enforced power limit falls back to the management limit",
			fail: func(d *dgxa100.Device) {
				d.GetEnforcedPowerLimitFunc = func() (uint32, nvml.Return) { return 0, nvml.ERROR_NOT_SUPPORTED }
			},
			unset: func(s *llmscalerv1.GpuSample) { s.PowerLimitWatts = proto.Float64(350) },
			logs:  0, // not supported is logged at debug
		},
		{
			name: "throttle reasons",
			fail: func(d *dgxa100.Device) {
				d.GetCurrentClocksEventReasonsFunc = func() (uint64, nvml.Return) { return 0, nvml.ERROR_UNKNOWN }
			},
			unset: func(s *llmscalerv1.GpuSample) { s.ThrottleReasons = nil },
			logs:  1,
		},
		{
			// The XID events still watch the GPU, so it stays healthy.
			name: "ecc",
			fail: func(d *dgxa100.Device) {
				d.GetTotalEccErrorsFunc = func(nvml.MemoryErrorType, nvml.EccCounterType) (uint64, nvml.Return) {
					return 0, nvml.ERROR_UNKNOWN
				}
			},
			unset: func(*llmscalerv1.GpuSample) {},
			logs:  1,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newMockHost()
			var logs bytes.Buffer
			n := h.open(t, hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Info}))
			tc.fail(h.device(bad))
			for round := range 2 {
				h.now = h.now.Add(2 * nvmlRefresh)
				samples := n.Sample(context.Background())
				for i, s := range samples {
					want := h.wantSample(i)
					if i == bad {
						tc.unset(want)
					}
					if !proto.Equal(s, want) {
						t.Errorf("round %d, gpu %d:\n got %v\nwant %v", round, i, s, want)
					}
				}
			}
			if got := strings.Count(logs.String(), "nvml call failed"); got != tc.logs {
				t.Errorf("%d failure warnings over two samples, want %d:\n%s", got, tc.logs, logs.String())
			}
			if tc.logs > 0 && !strings.Contains(logs.String(), "gpu_uuid="+h.device(bad).UUID) {
				t.Errorf("the warning does not name the GPU:\n%s", logs.String())
			}
		})
	}
}

func TestNVMLThrottleReasonsOnOldDriver(t *testing.T) {
	h := newMockHost()
	h.server.LookupSymbolFunc = func(symbol string) error { return fmt.Errorf("symbol %q not found", symbol) }
	h.device(1).GetCurrentClocksEventReasonsFunc = nil // calling it would panic, as the old driver would crash
	n := h.open(t, hclog.NewNullLogger())
	got := n.Sample(context.Background())[1].GetThrottleReasons()
	if !slices.Equal(got, []string{"sw_power_cap"}) {
		t.Fatalf("throttle reasons %v, want [sw_power_cap] from the pre-R535 call", got)
	}
}

func TestThrottleReasonNames(t *testing.T) {
	tests := []struct {
		name    string
		reasons uint64
		want    []string
	}{
		{name: "none", reasons: 0},
		{name: "idle and application clocks are not throttling", reasons: nvml.ClocksEventReasonGpuIdle | nvml.ClocksEventReasonApplicationsClocksSetting},
		{
			name:    "thermal and power",
			reasons: nvml.ClocksThrottleReasonHwSlowdown | nvml.ClocksEventReasonSwThermalSlowdown | nvml.ClocksThrottleReasonHwThermalSlowdown | nvml.ClocksThrottleReasonHwPowerBrakeSlowdown,
			want:    []string{"hw_slowdown", "sw_thermal", "hw_thermal", "hw_power_brake"},
		},
		{
			name:    "power cap with sync boost while idle",
			reasons: nvml.ClocksEventReasonSwPowerCap | nvml.ClocksEventReasonSyncBoost | nvml.ClocksEventReasonGpuIdle,
			want:    []string{"sw_power_cap", "sync_boost"},
		},
		{name: "a bit newer than this code", reasons: 1 << 20, want: []string{"0x100000"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := throttleReasonNames(tc.reasons); !slices.Equal(got, tc.want) {
				t.Fatalf("throttleReasonNames(%#x) = %v, want %v", tc.reasons, got, tc.want)
			}
		})
	}
}

func TestNVMLHealth(t *testing.T) {
	tests := []struct {
		name  string
		setup func(h *mockHost)
		// unhealthy maps a GPU index to a part of its health message; the others are healthy.
		unhealthy map[int]string
		// unknown GPUs have healthy unset: no check could run on them.
		unknown []int
	}{
		{
			name: "uncorrectable ecc errors",
			setup: func(h *mockHost) {
				h.device(5).GetTotalEccErrorsFunc = func(nvml.MemoryErrorType, nvml.EccCounterType) (uint64, nvml.Return) {
					return 3, nvml.SUCCESS
				}
			},
			unhealthy: map[int]string{5: "3 uncorrectable ECC errors"},
		},
		{
			name:      "critical xid",
			setup:     func(h *mockHost) { h.xid(3, 79) },
			unhealthy: map[int]string{3: "XID 79"},
		},
		{
			name: "two critical xids on one gpu",
			setup: func(h *mockHost) {
				h.xid(3, 48)
				h.xid(3, 48)
				h.xid(3, 94)
			},
			unhealthy: map[int]string{3: "XID 48 critical error; XID 94 critical error"},
		},
		{
			name: "application xids",
			setup: func(h *mockHost) {
				for _, xid := range []uint64{13, 31, 43, 45, 68, 109} {
					h.xid(3, xid)
				}
			},
		},
		{
			name: "xid on a gpu the driver cannot name",
			setup: func(h *mockHost) {
				h.queue = append(h.queue, nvml.EventData{
					Device:    &mock.Device{GetUUIDFunc: func() (string, nvml.Return) { return "", nvml.ERROR_INVALID_ARGUMENT }},
					EventType: nvml.EventTypeXidCriticalError,
					EventData: 79,
				})
			},
			unhealthy: map[int]string{0: "XID 79", 1: "XID 79", 2: "XID 79", 3: "XID 79", 4: "XID 79", 5: "XID 79", 6: "XID 79", 7: "XID 79"},
		},
		{
			name: "gpu fell off the bus",
			setup: func(h *mockHost) {
				h.device(7).GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) {
					return nvml.Utilization{}, nvml.ERROR_GPU_IS_LOST
				}
			},
			unhealthy: map[int]string{7: "GPU is lost"},
		},
		{
			name: "no ecc and no xid events",
			setup: func(h *mockHost) {
				d := h.device(6)
				d.GetTotalEccErrorsFunc = func(nvml.MemoryErrorType, nvml.EccCounterType) (uint64, nvml.Return) {
					return 0, nvml.ERROR_NOT_SUPPORTED
				}
				d.RegisterEventsFunc = func(uint64, nvml.EventSet) nvml.Return { return nvml.ERROR_NOT_SUPPORTED }
			},
			unknown: []int{6},
		},
		{
			name: "no event set: ecc still says healthy",
			setup: func(h *mockHost) {
				h.server.EventSetCreateFunc = func() (nvml.EventSet, nvml.Return) { return nil, nvml.ERROR_NOT_SUPPORTED }
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newMockHost()
			tc.setup(h)
			n := h.open(t, hclog.NewNullLogger())
			// The second round has no new events: an unhealthy GPU must stay unhealthy.
			for round := range 2 {
				h.now = h.now.Add(2 * nvmlRefresh)
				for i, s := range n.Sample(context.Background()) {
					msg, bad := tc.unhealthy[i]
					switch {
					case bad:
						if s.Healthy == nil || s.GetHealthy() || !strings.Contains(s.GetHealthMessage(), msg) {
							t.Errorf("round %d, gpu %d: healthy %v %q, want false with %q", round, i, s.Healthy, s.GetHealthMessage(), msg)
						}
					case slices.Contains(tc.unknown, i):
						if s.Healthy != nil || s.GetHealthMessage() != "" {
							t.Errorf("round %d, gpu %d: healthy %v %q, want unset", round, i, s.Healthy, s.GetHealthMessage())
						}
					default:
						if s.Healthy == nil || !s.GetHealthy() || s.GetHealthMessage() != "" {
							t.Errorf("round %d, gpu %d: healthy %v %q, want true", round, i, s.Healthy, s.GetHealthMessage())
						}
					}
				}
			}
		})
	}
}

func TestNVMLSampleCache(t *testing.T) {
	h := newMockHost()
	n := h.open(t, hclog.NewNullLogger())
	d := h.device(0)
	first := n.Sample(context.Background())
	first[0].UtilizationPercent = proto.Float64(99) // a caller's change must not reach the cache

	d.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) {
		return nvml.Utilization{Gpu: 70, Memory: 30}, nvml.SUCCESS
	}
	h.now = h.now.Add(nvmlRefresh - time.Millisecond)
	cached := n.Sample(context.Background())
	if got := cached[0].GetUtilizationPercent(); got != 0 {
		t.Fatalf("within a second: utilization %v, want the cached 0", got)
	}
	if calls := len(d.GetUtilizationRatesCalls()); calls != 1 {
		t.Fatalf("within a second NVML was polled again: %d utilization calls, want 1", calls)
	}

	h.now = h.now.Add(time.Millisecond)
	fresh := n.Sample(context.Background())
	if got := fresh[0].GetUtilizationPercent(); got != 70 {
		t.Fatalf("after a second: utilization %v, want the new 70", got)
	}

	// A cancelled caller gets no readings, and its partial sample is not cached.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	h.now = h.now.Add(nvmlRefresh)
	for i, s := range n.Sample(ctx) {
		want := &llmscalerv1.GpuSample{Index: uint32(i), Uuid: h.device(i).UUID}
		if !proto.Equal(s, want) {
			t.Fatalf("cancelled sample %d = %v, want only index and uuid", i, s)
		}
	}
	if got := n.Sample(context.Background())[0].GetUtilizationPercent(); got != 70 {
		t.Fatalf("after a cancelled sample: utilization %v, want 70", got)
	}
}

func TestNVMLInitFails(t *testing.T) {
	tests := []struct {
		name    string
		init    func() nvml.Return
		wantErr error
	}{
		{name: "driver not loaded", init: func() nvml.Return { return nvml.ERROR_DRIVER_NOT_LOADED }, wantErr: nvml.ERROR_DRIVER_NOT_LOADED},
		{name: "library not found", init: func() nvml.Return { return nvml.ERROR_LIBRARY_NOT_FOUND }, wantErr: nvml.ERROR_LIBRARY_NOT_FOUND},
		{name: "loader panics", init: func() nvml.Return { panic("dlopen went wrong") }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newMockHost()
			h.server.InitFunc = tc.init
			n, err := newNVML(hclog.NewNullLogger(), h.server, time.Now)
			if err == nil {
				_ = n.Close()
				t.Fatal("newNVML succeeded without a driver")
			}
			checkNoDriverError(t, err)
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("error %q does not wrap %v", err, tc.wantErr)
			}
			if calls := len(h.server.ShutdownCalls()); calls != 0 {
				t.Errorf("Shutdown called %d times after a failed Init", calls)
			}
		})
	}
}

// TestNVMLNoDriver runs the real library. Without an NVIDIA driver (CI, laptops) NewNVML must
// fail with a message that says what to do instead, and must not panic.
func TestNVMLNoDriver(t *testing.T) {
	n, err := NewNVML(hclog.NewNullLogger())
	if err == nil {
		_ = n.Close()
		t.Skip("this host has an NVIDIA driver")
	}
	checkNoDriverError(t, err)
	var ret nvml.Return
	if !errors.As(err, &ret) {
		t.Errorf("error %q does not wrap the nvml.Return", err)
	}
	t.Log(err)
}

func checkNoDriverError(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, ErrNVMLUnavailable) {
		t.Errorf("error %q does not wrap ErrNVMLUnavailable", err)
	}
	for _, want := range []string{"NVML could not load", "--gpu-backend fake (simulated GPUs)", "--gpu-backend none (CPU-only servers)"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

func TestNVMLClose(t *testing.T) {
	tests := []struct {
		name     string
		shutdown nvml.Return
		wantErr  error
	}{
		{name: "ok", shutdown: nvml.SUCCESS},
		{name: "shutdown fails", shutdown: nvml.ERROR_UNKNOWN, wantErr: nvml.ERROR_UNKNOWN},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newMockHost()
			h.server.ShutdownFunc = func() nvml.Return { return tc.shutdown }
			n, err := newNVML(hclog.NewNullLogger(), h.server, func() time.Time { return h.now })
			if err != nil {
				t.Fatalf("newNVML: %v", err)
			}
			if calls := len(h.server.InitCalls()); calls != 1 {
				t.Fatalf("Init called %d times, want 1", calls)
			}
			if err := n.Close(); !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
				t.Fatalf("Close() = %v, want %v", err, tc.wantErr)
			}
			if err := n.Close(); err != nil {
				t.Fatalf("second Close() = %v, want nil", err)
			}
			if calls := len(h.server.ShutdownCalls()); calls != 1 {
				t.Errorf("Shutdown called %d times, want 1", calls)
			}
			if calls := len(h.events.FreeCalls()); calls != 1 {
				t.Errorf("event set freed %d times, want 1", calls)
			}
			if s := n.Sample(context.Background()); s != nil {
				t.Errorf("Sample after Close = %v, want nil", s)
			}
		})
	}
}
