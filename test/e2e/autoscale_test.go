//go:build linux

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// fleet starts a controller and an agent with 8 fake GPUs and the example catalog, and returns
// the controller's address.
func fleet(t *testing.T) string {
	t.Helper()
	return fleetWith(t, repoFile(t, "examples/catalog-fake.yaml"))
}

// fleetWith is fleet with a catalog of its own (its `"../bin/llmscaler"` is replaced by the
// built binary) and extra agent flags.
func fleetWith(t *testing.T, catalog string, agentArgs ...string) string {
	t.Helper()
	dir := t.TempDir()
	cat := strings.ReplaceAll(catalog, `"../bin/llmscaler"`, strconv.Quote(bin(t, "llmscaler")))
	catPath := filepath.Join(dir, "catalog.yaml")
	if err := os.WriteFile(catPath, []byte(cat), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freePort(t)
	start(t, "controller", bin(t, "llmscaler-controller"), "--data-dir", filepath.Join(dir, "c"), "--grpc-addr", addr,
		"--http-addr", "-", "--etcd-client-addr", freePort(t), "--etcd-peer-addr", freePort(t), "--log-level", "debug", "--insecure")
	start(t, "agent", bin(t, "llmscaler-agent"), append([]string{"--controller", addr, "--node-id", "n1", "--gpu-backend", "fake", "--fake-gpus", "8",
		"--catalog", catPath, "--data-dir", filepath.Join(dir, "agent"), "--http-addr", "", "--insecure"}, agentArgs...)...)
	// Servers outlive their agent by design; make sure none outlives the test.
	t.Cleanup(func() {
		for _, m := range []string{"auto", "seed", "zero", "surge", "llama"} {
			killServers(m)
		}
	})
	eventually(t, 30*time.Second, "n1 connected with the fake-llm profile", func() error {
		n, err := nodeOf(t, addr, "n1")
		if err != nil {
			return err
		}
		if n.GetState() != llmscalerv1.NodeState_NODE_STATE_CONNECTED || len(n.GetProfiles()) == 0 {
			return fmt.Errorf("n1 %v with profiles %v", n.GetState(), n.GetProfiles())
		}
		return nil
	})
	return addr
}

func decisions(t *testing.T, addr, dep string) []*llmscalerv1.Decision {
	t.Helper()
	var resp llmscalerv1.ListDecisionsResponse
	if err := call(t, addr, "ListDecisions", fmt.Sprintf(`{"deployment":%q,"limit":200}`, dep), &resp); err != nil {
		t.Fatal(err)
	}
	out := resp.GetDecisions()
	// Oldest first.
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

func acted(ds []*llmscalerv1.Decision) []*llmscalerv1.Decision {
	var out []*llmscalerv1.Decision
	for _, d := range ds {
		if d.GetActed() {
			out = append(out, d)
		}
	}
	return out
}

// TestSloScalesWithLoad is the engine issue's "done when" with the slo policy: a step from low
// to high load scales the deployment up within 10 s of the step (cold start not counted), TTFT
// comes back under the 2 s target, and after the load stops the deployment returns to its
// minimum after the scale-down delay, without flapping. Every step is explained.
func TestSloScalesWithLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	addr := fleet(t)
	spec := `{"deployment":{"name":"auto","profile":"fake-llm","gpus_per_replica":1,"gpu_memory_mib":1000,"min_replicas":1,"max_replicas":8,
	  "policy":{"slo":{"target":"2s","scale_down_delay":"15s"},"stable_window":"15s"}}}`
	if _, err := grpcurl(t, "-d", spec, addr, "llmscaler.v1.AdminService/ApplyDeployment"); err != nil {
		t.Fatal(err)
	}
	waitReady(t, addr, "auto", 1, 30*time.Second)

	const stepAt = 10 * time.Second
	out := filepath.Join(t.TempDir(), "load.json")
	loadStart := time.Now()
	load := start(t, "load", bin(t, "llmscaler"), "load", "--controller", addr, "--insecure", "--deployment", "auto",
		"--schedule", "0s:1,10s:12", "--duration", "40s", "--prompt-tokens", "128", "--output-tokens", "64",
		"--progress-interval", "5s", "--json", out)
	step := loadStart.Add(stepAt)

	var up *llmscalerv1.Decision
	eventually(t, 25*time.Second, "a scale-up decision", func() error {
		for _, d := range acted(decisions(t, addr, "auto")) {
			if d.GetToReplicas() > d.GetFromReplicas() && d.GetTime().AsTime().After(loadStart) {
				up = d
				return nil
			}
		}
		return fmt.Errorf("none yet")
	})
	after := up.GetTime().AsTime().Sub(step)
	t.Logf("SLO: first scale-up %s %v after the load step: %q", fmt.Sprintf("%d->%d", up.GetFromReplicas(), up.GetToReplicas()), after.Round(time.Millisecond), up.GetReason())
	if after > 10*time.Second {
		t.Errorf("scale-up came %v after the step, want within 10s", after)
	}

	// TTFT comes back under target while the high load lasts: the replicas' reported p95 over
	// their last interval, in the last 10 s of the load.
	time.Sleep(time.Until(loadStart.Add(32 * time.Second))) // wait for a point in the load schedule
	eventually(t, 8*time.Second, "p95 TTFT under 2s on every ready replica", func() error {
		ins, err := instances(t, addr, "auto")
		if err != nil {
			return err
		}
		for _, s := range byPhase(ins, llmscalerv1.InstancePhase_INSTANCE_PHASE_READY) {
			if m := s.GetMetrics(); m.GetTtft().GetCount() > 0 && m.GetTtft().GetP95Seconds() > 2 {
				return fmt.Errorf("%s p95 TTFT %.2fs", s.GetInstanceId(), m.GetTtft().GetP95Seconds())
			}
		}
		return nil
	})
	<-load.done
	stopped := time.Now()

	// Back to the minimum after the scale-down delay.
	eventually(t, 60*time.Second, "back to 1 replica", func() error {
		ds := acted(decisions(t, addr, "auto"))
		if len(ds) == 0 || ds[len(ds)-1].GetToReplicas() != 1 {
			return fmt.Errorf("last decision %v", ds[len(ds)-1].GetReason())
		}
		return nil
	})
	t.Logf("SLO: back to 1 replica %v after the load stopped", time.Since(stopped).Round(time.Second))

	// No flapping: every scale-up comes before every scale-down.
	ds := acted(decisions(t, addr, "auto"))
	down := false
	for _, d := range ds {
		t.Logf("decision %s: %s (clamps %d, commands %v)", d.GetTime().AsTime().Format("15:04:05.000"), d.GetReason(), len(d.GetClamps()), d.GetCommands())
		if !strings.HasPrefix(d.GetReason(), "scale ") || d.GetPolicy() != "slo" {
			t.Errorf("decision without a scale reason: %v", d)
		}
		if d.GetToReplicas() < d.GetFromReplicas() {
			down = true
		} else if down {
			t.Errorf("flapping: scale-up %q after a scale-down", d.GetReason())
		}
	}
	b, _ := os.ReadFile(out)
	t.Logf("load summary: %s", b)
}

// TestThresholdStepsPerCooldown runs the seed's threshold rule under steady overload: it
// scales up one replica at a time, one step per cooldown (shortened to 8 s here; the 300 s
// default is covered by the policy's unit tests).
func TestThresholdStepsPerCooldown(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	addr := fleet(t)
	spec := `{"deployment":{"name":"seed","profile":"fake-llm","gpus_per_replica":1,"gpu_memory_mib":1000,"min_replicas":1,"max_replicas":8,
	  "policy":{"threshold":{"cooldown":"8s"}}}}`
	if _, err := grpcurl(t, "-d", spec, addr, "llmscaler.v1.AdminService/ApplyDeployment"); err != nil {
		t.Fatal(err)
	}
	waitReady(t, addr, "seed", 1, 30*time.Second)
	load := start(t, "load", bin(t, "llmscaler"), "load", "--controller", addr, "--insecure", "--deployment", "seed",
		"--rps", "30", "--duration", "30s", "--prompt-tokens", "128", "--output-tokens", "64", "--progress-interval", "10s")
	<-load.done
	ups := acted(decisions(t, addr, "seed"))
	if len(ups) < 2 {
		t.Fatalf("%d scale-ups under 30 s of overload with an 8 s cooldown, want at least 2", len(ups))
	}
	for i, d := range ups {
		t.Logf("decision %s: %s", d.GetTime().AsTime().Format("15:04:05.000"), d.GetReason())
		if d.GetToReplicas() != d.GetFromReplicas()+1 {
			t.Errorf("threshold stepped %d -> %d, want one replica per step", d.GetFromReplicas(), d.GetToReplicas())
		}
		if i > 0 {
			if gap := d.GetTime().AsTime().Sub(ups[i-1].GetTime().AsTime()); gap < 8*time.Second {
				t.Errorf("two scale-ups %v apart, inside the 8 s cooldown", gap)
			}
		}
	}
}
