package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
)

// stateFileName is the agent's state file in its data directory.
const stateFileName = "agent-state.json"

// agentState is what survives an agent restart.
type agentState struct {
	// HighestEpoch is the highest leader epoch the agent has accepted. A restarted agent
	// that forgot it would obey a deposed leader that reached it first.
	HighestEpoch int64 `json:"highest_epoch"`
}

// fence is the highest leader epoch the agent has accepted, kept on disk so that it holds
// across restarts.
type fence struct {
	path string

	mu      sync.Mutex
	highest int64
}

// loadFence reads the state file in dir; a missing file is a new agent with epoch 0.
func loadFence(dir string) (*fence, error) {
	path := filepath.Join(dir, stateFileName)
	f := &fence{path: path}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return f, nil
	case err != nil:
		return nil, fmt.Errorf("agent state: %w", err)
	}
	var s agentState
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("agent state %s is corrupt (remove it to start over, and the agent will accept any leader once): %w", path, err)
	}
	if s.HighestEpoch < 0 {
		return nil, fmt.Errorf("agent state %s is corrupt: highest_epoch %d is negative", path, s.HighestEpoch)
	}
	f.highest = s.HighestEpoch
	return f, nil
}

// Highest is the highest epoch accepted so far.
func (f *fence) Highest() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.highest
}

// Raise accepts epoch if it is not below the highest so far, persisting it first when it is
// higher: the agent must not act for a leader whose epoch it could forget. It returns false,
// and the highest epoch, when epoch is stale.
func (f *fence) Raise(epoch int64) (ok bool, highest int64, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case epoch < f.highest:
		return false, f.highest, nil
	case epoch == f.highest:
		return true, f.highest, nil
	}
	if err := writeFileAtomic(f.path, agentState{HighestEpoch: epoch}); err != nil {
		return false, f.highest, fmt.Errorf("recording epoch %d: %w", epoch, err)
	}
	f.highest = epoch
	return true, epoch, nil
}

// writeFileAtomic replaces path with v as JSON so that a crash leaves the old file or the new
// one, never a torn one: write a temporary file, fsync it, rename it over path, fsync the
// directory so the rename itself is durable.
func writeFileAtomic(path string, v any) (err error) {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
