package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFencePersists(t *testing.T) {
	dir := t.TempDir()
	f, err := loadFence(dir)
	if err != nil {
		t.Fatal(err)
	}
	if f.Highest() != 0 {
		t.Fatalf("new agent has epoch %d, want 0", f.Highest())
	}
	steps := []struct {
		epoch       int64
		wantOK      bool
		wantHighest int64
	}{
		{5, true, 5},
		{5, true, 5}, // the same leader again
		{4, false, 5},
		{9, true, 9},
	}
	for _, s := range steps {
		ok, highest, err := f.Raise(s.epoch)
		if err != nil || ok != s.wantOK || highest != s.wantHighest {
			t.Fatalf("Raise(%d) = %v, %d, %v; want %v, %d", s.epoch, ok, highest, err, s.wantOK, s.wantHighest)
		}
	}
	again, err := loadFence(dir)
	if err != nil {
		t.Fatal(err)
	}
	if again.Highest() != 9 {
		t.Fatalf("after restart epoch %d, want 9", again.Highest())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("data dir holds %d files, want only the state file (temporary files left behind?)", len(entries))
	}
}

func TestFenceCorruptFile(t *testing.T) {
	tests := []struct{ name, content string }{
		{"not json", "{highest"},
		{"negative epoch", `{"highest_epoch": -3}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, stateFileName)
			if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := loadFence(dir)
			if err == nil || !strings.Contains(err.Error(), path) {
				t.Fatalf("got %v, want an error naming %s", err, path)
			}
		})
	}
}
