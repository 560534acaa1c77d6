package fleetbench

// The bench drives the agents process with one JSON object a line on its stdin and reads
// one a line from its stdout. Times are Unix nanoseconds of the agents process's clock,
// which is the bench's too: both run on one machine.

// Commands the bench sends.
const (
	// cmdConnect starts dialing: all at once after a barrier (storm) or at the ramp rate.
	cmdConnect = "connect"
	// cmdOverload makes a probe's instance report a long queue from its next report on,
	// until a start for that probe arrives.
	cmdOverload = "overload"
	// cmdQuit closes every stream and ends the process after a last stats line.
	cmdQuit = "quit"
)

// command is one line to the agents process.
type command struct {
	Cmd        string `json:"cmd"`
	Deployment string `json:"deployment,omitempty"`
	// TimeoutMs bounds an overload's wait for its start; 0 is the process's default.
	TimeoutMs int64 `json:"timeout_ms,omitempty"`
}

// Events the agents process sends.
const (
	evReady = "ready"
	evStats = "stats"
	evTrial = "trial"
)

// event is one line from the agents process.
type event struct {
	Event string       `json:"event"`
	Stats *AgentsStats `json:"stats,omitempty"`
	Trial *Trial       `json:"trial,omitempty"`
}

// AgentsStats are the agents process's counters, cumulative since it started.
type AgentsStats struct {
	Time int64 `json:"time"`
	// Connected agents have a welcomed stream now; Reporting ones have also sent a report on it.
	Connected int `json:"connected"`
	Reporting int `json:"reporting"`
	// ByController counts the connected agents by the controller that welcomed them.
	ByController map[string]int `json:"by_controller"`
	// AllReportingAt is when all agents were first reporting at once (0: not yet); FirstDial
	// when the first one dialed.
	AllReportingAt int64 `json:"all_reporting_at"`
	FirstDial      int64 `json:"first_dial"`
	// AllOn is when all agents were first connected to each controller at once.
	AllOn map[string]int64 `json:"all_on"`
	// Dials counts streams opened; Welcomes those welcomed; Refused those that ended without
	// a welcome other than by redirect (Unavailable, AlreadyExists, timeouts...); Redirects
	// NOT_LEADER answers; Disconnects welcomed streams that ended.
	Dials       int64 `json:"dials"`
	Welcomes    int64 `json:"welcomes"`
	Refused     int64 `json:"refused"`
	Redirects   int64 `json:"redirects"`
	Disconnects int64 `json:"disconnects"`
	// Reports and Heartbeats sent; SkippedReports were due while the stream was busy sending.
	Reports        int64 `json:"reports"`
	Heartbeats     int64 `json:"heartbeats"`
	SkippedReports int64 `json:"skipped_reports"`
	// Desired counts desired states received, DesiredChanges those that started or stopped
	// an instance, Starts and Drains the instances concerned, Rejected the refused ones.
	Desired        int64 `json:"desired"`
	DesiredChanges int64 `json:"desired_changes"`
	Starts         int64 `json:"starts"`
	Drains         int64 `json:"drains"`
	Rejected       int64 `json:"rejected"`
	// LastErrors are a few recent stream errors, to say why agents are not connected.
	LastErrors []string `json:"last_errors,omitempty"`
}

// Trial is one timed decision: a probe's overloaded report sent at T0, its start received
// at T1 (0: none within the trial timeout).
type Trial struct {
	Deployment   string `json:"deployment"`
	T0           int64  `json:"t0"`
	T1           int64  `json:"t1"`
	ControllerID string `json:"controller_id,omitempty"`
	InstanceID   string `json:"instance_id,omitempty"`
}
