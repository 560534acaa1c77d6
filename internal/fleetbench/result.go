package fleetbench

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Result is every figure of one run, as `--json` writes it.
type Result struct {
	Version    string           `json:"version"`
	StartedAt  time.Time        `json:"started_at"`
	Params     Params           `json:"params"`
	Connect    ConnectResult    `json:"connect"`
	Steady     SteadyResult     `json:"steady"`
	Admin      []AdminResult    `json:"admin"`
	Decisions  DecisionResult   `json:"decisions"`
	Leadership LeadershipResult `json:"leadership"`
	Failover   *FailoverResult  `json:"failover,omitempty"`
	Final      FinalResult      `json:"final"`
	Outcome
}

// Outcome is how every bench run ends, in its result: the profiles it wrote, with the
// command that reads each; notes on what was skipped and why; and what makes it fail.
type Outcome struct {
	Profiles []ProfileFile `json:"profiles,omitempty"`
	Notes    []string      `json:"notes,omitempty"`
	Failures []string      `json:"failures,omitempty"`
}

// Params are the run's parameters.
type Params struct {
	Agents        int     `json:"agents"`
	GPUs          int     `json:"gpus"`
	Instances     int     `json:"instances"`
	Probes        int     `json:"probes"`
	Deployments   int     `json:"deployments"`
	Storm         bool    `json:"storm"`
	Failover      bool    `json:"failover"`
	RampPerSecond float64 `json:"ramp_per_second"`
	DurationS     float64 `json:"duration_s"`
	IntervalS     float64 `json:"interval_s"`
	Controllers   int     `json:"controllers"`
	AgentsCPUs    int     `json:"agents_cpus"`
}

// ConnectResult is the connect phase: from the first dial until every agent was welcomed
// and had sent a report.
type ConnectResult struct {
	Mode         string  `json:"mode"`
	AllConnected bool    `json:"all_connected"`
	Connected    int     `json:"connected"`
	Reporting    int     `json:"reporting"`
	Seconds      float64 `json:"seconds"`
	Dials        int64   `json:"dials"`
	// Retries are dials beyond one per agent; Refused streams that ended without a welcome
	// (other than a redirect); Redirects NOT_LEADER answers followed.
	Retries   int64 `json:"retries"`
	Refused   int64 `json:"refused"`
	Redirects int64 `json:"redirects"`
	// Desired counts desired states agents received while connecting; DesiredChanges those
	// that started or stopped something.
	Desired        int64    `json:"desired"`
	DesiredChanges int64    `json:"desired_changes"`
	Errors         []string `json:"errors,omitempty"`
}

// SteadyResult is the steady window after every agent connected.
type SteadyResult struct {
	WindowS float64 `json:"window_s"`
	// ReportsPerSecond is the controller's count of reports received over the window;
	// SentPerSecond what the agents process sent.
	ReportsPerSecond float64 `json:"reports_per_second"`
	SentPerSecond    float64 `json:"sent_per_second"`
	// IngestP50Ms and IngestP99Ms come from the controller's ingest histogram over the
	// window; null when the controller has none.
	IngestP50Ms *float64 `json:"ingest_p50_ms"`
	IngestP99Ms *float64 `json:"ingest_p99_ms"`
	// Desired counts desired states agents received in the window, DesiredChanges those
	// that started or stopped something: 0 in a quiet fleet.
	Desired        int64 `json:"desired"`
	DesiredChanges int64 `json:"desired_changes"`
	// DesiredSent is the controller's own count of desired states sent in the window.
	DesiredSent    *float64   `json:"desired_sent"`
	Disconnects    int64      `json:"disconnects"`
	SkippedReports int64      `json:"skipped_reports"`
	Controller     ProcResult `json:"controller"`
	AgentsProcess  ProcResult `json:"agents_process"`
}

// ProcResult is one process's CPU and memory over the steady window.
type ProcResult struct {
	CPUCores float64 `json:"cpu_cores"`
	// RSSMiB is at the end of the window, RSSMaxMiB the most sampled in it, PeakRSSMiB the
	// kernel's high-water mark (VmHWM) over the process's life, the connect included.
	RSSMiB     float64 `json:"rss_mib"`
	RSSMaxMiB  float64 `json:"rss_max_mib"`
	PeakRSSMiB float64 `json:"peak_rss_mib"`
}

// AdminResult is one admin call made repeatedly at fleet size.
type AdminResult struct {
	Method        string  `json:"method"`
	Calls         int     `json:"calls"`
	Errors        int     `json:"errors"`
	Latency       Latency `json:"latency"`
	ReplyBytes    int     `json:"reply_bytes"`
	MaxReplyBytes int     `json:"max_reply_bytes"`
	// UnderLimit: every reply was below the 4 MiB message limit of llmscaler's clients.
	UnderLimit bool   `json:"under_limit"`
	LastError  string `json:"last_error,omitempty"`
}

// DecisionResult is the time from a probe's overloaded report to its start at an agent.
type DecisionResult struct {
	Trials    int       `json:"trials"`
	Latency   Latency   `json:"latency"`
	TimedOut  int       `json:"timed_out"`
	TimeoutS  float64   `json:"timeout_s"`
	SamplesMs []float64 `json:"samples_ms"`
}

// LeadershipResult is who led, polled every 500 ms. With --failover it covers the run up to
// the kill.
type LeadershipResult struct {
	LeaderBefore string `json:"leader_before"`
	EpochBefore  int64  `json:"epoch_before"`
	LeaderAfter  string `json:"leader_after"`
	EpochAfter   int64  `json:"epoch_after"`
	// Changes counts polls that saw another leader or epoch than the poll before.
	Changes int `json:"changes"`
	// TermsDelta is the growth of the leader's llmscaler_controller_terms_total.
	TermsDelta float64 `json:"terms_delta"`
	PollErrors int     `json:"poll_errors"`
	// Held: the same leader at the same epoch throughout.
	Held bool `json:"held"`
}

