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

// record is one instance as the state file keeps it: enough to find its process again and to
// carry on where the last agent left off.
type record struct {
	InstanceID string   `json:"instance_id"`
	Deployment string   `json:"deployment"`
	Profile    string   `json:"profile"`
	GPUs       []uint32 `json:"gpu_indices"`
	Phase      string   `json:"phase"`
	PID        int      `json:"pid,omitzero"`
	// StartTime is field 22 of /proc/<pid>/stat when the process was started.
	StartTime uint64        `json:"start_time,omitzero"`
	Running   bool          `json:"running,omitzero"`
	Port      int           `json:"port,omitzero"`
	StartedAt time.Time     `json:"started_at,omitzero"`
	ReadyAt   time.Time     `json:"ready_at,omitzero"`
	ColdStart time.Duration `json:"cold_start_ns,omitzero"`
	Restarts  uint32        `json:"restarts,omitzero"`
	ExitCode  int32         `json:"exit_code,omitzero"`
	Message   string        `json:"message,omitzero"`
	RestartAt time.Time     `json:"restart_at,omitzero"`
	EndedAt   time.Time     `json:"ended_at,omitzero"`

	Stopping      bool      `json:"stopping,omitzero"`
	DrainStart    time.Time `json:"drain_start,omitzero"`
	DrainDeadline time.Time `json:"drain_deadline,omitzero"`
	SkipDrain     bool      `json:"skip_drain,omitzero"`
	SignalledAt   time.Time `json:"signalled_at,omitzero"`
	Killed        bool      `json:"killed,omitzero"`
	FailOnExit    string    `json:"fail_on_exit,omitzero"`
}

func (r *record) phase() (llmscalerv1.InstancePhase, error) {
	v, ok := llmscalerv1.InstancePhase_value[r.Phase]
	if !ok || v == 0 {
		return 0, fmt.Errorf("instance %q: unknown phase %q", r.InstanceID, r.Phase)
	}
	return llmscalerv1.InstancePhase(v), nil
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
