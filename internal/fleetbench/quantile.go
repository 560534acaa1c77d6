package fleetbench

import (
	"math"
	"slices"
	"time"
)

// Latency summarises a set of timed samples, in milliseconds.
type Latency struct {
	N     int     `json:"n"`
	P50Ms float64 `json:"p50_ms"`
	P99Ms float64 `json:"p99_ms"`
	MaxMs float64 `json:"max_ms"`
}

// Summarize is the p50, p99 and max of samples; the zero Latency when there are none.
func Summarize(samples []time.Duration) Latency {
	if len(samples) == 0 {
		return Latency{}
	}
	ms := make([]float64, len(samples))
	for i, d := range samples {
		ms[i] = float64(d) / float64(time.Millisecond)
	}
	slices.Sort(ms)
	return Latency{N: len(ms), P50Ms: Percentile(ms, 50), P99Ms: Percentile(ms, 99), MaxMs: ms[len(ms)-1]}
}

// Percentile is the nearest-rank p-th percentile of sorted: the smallest sample that at
// least p percent of the samples are at or below. Nearest rank, not interpolation, so that
// with 20 trials the p99 is the worst trial rather than a value no trial had.
func Percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}
