//go:build linux

package fault

import (
	"fmt"
	"maps"
	"path/filepath"
	"strings"
	"testing"
	"time"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// TestLeaderKill9 kills the leading controller with SIGKILL while `llmscaler load` sends
// requests through the router the whole time. The other controller must lead with every agent
// reconnected within 5 s; no client request may fail; and the new leader must issue no start
// or stop of its own (the fleet it inherits is the one it wants: epochs fence the old leader,
// and the instances are the same before and after).
func TestLeaderKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a nine-host fleet")
	}
	f := newFleet(t, "fo")
	leader, err := f.leaderWithAgents()
	if err != nil {
		t.Fatal(err)
	}
	addr := f.ctrlHosts[0].at(grpcPort)
	spec := fmt.Sprintf(`{"deployment":{"name":%q,"profile":"fake-llm","gpus_per_replica":1,"gpu_memory_mib":1000,"min_replicas":3,"max_replicas":3}}`, f.model)
	if err := f.router.call(t, addr, "ApplyDeployment", spec, nil); err != nil {
		t.Fatal(err)
	}
	var before map[string]string
	eventually(t, 60*time.Second, "3 READY instances", func() error {
		var err error
		if before, err = f.readyInstances(addr); err != nil {
			return err
		}
		if len(before) != 3 {
			return fmt.Errorf("%d READY: %v", len(before), before)
		}
		return nil
	})

	const loadFor = 30 * time.Second
	summary := filepath.Join(t.TempDir(), "load.json")
	load := f.router.start(t, "load", bin(t, "llmscaler"), "load", "--router", "http://"+f.router.at(routerPort),
		"--deployment", f.model, "--rps", "10", "--duration", loadFor.String(), "--json", summary, "--progress-interval", "5s")
	time.Sleep(10 * time.Second) // the load is running; the kill comes a third of the way in

	killed := time.Now()
	f.controllers[leader].kill()
	var survivor *host
	for i, h := range f.ctrlHosts {
		if fmt.Sprintf("c%d", i+1) != leader {
			survivor = h
		}
	}
	took := eventually(t, 30*time.Second, "the other controller leading with all agents back", func() error {
		id, err := f.leaderWithAgents()
		if err != nil {
			return err
		}
		if id == leader {
			return fmt.Errorf("%s still named leader", id)
		}
		return nil
	})
	t.Logf("failover: %v from kill -9 of %s to a new leader with all %d agents connected", took.Round(10*time.Millisecond), leader, len(f.agents))
	if took > 5*time.Second {
		t.Errorf("failover took %v, want under 5 s", took)
	}

	s := endLoad(t, load, loadFor, summary)
	t.Logf("load through the router: %d sent, %d ok, errors %v", s.Sent, s.OK, s.ByKind)
	if s.Sent < 250 || s.OK != s.Sent || s.Errors != 0 {
		t.Errorf("load: %d sent, %d ok, %d failed (%v): want every request answered", s.Sent, s.OK, s.Errors, s.ByKind)
	}

	after, err := f.readyInstances(survivor.at(grpcPort))
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(before, after) {
		t.Errorf("instances before the failover %v, after %v: the new leader started or stopped some", before, after)
	}
	// The journal: no decision of the new term changed the count.
	var ds llmscalerv1.ListDecisionsResponse
	if err := f.router.call(t, survivor.at(grpcPort), "ListDecisions", fmt.Sprintf(`{"deployment":%q}`, f.model), &ds); err != nil {
		t.Fatal(err)
	}
	for _, d := range ds.GetDecisions() {
		if d.GetTime().AsTime().After(killed) && d.GetActed() {
			t.Errorf("the new leader acted: %s (%v)", d.GetReason(), strings.Join(d.GetCommands(), "; "))
		}
	}
}
