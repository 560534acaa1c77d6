package main

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/llmscaler/llmscaler/internal/cli"
)

const example = "../../deploy/agent.yaml"

// TestExampleConfig keeps deploy/agent.yaml and the flags from drifting apart.
func TestExampleConfig(t *testing.T) {
	if err := cli.CheckExample(example, func() *flag.FlagSet { fs, _ := newFlags(); return fs }); err != nil {
		t.Error(err)
	}
	fs, s := newFlags()
	if _, err := s.common.Parse(fs, []string{"--config", example, "--labels", "zone=a"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := s.config()
	if err != nil {
		t.Fatal(err)
	}
	got := []any{cfg.Catalog, cfg.DataDir, cfg.Controllers, cfg.Labels}
	want := []any{"/etc/llmscaler/catalog.yaml", "/var/lib/llmscaler/agent", []string{"127.0.0.1:7400"}, map[string]string{"zone": "a"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("catalog, data dir, controllers, labels (-want +got):\n%s", diff)
	}
}

// TestBadConfig checks that a bad file stops the agent before it starts anything.
func TestBadConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.yaml")
	text := "controller: [10.0.1.1:7400, 10.0.1.2:7400]\nlabels: {zone: a}\nreport-interval: fast\n"
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	err := run(context.Background(), []string{"--config", path, "--gpu-backend", "none"})
	if want := path + `:3: report-interval: time: invalid duration "fast"`; err == nil || err.Error() != want {
		t.Errorf("run error:\n got %v\nwant %s", err, want)
	}
}
