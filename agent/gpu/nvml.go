package gpu

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/proto"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// ErrNVMLUnavailable is wrapped by the error NewNVML returns when the NVML library cannot be
// loaded or initialised, so that a caller can tell "no driver" from other failures.
var ErrNVMLUnavailable = errors.New("NVML could not load")

const (
	// nvmlRefresh is how often NVML updates most of its readings; polling faster only
	// returns the same figures at the cost of driver calls.
	nvmlRefresh = time.Second
	// maxEventsPerSample bounds the XID events drained in one Sample, so that a GPU that
	// floods events cannot hold the sampler forever.
	maxEventsPerSample = 64
	mib                = 1 << 20
	// clocksEventReasonsSymbol is absent from drivers older than R535; calling a symbol the
	// driver lacks kills the process, so the backend checks for it once.
	clocksEventReasonsSymbol = "nvmlDeviceGetCurrentClocksEventReasons"
)

// applicationXIDs are XIDs caused by the application, not the GPU: the GPU stays usable
// (the same list as NVIDIA's k8s-device-plugin; https://docs.nvidia.com/deploy/xid-errors/).
var applicationXIDs = map[uint64]bool{
	13:  true, // graphics engine exception
	31:  true, // GPU memory page fault
	43:  true, // GPU stopped processing
	45:  true, // preemptive cleanup, due to previous errors
	68:  true, // video processor exception
	109: true, // context switch timeout
}

// throttleReasons names the clock event reasons the agent reports. GPU idle and the
// applications clocks setting are left out: they say nothing about a GPU under pressure.
var throttleReasons = []struct {
	bit  uint64
	name string
}{
	{nvml.ClocksEventReasonSwPowerCap, "sw_power_cap"},
	{nvml.ClocksThrottleReasonHwSlowdown, "hw_slowdown"},
	{nvml.ClocksEventReasonSyncBoost, "sync_boost"},
	{nvml.ClocksEventReasonSwThermalSlowdown, "sw_thermal"},
	{nvml.ClocksThrottleReasonHwThermalSlowdown, "hw_thermal"},
	{nvml.ClocksThrottleReasonHwPowerBrakeSlowdown, "hw_power_brake"},
	{nvml.ClocksEventReasonDisplayClockSetting, "display_clock"},
	{nvml.ClocksEventReasonBoardLimit, "board_limit"},
	{nvml.ClocksEventReasonReliability, "reliability"},
}

const ignoredThrottleReasons = nvml.ClocksEventReasonGpuIdle | nvml.ClocksEventReasonApplicationsClocksSetting

// nvmlLibrary is the part of NVML the backend uses. nvml.Interface satisfies it, and so does
// the go-nvml mock the tests use.
type nvmlLibrary interface {
	Init() nvml.Return
	Shutdown() nvml.Return
	Extensions() nvml.ExtendedInterface
	DeviceGetCount() (int, nvml.Return)
	DeviceGetHandleByIndex(int) (nvml.Device, nvml.Return)
	EventSetCreate() (nvml.EventSet, nvml.Return)
}

// nvmlDevice is the part of an NVML device handle the backend reads.
type nvmlDevice interface {
	GetUUID() (string, nvml.Return)
	GetName() (string, nvml.Return)
	GetMemoryInfo() (nvml.Memory, nvml.Return)
	GetMigMode() (int, int, nvml.Return)
	GetUtilizationRates() (nvml.Utilization, nvml.Return)
	GetTemperature(nvml.TemperatureSensors) (uint32, nvml.Return)
	GetPowerUsage() (uint32, nvml.Return)
	GetEnforcedPowerLimit() (uint32, nvml.Return)
	GetPowerManagementLimit() (uint32, nvml.Return)
	GetCurrentClocksEventReasons() (uint64, nvml.Return)
	GetCurrentClocksThrottleReasons() (uint64, nvml.Return)
	GetTotalEccErrors(nvml.MemoryErrorType, nvml.EccCounterType) (uint64, nvml.Return)
	RegisterEvents(uint64, nvml.EventSet) nvml.Return
}

