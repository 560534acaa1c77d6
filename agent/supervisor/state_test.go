package supervisor

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// fill sets v, and every field or element under it, to a value that is not zero and that
// differs with n. It reports false for a type it cannot fill.
func fill(v reflect.Value, n int) bool {
	switch v.Type() {
	case reflect.TypeFor[llmscalerv1.InstancePhase]():
		v.Set(reflect.ValueOf(draining)) // a phase the file can name
		return true
	case reflect.TypeFor[time.Time]():
		v.Set(reflect.ValueOf(time.Date(2025, 1, 2, 3, 4, 5, n, time.UTC)))
		return true
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(fmt.Sprintf("value %d", n))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(int64(n))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(uint64(n))
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 2, 2))
		return fill(v.Index(0), n) && fill(v.Index(1), n+1)
	default:
		return false
	}
	return true
}

// TestEveryRecordFieldIsSaved: a state file written and read back gives every field of the
// record as it was, so that a field added to record without a way into the file fails here.
func TestEveryRecordFieldIsSaved(t *testing.T) {
	t.Parallel()
	var want record
	v := reflect.ValueOf(&want).Elem()
	for i := range v.NumField() {
		f := v.Type().Field(i)
		if !fill(v.Field(i), i+1) || v.Field(i).IsZero() {
			t.Fatalf("record.%s: cannot fill a %s; teach fill this type", f.Name, f.Type)
		}
	}
	dir := t.TempDir()
	if err := writeState(dir, []record{want}); err != nil {
		t.Fatal(err)
	}
	recs, err := readState(dir)
	if err != nil || len(recs) != 1 {
		t.Fatalf("readState = %v, %v; want one record", recs, err)
	}
	got := reflect.ValueOf(recs[0])
	for i := range v.NumField() {
		if g, w := got.Field(i).Interface(), v.Field(i).Interface(); !reflect.DeepEqual(g, w) {
			t.Errorf("record.%s = %v after a save and a load, want %v", v.Type().Field(i).Name, g, w)
		}
	}
}

// TestStateFileFormat: a file in the format agents have written since version 1 loads, with
// its phase by name, and an unknown phase is refused.
func TestStateFileFormat(t *testing.T) {
	t.Parallel()
	const file = `{
  "version": 1,
  "instances": [
    {
      "instance_id": "i-1",
      "deployment": "llama",
      "profile": "cpu",
      "gpu_indices": [2, 3],
      "phase": "INSTANCE_PHASE_READY",
      "pid": 42,
      "start_time": 7,
      "running": true,
      "port": 8000,
      "started_at": "2025-01-02T03:04:05Z",
      "cold_start_ns": 1500000000,
      "message": "ok"
    }
  ]
}
`
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, stateFileName), []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	recs, err := readState(dir)
	want := record{
		InstanceID: "i-1", Deployment: "llama", Profile: "cpu", GPUs: []uint32{2, 3}, Phase: ready,
		PID: 42, StartTime: 7, Running: true, Port: 8000, StartedAt: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
		ColdStart: 1500 * time.Millisecond, Message: "ok",
	}
	if err != nil || len(recs) != 1 || !reflect.DeepEqual(recs[0], want) {
		t.Fatalf("readState = %+v, %v\nwant %+v", recs, err, want)
	}

	bad := strings.Replace(file, "INSTANCE_PHASE_READY", "INSTANCE_PHASE_UNSPECIFIED", 1)
	if err := os.WriteFile(filepath.Join(dir, stateFileName), []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readState(dir); err == nil || !strings.Contains(err.Error(), `unknown phase "INSTANCE_PHASE_UNSPECIFIED"`) {
		t.Errorf("readState of a file with phase UNSPECIFIED = %v, want an unknown phase error", err)
	}
}

// holdWrites makes the state file writes of s wait, from the first that begins, until the
// returned release is called; entered is closed when that write begins.
func holdWrites(t *testing.T, s *Supervisor) (entered <-chan struct{}, release func()) {
	t.Helper()
	in, out := make(chan struct{}), make(chan struct{})
	var enter, leave sync.Once
	release = func() { leave.Do(func() { close(out) }) }
	t.Cleanup(release)
	s.saveMu.Lock()
	s.writeState = func(dir string, recs []record) error {
		enter.Do(func() { close(in) })
		<-out
		return writeState(dir, recs)
	}
	s.saveMu.Unlock()
	return in, release
}

