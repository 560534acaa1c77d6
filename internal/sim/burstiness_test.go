package sim

import (
	"math"
	"testing"
	"time"

	"github.com/llmscaler/llmscaler/internal/trace"
)

func TestMeasureBurstiness(t *testing.T) {
	// 20 minutes at 50 req/s (a last window of nothing ends it).
	steady, err := FromRates("steady", []trace.RatePoint{{Start: 0, RPS: 50}, {Start: 20 * time.Minute, RPS: 0}}, 1, FixedLengths(1, 1), 4)
	if err != nil {
		t.Fatal(err)
	}
	// Rates that step between 10-minute windows: the dispersion sees the steps, the
	// dispersion within windows does not.
	var steps []trace.RatePoint
	for i, r := range []float64{10, 80, 20, 60} {
		steps = append(steps, trace.RatePoint{Start: time.Duration(i) * DispersionWindow, RPS: r})
	}
	stepped, err := FromRates("steps", steps, 1, FixedLengths(1, 1), 4)
	if err != nil {
		t.Fatal(err)
	}
	bursty, err := FromClients("bursty", []trace.Client{oneWindowClient("b", trace.PatternGamma, 0.04, 50)}, 1, FixedLengths(1, 1), 4, 0)
	if err != nil {
		t.Fatal(err)
	}
	near := func(got, want, tol float64) bool { return math.Abs(got-want) <= tol }
	tests := []struct {
		name  string
		w     *Workload
		check func(b Burstiness) bool
	}{
		// 1,200 one-second bins of Poisson(50): dispersion 1 +- 0.04 (one standard error).
		{"steady Poisson", steady, func(b Burstiness) bool {
			return near(b.Dispersion, 1, 0.15) && near(b.WindowDispersion, 1, 0.15) && near(b.GapCV, 1, 0.03) &&
				near(b.MeanPerBin, 50, 1) && b.PeakToMean > 1.2 && b.PeakToMean < 1.8
		}},
		// Rates 10 to 80: the counts' variance is mostly the steps'.
		{"stepped Poisson", stepped, func(b Burstiness) bool {
			return b.Dispersion > 10 && near(b.WindowDispersion, 1, 0.15)
		}},
		// Gamma gaps of CV 5 bunch arrivals: a renewal process reads about CV^2 = 25 over bins
		// holding many gaps.
		{"gamma CV 5", bursty, func(b Burstiness) bool { return near(b.WindowDispersion, 25, 10) && near(b.GapCV, 5, 1) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := MeasureBurstiness(tc.w, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(b) {
				t.Errorf("%+v", b)
			}
		})
	}
}

func TestMeasureBurstinessRejects(t *testing.T) {
	short := &Workload{Requests: []trace.Request{{At: 0}, {At: 500 * time.Millisecond}}}
	tests := []struct {
		name string
		w    *Workload
		bin  time.Duration
	}{
		{"zero bin", short, 0},
		{"negative bin", short, -time.Second},
		{"no requests", &Workload{}, time.Second},
		{"shorter than a bin", short, time.Second},
		{"too many bins", &Workload{Requests: []trace.Request{{At: 0}, {At: 24 * time.Hour}}}, time.Nanosecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := MeasureBurstiness(tc.w, tc.bin); err == nil {
				t.Error("accepted")
			}
		})
	}
}