var (
	_ nvmlLibrary = nvml.Interface(nil)
	_ nvmlDevice  = nvml.Device(nil)
	_ Backend     = (*NVML)(nil)
)

// NVML reads the host's NVIDIA GPUs through the driver's NVML library.
type NVML struct {
	log hclog.Logger
	lib nvmlLibrary
	now func() time.Time

	gpus      []*nvmlGPU
	inventory []*llmscalerv1.Gpu
	// events is the XID event set; nil when the driver cannot deliver XID events.
	events nvml.EventSet
	// eventReasons is true when the driver has the R535+ name of the throttle reasons call.
	eventReasons bool

	mu        sync.Mutex
	closed    bool
	sampledAt time.Time
	cached    []*llmscalerv1.GpuSample
	// logged holds the failures already logged, so that a call failing on every sample is
	// logged once rather than every second.
	logged map[nvmlFailure]bool
}

// nvmlGPU is one GPU of the inventory and the health the backend has seen on it.
type nvmlGPU struct {
	index  uint32
	uuid   string
	device nvmlDevice
	// xidEvents is true when XID events are registered for the GPU: no event is then a
	// sign of health.
	xidEvents bool
	// eccErrors is the largest volatile uncorrectable ECC count read.
	eccErrors uint64
	// faults are why the GPU is unhealthy, oldest first. A fault never clears: a GPU that
	// reported a fatal XID needs a reset, which restarts the agent too.
	faults []string
}

type nvmlFailure struct {
	index int // -1 for calls not about one GPU
	call  string
	ret   nvml.Return
}

// NewNVML loads NVML, initialises it and reads the inventory. Close shuts NVML down. When
// the library is missing or the driver is not loaded the error wraps ErrNVMLUnavailable and
// says which other backends to use.
func NewNVML(log hclog.Logger) (*NVML, error) {
	return newNVML(log, nvml.New(), time.Now)
}

func newNVML(log hclog.Logger, lib nvmlLibrary, now func() time.Time) (*NVML, error) {
	log = log.Named("nvml")
	if err := initNVML(lib); err != nil {
		return nil, fmt.Errorf("%w: %w; use --gpu-backend fake (simulated GPUs) or --gpu-backend none (CPU-only servers)",
			ErrNVMLUnavailable, err)
	}
	n := &NVML{
		log:          log,
		lib:          lib,
		now:          now,
		eventReasons: lib.Extensions().LookupSymbol(clocksEventReasonsSymbol) == nil,
		logged:       map[nvmlFailure]bool{},
	}
	count, ret := lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		if sret := lib.Shutdown(); sret != nvml.SUCCESS {
			log.Warn("nvml shutdown failed", "error", sret)
		}
		return nil, fmt.Errorf("count gpus: %w", ret)
	}
	for i := range count {
		g, info, ok := n.readGPU(i)
		if ok {
			n.gpus = append(n.gpus, g)
			n.inventory = append(n.inventory, info)
		}
	}
	n.registerXIDEvents()
	log.Info("nvml ready", "gpus", len(n.gpus), "xid_events", n.events != nil)
	return n, nil
}

// initNVML calls Init, turning a panic in the library loader into an error: the agent must
// be able to say "no driver" and let the operator pick another backend.
func initNVML(lib nvmlLibrary) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("nvml init panicked: %v", r)
		}
	}()
	if ret := lib.Init(); ret != nvml.SUCCESS {
		return ret
	}
	return nil
}

