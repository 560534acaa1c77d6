package names

import (
	"strings"
	"testing"
)

func TestNames(t *testing.T) {
	tests := []struct {
		name    string
		check   func(string) error
		in      string
		wantErr string
	}{
		{"deployment ok", DeploymentName, "llama-3-8b", ""},
		{"deployment empty", DeploymentName, "", "is empty"},
		{"deployment upper", DeploymentName, "Llama", "lowercase"},
		{"deployment trailing dash", DeploymentName, "llama-", "lowercase"},
		{"deployment too long", DeploymentName, strings.Repeat("a", 64), "64 characters"},
		{"node ok", NodeID, "gpu-host-01.dc1", ""},
		{"node with space", NodeID, "gpu host", "must be"},
		{"node empty", NodeID, "", "is empty"},
		{"profile ok", Profile, "vllm_llama3.1-8b", ""},
		{"profile slash", Profile, "../bin/sh", "must be"},
		{"instance ok", InstanceID, "fake-b5df7e78", ""},
		{"instance dots inside", InstanceID, "llama-3.1-8b_a", ""},
		{"instance traversal", InstanceID, "../../etc/x", "must be"},
		{"instance slash", InstanceID, "a/b", "must be"},
		{"instance double dot", InstanceID, "a..b", "without"},
		{"instance backslash", InstanceID, `a\b`, "must be"},
		{"instance nul", InstanceID, "a\x00b", "must be"},
		{"instance newline", InstanceID, "a\nb", "must be"},
		{"instance leading dot", InstanceID, ".hidden", "must be"},
		{"instance empty", InstanceID, "", "is empty"},
		{"instance too long", InstanceID, strings.Repeat("a", 129), "129 characters"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.check(tc.in)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("got %v, want no error", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("got %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestLabels(t *testing.T) {
	if err := Labels(map[string]string{"gpu": "a100", "zone": "", "example.com/rack": "r1"}); err != nil {
		t.Fatalf("valid labels refused: %v", err)
	}
	if err := Labels(map[string]string{"gpu": "a 100"}); err == nil || !strings.Contains(err.Error(), `["gpu"]`) {
		t.Fatalf("bad value: got %v, want error naming key gpu", err)
	}
	if err := Labels(map[string]string{"-x": "1"}); err == nil || !strings.Contains(err.Error(), "key") {
		t.Fatalf("bad key: got %v, want error about the key", err)
	}
	many := map[string]string{}
	for i := range 65 {
		many[strings.Repeat("k", i+1)] = "v"
	}
	if err := Labels(many); err == nil || !strings.Contains(err.Error(), "65 entries") {
		t.Fatalf("too many: got %v", err)
	}
}
