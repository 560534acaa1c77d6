package agent

import (
	"context"
	"fmt"
	"testing"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

func TestCommandLogForgetsLeastRecentlyUsed(t *testing.T) {
	l := newCommandLog(3)
	for i := range 3 {
		l.add(commandOutcome{id: fmt.Sprint(i), message: fmt.Sprint("m", i)})
	}
	// Touching "0" makes "1" the least recently used.
	if o, ok := l.get("0"); !ok || o.message != "m0" {
		t.Fatalf("get(0) = %+v, %v", o, ok)
	}
	l.add(commandOutcome{id: "3"})
	if _, ok := l.get("1"); ok {
		t.Fatal("the least recently used id was kept")
	}
	for _, id := range []string{"0", "2", "3"} {
		if _, ok := l.get(id); !ok {
			t.Fatalf("id %s was forgotten", id)
		}
	}
	if l.order.Len() != 3 || len(l.byID) != 3 {
		t.Fatalf("log holds %d/%d entries, want 3", l.order.Len(), len(l.byID))
	}
}

func TestNoCatalogRejects(t *testing.T) {
	tests := []struct {
		name string
		cmd  *llmscalerv1.Command
		want string
	}{
		{"start", &llmscalerv1.Command{Action: &llmscalerv1.Command_StartInstance{StartInstance: &llmscalerv1.StartInstance{Profile: "vllm-llama3"}}},
			`profile "vllm-llama3" is not in this agent's catalog (the agent was started without --catalog)`},
		{"stop", &llmscalerv1.Command{Action: &llmscalerv1.Command_StopInstance{StopInstance: &llmscalerv1.StopInstance{InstanceId: "i-1"}}},
			`no instance "i-1" on this node`},
		{"no action", &llmscalerv1.Command{}, "command has no action this agent knows"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, msg := noCatalog{}.execute(context.Background(), tc.cmd)
			if res != llmscalerv1.CommandResult_COMMAND_RESULT_REJECTED || msg != tc.want {
				t.Fatalf("got %v %q, want REJECTED %q", res, msg, tc.want)
			}
		})
	}
}
