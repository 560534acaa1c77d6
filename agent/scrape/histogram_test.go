package scrape

import (
	"math"
	"testing"
)

func TestQuantile(t *testing.T) {
	inf := math.Inf(1)
	tests := []struct {
		name   string
		bounds []float64
		cum    []float64
		q      float64
		want   float64
	}{
		// Ranks worked out by hand; see Prometheus' bucketQuantile.
		{name: "first bucket starts at 0", bounds: []float64{1, 2, inf}, cum: []float64{4, 4, 4}, q: 0.5, want: 0.5},
		{name: "inside a middle bucket", bounds: []float64{1, 2, inf}, cum: []float64{2, 6, 6}, q: 0.5, want: 1.25},
		{name: "rank on a bucket edge", bounds: []float64{1, 2, inf}, cum: []float64{3, 6, 6}, q: 0.5, want: 1},
		{name: "in +Inf: largest finite bound", bounds: []float64{1, 2, inf}, cum: []float64{0, 1, 10}, q: 0.95, want: 2},
		{name: "empty", bounds: []float64{1, 2, inf}, cum: []float64{0, 0, 0}, q: 0.5, want: 0},
		{name: "only +Inf", bounds: []float64{inf}, cum: []float64{5}, q: 0.5, want: 0},
		{name: "negative first bound", bounds: []float64{-1, 2, inf}, cum: []float64{5, 5, 5}, q: 0.5, want: 0},
		{name: "-Inf below +Inf", bounds: []float64{math.Inf(-1), inf}, cum: []float64{0, 5}, q: 0.5, want: 0},
		{name: "huge bounds do not overflow to Inf", bounds: []float64{-math.MaxFloat64, math.MaxFloat64, inf}, cum: []float64{0, 2, 2}, q: 0.5, want: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := &histogram{bounds: tc.bounds, cum: tc.cum, count: tc.cum[len(tc.cum)-1]}
			if got := h.quantile(tc.q); math.Abs(got-tc.want) > 1e-12 {
				t.Errorf("quantile(%v) = %v, want %v", tc.q, got, tc.want)
			}
		})
	}
}

func TestMergeHistogramsUnevenLayouts(t *testing.T) {
	inf := math.Inf(1)
	a := &histogram{bounds: []float64{1, 2, inf}, cum: []float64{1, 3, 4}, count: 4}
	b := &histogram{bounds: []float64{1.5, inf}, cum: []float64{2, 2}, count: 2}
	got := mergeHistograms([]*histogram{a, b})
	// At 1.5, a counts what it had at 1 (1); at 1 and 2, b what it had at or below them.
	wantBounds := []float64{1, 1.5, 2, inf}
	wantCum := []float64{1, 3, 5, 6}
	for i := range wantBounds {
		if got.bounds[i] != wantBounds[i] || got.cum[i] != wantCum[i] {
			t.Fatalf("merged %v %v, want %v %v", got.bounds, got.cum, wantBounds, wantCum)
		}
	}
	if got.count != 6 {
		t.Errorf("count %v, want 6", got.count)
	}
}
