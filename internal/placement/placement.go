// Package placement chooses a node and GPUs for a new model-server instance. It is pure: the
// controller feeds it the fleet as it sees it, and it says where an instance fits or, when
// nothing fits, why not, in words an operator can act on.
package placement

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// GPU is one GPU of a candidate node.
type GPU struct {
	Index uint32
	// MemoryTotalMiB is the device memory; MemoryUsedMiB the last sampled use, if known.
	MemoryTotalMiB uint64
	MemoryUsedMiB  *uint64
	// Healthy is false when the GPU backend reported it broken.
	Healthy bool
	// Busy is true when an instance runs on it or a start was sent for it.
	Busy bool
}

// FreeMiB is the memory free on the GPU: total less the sampled use when there is a sample.
func (g GPU) FreeMiB() uint64 {
	if g.MemoryUsedMiB == nil || *g.MemoryUsedMiB >= g.MemoryTotalMiB {
		if g.MemoryUsedMiB != nil {
			return 0
		}
		return g.MemoryTotalMiB
	}
	return g.MemoryTotalMiB - *g.MemoryUsedMiB
}

// Node is a candidate node.
type Node struct {
	ID       string
	Labels   map[string]string
	Profiles []string
	// Connected is true when the agent has a live stream to the leader.
	Connected bool
	Cordoned  bool
	GPUs      []GPU
	// Replicas is the number of live instances of the deployment being placed on this node.
	Replicas int
	// Avoid marks a node where instances of this deployment keep failing: used only when
	// no other node fits.
	Avoid bool
}

// Request is what one new instance needs.
type Request struct {
	Profile      string
	GPUs         int
	GPUMemoryMiB uint64
	Selector     map[string]string
}

// Choice is where an instance goes.
type Choice struct {
	NodeID string
	GPUs   []uint32
}

// NoFitError says why no node can take an instance.
type NoFitError struct {
	Nodes   int
	Reasons map[string]int // reason -> number of nodes it ruled out
}

func (e *NoFitError) Error() string {
	if e.Nodes == 0 {
		return "no nodes are known"
	}
	keys := slices.Sorted(maps.Keys(e.Reasons))
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d %s", e.Reasons[k], k))
	}
	return fmt.Sprintf("no node fits (%d checked: %s)", e.Nodes, strings.Join(parts, ", "))
}

// Place picks a node and GPUs for one instance. It spreads replicas across nodes (fewest
// replicas of the deployment first), then packs (the node with the fewest free GPUs that
// still fit, so whole nodes stay free for large replicas), then goes by node id so the
// choice is deterministic. On the chosen node it takes the lowest free GPU indices.
func Place(nodes []Node, req Request) (Choice, error) {
	type fit struct {
		node *Node
		gpus []uint32
		free int
	}
	// better orders fits: not avoided, fewest replicas of the deployment, then the tightest
	// fit (fewest suitable GPUs free), then the node id. It is a total order, so the best
	// fit is found in one pass, without sorting thousands of nodes.
	better := func(a, b fit) bool {
		if a.node.Avoid != b.node.Avoid {
			return !a.node.Avoid
		}
		if a.node.Replicas != b.node.Replicas {
			return a.node.Replicas < b.node.Replicas
		}
		if a.free != b.free {
			return a.free < b.free
		}
		return a.node.ID < b.node.ID
	}
	var best fit
	nf := &NoFitError{Nodes: len(nodes), Reasons: map[string]int{}}
	w := &whys{req: req}
	// Two GPU buffers: the best fit's, and the one the next node is checked into.
	var scratch, kept []uint32
	for i := range nodes {
		n := &nodes[i]
		reason, gpus, free := check(n, req, scratch[:0], w)
		if reason != "" {
			nf.Reasons[reason]++
			continue
		}
		if f := (fit{n, gpus, free}); best.node == nil || better(f, best) {
			best = f
			scratch, kept = kept, gpus[:cap(gpus)]
		} else {
			scratch = gpus
		}
	}
	if best.node == nil {
		return Choice{}, nf
	}
	return Choice{NodeID: best.node.ID, GPUs: slices.Clone(best.gpus)}, nil
}

// whys formats the reasons a node cannot take req once per Place, not once per node: at
// 10,000 nodes and a node selector, formatting was most of a placement's allocations.
type whys struct {
	req           Request
	profile, gpus string
	selector      map[string]string
}

func (w *whys) noProfile() string {
	if w.profile == "" {
		w.profile = fmt.Sprintf("without profile %q in their catalog", w.req.Profile)
	}
	return w.profile
}

func (w *whys) noMatch(k string) string {
	if r, ok := w.selector[k]; ok {
		return r
	}
	if w.selector == nil {
		w.selector = map[string]string{}
	}
	r := fmt.Sprintf("not matching the node selector %s=%s", k, w.req.Selector[k])
	w.selector[k] = r
	return r
}

func (w *whys) fewGPUs() string {
	if w.gpus == "" {
		if w.req.GPUMemoryMiB > 0 {
			w.gpus = fmt.Sprintf("with fewer than %d free healthy GPUs of %d MiB free memory", w.req.GPUs, w.req.GPUMemoryMiB)
		} else {
			w.gpus = fmt.Sprintf("with fewer than %d free healthy GPUs", w.req.GPUs)
		}
	}
	return w.gpus
}

// check says why n cannot take the request ("" if it can), and if it can, which GPUs (in
// buf, appended to) and how many suitable GPUs it has free.
func check(n *Node, req Request, buf []uint32, w *whys) (reason string, gpus []uint32, free int) {
	if !n.Connected {
		return "not connected", buf, 0
	}
	if n.Cordoned {
		return "cordoned", buf, 0
	}
	if !slices.Contains(n.Profiles, req.Profile) {
		return w.noProfile(), buf, 0
	}
	for k, v := range req.Selector {
		if got, ok := n.Labels[k]; !ok || got != v {
			return w.noMatch(k), buf, 0
		}
	}
	if req.GPUs == 0 {
		return "", buf, 0
	}
	gpus = buf
	for _, g := range n.GPUs {
		if g.Busy || !g.Healthy || g.FreeMiB() < req.GPUMemoryMiB {
			continue
		}
		gpus = append(gpus, g.Index)
	}
	if len(gpus) < req.GPUs {
		return w.fewGPUs(), gpus, 0
	}
	slices.Sort(gpus)
	return "", gpus[:req.GPUs], len(gpus)
}
