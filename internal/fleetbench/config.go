package fleetbench

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"time"
)

// Config is one bench run.
type Config struct {
	// Agents simulated, each with GPUs GPUs and Instances READY instances (one GPU each).
	Agents, GPUs, Instances int
	// Probes are the decision-latency trials, one probe deployment each.
	Probes int
	// Storm: all agents dial at once; else RampPerSecond start a second.
	Storm         bool
	RampPerSecond float64
	// AgentsCPUs is the GOMAXPROCS of the agents process: at most that many cores run the
	// simulation, the rest are the controller's; 0 is half the machine.
	AgentsCPUs int
	// Failover runs an etcd and two controllers and kills the leader after the trials.
	Failover bool
	// Duration is the steady window; Interval the report interval the controller hands out.
	Duration, Interval time.Duration
	// ConnectTimeout bounds the connect phase; TrialTimeout the wait for a probe's start;
	// FailoverTimeout the wait for each figure of the failover.
	ConnectTimeout, TrialTimeout, FailoverTimeout time.Duration
	// AdminCalls is how many times each admin method is called.
	AdminCalls int
	// Pprof fetches CPU, heap and mutex profiles of the controller into PprofDir.
	Pprof    bool
	PprofDir string
	// Controller is the llmscaler-controller binary; Self the llmscaler binary that runs the
	// hidden `bench agents` and `bench etcd`.
	Controller, Self string
	// LogDir keeps the processes' logs (controller, agents, etcd); empty keeps them with the
	// data in a temporary directory removed at the end.
	LogDir string
	// RequireLeadership fails the run when leadership changed (before any failover kill).
	RequireLeadership bool
	// Progress gets a line every ProgressInterval; nil for none.
	Progress         io.Writer
	ProgressInterval time.Duration
}

// Defaults of the flags.
const (
	DefaultRamp           = 1000
	DefaultDuration       = 30 * time.Second
	DefaultInterval       = time.Second
	DefaultProbes         = 20
	DefaultConnectTimeout = 2 * time.Minute
	DefaultTrialTimeout   = 10 * time.Second
	DefaultAdminCalls     = 20
)

// probes is the number of probe deployments: the trials', and one more kept for the
// failover so that its scale-up is the first of its deployment.
func (c Config) probes() int {
	if c.Failover && c.Probes >= 0 {
		return c.Probes + 1
	}
	return c.Probes
}

// setDefaults fills in what a zero means "the default" for. The figures a run is sized by
// (agents, ramp, duration, timeouts) have no default here: a zero is refused, not replaced.
func (c *Config) setDefaults() {
	if c.FailoverTimeout == 0 {
		c.FailoverTimeout = 2 * time.Minute
	}
	if c.ProgressInterval == 0 {
		c.ProgressInterval = 2 * time.Second
	}
	if c.PprofDir == "" {
		c.PprofDir = "bench-out"
	}
	if c.AgentsCPUs == 0 {
		c.AgentsCPUs = max(1, runtime.NumCPU()/2)
	}
}

// Validate checks the parameters, naming the flag at fault.
func (c Config) Validate() error {
	switch {
	case c.Agents < 1:
		return fmt.Errorf("--agents %d: need at least 1", c.Agents)
	case c.GPUs < 1 || c.GPUs > MaxGPUs:
		return fmt.Errorf("--gpus %d: want 1 to %d", c.GPUs, MaxGPUs)
	case c.Instances < 0 || c.Instances > c.GPUs:
		return fmt.Errorf("--instances %d: want 0 to --gpus (%d)", c.Instances, c.GPUs)
	case c.Probes < 0:
		return fmt.Errorf("--probes %d: must not be negative", c.Probes)
	case !c.Storm && c.RampPerSecond <= 0:
		return fmt.Errorf("--ramp %g: must be positive", c.RampPerSecond)
	case c.Duration < time.Second:
		return fmt.Errorf("--duration %v: at least 1s", c.Duration)
	case c.Interval < 100*time.Millisecond || c.Interval > time.Minute:
		return fmt.Errorf("--interval %v: want 100ms to 1m", c.Interval)
	case c.ConnectTimeout <= 0:
		return fmt.Errorf("--connect-timeout %v: must be positive", c.ConnectTimeout)
	case c.TrialTimeout <= 0:
		return fmt.Errorf("--trial-timeout %v: must be positive", c.TrialTimeout)
	case c.FailoverTimeout <= 0:
		return fmt.Errorf("--failover-timeout %v: must be positive", c.FailoverTimeout)
	case c.AgentsCPUs < 1:
		return fmt.Errorf("--agents-cpus %d: at least 1", c.AgentsCPUs)
	case c.AdminCalls < 1:
		return fmt.Errorf("--admin-calls %d: at least 1", c.AdminCalls)
	case c.Controller == "" || c.Self == "":
		return errors.New("no controller binary or llmscaler binary given")
	}
	if _, err := NewLayout(c.Agents, c.GPUs, c.Instances, c.probes()); err != nil {
		return fmt.Errorf("%w (with --probes %d%s)", err, c.Probes, map[bool]string{true: " and one more for --failover"}[c.Failover])
	}
	return nil
}