// readGPU reads the inventory entry of GPU i. A GPU without a handle or UUID cannot be
// reported or placed on, so it is skipped.
func (n *NVML) readGPU(i int) (*nvmlGPU, *llmscalerv1.Gpu, bool) {
	device, ret := n.lib.DeviceGetHandleByIndex(i)
	if ret != nvml.SUCCESS {
		n.log.Warn("skipping gpu: no handle", "gpu_index", i, "error", ret)
		return nil, nil, false
	}
	uuid, ret := device.GetUUID()
	if ret != nvml.SUCCESS {
		n.log.Warn("skipping gpu: no uuid", "gpu_index", i, "error", ret)
		return nil, nil, false
	}
	g := &nvmlGPU{index: uint32(i), uuid: uuid, device: device}
	info := &llmscalerv1.Gpu{Index: g.index, Uuid: uuid}
	if name, ok := read(n, g, "name", device.GetName); ok {
		info.Name = name
	}
	if mem, ok := read(n, g, "memory info", device.GetMemoryInfo); ok {
		info.MemoryTotalMib = mem.Total / mib
	}
	if current, _, ret := device.GetMigMode(); ret == nvml.SUCCESS {
		info.MigEnabled = current == nvml.DEVICE_MIG_ENABLE
	} else {
		n.failed(g, "mig mode", ret)
	}
	return g, info, true
}

// registerXIDEvents asks the driver for critical XID events on every GPU. Without them the
// backend still reports ECC health, so a driver that cannot deliver them is no error.
func (n *NVML) registerXIDEvents() {
	if len(n.gpus) == 0 {
		return
	}
	set, ret := n.lib.EventSetCreate()
	if ret != nvml.SUCCESS {
		n.log.Warn("xid events unavailable: cannot create event set", "error", ret)
		return
	}
	registered := 0
	for _, g := range n.gpus {
		ret := g.device.RegisterEvents(nvml.EventTypeXidCriticalError, set)
		if ret != nvml.SUCCESS {
			n.log.Warn("xid events unavailable for gpu", "gpu_index", g.index, "gpu_uuid", g.uuid, "error", ret)
			continue
		}
		g.xidEvents = true
		registered++
	}
	if registered == 0 {
		if ret := set.Free(); ret != nvml.SUCCESS {
			n.log.Warn("nvml event set free failed", "error", ret)
		}
		return
	}
	n.events = set
}

// Name is "nvml".
func (*NVML) Name() string { return "nvml" }

// Inventory returns copies, so that a caller that changes one cannot change the next report.
func (n *NVML) Inventory() []*llmscalerv1.Gpu {
	out := make([]*llmscalerv1.Gpu, len(n.inventory))
	for i, g := range n.inventory {
		out[i] = proto.CloneOf(g)
	}
	return out
}

// Sample reads every GPU of the inventory. NVML refreshes its figures about once a second,
// so a Sample within a second of the last one returns the same readings without calling the
// driver. After Close, Sample returns nothing.
func (n *NVML) Sample(ctx context.Context) []*llmscalerv1.GpuSample {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	now := n.now()
	if n.cached != nil {
		if age := now.Sub(n.sampledAt); age >= 0 && age < nvmlRefresh {
			return cloneSamples(n.cached)
		}
	}
	n.drainEvents()
	samples := make([]*llmscalerv1.GpuSample, len(n.gpus))
	for i, g := range n.gpus {
		if ctx.Err() != nil {
			// The caller has gone: the rest stay unread, and this partial reading is
			// not cached.
			for ; i < len(n.gpus); i++ {
				samples[i] = &llmscalerv1.GpuSample{Index: n.gpus[i].index, Uuid: n.gpus[i].uuid}
			}
			return samples
		}
		samples[i] = n.sampleGPU(g)
	}
	n.cached = samples
	n.sampledAt = now
	return cloneSamples(samples)
}

