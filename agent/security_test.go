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
// (or whoever holds its certificate) that names an instance "../../etc/x" gets the command
// rejected with the reason, and the agent runs nothing and writes no file for it.
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
		cmd := &llmscalerv1.Command{CommandId: "c" + string(rune('0'+i)), Epoch: 1, Action: &llmscalerv1.Command_StartInstance{
			StartInstance: &llmscalerv1.StartInstance{InstanceId: id, Deployment: "chat", Profile: "cpu"}}}
		fs.command(t, cmd)
		ack := fs.ack(t)
		if ack.GetResult() != llmscalerv1.CommandResult_COMMAND_RESULT_REJECTED || !strings.HasPrefix(ack.GetMessage(), "invalid instance id: instance_id ") {
			t.Errorf("start %.20q: %v %q, want REJECTED: invalid instance id: instance_id ...", id, ack.GetResult(), ack.GetMessage())
		}
		stop := &llmscalerv1.Command{CommandId: "s" + string(rune('0'+i)), Epoch: 1, Action: &llmscalerv1.Command_StopInstance{
			StopInstance: &llmscalerv1.StopInstance{InstanceId: id}}}
		fs.command(t, stop)
		if ack := fs.ack(t); ack.GetResult() != llmscalerv1.CommandResult_COMMAND_RESULT_REJECTED || !strings.Contains(ack.GetMessage(), "invalid instance id") {
			t.Errorf("stop %.20q: %v %q, want REJECTED: invalid instance id", id, ack.GetResult(), ack.GetMessage())
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
