package fleetbench

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// Simulated hardware: an 80 GiB GPU, mostly full under a running instance.
const (
	gpuMemoryMiB     = 81920
	instanceMemMiB   = 70000
	overloadWaiting  = 1000
	simAgentVersion  = "fleetbench"
	simGPUBackend    = "fake"
	simGPUName       = "NVIDIA H100 80GB HBM3 (fleetbench)"
	simMaxInFlightNo = 0
)

// SimAgent is one simulated agent's state: what it runs and which leader epochs it has
// accepted. It follows the real agent's rules (agent/desired.go, agent/fence.go) without its
// processes: a start becomes an instance that reports STARTING for one report interval and
// READY after, a drain removes the instance at once. It does no I/O and takes the time as
// an argument; it is not safe for concurrent use, the caller holds a lock.
type SimAgent struct {
	layout Layout
	index  int
	nodeID string
	// interval is the report interval of the last welcome: a start is READY that long after.
	interval time.Duration
	// highest is the highest epoch accepted; applied the last desired state applied. Both
	// outlive streams, as they do in the real agent.
	highest int64
	applied struct {
		epoch   int64
		version uint64
	}
	instances  []*simInstance
	overloaded map[string]bool
	reports    uint64
	// gpuSamples are the GPU samples of every report until the instances change: the same
	// messages go out again (a Send has marshalled them before it returns), which spares the
	// agents process most of its garbage, and the controller gets fresh-looking reports all
	// the same, as their time is the report's.
	gpuSamples []*llmscalerv1.GpuSample
}

type simInstance struct {
	id, deployment string
	gpus           []uint32
	started        time.Time
	ready          time.Time // zero while starting
}

// NewSimAgent is agent index of the layout, running its initial instances READY since now.
func NewSimAgent(l Layout, index int, now time.Time) *SimAgent {
	a := &SimAgent{layout: l, index: index, nodeID: l.NodeID(index), interval: time.Second, overloaded: map[string]bool{}}
	// Started a while ago, so that the cold start they report is a plausible one.
	started := now.Add(-90 * time.Second)
	for _, s := range l.AgentInstances(index) {
		a.instances = append(a.instances, &simInstance{id: s.ID, deployment: s.Deployment, gpus: []uint32{s.GPU}, started: started, ready: started.Add(60 * time.Second)})
	}
	return a
}

// NodeID is the agent's node id.
func (a *SimAgent) NodeID() string { return a.nodeID }

// SetInterval takes the report interval of a welcome.
func (a *SimAgent) SetInterval(d time.Duration) {
	if d > 0 {
		a.interval = d
	}
}

// Hello opens a stream: inventory, catalog, the highest epoch accepted and what runs now.
func (a *SimAgent) Hello(runID string, now time.Time) *llmscalerv1.Hello {
	gpus := make([]*llmscalerv1.Gpu, a.layout.GPUs)
	for i := range gpus {
		gpus[i] = &llmscalerv1.Gpu{Index: uint32(i), Uuid: a.gpuUUID(i), Name: simGPUName, MemoryTotalMib: gpuMemoryMiB}
	}
	return &llmscalerv1.Hello{
		NodeId: a.nodeID, Labels: a.layout.Labels(a.index), AgentVersion: simAgentVersion, GpuBackend: simGPUBackend,
		Gpus: gpus, Profiles: []string{Profile}, RunId: runID, LastEpoch: a.highest, Instances: a.statuses(now),
	}
}

// AcceptWelcome fences a welcome: a leader with an epoch below one accepted is deposed and
// does not know it yet.
func (a *SimAgent) AcceptWelcome(epoch int64) bool {
	if epoch < a.highest {
		return false
	}
	a.highest = epoch
	return true
}

// Applied is how a desired state was taken.
type Applied struct {
	Ack *llmscalerv1.DesiredStateAck
	// Started are the starts of instances the agent did not run; Drained the ids of
	// instances it ran and stopped. A desired state with neither changed nothing.
	Started []*llmscalerv1.StartInstance
	Drained []string
}

// Changed reports whether the desired state made the agent start or stop anything.
func (ap Applied) Changed() bool { return len(ap.Started) > 0 || len(ap.Drained) > 0 }

