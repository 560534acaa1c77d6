package supervisor

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/llmscaler/llmscaler/agent/catalog"
	"github.com/llmscaler/llmscaler/internal/backoff"
	"github.com/llmscaler/llmscaler/internal/names"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// Config is what a Supervisor needs.
type Config struct {
	// DataDir holds the state file <DataDir>/instances.json and the servers' logs
	// <DataDir>/logs/<instance_id>.log. Required; created 0700 if missing.
	DataDir string
	// Catalog is the only source of the commands the supervisor runs. Required.
	Catalog *catalog.Catalog
	// Host is the bind host substituted for {host} and used in endpoints; "" means 127.0.0.1.
	Host string
	// GPUs are the GPU indices this node has, from the GPU backend's inventory; empty for none.
	GPUs []uint32
	// Interval is the period of the watch loop: health checks, scrapes, liveness of adopted
	// processes and the steps of a stop. 0 means 1 s; it should be the report interval.
	Interval time.Duration
	// LogMaxBytes caps each server's log; 0 means 10 MiB. A log past it is copied to
	// <instance_id>.log.1 and truncated.
	LogMaxBytes int64
	// Metrics scrapes READY and DRAINING instances; nil means no queue metrics, and stops do
	// not wait for a drain.
	Metrics MetricsSource
	// HTTPClient makes the health checks; nil means a client that ignores proxy settings.
	HTTPClient *http.Client
	// RestartBackoff spaces restarts after unexpected exits; zero means DefaultRestartBackoff.
	RestartBackoff backoff.Config
	// HealthInterval is how often a READY instance's health path is checked; 0 means
	// DefaultHealthInterval. After UnhealthyChecks failures in a row [DefaultUnhealthyChecks]
	// in which its metrics showed no progress either, the server is taken for hung: its
	// process group is killed and it is restarted as after an unexpected exit. A failure
	// while the metrics move is busy, not hung, and ends the run. Without Metrics the health
	// check alone decides.
	HealthInterval  time.Duration
	UnhealthyChecks int
	// Now is the clock of every deadline; nil means time.Now.
	Now func() time.Time
}

// MetricsSource scrapes one instance's metrics endpoint; the agent plugs its scraper in here.
type MetricsSource interface {
	// Scrape reads the metrics at url, written in the given catalog dialect, and returns
	// them normalised. ScrapeErrors in the result is ignored: the supervisor counts those.
	Scrape(ctx context.Context, instanceID string, dialect string, url string) (*llmscalerv1.QueueMetrics, error)
}

// Defaults that New fills into a zero Config field.
const (
	DefaultHost        = "127.0.0.1"
	DefaultInterval    = time.Second
	DefaultLogMaxBytes = 10 << 20
	// DefaultHealthInterval and DefaultUnhealthyChecks take a READY server for hung after
	// three checks 10 s apart fail (each check times out with the watch loop's probes, 1 s at
	// the default interval): the liveness probe usually given vLLM on Kubernetes (period 10 s,
	// failure threshold 3, timeout 1 s). vLLM's event loop answers within that while busy;
	// llama.cpp's llama-server may not, which is why a failure while the metrics show
	// progress does not count. One that has neither answered nor progressed for 20-30 s is
	// stuck, and its GPUs are better restarted.
	DefaultHealthInterval  = 10 * time.Second
	DefaultUnhealthyChecks = 3
)

// DefaultRestartBackoff is 1 s, doubling, capped at a minute, with a little jitter so that
// servers that crashed together do not restart together.
var DefaultRestartBackoff = backoff.Config{Base: time.Second, Multiplier: 2, Jitter: 0.1, Max: time.Minute}

// How long ended instances stay in Instances.
const (
	// StoppedRetention keeps a STOPPED instance reported after it ended, so that the
	// controller sees the end of the stop it asked for.
	StoppedRetention = time.Minute
	// FailedRetention keeps a FAILED instance reported, unless it is stopped first, so that
	// an operator can read why it failed.
	FailedRetention = 10 * time.Minute
	// LogRetention keeps the logs of an instance the supervisor has forgotten, for whoever
	// looks into why it stopped or failed, then deletes them; the logs directory is swept
	// every logSweepEvery.
	LogRetention  = 24 * time.Hour
	logSweepEvery = 10 * time.Minute
)

