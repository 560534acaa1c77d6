package fleetbench

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"go.yaml.in/yaml/v3"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// AgentBenchProfile is the one profile of the agent bench's catalog.
const AgentBenchProfile = "bench-fakeserver"

// catalogProfile is one profile of an agent's catalog, as the catalog's YAML spells it.
type catalogProfile struct {
	Name           string   `yaml:"name"`
	Command        []string `yaml:"command,flow"`
	Dialect        string   `yaml:"dialect"`
	HealthPath     string   `yaml:"health_path"`
	MetricsPath    string   `yaml:"metrics_path"`
	GPUs           int      `yaml:"gpus"`
	GPUMemoryMiB   int      `yaml:"gpu_memory_mib"`
	StartupTimeout string   `yaml:"startup_timeout"`
	DrainTimeout   string   `yaml:"drain_timeout"`
	StopSignal     string   `yaml:"stop_signal"`
	StopGrace      string   `yaml:"stop_grace"`
	MaxRestarts    int      `yaml:"max_restarts"`
}

// AgentBenchCatalog is the agent's catalog: one profile that runs self's `fakeserver` on one
// GPU, cpu-tiny with a 1 s cold start, vLLM metrics, the deployment as its model. It is
// marshalled rather than formatted so that any path quotes right.
func AgentBenchCatalog(self string) ([]byte, error) {
	doc := struct {
		Profiles []catalogProfile `yaml:"profiles"`
	}{[]catalogProfile{{
		Name: AgentBenchProfile,
		Command: []string{self, "fakeserver", "--host", "{host}", "--port", "{port}",
			"--model", "{deployment}", "--hardware", "cpu-tiny", "--cold-start", "1s", "--log-level", "warn"},
		Dialect: "vllm", HealthPath: "/health", MetricsPath: "/metrics",
		GPUs: 1, GPUMemoryMiB: 1000, StartupTimeout: "60s", DrainTimeout: "10s",
		StopSignal: "SIGTERM", StopGrace: "5s", MaxRestarts: 3,
	}}}
	b, err := yaml.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("agent bench catalog: %w", err)
	}
	return append([]byte("# The catalog of `llmscaler bench agent`.\n"), b...), nil
}

// AgentBenchDeployment holds n replicas of the profile (min = max), so that the controller
// has no reason to start or stop anything once they are READY.
func AgentBenchDeployment(name string, n int) *llmscalerv1.DeploymentSpec {
	return &llmscalerv1.DeploymentSpec{
		Name: name, Profile: AgentBenchProfile, GpusPerReplica: 1, GpuMemoryMib: 1000,
		MinReplicas: uint32(n), MaxReplicas: uint32(n), Policy: queuePolicy(),
	}
}

// InstanceCounts are a deployment's instances by what the bench waits for.
type InstanceCounts struct {
	Ready int
	// Busy are STARTING or DRAINING.
	Busy   int
	Failed int
	// FailedMessage is one FAILED instance's message: why it failed.
	FailedMessage string
}

// CountInstances counts instances by phase.
func CountInstances(ins []*llmscalerv1.Instance) InstanceCounts {
	var c InstanceCounts
	for _, in := range ins {
		st := in.GetStatus()
		switch st.GetPhase() {
		case llmscalerv1.InstancePhase_INSTANCE_PHASE_READY:
			c.Ready++
		case llmscalerv1.InstancePhase_INSTANCE_PHASE_STARTING, llmscalerv1.InstancePhase_INSTANCE_PHASE_DRAINING:
			c.Busy++
		case llmscalerv1.InstancePhase_INSTANCE_PHASE_FAILED:
			c.Failed++
			c.FailedMessage = fmt.Sprintf("%s: %s", st.GetInstanceId(), st.GetMessage())
		}
	}
	return c
}

// LoadCounts are the load generator's counters at one moment.
type LoadCounts struct {
	Sent, OK, Failed, Skipped int64
}

// Since is the load between earlier and c, over wall seconds.
func (c LoadCounts) Since(earlier LoadCounts, wall float64) *LoadResult {
	r := &LoadResult{Sent: c.Sent - earlier.Sent, OK: c.OK - earlier.OK, Failed: c.Failed - earlier.Failed, Skipped: c.Skipped - earlier.Skipped}
	if wall > 0 {
		r.SentPerSecond = float64(r.Sent) / wall
		r.OKPerSecond = float64(r.OK) / wall
	}
	return r
}

// AgentBenchResult is every figure of one agent bench run, as `--json` writes it.
type AgentBenchResult struct {
	Version   string           `json:"version"`
	StartedAt time.Time        `json:"started_at"`
	Params    AgentBenchParams `json:"params"`
	Ready     ReadyResult      `json:"ready"`
	Steady    AgentSteady      `json:"steady"`
	Outcome
}

// AgentBenchParams are the run's parameters.
type AgentBenchParams struct {
	GPUs          int     `json:"gpus"`
	Instances     int     `json:"instances"`
	DurationS     float64 `json:"duration_s"`
	IntervalS     float64 `json:"interval_s"`
	LoadPerSecond float64 `json:"load_per_second"`
	// Deployment is the run's deployment, whose name its servers take as their model.
	Deployment string `json:"deployment"`
	// Profiled: the agent's CPU was profiled over the window, which costs it a little.
	Profiled bool `json:"profiled"`
}