// Apply takes one desired state as the real agent does: an older epoch than one accepted is
// refused whole, a version already applied is a duplicate, otherwise drains go first, then
// starts; a start the agent cannot run (another profile, a GPU it lacks or that is taken) is
// listed as rejected and the rest are applied.
func (a *SimAgent) Apply(ds *llmscalerv1.DesiredState, now time.Time) Applied {
	ack := &llmscalerv1.DesiredStateAck{Epoch: ds.GetEpoch(), Version: ds.GetVersion()}
	switch {
	case ds.GetEpoch() < a.highest:
		ack.Result = llmscalerv1.CommandResult_COMMAND_RESULT_STALE_EPOCH
		ack.Message = fmt.Sprintf("desired state epoch %d is older than epoch %d, the newest this agent has accepted", ds.GetEpoch(), a.highest)
		return Applied{Ack: ack}
	case ds.GetEpoch() == a.applied.epoch && ds.GetVersion() <= a.applied.version:
		ack.Result = llmscalerv1.CommandResult_COMMAND_RESULT_DUPLICATE
		ack.Message = fmt.Sprintf("version %d already applied (latest %d)", ds.GetVersion(), a.applied.version)
		return Applied{Ack: ack}
	}
	a.highest = ds.GetEpoch()
	var out Applied
	for _, s := range ds.GetDrain() {
		if i := a.find(s.GetInstanceId()); i >= 0 {
			a.instances = slices.Delete(a.instances, i, i+1)
			out.Drained = append(out.Drained, s.GetInstanceId())
		}
	}
	for _, s := range ds.GetInstances() {
		if a.find(s.GetInstanceId()) >= 0 {
			continue // runs already: starting is idempotent
		}
		if err := a.canStart(s); err != nil {
			ack.Rejected = append(ack.Rejected, &llmscalerv1.InstanceRejection{InstanceId: s.GetInstanceId(), Message: err.Error()})
			continue
		}
		a.instances = append(a.instances, &simInstance{id: s.GetInstanceId(), deployment: s.GetDeployment(), gpus: slices.Clone(s.GetGpuIndices()), started: now})
		out.Started = append(out.Started, s)
	}
	if out.Changed() {
		a.gpuSamples = nil
	}
	a.applied.epoch, a.applied.version = ds.GetEpoch(), ds.GetVersion()
	ack.Result = llmscalerv1.CommandResult_COMMAND_RESULT_ACCEPTED
	ack.Message = fmt.Sprintf("%d instances, %d to drain, %d refused", len(ds.GetInstances()), len(ds.GetDrain()), len(ack.GetRejected()))
	out.Ack = ack
	return out
}

func (a *SimAgent) canStart(s *llmscalerv1.StartInstance) error {
	if s.GetProfile() != Profile {
		return fmt.Errorf("profile %q is not in this agent's catalog (it has %q)", s.GetProfile(), Profile)
	}
	for _, g := range s.GetGpuIndices() {
		if int(g) >= a.layout.GPUs {
			return fmt.Errorf("GPU %d: this node has GPUs 0-%d", g, a.layout.GPUs-1)
		}
		for _, in := range a.instances {
			if slices.Contains(in.gpus, g) {
				return fmt.Errorf("GPU %d is taken by %s", g, in.id)
			}
		}
	}
	return nil
}

func (a *SimAgent) find(id string) int {
	return slices.IndexFunc(a.instances, func(in *simInstance) bool { return in.id == id })
}

// Runs reports whether the agent runs an instance of the deployment.
func (a *SimAgent) Runs(deployment string) bool {
	return slices.ContainsFunc(a.instances, func(in *simInstance) bool { return in.deployment == deployment })
}

// SetOverload makes the agent's instances of deployment report a long queue, or stop.
func (a *SimAgent) SetOverload(deployment string, on bool) {
	if on {
		a.overloaded[deployment] = true
	} else {
		delete(a.overloaded, deployment)
	}
}

// Overloads are the deployments whose instances the next report shows overloaded.
func (a *SimAgent) Overloads() []string {
	if len(a.overloaded) == 0 {
		return nil
	}
	return slices.Sorted(maps.Keys(a.overloaded))
}