// Errors that Start and Stop wrap, for errors.Is. The wrapping message names the bad value.
var (
	// ErrInvalidInstanceID: the instance id breaks names.InstanceID (1-128 letters, digits,
	// '-', '.', '_', no ".."): it would not be one plain file name under the logs directory.
	ErrInvalidInstanceID = errors.New("invalid instance id")
	// ErrInvalidDeployment: the deployment name is not a valid deployment name.
	ErrInvalidDeployment = errors.New("invalid deployment name")
	// ErrUnknownProfile: the profile is not in this node's catalog.
	ErrUnknownProfile = errors.New("unknown profile")
	// ErrGPUCount: the number of GPUs does not match the profile, or a GPU is listed twice.
	ErrGPUCount = errors.New("wrong GPUs for the profile")
	// ErrGPUNotOnNode: a GPU index is not one of this node's GPUs.
	ErrGPUNotOnNode = errors.New("GPU not on this node")
	// ErrGPUInUse: a GPU is held by another live instance.
	ErrGPUInUse = errors.New("GPU in use")
	// ErrInstanceConflict: the instance id exists with another profile, deployment or GPUs.
	ErrInstanceConflict = errors.New("instance id already used")
	// ErrUnknownInstance: Stop named an instance this node does not have.
	ErrUnknownInstance = errors.New("unknown instance")
)

// Supervisor runs the model servers of one agent. Build it with New; its methods are safe for
// concurrent use.
type Supervisor struct {
	cfg    Config
	log    hclog.Logger
	http   *http.Client
	logDir string
	ran    atomic.Bool // Run was called

	// changed is signalled on every phase change; kick asks the watch loop for a step now;
	// exited is signalled by a child's wait goroutine. All hold at most one signal.
	changed chan struct{}
	kick    chan struct{}
	exited  chan struct{}

	// waiters counts the goroutines that wait for children.
	waiters sync.WaitGroup

	mu        sync.Mutex
	instances map[string]*instance
	dirty     bool      // no snapshot holds the latest changes yet
	snapGen   uint64    // the generation of the last snapshot taken
	sweptAt   time.Time // the last sweep of the logs directory

	// saveMu orders the writes of the state file, which are made outside mu so that the
	// report path never waits for a disk; savedGen, guarded by saveMu, is the generation of
	// the snapshot on disk. saveMu is taken before mu, never while holding it.
	saveMu   sync.Mutex
	savedGen uint64
	// writeState writes the state file: the package's writeState, or a test's stand-in.
	writeState func(dir string, recs []record) error

	// onSpawn, when set, is told of every process started; tests use it to clean up.
	onSpawn func(pid int)
}

// instance is one instance; its fields are guarded by Supervisor.mu.
type instance struct {
	// record is what the state file keeps; the rest lives and dies with this agent.
	record

	prof *catalog.Profile
	// lostProfile is set when an adopted instance's profile has left the catalog: it is
	// watched with default settings and never restarted.
	lostProfile bool
	log         hclog.Logger

	// watched is set while the process group is known to be the server's: it was started
	// or adopted alive. A group whose leader died while no agent watched is left alone, as
	// its id may since have been reused by an unrelated process group.
	watched bool
	child   *child // nil for an adopted process
	gen     uint64 // bumped on each process start, to drop stale probe results

	startupDeadline time.Time
	recheck         bool      // an adopted READY instance: check its health once
	healthAt        time.Time // when a READY instance's last health check was started
	// unhealthy counts the health checks in a row, while READY, with neither an answer
	// nor progress in the metrics; busyChecks the failed checks that showed progress
	// since the health path last answered. See livenessLocked.
	unhealthy  int
	busyChecks int
	progress   progressWindow // what the scrapes showed since the last health check
	hung       string         // non-empty: killed as hung, for the message of its exit

	metrics  *llmscalerv1.QueueMetrics
	scrapeAt time.Time // when the last successful scrape was started
	// lastScrape is the last successful scrape of the current process, nil before its
	// first; metrics may still hold one of an earlier process.
	lastScrape *llmscalerv1.QueueMetrics
}

