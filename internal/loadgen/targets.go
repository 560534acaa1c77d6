package loadgen

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"google.golang.org/grpc"

	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
)

// TargetLister lists the servers that can take requests now.
type TargetLister interface {
	// Targets returns the base URLs ("http://10.0.0.5:8000") of the servers that are ready
	// now; an empty list means none is.
	Targets(ctx context.Context) ([]string, error)
}

// staticTargets is one server that is always there: --url.
type staticTargets []string

// Targets returns the one server.
func (s staticTargets) Targets(context.Context) ([]string, error) { return s, nil }

// AdminTargets lists the READY instances of one deployment through the controller's admin API.
type AdminTargets struct {
	client     llmscalerv1.AdminServiceClient
	deployment string
}

// NewAdminTargets lists the READY instances of deployment through the admin API on conn.
func NewAdminTargets(conn grpc.ClientConnInterface, deployment string) *AdminTargets {
	return &AdminTargets{client: llmscalerv1.NewAdminServiceClient(conn), deployment: deployment}
}

// Targets returns the endpoints of the deployment's READY instances as http:// URLs. Other
// phases (STARTING, DRAINING, ...) are not routable.
func (a *AdminTargets) Targets(ctx context.Context) ([]string, error) {
	resp, err := a.client.ListInstances(ctx, &llmscalerv1.ListInstancesRequest{Deployment: a.deployment})
	if err != nil {
		return nil, fmt.Errorf("list instances of %q: %w", a.deployment, err)
	}
	var urls []string
	for _, in := range resp.GetInstances() {
		st := in.GetStatus()
		if st.GetPhase() != llmscalerv1.InstancePhase_INSTANCE_PHASE_READY || st.GetEndpoint() == "" {
			continue
		}
		// The controller may mix deployments if it ignores the filter; never route across them.
		if st.GetDeployment() != "" && st.GetDeployment() != a.deployment {
			continue
		}
		urls = append(urls, baseURL(st.GetEndpoint()))
	}
	return urls, nil
}

// baseURL makes an http:// URL of a host:port endpoint.
func baseURL(endpoint string) string {
	if strings.Contains(endpoint, "://") {
		return strings.TrimRight(endpoint, "/")
	}
	return "http://" + endpoint
}

// balancer sends each request to the target with the fewest requests outstanding from this
// generator, breaking ties round robin so that equal targets take turns.
type balancer struct {
	mu          sync.Mutex
	targets     []string
	outstanding map[string]int
	sent        map[string]int
	next        int // round-robin cursor into targets
}

func newBalancer() *balancer {
	return &balancer{outstanding: map[string]int{}, sent: map[string]int{}}
}

// set replaces the targets. Requests outstanding on a target that left still count, so a
// target that comes back is not flooded.
func (b *balancer) set(targets []string) (changed bool) {
	targets = slices.Clone(targets)
	slices.Sort(targets)
	targets = slices.Compact(targets)
	b.mu.Lock()
	defer b.mu.Unlock()
	if slices.Equal(targets, b.targets) {
		return false
	}
	b.targets = targets
	return true
}

// count is the number of targets.
func (b *balancer) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.targets)
}

// pick chooses a target and counts a request outstanding on it; false when there is none.
func (b *balancer) pick() (string, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := len(b.targets)
	if n == 0 {
		return "", false
	}
	best := -1
	for k := range n {
		i := (b.next + k) % n
		if best < 0 || b.outstanding[b.targets[i]] < b.outstanding[b.targets[best]] {
			best = i
		}
	}
	b.next = (best + 1) % n
	t := b.targets[best]
	b.outstanding[t]++
	b.sent[t]++
	return t, true
}

// release ends a request outstanding on t.
func (b *balancer) release(t string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.outstanding[t]--; b.outstanding[t] <= 0 {
		delete(b.outstanding, t)
	}
}

// sentByTarget is how many requests went to each target.
func (b *balancer) sentByTarget() map[string]int {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[string]int, len(b.sent))
	for t, n := range b.sent {
		out[t] = n
	}
	return out
}
