package sim

import (
	"math"
	"slices"
	"testing"
	"time"

	"github.com/llmscaler/llmscaler/internal/trace"
)

// arrivalsIn counts w's arrivals in [from, to).
func arrivalsIn(w *Workload, from, to time.Duration) int {
	n := 0
	for _, r := range w.Requests {
		if r.At >= from && r.At < to {
			n++
		}
	}
	return n
}

// Each shape's arrivals follow its definition: the arrivals over a stretch are within Poisson
// tolerance of the rate integrated over it, and the shape lasts as long as it says.
func TestShapes(t *testing.T) {
	const base = 20.0
	minutes := func(m float64) time.Duration { return time.Duration(m * float64(time.Minute)) }
	type probe struct {
		from, to time.Duration
		rps      float64 // the rate over [from, to), constant
	}
	tests := []struct {
		name     string
		duration time.Duration
		probes   []probe
	}{
		{"onoff", time.Hour, []probe{
			{0, minutes(3), base}, {minutes(3), minutes(5), 5 * base}, {minutes(5), minutes(8), base}, {minutes(58), minutes(60), 5 * base},
		}},
		{"flash", 40 * time.Minute, []probe{
			{0, minutes(10), base}, {minutes(10) + 10*time.Second, minutes(15) + 10*time.Second, 10 * base},
			{minutes(15) + 20*time.Second, minutes(40), base},
		}},
		{"ramp", 70 * time.Minute, []probe{
			{0, minutes(5), base}, {minutes(34.5), minutes(35.5), 3 * base}, {minutes(65), minutes(70), 5 * base},
		}},
		{"idle", time.Hour, []probe{
			{0, minutes(20), base}, {minutes(20), minutes(50), 0}, {minutes(50), minutes(60), base},
		}},
		{"heavytail", 30 * time.Minute, []probe{{0, minutes(30), base}}},
		{"diurnal", 24 * time.Hour, []probe{
			{0, minutes(5), base}, {minutes(715), minutes(725), 4 * base}, {6 * time.Hour, 6*time.Hour + minutes(1), 2.5 * base},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := base
			if tc.name == "diurnal" {
				b = base / 20 // a day at 2.5 x 20 req/s is 4 M requests: keep the test small
			}
			w, err := Shape(tc.name, b, FixedLengths(100, 10), 1)
			if err != nil {
				t.Fatal(err)
			}
			if d := w.Duration(); d > tc.duration || d < tc.duration-time.Minute {
				t.Errorf("lasts %v, want just under %v", d, tc.duration)
			}
			if !sortedByArrival(w.Requests) {
				t.Error("requests not sorted by arrival")
			}
			for _, p := range tc.probes {
				want := p.rps * b / base * (p.to - p.from).Seconds()
				got := float64(arrivalsIn(w, p.from, p.to))
				if math.Abs(got-want) > 4*math.Sqrt(want)+1 {
					t.Errorf("[%v, %v): %v arrivals, want about %.0f", p.from, p.to, got, want)
				}
				if mid := (p.from + p.to) / 2; tc.name != "diurnal" {
					if r, ok := ShapeRate(tc.name, b, mid); !ok || math.Abs(r-p.rps*b/base) > 1e-9 {
						t.Errorf("ShapeRate(%v) = %v, %v; want %v", mid, r, ok, p.rps*b/base)
					}
				}
			}
			if tc.name != "heavytail" && slices.ContainsFunc(w.Requests, func(r trace.Request) bool { return r.PromptTokens != 100 || r.OutputTokens != 10 }) {
				t.Error("lengths are not l's")
			}
		})
	}
}

