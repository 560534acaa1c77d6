package supervisor

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// stateFileName is the supervisor's file in the data directory.
const stateFileName = "instances.json"

// stateVersion is the format of the state file; New refuses a newer one.
const stateVersion = 1

// stateFile is the content of instances.json.
type stateFile struct {
	Version   int      `json:"version"`
	Instances []record `json:"instances"`
}

// record is what the state file keeps of one instance: enough to find its process again and
// to carry on where the last agent left off. An instance embeds its record, so these fields
// are the instance's own and a save writes them as they are; what only this agent can use
// (process handles, probes, liveness counts) stays in instance.
type record struct {
	InstanceID string   `json:"instance_id"`
	Deployment string   `json:"deployment"`
	Profile    string   `json:"profile"`
	GPUs       []uint32 `json:"gpu_indices"`
	// Phase is written by name, "INSTANCE_PHASE_READY"; see MarshalJSON.
	Phase llmscalerv1.InstancePhase `json:"phase"`
	PID   int                       `json:"pid,omitzero"` // of the current process, or the last one
	// StartTime is field 22 of /proc/<pid>/stat when the process was started.
	StartTime uint64        `json:"start_time,omitzero"`
	Running   bool          `json:"running,omitzero"` // the process (the group leader) is alive
	Port      int           `json:"port,omitzero"`
	StartedAt time.Time     `json:"started_at,omitzero"`
	ReadyAt   time.Time     `json:"ready_at,omitzero"`
	ColdStart time.Duration `json:"cold_start_ns,omitzero"`
	Restarts  uint32        `json:"restarts,omitzero"`
	ExitCode  int32         `json:"exit_code,omitzero"`
	Message   string        `json:"message,omitzero"`
	RestartAt time.Time     `json:"restart_at,omitzero"` // non-zero: no process, start one at this time
	EndedAt   time.Time     `json:"ended_at,omitzero"`   // when it became STOPPED or FAILED

	Stopping      bool      `json:"stopping,omitzero"`
	DrainStart    time.Time `json:"drain_start,omitzero"`
	DrainDeadline time.Time `json:"drain_deadline,omitzero"`
	SkipDrain     bool      `json:"skip_drain,omitzero"`
	SignalledAt   time.Time `json:"signalled_at,omitzero"`
	Killed        bool      `json:"killed,omitzero"`
	FailOnExit    string    `json:"fail_on_exit,omitzero"` // non-empty: end FAILED with this message, not STOPPED
}

// recordFields is record without its JSON methods, for them to encode the other fields.
type recordFields record

// MarshalJSON writes r with its phase by name: a file that names its phases stays readable
// when the enum is renumbered, and by whoever looks into it.
func (r record) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		recordFields
		Phase string `json:"phase"`
	}{recordFields(r), r.Phase.String()})
}

// UnmarshalJSON reads what MarshalJSON writes and refuses a phase this agent does not know.
func (r *record) UnmarshalJSON(b []byte) error {
	v := struct {
		*recordFields
		Phase string `json:"phase"`
	}{recordFields: (*recordFields)(r)}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	p, ok := llmscalerv1.InstancePhase_value[v.Phase]
	if !ok || p == 0 {
		return fmt.Errorf("instance %q: unknown phase %q", r.InstanceID, v.Phase)
	}
	r.Phase = llmscalerv1.InstancePhase(p)
	return nil
}

// readState reads the state file in dir; a missing file is an empty state.
func readState(dir string) ([]record, error) {
	path := filepath.Join(dir, stateFileName)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	var sf stateFile
	if err := json.Unmarshal(b, &sf); err != nil {
		return nil, fmt.Errorf("read state %s: %w", path, err)
	}
	if sf.Version != stateVersion {
		return nil, fmt.Errorf("read state %s: version %d, this agent reads version %d", path, sf.Version, stateVersion)
	}
	return sf.Instances, nil
}

// writeState replaces the state file in dir atomically: a crash leaves the old file or the
// new one, never a mix.
func writeState(dir string, recs []record) error {
	b, err := json.MarshalIndent(stateFile{Version: stateVersion, Instances: recs}, "", "  ")
	if err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	path := filepath.Join(dir, stateFileName)
	tmp, err := os.CreateTemp(dir, stateFileName+".tmp*")
	if err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	_, err = tmp.Write(append(b, '\n'))
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write state %s: %w", path, err)
	}
	// Make the rename itself durable.
	if d, err := os.Open(dir); err == nil {
		err = d.Sync()
		d.Close()
		if err != nil {
			return fmt.Errorf("write state %s: sync directory: %w", path, err)
		}
	}
	return nil
}