// child is a process this supervisor started and so can wait for.
type child struct {
	done  chan struct{}
	state *os.ProcessState // set before done is closed; nil if Wait failed
	err   error
}

// New checks cfg, loads the state file and re-adopts the servers that still run.
func New(cfg Config, log hclog.Logger) (*Supervisor, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("supervisor: DataDir is required")
	}
	if cfg.Catalog == nil {
		return nil, errors.New("supervisor: Catalog is required")
	}
	if cfg.Host == "" {
		cfg.Host = DefaultHost
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.LogMaxBytes <= 0 {
		cfg.LogMaxBytes = DefaultLogMaxBytes
	}
	if cfg.RestartBackoff == (backoff.Config{}) {
		cfg.RestartBackoff = DefaultRestartBackoff
	}
	if cfg.HealthInterval <= 0 {
		cfg.HealthInterval = DefaultHealthInterval
	}
	if cfg.UnhealthyChecks <= 0 {
		cfg.UnhealthyChecks = DefaultUnhealthyChecks
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.GPUs = slices.Clone(cfg.GPUs)
	if log == nil {
		log = hclog.NewNullLogger()
	}
	s := &Supervisor{
		cfg:        cfg,
		log:        log.Named("supervisor"),
		http:       cfg.HTTPClient,
		logDir:     filepath.Join(cfg.DataDir, "logs"),
		changed:    make(chan struct{}, 1),
		kick:       make(chan struct{}, 1),
		exited:     make(chan struct{}, 1),
		instances:  map[string]*instance{},
		writeState: writeState,
	}
	if s.http == nil {
		s.http = &http.Client{Transport: &http.Transport{
			Proxy:               nil, // a health check is local; HTTP_PROXY must not catch it
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			MaxIdleConnsPerHost: 2,
			IdleConnTimeout:     time.Minute,
		}}
	}
	if err := os.MkdirAll(s.logDir, 0o700); err != nil {
		return nil, fmt.Errorf("supervisor: %w", err)
	}
	recs, err := readState(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("supervisor: %w", err)
	}
	snap, err := s.adopt(recs)
	if err != nil {
		return nil, fmt.Errorf("supervisor: %w", err)
	}
	_ = s.save(snap)
	return s, nil
}

// adopt takes over the recorded instances and returns the snapshot that records the outcome.
func (s *Supervisor) adopt(recs []record) (*snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Now()
	for _, r := range recs {
		if err := s.adoptLocked(r, now); err != nil {
			return nil, err
		}
	}
	if len(recs) > 0 {
		s.dirty = true
	}
	return s.snapshotLocked(), nil
}

// adoptLocked takes over one recorded instance.
func (s *Supervisor) adoptLocked(r record, now time.Time) error {
	inst := &instance{record: r, log: s.log.With("instance_id", r.InstanceID, "deployment", r.Deployment)}
	// Running is what the last agent saw; this one finds out for itself below.
	inst.Running = false
	if err := names.InstanceID(inst.InstanceID); err != nil {
		return fmt.Errorf("state file: %w: instance_id %v", ErrInvalidInstanceID, err)
	}
	prof, ok := s.cfg.Catalog.Profile(inst.Profile)
	if !ok {
		// The catalog changed under a live server: watch it with the defaults, never restart it.
		inst.lostProfile = true
		prof = &catalog.Profile{
			Name: inst.Profile, HealthPath: catalog.DefaultHealthPath, MetricsPath: catalog.DefaultMetricsPath,
			GPUs: len(inst.GPUs), StartupTimeout: catalog.DefaultStartupTimeout, DrainTimeout: catalog.DefaultDrainTimeout,
			StopSignal: catalog.DefaultStopSignal, StopGrace: catalog.DefaultStopGrace, MaxRestarts: 0,
		}
	}
	inst.prof = prof
	inst.startupDeadline = inst.StartedAt.Add(prof.StartupTimeout)
	s.instances[inst.InstanceID] = inst

	if !live(inst.Phase) {
		return nil
	}
	if inst.lostProfile {
		inst.log.Warn("profile is no longer in the catalog; the instance will not be restarted", "profile", inst.Profile)
	}
	switch {
	case r.Running && processAlive(inst.PID, inst.StartTime):
		inst.Running = true
		inst.watched = true
		inst.recheck = inst.Phase == llmscalerv1.InstancePhase_INSTANCE_PHASE_READY
		inst.gen++
		inst.log.Info("adopted instance", "pid", inst.PID, "phase", inst.Phase.String())
	case r.Running:
		inst.log.Warn("recorded process is gone", "pid", inst.PID)
		s.exitedLocked(inst, -1, fmt.Sprintf("process %d is gone; its exit code is unknown because it ran while the agent was down", inst.PID), now)
	case inst.Stopping:
		// The first step of the watch loop finishes the stop.
	case inst.lostProfile:
		inst.RestartAt = time.Time{}
		s.exitedLocked(inst, inst.ExitCode, "it was waiting for a restart when the agent restarted", now)
	case inst.RestartAt.IsZero():
		// Neither a process nor a restart due: it was between the two when the agent died.
		inst.RestartAt = now
	}
	return nil
}

// live reports whether an instance in phase p holds its GPUs and may have a process.
func live(p llmscalerv1.InstancePhase) bool {
	switch p {
	case llmscalerv1.InstancePhase_INSTANCE_PHASE_STARTING,
		llmscalerv1.InstancePhase_INSTANCE_PHASE_READY,
		llmscalerv1.InstancePhase_INSTANCE_PHASE_DRAINING:
		return true
	}
	return false
}

// Start starts an instance of a catalog profile. Starting an instance id again with the same
// deployment, profile and GPUs does nothing, whatever phase it is in: an id names one
// instance's life, and a resent command must not revive one that was stopped.
func (s *Supervisor) Start(req *llmscalerv1.StartInstance) error {
	id, dep, profName, gpus := req.GetInstanceId(), req.GetDeployment(), req.GetProfile(), req.GetGpuIndices()
	if err := names.InstanceID(id); err != nil {
		return fmt.Errorf("%w: instance_id %v", ErrInvalidInstanceID, err)
	}
	if err := names.DeploymentName(dep); err != nil {
		return fmt.Errorf("%w: deployment %v", ErrInvalidDeployment, err)
	}

	s.mu.Lock()
	inst, err := s.addLocked(id, dep, profName, gpus)
	snap := s.snapshotLocked()
	s.mu.Unlock()
	serr := s.save(snap)
	if err != nil || inst == nil {
		return err
	}
	if serr != nil {
		// An unrecorded server would be lost to the next agent: better not to run it.
		s.mu.Lock()
		if s.instances[id] == inst {
			if inst.watched {
				_ = signalGroup(inst.PID, syscall.SIGKILL)
			}
			delete(s.instances, id)
			s.dirty = true
		}
		s.mu.Unlock()
		s.notify()
		return fmt.Errorf("start instance %q: %w", id, serr)
	}
	s.notify()
	return nil
}

// addLocked checks a start and starts the instance's process; a start of an instance that
// exists already, with the same deployment, profile and GPUs, returns nil, nil.
func (s *Supervisor) addLocked(id, dep, profName string, gpus []uint32) (*instance, error) {
	if inst, ok := s.instances[id]; ok {
		if inst.Deployment == dep && inst.Profile == profName && slices.Equal(inst.GPUs, gpus) {
			return nil, nil
		}
		return nil, fmt.Errorf("%w: instance %q already exists with deployment %q, profile %q, GPUs %v (asked for deployment %q, profile %q, GPUs %v)",
			ErrInstanceConflict, id, inst.Deployment, inst.Profile, inst.GPUs, dep, profName, gpus)
	}
	prof, ok := s.cfg.Catalog.Profile(profName)
	if !ok {
		known := s.cfg.Catalog.Names()
		list := "no profiles"
		if len(known) > 0 {
			list = strings.Join(known, ", ")
		}
		return nil, fmt.Errorf("%w %q: this node's catalog has %s", ErrUnknownProfile, profName, list)
	}
	if len(gpus) != prof.GPUs {
		return nil, fmt.Errorf("%w: profile %q takes %d GPUs per instance, got %d (%v)", ErrGPUCount, profName, prof.GPUs, len(gpus), gpus)
	}
	used := s.usedGPUsLocked()
	for i, g := range gpus {
		switch {
		case slices.Contains(gpus[:i], g):
			return nil, fmt.Errorf("%w: gpu_indices %v lists GPU %d twice", ErrGPUCount, gpus, g)
		case !slices.Contains(s.cfg.GPUs, g):
			return nil, fmt.Errorf("%w: GPU %d is not on this node, which has GPUs %v", ErrGPUNotOnNode, g, s.cfg.GPUs)
		case used[g] != "":
			return nil, fmt.Errorf("%w: GPU %d is used by instance %q", ErrGPUInUse, g, used[g])
		}
	}

	inst := &instance{
		record: record{
			InstanceID: id, Deployment: dep, Profile: profName, GPUs: slices.Clone(gpus),
			Phase: llmscalerv1.InstancePhase_INSTANCE_PHASE_STARTING,
		},
		prof: prof,
		log:  s.log.With("instance_id", id, "deployment", dep),
	}
	if err := s.spawnLocked(inst, s.cfg.Now()); err != nil {
		return nil, fmt.Errorf("start instance %q: %w", id, err)
	}
	s.instances[id] = inst
	s.dirty = true
	return inst, nil
}

// Stop drains an instance and then stops it. Stopping an instance that is stopping or
// stopped does nothing; a FAILED one becomes STOPPED.
func (s *Supervisor) Stop(req *llmscalerv1.StopInstance) error {
	id := req.GetInstanceId()
	if err := names.InstanceID(id); err != nil {
		return fmt.Errorf("%w: instance_id %v", ErrInvalidInstanceID, err)
	}
	s.mu.Lock()
	err := s.stopLocked(id, req)
	snap := s.snapshotLocked()
	s.mu.Unlock()
	if serr := s.save(snap); err == nil {
		err = serr
	}
	s.poke()
	return err
}

// stopLocked starts the stop of an instance, or ends that of a FAILED one.
func (s *Supervisor) stopLocked(id string, req *llmscalerv1.StopInstance) error {
	inst, ok := s.instances[id]
	if !ok {
		return fmt.Errorf("%w: no instance %q on this node", ErrUnknownInstance, id)
	}
	now := s.cfg.Now()
	reason := req.GetReason()
	switch inst.Phase {
	case llmscalerv1.InstancePhase_INSTANCE_PHASE_STOPPED, llmscalerv1.InstancePhase_INSTANCE_PHASE_DRAINING:
		return nil
	case llmscalerv1.InstancePhase_INSTANCE_PHASE_FAILED:
		inst.Message = "stopped after it failed: " + inst.Message
		inst.EndedAt = now
		s.setPhaseLocked(inst, llmscalerv1.InstancePhase_INSTANCE_PHASE_STOPPED)
		inst.log.Info("failed instance stopped")
		return nil
	}

	timeout := inst.prof.DrainTimeout
	if req.GetDrainTimeout() != nil {
		timeout = max(req.GetDrainTimeout().AsDuration(), 0)
	}
	inst.Stopping = true
	inst.DrainStart = now
	inst.DrainDeadline = now.Add(timeout)
	inst.SkipDrain = s.cfg.Metrics == nil || inst.Phase == llmscalerv1.InstancePhase_INSTANCE_PHASE_STARTING
	inst.RestartAt = time.Time{}
	inst.Message = "stopping"
	if reason != "" {
		inst.Message += ": " + reason
	}
	inst.log.Info("stopping instance", "reason", reason, "drain_timeout", timeout, "drain", !inst.SkipDrain)
	if inst.Running {
		s.setPhaseLocked(inst, llmscalerv1.InstancePhase_INSTANCE_PHASE_DRAINING)
	} else {
		s.finishStopLocked(inst, now)
	}
	s.dirty = true
	return nil
}

// Instances returns a copy of every instance's status, sorted by instance id.
func (s *Supervisor) Instances() []*llmscalerv1.InstanceStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*llmscalerv1.InstanceStatus, 0, len(s.instances))
	for _, id := range slices.Sorted(maps.Keys(s.instances)) {
		out = append(out, s.instances[id].status(s.cfg.Host))
	}
	return out
}