// FailoverResult is the kill -9 of the leader, each time from the kill; null where it did
// not happen within the deadline.
type FailoverResult struct {
	Killed    string `json:"killed"`
	NewLeader string `json:"new_leader"`
	NewEpoch  int64  `json:"new_epoch"`
	// LeadS: until the other controller led; AllConnectedS: until every agent was welcomed
	// by it; CommandS: until a start it sent for an overloaded probe reached the agent.
	LeadS         *float64 `json:"lead_s"`
	AllConnectedS *float64 `json:"all_connected_s"`
	CommandS      *float64 `json:"command_s"`
	DeadlineS     float64  `json:"deadline_s"`
}

// FinalResult is the fleet at the end of the run.
type FinalResult struct {
	Connected    int   `json:"connected"`
	Disconnected int   `json:"disconnected"`
	Welcomes     int64 `json:"welcomes"`
	Disconnects  int64 `json:"disconnects"`
	Reports      int64 `json:"reports"`
}

// ProfileFile is one pprof file.
type ProfileFile struct {
	Kind    string `json:"kind"`
	Path    string `json:"path"`
	Command string `json:"command"`
}

// WriteText prints the result as a table a person reads.
func (r *Result) WriteText(w io.Writer) error {
	p := r.Params
	mode := fmt.Sprintf("ramp %g/s", p.RampPerSecond)
	if p.Storm {
		mode = "storm"
	}
	fmt.Fprintf(w, "llmscaler bench fleet %s: %d agents x %d GPUs, %d instances each, %d fleet deployments + %d probes, %s, report interval %gs, agents on %d CPUs\n",
		r.Version, p.Agents, p.GPUs, p.Instances, p.Deployments, p.Probes, mode, p.IntervalS, p.AgentsCPUs)
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t%s\n", k, fmt.Sprintf(format, args...)) }
	switch c := r.Connect; {
	case c.Mode == "":
	case c.AllConnected:
		row("connect", "all %d reporting %.1f s after the first dial; %d dials (%d retries), %d refused, %d redirects; %d desired states, %d with changes",
			p.Agents, c.Seconds, c.Dials, c.Retries, c.Refused, c.Redirects, c.Desired, c.DesiredChanges)
	default:
		row("connect", "NOT all connected: %d connected, %d reporting of %d; %d dials, %d refused", c.Connected, c.Reporting, p.Agents, c.Dials, c.Refused)
	}
	if s := r.Steady; s.WindowS > 0 {
		row(fmt.Sprintf("steady %.0fs", s.WindowS), "%.0f reports/s received (%.0f/s sent, %d skipped); ingest p50 %s p99 %s; %d desired states, %d with changes; %d disconnects",
			s.ReportsPerSecond, s.SentPerSecond, s.SkippedReports, ms(s.IngestP50Ms), ms(s.IngestP99Ms), s.Desired, s.DesiredChanges, s.Disconnects)
		row("controller", "%s", s.Controller)
		row("agents process", "%s", s.AgentsProcess)
	}
	if d := r.Decisions; d.Trials > 0 {
		row("decisions", "%d trials, overloaded report to start: p50 %.1f ms, p99 %.1f ms, max %.1f ms; %d without a start within %gs",
			d.Trials, d.Latency.P50Ms, d.Latency.P99Ms, d.Latency.MaxMs, d.TimedOut, d.TimeoutS)
	}
	if l := r.Leadership; l.LeaderAfter != "" {
		held := "LOST"
		if l.Held {
			held = "held"
		}
		row("leadership", "%s: %s epoch %d before, %s epoch %d after, %d changes, terms +%.0f, %d poll errors",
			held, l.LeaderBefore, l.EpochBefore, l.LeaderAfter, l.EpochAfter, l.Changes, l.TermsDelta, l.PollErrors)
	}
	if f := r.Failover; f != nil {
		row("failover", "killed %s: %s leads (epoch %d) after %s, all agents on it after %s, first command after %s",
			f.Killed, f.NewLeader, f.NewEpoch, secs(f.LeadS), secs(f.AllConnectedS), secs(f.CommandS))
	}
	if f := r.Final; f.Welcomes > 0 {
		row("final", "%d connected, %d disconnected; %d welcomes, %d disconnects, %d reports", f.Connected, f.Disconnected, f.Welcomes, f.Disconnects, f.Reports)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(r.Admin) > 0 {
		fmt.Fprintln(w, "admin calls at this size:")
		tw = tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "method\tcalls\terrors\tp50 ms\tp99 ms\treply bytes\tunder 4 MiB\t")
		for _, a := range r.Admin {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%.1f\t%.1f\t%d\t%v\t\n", a.Method, a.Calls, a.Errors, a.Latency.P50Ms, a.Latency.P99Ms, a.MaxReplyBytes, a.UnderLimit)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
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

func (p ProcResult) String() string {
	return fmt.Sprintf("CPU %.2f cores, RSS %.0f MiB (max %.0f in the window, peak %.0f)", p.CPUCores, p.RSSMiB, p.RSSMaxMiB, p.PeakRSSMiB)
}

func ms(v *float64) string {
	if v == nil {
		return "n/a"
	}
	return fmt.Sprintf("%.1f ms", *v)
}

func secs(v *float64) string {
	if v == nil {
		return "never (within the deadline)"
	}
	return fmt.Sprintf("%.2f s", *v)
}

// Failed reports whether the run failed, and why.
func (r *Result) Failed() error {
	if len(r.Failures) == 0 {
		return nil
	}
	return fmt.Errorf("bench failed: %s", strings.Join(r.Failures, "; "))
}
