package fleetbench

import (
	"math"
	"testing"
	"time"
)

func TestPercentileIsNearestRank(t *testing.T) {
	ten := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, tc := range []struct {
		name   string
		sorted []float64
		p      float64
		want   float64
	}{
		{"median of ten is the fifth", ten, 50, 5},
		{"p99 of ten is the worst", ten, 99, 10},
		{"p90 of ten is the ninth", ten, 90, 9},
		{"p0 is the smallest", ten, 0, 1},
		{"one sample", []float64{7}, 99, 7},
		{"p99 of 200 leaves out the two worst", ramp(200), 99, 198},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Percentile(tc.sorted, tc.p); got != tc.want {
				t.Errorf("Percentile(%v) = %v, want %v", tc.p, got, tc.want)
			}
		})
	}
	if !math.IsNaN(Percentile(nil, 50)) {
		t.Error("Percentile of no samples should be NaN")
	}
}

func ramp(n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = float64(i + 1)
	}
	return out
}

func TestSummarizeSortsAndConvertsToMilliseconds(t *testing.T) {
	got := Summarize([]time.Duration{30 * time.Millisecond, 10 * time.Millisecond, 20 * time.Millisecond, 1500 * time.Microsecond})
	want := Latency{N: 4, P50Ms: 10, P99Ms: 30, MaxMs: 30}
	if got != want {
		t.Errorf("Summarize = %+v, want %+v", got, want)
	}
	if (Summarize(nil) != Latency{}) {
		t.Error("Summarize(nil) should be the zero Latency")
	}
}
