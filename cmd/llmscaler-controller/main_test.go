package main

import (
	"flag"
	"slices"
	"testing"

	"github.com/llmscaler/llmscaler/internal/cli"
)

const example = "../../deploy/controller.yaml"

// TestExampleConfig keeps deploy/controller.yaml and the flags from drifting apart.
func TestExampleConfig(t *testing.T) {
	if err := cli.CheckExample(example, func() *flag.FlagSet { fs, _ := newFlags(); return fs }); err != nil {
		t.Error(err)
	}
	fs, s := newFlags()
	if _, err := s.common.Parse(fs, []string{"--config", example, "--etcd-endpoints", "10.0.0.1:2379,10.0.0.2:2379"}); err != nil {
		t.Fatal(err)
	}
	if s.cfg.DataDir != "/var/lib/llmscaler/controller" || !slices.Equal(s.endpoints, []string{"10.0.0.1:2379", "10.0.0.2:2379"}) {
		t.Errorf("data dir %q, endpoints %q", s.cfg.DataDir, s.endpoints)
	}
}
