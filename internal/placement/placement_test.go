package placement

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func gpus(n int, busy ...uint32) []GPU {
	out := make([]GPU, n)
	for i := range out {
		out[i] = GPU{Index: uint32(i), MemoryTotalMiB: 81920, Healthy: true}
	}
	for _, b := range busy {
		out[b].Busy = true
	}
	return out
}

func node(id string, g []GPU, mods ...func(*Node)) Node {
	n := Node{ID: id, Connected: true, Profiles: []string{"llm"}, GPUs: g, Labels: map[string]string{"gpu": "a100"}}
	for _, m := range mods {
		m(&n)
	}
	return n
}

func u64(v uint64) *uint64 { return &v }

func TestPlace(t *testing.T) {
	req := Request{Profile: "llm", GPUs: 1, GPUMemoryMiB: 20000}
	tests := []struct {
		name    string
		nodes   []Node
		req     Request
		want    Choice
		wantErr string
	}{
		{"lowest free gpu", []Node{node("a", gpus(4, 0, 1))}, req, Choice{"a", []uint32{2}}, ""},
		{"spread before pack", []Node{node("a", gpus(8), func(n *Node) { n.Replicas = 1 }), node("b", gpus(8))}, req, Choice{"b", []uint32{0}}, ""},
		{"pack among equals", []Node{node("a", gpus(8)), node("b", gpus(8, 0, 1, 2, 3, 4, 5))}, req, Choice{"b", []uint32{6}}, ""},
		{"avoid failing node unless alone", []Node{node("a", gpus(8), func(n *Node) { n.Avoid = true }), node("b", gpus(8), func(n *Node) { n.Replicas = 3 })}, req, Choice{"b", []uint32{0}}, ""},
		{"avoided node still used when alone", []Node{node("a", gpus(8), func(n *Node) { n.Avoid = true })}, req, Choice{"a", []uint32{0}}, ""},
		{"multi gpu", []Node{node("a", gpus(4, 1))}, Request{Profile: "llm", GPUs: 2}, Choice{"a", []uint32{0, 2}}, ""},
		{"memory from samples", []Node{node("a", []GPU{{Index: 0, MemoryTotalMiB: 81920, MemoryUsedMiB: u64(70000), Healthy: true}, {Index: 1, MemoryTotalMiB: 81920, MemoryUsedMiB: u64(1000), Healthy: true}})}, req, Choice{"a", []uint32{1}}, ""},
		{"cpu only", []Node{node("a", nil)}, Request{Profile: "llm"}, Choice{"a", nil}, ""},
		{"unhealthy gpu skipped", []Node{node("a", []GPU{{Index: 0, MemoryTotalMiB: 81920}, {Index: 1, MemoryTotalMiB: 81920, Healthy: true}})}, req, Choice{"a", []uint32{1}}, ""},
		{"nothing fits, reasons counted", []Node{
			node("a", gpus(8), func(n *Node) { n.Cordoned = true }),
			node("b", gpus(8), func(n *Node) { n.Connected = false }),
			node("c", gpus(8), func(n *Node) { n.Profiles = nil }),
			node("d", gpus(8), func(n *Node) { n.Labels = nil }),
			node("e", gpus(2, 0, 1)),
		}, req, Choice{}, `no node fits (5 checked: 1 cordoned, 1 not connected, 1 not matching the node selector gpu=a100, 1 with fewer than 1 free healthy GPUs of 20000 MiB free memory, 1 without profile "llm" in their catalog)`},
		{"no nodes", nil, req, Choice{}, "no nodes are known"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.req
			if tc.name != "cpu only" && tc.name != "multi gpu" {
				r.Selector = map[string]string{"gpu": "a100"}
			}
			got, err := Place(tc.nodes, r)
			if tc.wantErr != "" {
				var nf *NoFitError
				if !errors.As(err, &nf) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}