func (inst *instance) status(host string) *llmscalerv1.InstanceStatus {
	st := &llmscalerv1.InstanceStatus{
		InstanceId: inst.InstanceID,
		Deployment: inst.Deployment,
		Profile:    inst.Profile,
		Phase:      inst.Phase,
		GpuIndices: slices.Clone(inst.GPUs),
		Pid:        int64(inst.PID),
		ExitCode:   inst.ExitCode,
		Message:    inst.Message,
		Restarts:   inst.Restarts,
	}
	if inst.Port != 0 {
		st.Endpoint = net.JoinHostPort(host, strconv.Itoa(inst.Port))
	}
	if inst.prof != nil {
		st.MaxInFlight = uint32(inst.prof.MaxInFlight)
	}
	if !inst.StartedAt.IsZero() {
		st.StartedAt = timestamppb.New(inst.StartedAt)
	}
	if !inst.ReadyAt.IsZero() {
		st.ReadyAt = timestamppb.New(inst.ReadyAt)
		st.ColdStart = durationpb.New(inst.ColdStart)
	}
	if inst.metrics != nil {
		st.Metrics = proto.Clone(inst.metrics).(*llmscalerv1.QueueMetrics)
	}
	return st
}

// Changed is signalled after every phase change, so that the agent can report at once. It
// holds at most one signal: a reader that was away sees one for many changes.
func (s *Supervisor) Changed() <-chan struct{} {
	return s.changed
}

