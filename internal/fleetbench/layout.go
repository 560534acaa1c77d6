package fleetbench

import (
	"errors"
	"fmt"
)

// Layout limits. MaxGPUs is the controller's own bound on a hello's GPUs.
const (
	MaxGPUs = 64
	// maxPerDeployment is the controller's bound on max_replicas.
	maxPerDeployment = 10000
	// minDeployments spreads the fleet's instances over a handful of deployments, so that the
	// engine and reconciler see several, as they would in a real installation.
	minDeployments = 10
)

// Labels and profile the bench puts on agents and deployments.
const (
	// Profile is the one profile in every simulated agent's catalog.
	Profile = "bench"
	// poolLabel is on every simulated agent; fleet deployments select poolNowhere, which no
	// agent has. A fleet deployment thus counts the instances agents report (placement does
	// not look at selectors of what runs) but can never place a new one: while agents are
	// still connecting, the controller sees fewer replicas than min_replicas and would
	// otherwise fill free GPUs, which would be commands in what should be a quiet fleet.
	poolLabel   = "llmscaler-bench/pool"
	poolFleet   = "fleet"
	poolNowhere = "nowhere"
	// probeLabel names the probe deployment an agent hosts: a probe scales up only onto its
	// own agent, so the start it causes arrives at a known agent and nowhere else.
	probeLabel = "llmscaler-bench/probe"
)

// Layout says which instances each simulated agent runs and how many replicas each
// deployment has. The bench and the agents process compute it from the same parameters, so
// neither has to send it to the other.
type Layout struct {
	Agents, GPUs, Instances int
	// Probes are the probe deployments, each with one instance on its own agent.
	Probes []Probe
	// Fleet are the fleet deployments ("bench-0"...) with their replica counts.
	Fleet []Deployment
	// probeOf maps an agent to its probe's index, for agents that host one.
	probeOf map[int]int
}

// Probe is a deployment that may scale up, used to time decisions.
type Probe struct {
	Name  string
	Agent int
}

// Deployment is a fleet deployment and its fixed replica count.
type Deployment struct {
	Name     string
	Replicas int
}

// InstanceSpec is one instance an agent runs from the start.
type InstanceSpec struct {
	ID         string
	Deployment string
	GPU        uint32
}

// NewLayout spreads agents*instances instances, one GPU each, over fleet deployments and
// probes probe deployments. A probe needs a free GPU on its agent to scale up, so probes
// need instances < gpus.
func NewLayout(agents, gpus, instances, probes int) (Layout, error) {
	switch {
	case agents < 1:
		return Layout{}, fmt.Errorf("agents %d: need at least 1", agents)
	case gpus < 1 || gpus > MaxGPUs:
		return Layout{}, fmt.Errorf("gpus %d: want 1 to %d", gpus, MaxGPUs)
	case instances < 0 || instances > gpus:
		return Layout{}, fmt.Errorf("instances %d: want 0 to gpus (%d), one GPU per instance", instances, gpus)
	case probes < 0:
		return Layout{}, fmt.Errorf("probes %d: must not be negative", probes)
	case probes > agents:
		return Layout{}, fmt.Errorf("probes %d: at most one per agent (%d agents)", probes, agents)
	case probes > 0 && instances == 0:
		return Layout{}, errors.New("probes need an instance to overload: instances must be at least 1")
	case probes > 0 && instances == gpus:
		return Layout{}, fmt.Errorf("probes need a free GPU to scale up onto: instances (%d) must be below gpus (%d)", instances, gpus)
	}
	l := Layout{Agents: agents, GPUs: gpus, Instances: instances, probeOf: make(map[int]int, probes)}
	for k := range probes {
		// Spread over the fleet, so that probes do not all sit on the first agents to connect.
		a := k * agents / probes
		l.Probes = append(l.Probes, Probe{Name: fmt.Sprintf("probe-%d", k), Agent: a})
		l.probeOf[a] = k
	}
	fleet := agents*instances - probes
	if fleet > 0 {
		n := max(min(minDeployments, fleet), (fleet+maxPerDeployment-1)/maxPerDeployment)
		l.Fleet = make([]Deployment, n)
		for i := range l.Fleet {
			l.Fleet[i].Name = fmt.Sprintf("bench-%d", i)
		}
		for a := range agents {
			for s := range instances {
				if _, d := l.slot(a, s); d >= 0 {
					l.Fleet[d].Replicas++
				}
			}
		}
	}
	return l, nil
}

// NodeID is agent a's node id.
func (l Layout) NodeID(a int) string { return fmt.Sprintf("bench-%05d", a) }

// Labels are agent a's labels: the pool, and the probe it hosts if any.
func (l Layout) Labels(a int) map[string]string {
	m := map[string]string{poolLabel: poolFleet}
	if k, ok := l.probeOf[a]; ok {
		m[probeLabel] = l.Probes[k].Name
	}
	return m
}

// ProbeAgent is the agent that hosts the probe deployment name.
func (l Layout) ProbeAgent(name string) (int, bool) {
	for _, p := range l.Probes {
		if p.Name == name {
			return p.Agent, true
		}
	}
	return 0, false
}

// AgentInstances are the instances agent a runs from the start, on GPUs 0, 1, ...: its
// probe first if it hosts one, then fleet instances dealt round-robin over the fleet
// deployments by their global index.
func (l Layout) AgentInstances(a int) []InstanceSpec {
	out := make([]InstanceSpec, 0, l.Instances)
	node := l.NodeID(a)
	for s := range l.Instances {
		dep, _ := l.slot(a, s)
		out = append(out, InstanceSpec{ID: fmt.Sprintf("%s-%s-%d", dep, node, s), Deployment: dep, GPU: uint32(s)})
	}
	return out
}

// slot is the deployment of agent a's instance s, with its index in Fleet (-1 for a probe).
func (l Layout) slot(a, s int) (string, int) {
	if k, ok := l.probeOf[a]; ok && s == 0 {
		return l.Probes[k].Name, -1
	}
	d := (a*l.Instances + s) % len(l.Fleet)
	return l.Fleet[d].Name, d
}
