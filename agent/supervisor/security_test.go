package supervisor

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/llmscaler/llmscaler/agent/catalog"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// hostileIDs would name files outside the logs directory, or odd files in it, if an instance
// id were used as it came.
var hostileIDs = []string{"../../etc/x", "../x", "..", "a/b", "/etc/passwd", "a..b", `a\b`, "x\x00y", "x\ny", ".x", strings.Repeat("a", 129)}

// TestHostileInstanceIDRefused: an id from a controller command that would leave the data
// directory is refused by Start and Stop before anything runs or touches the disk.
func TestHostileInstanceIDRefused(t *testing.T) {
	t.Parallel()
	parent := t.TempDir()
	h := newHarness(t, Config{DataDir: filepath.Join(parent, "data")})
	before := tree(t, parent)
	for _, id := range hostileIDs {
		t.Run(strconv.Quote(id), func(t *testing.T) {
			err := h.s.Start(&llmscalerv1.StartInstance{InstanceId: id, Deployment: "llama", Profile: "cpu"})
			if !errors.Is(err, ErrInvalidInstanceID) || !strings.Contains(err.Error(), "instance_id") {
				t.Errorf("Start(%q) = %v, want ErrInvalidInstanceID naming instance_id", id, err)
			}
			if err := h.s.Stop(&llmscalerv1.StopInstance{InstanceId: id}); !errors.Is(err, ErrInvalidInstanceID) {
				t.Errorf("Stop(%q) = %v, want ErrInvalidInstanceID", id, err)
			}
		})
	}
	if n := len(h.spawned()); n != 0 {
		t.Errorf("%d processes started, want none", n)
	}
	if ins := h.s.Instances(); len(ins) != 0 {
		t.Errorf("instances %v, want none", ins)
	}
	if after := tree(t, parent); !slices.Equal(before, after) {
		t.Errorf("files changed:\nbefore %q\nafter  %q", before, after)
	}
	if _, err := os.Stat(filepath.Join(parent, "etc")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s/etc exists: %v", parent, err)
	}
}

// TestHostileInstanceIDInStateFile: a state file naming such an id (written by hand, or by an
// older agent) is refused at start, rather than adopted and logged to.
func TestHostileInstanceIDInStateFile(t *testing.T) {
	dir := t.TempDir()
	if err := writeState(dir, []record{{InstanceID: "../../etc/x", Deployment: "llama", Profile: "cpu", Phase: llmscalerv1.InstancePhase_INSTANCE_PHASE_STOPPED}}); err != nil {
		t.Fatal(err)
	}
	_, err := New(Config{DataDir: dir, Catalog: testCatalog(t), GPUs: []uint32{0}}, testLogger())
	if !errors.Is(err, ErrInvalidInstanceID) || !strings.Contains(err.Error(), `"../../etc/x"`) {
		t.Fatalf("New = %v, want ErrInvalidInstanceID naming the id", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "..", "..", "etc", "x.log")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a log outside the data directory: %v", err)
	}
}

// TestPlaceholdersNeverThroughAShell: a catalog command runs as its argv, never through a
// shell. Shell syntax around the placeholders reaches the server as it is, and runs nothing.
func TestPlaceholdersNeverThroughAShell(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pwned := filepath.Join(dir, "pwned")
	yaml := fmt.Sprintf(`profiles:
  - name: shelly
    command: [%s, --port, "{port}", --id, "{instance_id}; touch %[2]s", --deployment, "$(touch %[2]s)", "{deployment} && touch %[2]s", "|", "sh"]
    env: {%s: serve, TEST_EXTRA: "$(touch %[2]s) {instance_id}"}
    dialect: vllm
    gpus: 0
`, strconv.Quote(os.Args[0]), pwned, serverModeEnv)
	cat, err := catalog.Parse("shelly.yaml", []byte(yaml))
	if err != nil {
		t.Fatalf("catalog: %v\n%s", err, yaml)
	}
	h := newHarness(t, Config{Catalog: cat})
	h.start("i-1", "llama", "shelly")
	_, port, _ := strings.Cut(h.waitPhase("i-1", ready).GetEndpoint(), ":")
	want := fmt.Sprintf(`args ["--port" "%s" "--id" "i-1; touch %s" "--deployment" "$(touch %s)" "llama && touch %s" "|" "sh"]`,
		port, pwned, pwned, pwned)
	h.waitLog("i-1", want)
	h.waitLog("i-1", fmt.Sprintf(`env TEST_EXTRA="$(touch %s) i-1"`, pwned))
	if _, err := os.Stat(pwned); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s exists: a shell ran the command line", pwned)
	}
	if err := h.s.Stop(&llmscalerv1.StopInstance{InstanceId: "i-1"}); err != nil {
		t.Fatal(err)
	}
	h.waitPhase("i-1", stopped)
}

// tree lists the paths under root, sorted.
func tree(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.Walk(root, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		out = append(out, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}