func (n *NVML) sampleGPU(g *nvmlGPU) *llmscalerv1.GpuSample {
	d := g.device
	s := &llmscalerv1.GpuSample{Index: g.index, Uuid: g.uuid}
	if u, ok := read(n, g, "utilization rates", d.GetUtilizationRates); ok {
		s.UtilizationPercent = proto.Float64(float64(u.Gpu))
		s.MemoryUtilizationPercent = proto.Float64(float64(u.Memory))
	}
	if mem, ok := read(n, g, "memory info", d.GetMemoryInfo); ok {
		s.MemoryUsedMib = proto.Uint64(mem.Used / mib)
		s.MemoryTotalMib = proto.Uint64(mem.Total / mib)
	}
	if t, ok := read(n, g, "temperature", func() (uint32, nvml.Return) { return d.GetTemperature(nvml.TEMPERATURE_GPU) }); ok {
		s.TemperatureCelsius = proto.Float64(float64(t))
	}
	if mw, ok := read(n, g, "power usage", d.GetPowerUsage); ok {
		s.PowerWatts = proto.Float64(float64(mw) / 1000)
	}
	if mw, ok := n.powerLimit(g); ok {
		s.PowerLimitWatts = proto.Float64(float64(mw) / 1000)
	}
	clocks := d.GetCurrentClocksThrottleReasons
	if n.eventReasons {
		clocks = d.GetCurrentClocksEventReasons
	}
	if reasons, ok := read(n, g, "clocks event reasons", clocks); ok {
		s.ThrottleReasons = throttleReasonNames(reasons)
	}
	eccRead := false
	if count, ok := read(n, g, "uncorrected ecc errors", func() (uint64, nvml.Return) {
		return d.GetTotalEccErrors(nvml.MEMORY_ERROR_TYPE_UNCORRECTED, nvml.VOLATILE_ECC)
	}); ok {
		eccRead = true
		if count > g.eccErrors {
			if g.eccErrors == 0 {
				n.log.Warn("gpu unhealthy: uncorrectable ecc errors", "gpu_index", g.index, "gpu_uuid", g.uuid, "count", count)
			}
			g.eccErrors = count
		}
	}
	faults := g.faults
	if g.eccErrors > 0 {
		faults = append(faults[:len(faults):len(faults)],
			fmt.Sprintf("%d uncorrectable ECC errors since the driver loaded", g.eccErrors))
	}
	switch {
	case len(faults) > 0:
		s.Healthy = proto.Bool(false)
		s.HealthMessage = strings.Join(faults, "; ")
	case eccRead || g.xidEvents:
		// At least one health check ran and found nothing. With neither, health is unknown.
		s.Healthy = proto.Bool(true)
	}
	return s
}

// powerLimit prefers the enforced limit, which accounts for every limiter; older GPUs only
// have the management limit.
func (n *NVML) powerLimit(g *nvmlGPU) (uint32, bool) {
	mw, ret := g.device.GetEnforcedPowerLimit()
	if ret == nvml.SUCCESS {
		return mw, true
	}
	n.failed(g, "enforced power limit", ret)
	return read(n, g, "power management limit", g.device.GetPowerManagementLimit)
}

// drainEvents reads the XID events the driver queued since the last sample, without waiting.
func (n *NVML) drainEvents() {
	if n.events == nil {
		return
	}
	for range maxEventsPerSample {
		e, ret := n.events.Wait(0)
		if ret == nvml.ERROR_TIMEOUT {
			return
		}
		if ret != nvml.SUCCESS {
			n.failed(nil, "event set wait", ret)
			return
		}
		n.handleEvent(e)
	}
}