// ShapeRate gives each shape's rate at chosen times, ramps and the sinusoid included.
func TestShapeRate(t *testing.T) {
	tests := []struct {
		name string
		at   time.Duration
		want float64 // x base
	}{
		{"onoff", 2 * time.Minute, 1},
		{"onoff", 4 * time.Minute, 5},
		{"onoff", 61 * time.Minute, 0},
		{"flash", 10*time.Minute + 5*time.Second, 5.5},
		{"flash", 12 * time.Minute, 10},
		{"flash", 15*time.Minute + 15*time.Second, 5.5},
		{"flash", 20 * time.Minute, 1},
		{"diurnal", 0, 1},
		{"diurnal", 6 * time.Hour, 2.5},
		{"diurnal", 12 * time.Hour, 4},
		{"diurnal", 18 * time.Hour, 2.5},
		{"ramp", 35 * time.Minute, 3},
		{"ramp", 68 * time.Minute, 5},
		{"idle", 30 * time.Minute, 0},
		{"idle", 55 * time.Minute, 1},
		{"heavytail", 29 * time.Minute, 1},
	}
	for _, tc := range tests {
		got, ok := ShapeRate(tc.name, 2, tc.at)
		if !ok || math.Abs(got-2*tc.want) > 1e-4 {
			t.Errorf("ShapeRate(%s, 2, %v) = %v, %v; want %v", tc.name, tc.at, got, ok, 2*tc.want)
		}
	}
	if _, ok := ShapeRate("nope", 1, 0); ok {
		t.Error("ShapeRate knows an unknown shape")
	}
}

// heavytail's prompts are mostly short with a long tail up to 32k tokens.
func TestHeavyTailLengths(t *testing.T) {
	w, err := Shape("heavytail", 20, FixedLengths(100, 10), 2) // 36,000 requests
	if err != nil {
		t.Fatal(err)
	}
	var prompts, outputs []int
	for _, r := range w.Requests {
		prompts = append(prompts, r.PromptTokens)
		outputs = append(outputs, r.OutputTokens)
	}
	slices.Sort(prompts)
	slices.Sort(outputs)
	q := func(s []int, p float64) int { return s[int(p*float64(len(s)-1))] }
	checks := []struct {
		what     string
		got      int
		low, top int
	}{
		{"prompt p50", q(prompts, 0.5), 370, 430},      // 400
		{"prompt p90", q(prompts, 0.9), 2400, 3100},    // 2,733
		{"prompt p99", q(prompts, 0.99), 10000, 17000}, // 13,100
		{"prompt max", prompts[len(prompts)-1], HeavyTailMaxPrompt, HeavyTailMaxPrompt},
		{"prompt min", prompts[0], 1, 20},
		{"output p50", q(outputs, 0.5), 120, 136},
		{"output max", outputs[len(outputs)-1], 1000, HeavyTailMaxOutput},
	}
	for _, c := range checks {
		if c.got < c.low || c.got > c.top {
			t.Errorf("%s: %d, want within [%d, %d]", c.what, c.got, c.low, c.top)
		}
	}
	if mean, _ := w.MeanLengths(); mean < 1100 || mean > 1350 {
		t.Errorf("mean prompt %.0f, want about 1,200", mean)
	}
}

func TestShapeRejectsAndRepeats(t *testing.T) {
	if _, err := Shape("seed", 1, FixedLengths(1, 1), 1); err == nil {
		t.Error("unknown shape accepted")
	}
	for _, bad := range []float64{0, -1, math.NaN(), math.Inf(1)} {
		if _, err := Shape("onoff", bad, FixedLengths(1, 1), 1); err == nil {
			t.Errorf("base rate %v accepted", bad)
		}
	}
	for _, name := range ShapeNames {
		if name == "diurnal" {
			continue // the longest; made the same way as the others
		}
		a, err := Shape(name, 1, FixedLengths(1, 1), 7)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := Shape(name, 1, FixedLengths(1, 1), 7)
		c, _ := Shape(name, 1, FixedLengths(1, 1), 8)
		if !slices.Equal(a.Requests, b.Requests) || slices.Equal(a.Requests, c.Requests) {
			t.Errorf("%s: not the same for one seed, or the same for two", name)
		}
	}
}