// UsedGPUs maps each GPU held by a live (STARTING, READY or DRAINING) instance to that
// instance's id.
func (s *Supervisor) UsedGPUs() map[uint32]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.usedGPUsLocked()
}

func (s *Supervisor) usedGPUsLocked() map[uint32]string {
	used := map[uint32]string{}
	for _, inst := range s.instances {
		if live(inst.Phase) {
			for _, g := range inst.GPUs {
				used[g] = inst.InstanceID
			}
		}
	}
	return used
}

// setPhaseLocked moves inst to phase p and tells Changed.
func (s *Supervisor) setPhaseLocked(inst *instance, p llmscalerv1.InstancePhase) {
	if inst.Phase == p {
		return
	}
	inst.Phase = p
	s.dirty = true
	s.notify()
}

func (s *Supervisor) notify() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// poke asks the watch loop for a step now rather than at the next tick.
func (s *Supervisor) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// snapshot is what the state file is to hold at one moment.
type snapshot struct {
	gen  uint64 // snapshots taken later have higher generations
	recs []record
}

// snapshotLocked copies the records for save, or returns nil if the last snapshot holds
// every change already.
func (s *Supervisor) snapshotLocked() *snapshot {
	if !s.dirty {
		return nil
	}
	s.dirty = false
	s.snapGen++
	recs := make([]record, 0, len(s.instances))
	for _, id := range slices.Sorted(maps.Keys(s.instances)) {
		r := s.instances[id].record
		r.GPUs = slices.Clone(r.GPUs)
		recs = append(recs, r)
	}
	return &snapshot{gen: s.snapGen, recs: recs}
}

// save writes snap to the state file, unless a later snapshot is there already: that one
// holds snap's changes, and an older write must never replace a newer one. It returns once
// snap, or a later snapshot, is on disk. Call it without holding mu.
func (s *Supervisor) save(snap *snapshot) error {
	if snap == nil {
		return nil
	}
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	if snap.gen <= s.savedGen {
		return nil
	}
	if err := s.writeState(s.cfg.DataDir, snap.recs); err != nil {
		s.log.Error("cannot save instance state", "error", err)
		s.mu.Lock()
		s.dirty = true // the next step tries again
		s.mu.Unlock()
		return fmt.Errorf("supervisor: %w", err)
	}
	s.savedGen = snap.gen
	return nil
}

func (s *Supervisor) logPath(id string) string {
	return filepath.Join(s.logDir, id+".log")
}
