package agent

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// TestHostileInstanceIDFromController: the agent is the last line of defence. A controller
// (or whoever holds its certificate) that names an instance "../../etc/x" in a desired state gets it
// refused with the reason, and the agent runs nothing and writes no file for it.
func TestHostileInstanceIDFromController(t *testing.T) {
	c := startController(t, nil)
	cfg := testConfig(t, c.addr)
	parent := t.TempDir()
	cfg.DataDir = filepath.Join(parent, "agent")
	cfg.Catalog = filepath.Join(parent, "catalog.yaml")
	if err := os.WriteFile(cfg.Catalog, []byte("profiles:\n  - name: cpu\n    command: [/bin/true]\n    dialect: vllm\n    gpus: 0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := newAgent(t, cfg)
	run(t, a)
	fs := c.stream(t)
	fs.welcome(t, &llmscalerv1.Welcome{ControllerId: "ctrl-a", Epoch: 1})

	for i, id := range []string{"../../etc/x", "a/b", "..", strings.Repeat("x", 200)} {
		fs.desired(t, &llmscalerv1.DesiredState{Epoch: 1, Version: uint64(i + 1),
			Instances: []*llmscalerv1.StartInstance{{InstanceId: id, Deployment: "chat", Profile: "cpu"}},
			Drain:     []*llmscalerv1.StopInstance{{InstanceId: id}}})
		ack := fs.ack(t)
		if len(ack.GetRejected()) != 2 {
			t.Fatalf("%.20q: refused %v, want its start and its drain", id, ack.GetRejected())
		}
		for _, r := range ack.GetRejected() {
			if r.GetInstanceId() != id || !strings.HasPrefix(r.GetMessage(), "invalid instance id: instance_id ") {
				t.Errorf("%.20q: refused %.20q with %q, want invalid instance id: instance_id ...", id, r.GetInstanceId(), r.GetMessage())
			}
		}
	}
	if ins := a.sup.Instances(); len(ins) != 0 {
		t.Errorf("instances %v, want none", ins)
	}
	if _, err := os.Stat(filepath.Join(parent, "etc")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s/etc: %v, want none", parent, err)
	}
	logs, _ := os.ReadDir(filepath.Join(cfg.DataDir, "logs"))
	if len(logs) != 0 {
		t.Errorf("logs written: %v", logs)
	}
}
