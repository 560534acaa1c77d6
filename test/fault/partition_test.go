//go:build linux

package fault

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// TestAgentCutOff takes an agent's link down. Its server must keep running and serving on
// its host (fail static: a controller that cannot reach a node does not mean the node is
// dead); once the node grace has passed the leader starts a replacement elsewhere; when the
// link returns, the surplus is drained, so the deployment is above its max only for the
// drain.
func TestAgentCutOff(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a nine-host fleet")
	}
	f := newFleet(t, "cut")
	addr := f.ctrlHosts[0].at(grpcPort)
	spec := fmt.Sprintf(`{"deployment":{"name":%q,"profile":"fake-llm","gpus_per_replica":1,"gpu_memory_mib":1000,"min_replicas":2,"max_replicas":2}}`, f.model)
	if err := f.router.call(t, addr, "ApplyDeployment", spec, nil); err != nil {
		t.Fatal(err)
	}
	var before []*llmscalerv1.InstanceStatus
	eventually(t, 60*time.Second, "2 READY instances", func() error {
		var err error
		before, err = f.instances(addr, llmscalerv1.InstancePhase_INSTANCE_PHASE_READY)
		if err != nil {
			return err
		}
		if len(before) != 2 {
			return fmt.Errorf("%d READY", len(before))
		}
		return nil
	})
	victim := before[0]
	var cut *host
	for _, h := range f.agents {
		if strings.HasPrefix(victim.GetEndpoint(), h.addr+":") {
			cut = h
		}
	}
	if cut == nil {
		t.Fatalf("no agent host serves %s", victim.GetEndpoint())
	}

	cutAt := time.Now()
	cut.cut()
	// Fail static: the server lives on and answers on its own host.
	health := func() error {
		if err := syscall.Kill(int(victim.GetPid()), 0); err != nil {
			return fmt.Errorf("server pid %d: %v", victim.GetPid(), err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := cut.run(ctx, "curl", "-sf", "http://"+victim.GetEndpoint()+"/health")
		return err
	}
	if err := health(); err != nil {
		t.Fatalf("the cut-off server: %v", err)
	}
	var away []string // the instances READY away from the cut node: the other and the replacement
	replaced := eventually(t, 90*time.Second, "a replacement READY on another node", func() error {
		ready, err := f.instances(addr, llmscalerv1.InstancePhase_INSTANCE_PHASE_READY)
		if err != nil {
			return err
		}
		away = away[:0]
		for _, in := range ready {
			if in.GetInstanceId() != victim.GetInstanceId() && !strings.HasPrefix(in.GetEndpoint(), cut.addr+":") {
				away = append(away, in.GetInstanceId())
			}
		}
		if len(away) < 2 {
			return fmt.Errorf("%d READY away from %s", len(away), cut.name)
		}
		return nil
	})
	t.Logf("replacement READY %v after the cut", replaced.Round(100*time.Millisecond))
	if err := health(); err != nil {
		t.Errorf("the cut-off server stopped while cut off: %v", err)
	}

	restored := time.Now()
	cut.restore()
	back := eventually(t, 60*time.Second, cut.name+" connected again", func() error {
		var n llmscalerv1.GetNodeResponse
		if err := f.router.call(t, addr, "GetNode", fmt.Sprintf(`{"node_id":%q}`, cut.name), &n); err != nil {
			return err
		}
		if n.GetNode().GetState() != llmscalerv1.NodeState_NODE_STATE_CONNECTED {
			return fmt.Errorf("%s is %v", cut.name, n.GetNode().GetState())
		}
		return nil
	})
	// The node's return brings its server back into the count: one more than max, until the
	// leader drains the surplus. Which one it drains (the returned server or one of those away
	// from the node) depends on their load, and an idle one drains between two polls: so the
	// surplus counts as drained once the returned server has been reported, no more than two
	// are live, and one of the three is not live any more.
	peak := 0
	drained := eventually(t, 90*time.Second, "the surplus drained after the link returned", func() error {
		all, err := f.instances(addr)
		if err != nil {
			return err
		}
		live := map[string]bool{}
		victimSeen := false
		for _, in := range all {
			victimSeen = victimSeen || in.GetInstanceId() == victim.GetInstanceId()
			switch in.GetPhase() {
			case llmscalerv1.InstancePhase_INSTANCE_PHASE_STARTING, llmscalerv1.InstancePhase_INSTANCE_PHASE_READY, llmscalerv1.InstancePhase_INSTANCE_PHASE_DRAINING:
				live[in.GetInstanceId()] = true
			}
		}
		peak = max(peak, len(live))
		gone := !live[victim.GetInstanceId()]
		for _, id := range away {
			gone = gone || !live[id]
		}
		switch {
		case !victimSeen:
			return fmt.Errorf("the returned node's server %s is not reported yet", victim.GetInstanceId())
		case len(live) > 2:
			return fmt.Errorf("%d instances live, max 2", len(live))
		case !gone:
			return fmt.Errorf("none of %s and %v drained yet: live %v", victim.GetInstanceId(), away, slices.Sorted(maps.Keys(live)))
		}
		return nil
	})
	t.Logf("cut at %v: replacement READY after %v; link back after %v; node connected %v later; at most %d live; surplus gone %v after that",
		cutAt.Format("15:04:05"), replaced.Round(100*time.Millisecond), restored.Sub(cutAt).Round(100*time.Millisecond),
		back.Round(100*time.Millisecond), peak, drained.Round(100*time.Millisecond))
	// The catalog's drain_timeout is 20 s: above max no longer than one drain, plus a report.
	if drained > 25*time.Second {
		t.Errorf("above max replicas for %v after the node returned, longer than its drain", drained)
	}
	if ready, err := f.instances(addr, llmscalerv1.InstancePhase_INSTANCE_PHASE_READY); err != nil || len(ready) != 2 {
		t.Errorf("after the drain: %d READY (%v), want 2", len(ready), err)
	}
}

// instances lists the deployment's instance statuses through a controller, those in one of
// phases if any are given.
func (f *fleet) instances(addr string, phases ...llmscalerv1.InstancePhase) ([]*llmscalerv1.InstanceStatus, error) {
	var resp llmscalerv1.ListInstancesResponse
	if err := f.router.call(f.t, addr, "ListInstances", fmt.Sprintf(`{"deployment":%q}`, f.model), &resp); err != nil {
		return nil, err
	}
	var out []*llmscalerv1.InstanceStatus
	for _, in := range resp.GetInstances() {
		s := in.GetStatus()
		if len(phases) == 0 {
			out = append(out, s)
			continue
		}
		for _, p := range phases {
			if s.GetPhase() == p {
				out = append(out, s)
			}
		}
	}
	return out, nil
}