// TestInstancesWhileStateIsWritten: a slow disk does not hold up the reports, and Start still
// returns only once its instance is in the state file.
func TestInstancesWhileStateIsWritten(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{})
	entered, release := holdWrites(t, h.s)
	started := make(chan error, 1)
	go func() {
		started <- h.s.Start(&llmscalerv1.StartInstance{InstanceId: "i-1", Deployment: "llama", Profile: "cpu"})
	}()
	select {
	case <-entered:
	case <-time.After(waitLong):
		t.Fatal("no state file write began after Start")
	}

	reported := make(chan []*llmscalerv1.InstanceStatus, 1)
	go func() { reported <- h.s.Instances() }()
	select {
	case ins := <-reported:
		if len(ins) != 1 || ins[0].GetInstanceId() != "i-1" {
			t.Errorf("Instances = %v, want i-1", ins)
		}
	case <-time.After(waitLong):
		t.Fatal("Instances did not return while the state file was being written")
	}
	select {
	case err := <-started:
		t.Fatalf("Start returned (%v) before its instance was saved", err)
	default:
	}

	release()
	select {
	case err := <-started:
		if err != nil {
			t.Fatalf("Start: %v", err)
		}
	case <-time.After(waitLong):
		t.Fatal("Start did not return after the write was let go")
	}
	recs, err := readState(h.dir)
	if err != nil || len(recs) != 1 || recs[0].InstanceID != "i-1" || recs[0].PID == 0 {
		t.Errorf("state file holds %+v (%v) once Start returned, want i-1 with its pid", recs, err)
	}
}

// TestStartThatCannotBeSavedRunsNothing: a server the state file does not record would be
// lost to the next agent, so a Start whose save fails kills what it started.
func TestStartThatCannotBeSavedRunsNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{})
	h.s.saveMu.Lock()
	h.s.writeState = func(string, []record) error { return errors.New("disk full") }
	h.s.saveMu.Unlock()
	err := h.s.Start(&llmscalerv1.StartInstance{InstanceId: "i-1", Deployment: "llama", Profile: "cpu"})
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("Start = %v, want the save's error", err)
	}
	if ins := h.s.Instances(); len(ins) != 0 {
		t.Errorf("Instances = %v, want none", ins)
	}
	pids := h.spawned()
	if len(pids) != 1 {
		t.Fatalf("%d processes started, want 1", len(pids))
	}
	groupGone(t, pids[0])
}

// TestNewestSnapshotWins: whatever order the saves run in, the state file ends with the
// newest snapshot, never an older one written late.
func TestNewestSnapshotWins(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := New(Config{DataDir: dir, Catalog: testCatalog(t)}, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	// set changes the instance's message and takes a snapshot, as every change does.
	set := func(msg string) *snapshot {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.instances["i-1"] = &instance{record: record{InstanceID: "i-1", Deployment: "llama", Profile: "cpu", Phase: stopped, Message: msg}}
		s.dirty = true
		return s.snapshotLocked()
	}
	saved := func() string {
		t.Helper()
		recs, err := readState(dir)
		if err != nil || len(recs) != 1 {
			t.Fatalf("readState = %v, %v; want one record", recs, err)
		}
		return recs[0].Message
	}

	older, newer := set("older"), set("newer")
	if err := s.save(newer); err != nil {
		t.Fatal(err)
	}
	if err := s.save(older); err != nil {
		t.Fatal(err)
	}
	if got := saved(); got != "newer" {
		t.Errorf("state file has %q after the older snapshot was saved last, want %q", got, "newer")
	}

	var wg sync.WaitGroup
	for i := range 32 {
		wg.Go(func() {
			if err := s.save(set(fmt.Sprint(i))); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	s.mu.Lock()
	want := s.instances["i-1"].Message
	s.mu.Unlock()
	if got := saved(); got != want {
		t.Errorf("state file has %q after concurrent saves, want the last change %q", got, want)
	}
}