func (n *NVML) handleEvent(e nvml.EventData) {
	if e.EventType != nvml.EventTypeXidCriticalError {
		return
	}
	xid := e.EventData
	if applicationXIDs[xid] {
		n.log.Debug("ignoring application xid", "xid", xid)
		return
	}
	fault := fmt.Sprintf("XID %d critical error", xid)
	var uuid string
	ret := nvml.ERROR_INVALID_ARGUMENT
	if e.Device != nil {
		uuid, ret = e.Device.GetUUID()
	}
	if ret != nvml.SUCCESS {
		// The driver did not say which GPU broke: trust none of them, as k8s-device-plugin
		// does, rather than place work on a broken one.
		n.log.Error("gpu unhealthy: xid on an unknown gpu, marking all", "xid", xid, "error", ret)
		for _, g := range n.gpus {
			g.addFault(fault + " on an unidentified GPU")
		}
		return
	}
	for _, g := range n.gpus {
		if g.uuid == uuid {
			if g.addFault(fault) {
				n.log.Error("gpu unhealthy: critical xid", "gpu_index", g.index, "gpu_uuid", uuid, "xid", xid)
			}
			return
		}
	}
	n.log.Warn("ignoring xid for a gpu outside the inventory", "gpu_uuid", uuid, "xid", xid)
}

// addFault records why the GPU is unhealthy, once per reason; it reports whether the reason
// is new.
func (g *nvmlGPU) addFault(fault string) bool {
	for _, f := range g.faults {
		if f == fault {
			return false
		}
	}
	g.faults = append(g.faults, fault)
	return true
}

// read calls one NVML getter for g and records a failure.
func read[T any](n *NVML, g *nvmlGPU, call string, get func() (T, nvml.Return)) (T, bool) {
	v, ret := get()
	if ret != nvml.SUCCESS {
		n.failed(g, call, ret)
		var zero T
		return zero, false
	}
	return v, true
}

// failed logs a failed call the first time it fails this way on this GPU. A GPU that has
// fallen off the bus fails every call; that is a fault, not a missing value.
func (n *NVML) failed(g *nvmlGPU, call string, ret nvml.Return) {
	key := nvmlFailure{index: -1, call: call, ret: ret}
	if g != nil {
		key.index = int(g.index)
		if ret == nvml.ERROR_GPU_IS_LOST && g.addFault("GPU is lost (fell off the bus)") {
			n.log.Error("gpu unhealthy: gpu is lost", "gpu_index", g.index, "gpu_uuid", g.uuid, "call", call)
		}
	}
	if n.logged[key] {
		return
	}
	n.logged[key] = true
	args := []any{"call", call, "error", ret}
	if g != nil {
		args = append(args, "gpu_index", g.index, "gpu_uuid", g.uuid)
	}
	if ret == nvml.ERROR_NOT_SUPPORTED {
		// Common and harmless: this GPU model lacks the counter.
		n.log.Debug("nvml value not supported", args...)
		return
	}
	n.log.Warn("nvml call failed", args...)
}

// Close frees the event set and shuts NVML down. Calling it again does nothing.
func (n *NVML) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	n.closed = true
	n.cached = nil
	if n.events != nil {
		if ret := n.events.Free(); ret != nvml.SUCCESS {
			n.log.Warn("nvml event set free failed", "error", ret)
		}
		n.events = nil
	}
	if ret := n.lib.Shutdown(); ret != nvml.SUCCESS {
		return fmt.Errorf("nvml shutdown: %w", ret)
	}
	return nil
}

func throttleReasonNames(reasons uint64) []string {
	reasons &^= ignoredThrottleReasons
	var names []string
	for _, r := range throttleReasons {
		if reasons&r.bit != 0 {
			names = append(names, r.name)
			reasons &^= r.bit
		}
	}
	// Bits newer than this code: report them rather than hide a slowdown.
	for bit := uint64(1); reasons != 0 && bit != 0; bit <<= 1 {
		if reasons&bit != 0 {
			names = append(names, fmt.Sprintf("0x%x", bit))
			reasons &^= bit
		}
	}
	return names
}

func cloneSamples(in []*llmscalerv1.GpuSample) []*llmscalerv1.GpuSample {
	out := make([]*llmscalerv1.GpuSample, len(in))
	for i, s := range in {
		out[i] = proto.CloneOf(s)
	}
	return out
}
