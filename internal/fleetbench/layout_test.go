package fleetbench

import (
	"strings"
	"testing"

	"github.com/llmscaler/llmscaler/internal/names"
	"github.com/llmscaler/llmscaler/internal/policy"
)

func TestLayoutAccountsForEveryInstance(t *testing.T) {
	for _, tc := range []struct {
		name                       string
		agents, gpus, inst, probes int
		wantDeployments            int
	}{
		{"bench default", 1000, 8, 2, 20, 10},
		{"ten thousand", 10000, 8, 2, 21, 10},
		{"more than ten deployments' worth", 30000, 8, 8, 0, 24},
		{"fewer instances than deployments", 3, 8, 1, 0, 3},
		{"only probes", 2, 8, 1, 2, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := NewLayout(tc.agents, tc.gpus, tc.inst, tc.probes)
			if err != nil {
				t.Fatal(err)
			}
			if len(l.Fleet) != tc.wantDeployments {
				t.Errorf("%d fleet deployments, want %d", len(l.Fleet), tc.wantDeployments)
			}
			counts := map[string]int{}
			ids := map[string]bool{}
			probeAgents := map[int]bool{}
			for a := range tc.agents {
				for _, in := range l.AgentInstances(a) {
					counts[in.Deployment]++
					if ids[in.ID] {
						t.Fatalf("instance id %s twice", in.ID)
					}
					ids[in.ID] = true
					if strings.HasPrefix(in.Deployment, "probe-") {
						probeAgents[a] = true
					}
				}
			}
			total := 0
			for _, d := range l.Fleet {
				if counts[d.Name] != d.Replicas {
					t.Errorf("%s: %d replicas, agents run %d", d.Name, d.Replicas, counts[d.Name])
				}
				if d.Replicas > maxPerDeployment || d.Replicas < 1 {
					t.Errorf("%s: %d replicas, want 1 to %d", d.Name, d.Replicas, maxPerDeployment)
				}
				total += d.Replicas
			}
			if total+tc.probes != tc.agents*tc.inst {
				t.Errorf("%d fleet replicas + %d probes, want %d instances", total, tc.probes, tc.agents*tc.inst)
			}
			if len(probeAgents) != tc.probes {
				t.Errorf("probes on %d agents, want %d, one each", len(probeAgents), tc.probes)
			}
			for _, p := range l.Probes {
				if counts[p.Name] != 1 || l.Labels(p.Agent)[probeLabel] != p.Name {
					t.Errorf("%s: %d instances, agent %d labelled %q", p.Name, counts[p.Name], p.Agent, l.Labels(p.Agent)[probeLabel])
				}
			}
		})
	}
}

func TestLayoutRefusesWhatCannotWork(t *testing.T) {
	for _, tc := range []struct {
		name                       string
		agents, gpus, inst, probes int
		want                       string
	}{
		{"no agents", 0, 8, 2, 0, "agents 0"},
		{"no GPUs", 10, 0, 0, 0, "gpus 0"},
		{"too many GPUs", 10, 65, 2, 0, "gpus 65"},
		{"more instances than GPUs", 10, 8, 9, 0, "instances 9"},
		{"probes without a free GPU", 10, 8, 8, 1, "free GPU"},
		{"more probes than agents", 10, 8, 2, 11, "one per agent"},
		{"probes without instances", 10, 8, 0, 1, "at least 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewLayout(tc.agents, tc.gpus, tc.inst, tc.probes)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("NewLayout = %v, want an error about %q", err, tc.want)
			}
		})
	}
}

func TestDeploymentSpecsHoldTheFleetAndLetProbesGrowAtHome(t *testing.T) {
	l, err := NewLayout(100, 8, 2, 5)
	if err != nil {
		t.Fatal(err)
	}
	specs := DeploymentSpecs(l)
	if len(specs) != len(l.Fleet)+5 {
		t.Fatalf("%d specs, want %d", len(specs), len(l.Fleet)+5)
	}
	for _, s := range specs {
		switch {
		case strings.HasPrefix(s.GetName(), "bench-"):
			if s.GetMinReplicas() != s.GetMaxReplicas() {
				t.Errorf("%s: min %d max %d, want a fixed count", s.GetName(), s.GetMinReplicas(), s.GetMaxReplicas())
			}
			if s.GetNodeSelector()[poolLabel] == poolFleet {
				t.Errorf("%s selects the fleet's pool: it could place starts while agents connect", s.GetName())
			}
		case strings.HasPrefix(s.GetName(), "probe-"):
			if s.GetMinReplicas() != 1 || s.GetMaxReplicas() < 2 {
				t.Errorf("%s: min %d max %d, want 1 that can grow", s.GetName(), s.GetMinReplicas(), s.GetMaxReplicas())
			}
			if s.GetNodeSelector()[probeLabel] != s.GetName() {
				t.Errorf("%s selects %v, want its own agent", s.GetName(), s.GetNodeSelector())
			}
		default:
			t.Errorf("unexpected deployment %s", s.GetName())
		}
		if err := policy.Validate(s.GetPolicy()); err != nil {
			t.Errorf("%s: the controller would refuse its policy: %v", s.GetName(), err)
		}
		if err := names.Labels(s.GetNodeSelector()); err != nil {
			t.Errorf("%s: node selector: %v", s.GetName(), err)
		}
		if s.GetPolicy().GetThreshold().GetQueueDown() != 0 {
			t.Errorf("%s may scale down", s.GetName())
		}
	}
}