// Report is the report of one interval at now.
func (a *SimAgent) Report(seq uint64, now time.Time) *llmscalerv1.Report {
	a.reports++
	return &llmscalerv1.Report{Seq: seq, Time: timestamppb.New(now), Gpus: a.samples(), Instances: a.statuses(now)}
}

// statuses is what the agent runs at now; a start is READY one report interval after it
// began (the simulated cold start).
func (a *SimAgent) statuses(now time.Time) []*llmscalerv1.InstanceStatus {
	out := make([]*llmscalerv1.InstanceStatus, 0, len(a.instances))
	at := timestamppb.New(now)
	for slot, in := range a.instances {
		if in.ready.IsZero() && !now.Before(in.started.Add(a.interval)) {
			in.ready = now
		}
		st := &llmscalerv1.InstanceStatus{
			InstanceId: in.id, Deployment: in.deployment, Profile: Profile, GpuIndices: in.gpus,
			Endpoint: fmt.Sprintf("%s:%d", a.nodeID, 8000+slot), Pid: int64(100000 + slot),
			StartedAt: timestamppb.New(in.started), MaxInFlight: simMaxInFlightNo,
		}
		if in.ready.IsZero() {
			st.Phase = llmscalerv1.InstancePhase_INSTANCE_PHASE_STARTING
			st.Message = "waiting for the health endpoint"
		} else {
			st.Phase = llmscalerv1.InstancePhase_INSTANCE_PHASE_READY
			st.ReadyAt = timestamppb.New(in.ready)
			st.ColdStart = durationpb.New(in.ready.Sub(in.started))
			st.Metrics = a.queueMetrics(in, slot, at)
		}
		out = append(out, st)
	}
	return out
}

// queueMetrics are a busy, healthy server's figures, moving a little from report to report,
// or a long queue for an overloaded deployment.
func (a *SimAgent) queueMetrics(in *simInstance, slot int, at *timestamppb.Timestamp) *llmscalerv1.QueueMetrics {
	wobble := float64((a.reports + uint64(slot)) % 4)
	kv := 0.35 + 0.05*wobble
	m := &llmscalerv1.QueueMetrics{
		Running: 4 + wobble, KvCacheUsage: &kv,
		Ttft:                      &llmscalerv1.LatencySummary{P50Seconds: 0.12, P95Seconds: 0.3 + 0.02*wobble, Count: 12},
		E2ELatency:                &llmscalerv1.LatencySummary{P50Seconds: 1.8, P95Seconds: 3.5, Count: 12},
		PromptTokensPerSecond:     1500 + 50*wobble,
		GenerationTokensPerSecond: 600 + 20*wobble,
		FinishedRequestsPerSecond: 3,
		ScrapedAt:                 at,
	}
	if a.overloaded[in.deployment] {
		m.Waiting = overloadWaiting
	}
	return m
}

func (a *SimAgent) samples() []*llmscalerv1.GpuSample {
	if a.gpuSamples == nil {
		a.gpuSamples = a.sampleGPUs()
	}
	return a.gpuSamples
}

func (a *SimAgent) sampleGPUs() []*llmscalerv1.GpuSample {
	busy := map[uint32]bool{}
	for _, in := range a.instances {
		for _, g := range in.gpus {
			busy[g] = true
		}
	}
	out := make([]*llmscalerv1.GpuSample, a.layout.GPUs)
	for i := range out {
		util, mem, power := 0.0, uint64(0), 70.0
		if busy[uint32(i)] {
			util, mem, power = 55, instanceMemMiB, 350
		}
		total, temp, limit, healthy := uint64(gpuMemoryMiB), 45.0+util/5, 700.0, true
		memUtil := util * 0.6
		out[i] = &llmscalerv1.GpuSample{
			Index: uint32(i), Uuid: a.gpuUUID(i), UtilizationPercent: &util, MemoryUtilizationPercent: &memUtil,
			MemoryUsedMib: &mem, MemoryTotalMib: &total, TemperatureCelsius: &temp, PowerWatts: &power,
			PowerLimitWatts: &limit, Healthy: &healthy,
		}
	}
	return out
}

func (a *SimAgent) gpuUUID(i int) string { return fmt.Sprintf("GPU-fake-%s-%d", a.nodeID, i) }
