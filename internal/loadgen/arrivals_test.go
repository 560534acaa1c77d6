package loadgen

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/llmscaler/llmscaler/internal/trace"
)

// A replay compresses the trace's time by the scale and starts at the start offset.
func TestTraceArrivals(t *testing.T) {
	reqs := []trace.Request{
		{At: 0, PromptTokens: 100, OutputTokens: 10},
		{At: 1 * time.Second, PromptTokens: 200, OutputTokens: 0},
		{At: 3 * time.Second, PromptTokens: 300, OutputTokens: 30},
		{At: 7 * time.Second, PromptTokens: 400, OutputTokens: 40},
	}
	tests := []struct {
		name  string
		scale float64
		start time.Duration
		want  []Arrival
	}{
		{name: "as recorded", scale: 1, want: []Arrival{
			{0, 100, 10}, {time.Second, 200, 1}, {3 * time.Second, 300, 30}, {7 * time.Second, 400, 40}}},
		{name: "twice as fast", scale: 2, want: []Arrival{
			{0, 100, 10}, {500 * time.Millisecond, 200, 1}, {1500 * time.Millisecond, 300, 30}, {3500 * time.Millisecond, 400, 40}}},
		{name: "half as fast", scale: 0.5, want: []Arrival{
			{0, 100, 10}, {2 * time.Second, 200, 1}, {6 * time.Second, 300, 30}, {14 * time.Second, 400, 40}}},
		{name: "from 2s, 4x", scale: 4, start: 2 * time.Second, want: []Arrival{
			{250 * time.Millisecond, 300, 30}, {1250 * time.Millisecond, 400, 40}}},
		{name: "from the last request", scale: 1, start: 7 * time.Second, want: []Arrival{{0, 400, 40}}},
		{name: "past the end", scale: 1, start: 8 * time.Second, want: []Arrival{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, TraceArrivals(reqs, tc.scale, tc.start)); diff != "" {
				t.Errorf("arrivals (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReplayMeanRate(t *testing.T) {
	src := &replaySource{arrivals: []Arrival{{At: 0}, {At: 100 * time.Millisecond}, {At: 900 * time.Millisecond}, {At: 1500 * time.Millisecond}}}
	if got := src.meanRate(0, time.Second); got != 3 {
		t.Errorf("mean rate over the first second %g, want 3", got)
	}
	if got := src.meanRate(time.Second, 3*time.Second); got != 0.5 {
		t.Errorf("mean rate over 1-3 s %g, want 0.5", got)
	}
}
