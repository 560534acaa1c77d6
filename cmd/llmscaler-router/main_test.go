package main

import (
	"flag"
	"testing"

	"github.com/llmscaler/llmscaler/internal/cli"
)

const example = "../../deploy/router.yaml"

// TestExampleConfig keeps deploy/router.yaml and the flags from drifting apart.
func TestExampleConfig(t *testing.T) {
	if err := cli.CheckExample(example, func() *flag.FlagSet { fs, _ := newFlags(); return fs }); err != nil {
		t.Error(err)
	}
	fs, s := newFlags()
	if _, err := s.common.Parse(fs, []string{"--config", example, "--max-queue", "5"}); err != nil {
		t.Fatal(err)
	}
	if s.listen != "127.0.0.1:7410" || s.maxQueue != 5 {
		t.Errorf("listen %q, max queue %d", s.listen, s.maxQueue)
	}
}