// ReadyResult is the start: the agent listed with its GPUs, its instances READY.
type ReadyResult struct {
	GPUs      int `json:"gpus"`
	Instances int `json:"instances"`
	// Seconds is from the apply until every instance was READY.
	Seconds float64 `json:"seconds"`
}

// AgentSteady is the steady window once every instance was READY.
type AgentSteady struct {
	WindowS float64 `json:"window_s"`
	// Agent is the agent process alone: its servers are other processes.
	Agent ProcResult `json:"agent"`
	// ReportsPerSecond is what the agent sent (its own counter); ReceivedPerSecond what the
	// controller received from it.
	ReportsPerSecond  float64 `json:"reports_per_second"`
	ReceivedPerSecond float64 `json:"received_per_second"`
	// ScrapeErrors are the agent's failed scrapes of its servers in the window.
	ScrapeErrors float64 `json:"scrape_errors"`
	// ReadyMin is the fewest READY instances the controller listed in the window, ReadyEnd
	// those at its end.
	ReadyMin int           `json:"ready_min"`
	ReadyEnd int           `json:"ready_end"`
	Servers  ServersResult `json:"servers"`
	// Load is the traffic sent to the servers in the window; null without --load.
	Load *LoadResult `json:"load"`
}

// ServersResult is the model servers together: their cost, not the agent's.
type ServersResult struct {
	Processes int     `json:"processes"`
	CPUCores  float64 `json:"cpu_cores"`
	RSSMiB    float64 `json:"rss_mib"`
}

// LoadResult is the traffic sent to the servers over the window.
type LoadResult struct {
	Sent          int64   `json:"sent"`
	OK            int64   `json:"ok"`
	Failed        int64   `json:"failed"`
	Skipped       int64   `json:"skipped"`
	SentPerSecond float64 `json:"sent_per_second"`
	OKPerSecond   float64 `json:"ok_per_second"`
}

// WithinTarget reports whether the agent stayed under the budget: 1 % of a core, and
// 50 MiB resident at its peak. The peak is the larger of VmHWM and the most sampled: the
// kernel syncs VmHWM lazily, so it can trail a sample by a page or two.
func (s AgentSteady) WithinTarget() bool {
	return s.Agent.CPUCores < AgentCPUTargetCores && max(s.Agent.PeakRSSMiB, s.Agent.RSSMaxMiB) < AgentRSSTargetMiB
}

// WriteText prints the result as a table a person reads.
func (r *AgentBenchResult) WriteText(w io.Writer) error {
	p := r.Params
	load := "no load"
	if p.LoadPerSecond > 0 {
		load = fmt.Sprintf("load %g req/s", p.LoadPerSecond)
	}
	fmt.Fprintf(w, "llmscaler bench agent %s: 1 agent x %d fake GPUs, %d fakeserver instances, report interval %gs, %s\n",
		r.Version, p.GPUs, p.Instances, p.IntervalS, load)
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t%s\n", k, fmt.Sprintf(format, args...)) }
	if rd := r.Ready; rd.Instances > 0 {
		row("ready", "%d READY %.1f s after the apply; the controller lists the agent with %d GPUs", rd.Instances, rd.Seconds, rd.GPUs)
	}
	if s := r.Steady; s.WindowS > 0 {
		row(fmt.Sprintf("steady %.0fs", s.WindowS), "%.2f reports/s sent (%.2f/s received); %.0f scrape errors; READY: at least %d, %d at the end",
			s.ReportsPerSecond, s.ReceivedPerSecond, s.ScrapeErrors, s.ReadyMin, s.ReadyEnd)
		a := s.Agent
		row("agent", "CPU %.2f %% of a core (%.4f cores); RSS %.1f MiB (max %.1f in the window, peak %.1f)",
			a.CPUCores*100, a.CPUCores, a.RSSMiB, a.RSSMaxMiB, a.PeakRSSMiB)
		verdict := "met"
		if !s.WithinTarget() {
			verdict = "NOT met"
		}
		profiled := ""
		if p.Profiled {
			profiled = " (the agent was profiled, which costs it a little)"
		}
		row("target", "under %.0f %% of a core and %d MiB peak RSS: %s%s", AgentCPUTargetCores*100, AgentRSSTargetMiB, verdict, profiled)
		row("fakeservers", "%d processes: CPU %.2f %% of a core together, RSS %.0f MiB together (not the agent's)",
			s.Servers.Processes, s.Servers.CPUCores*100, s.Servers.RSSMiB)
		if l := s.Load; l != nil {
			row("load", "%.2f req/s sent, %.2f/s answered; %d failed, %d skipped", l.SentPerSecond, l.OKPerSecond, l.Failed, l.Skipped)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, pr := range r.Profiles {
		fmt.Fprintf(w, "profile %s: %s\n", pr.Kind, pr.Command)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	for _, f := range r.Failures {
		fmt.Fprintf(w, "FAILED: %s\n", f)
	}
	return nil
}

// Failed reports whether the run failed, and why.
func (r *AgentBenchResult) Failed() error {
	if len(r.Failures) == 0 {
		return nil
	}
	return fmt.Errorf("bench failed: %s", strings.Join(r.Failures, "; "))
}
