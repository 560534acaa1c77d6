package window

import (
	"math"
	"testing"
)

func TestMergeSummaries(t *testing.T) {
	a := Summary{P50: 0.2, P95: 1, Count: 100}
	if m := MergeSummaries(a, Summary{}); m != a {
		t.Fatalf("merge with an empty summary gave %+v, want %+v", m, a)
	}
	if m := MergeSummaries(Summary{}, a); m != a {
		t.Fatalf("merge of an empty summary gave %+v, want %+v", m, a)
	}
	m := MergeSummaries(a, a)
	if m.Count != 200 || math.Abs(m.P50-0.2) > 1e-3 || math.Abs(m.P95-1) > 1e-2 {
		t.Fatalf("merge of a summary with itself gave %+v, want p50 0.2, p95 1, count 200", m)
	}
	// A slow stream of 100 requests and a fast one of 900: the mixture's median is the fast
	// one's, its p95 between the two.
	m = MergeSummaries(Summary{P50: 4, P95: 8, Count: 100}, Summary{P50: 0.1, P95: 0.3, Count: 900})
	if m.Count != 1000 || m.P50 > 0.2 || m.P95 < 0.3 || m.P95 > 8 {
		t.Fatalf("mixture %+v", m)
	}
}
