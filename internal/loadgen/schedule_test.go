package loadgen

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/llmscaler/llmscaler/internal/trace"
)

func TestParseSchedule(t *testing.T) {
	tests := []struct {
		name string
		spec string
		end  time.Duration
		want []Point
	}{
		{name: "constant", spec: "0s:5", want: []Point{{At: 0, From: 5, To: 5}}},
		{name: "steps", spec: "0s:2, 60s:10 ,2m:0.5", want: []Point{
			{At: 0, From: 2, To: 2}, {At: time.Minute, From: 10, To: 10}, {At: 2 * time.Minute, From: 0.5, To: 0.5}}},
		{name: "ramp between points", spec: "0:1->9,10s:9", want: []Point{
			{At: 0, From: 1, To: 9}, {At: 10 * time.Second, From: 9, To: 9}}},
		{name: "last ramp ends with the run", spec: "0s:2,60s:10,120s:10->2", end: 180 * time.Second, want: []Point{
			{At: 0, From: 2, To: 2}, {At: time.Minute, From: 10, To: 10}, {At: 2 * time.Minute, From: 10, To: 2}}},
		{name: "late start", spec: "30s:4", want: []Point{{At: 30 * time.Second, From: 4, To: 4}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ParseSchedule(tc.spec, tc.end)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, s.Points()); diff != "" {
				t.Errorf("points (-want +got):\n%s", diff)
			}
			// String gives back a spec that parses to the same points.
			again, err := ParseSchedule(s.String(), tc.end)
			if err != nil || !cmp.Equal(again.Points(), s.Points()) {
				t.Errorf("String() %q does not parse back: %v", s.String(), err)
			}
		})
	}
}

func TestParseScheduleErrors(t *testing.T) {
	tests := []struct {
		spec string
		end  time.Duration
		want string
	}{
		{spec: "", want: "empty schedule"},
		{spec: "5", want: `point 1 "5": want OFFSET:RATE or OFFSET:R1->R2`},
		{spec: "0s:2,ten:3", want: `point 2 "ten:3": offset "ten" is not a duration`},
		{spec: "0s:abc", want: `point 1 "0s:abc": rate "abc" is not a number`},
		{spec: "0s:-1", want: `point 1 "0s:-1": rate -1 is negative`},
		{spec: "0s:1->", want: `point 1 "0s:1->": rate "" is not a number`},
		{spec: "0s:NaN", want: `rate "NaN" is not a number`},
		{spec: "-5s:1", want: "offset -5s is negative"},
		{spec: "0s:1,60s:2,30s:3", want: `point 3 "30s:3": offset 30s is not after the previous point's 1m0s`},
		{spec: "0s:1,0s:2", want: "is not after"},
		{spec: "0s:1,60s:1->5", want: "the last point ramps 1->5 from 1m0s but has no end"},
		{spec: "0s:1,60s:1->5", end: time.Minute, want: "has no end"},
		{spec: "0s:1,,5s:2", want: `point 2 "": want OFFSET:RATE`},
	}
	for _, tc := range tests {
		t.Run(tc.spec, func(t *testing.T) {
			_, err := ParseSchedule(tc.spec, tc.end)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestScheduleRate(t *testing.T) {
	s, err := ParseSchedule("10s:2,20s:10,30s:10->2", 40*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		at   time.Duration
		want float64
	}{
		{0, 0}, {9 * time.Second, 0}, {10 * time.Second, 2}, {19 * time.Second, 2}, {20 * time.Second, 10},
		{30 * time.Second, 10}, {35 * time.Second, 6}, {39 * time.Second, 2.8}, {40 * time.Second, 0}, {time.Hour, 0},
	} {
		if got := s.Rate(tc.at); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("Rate(%v) = %g, want %g", tc.at, got, tc.want)
		}
	}
	// 10 s at 2, 10 s at 10, and a ramp from 10 to 2 over 10 s: 20 + 100 + 60.
	if got := s.expected(0, time.Hour); math.Abs(got-180) > 1e-9 {
		t.Errorf("expected arrivals %g, want 180", got)
	}
	if got := s.meanRate(30*time.Second, 40*time.Second); math.Abs(got-6) > 1e-9 {
		t.Errorf("mean rate over the ramp %g, want 6", got)
	}
}

// The Poisson draws follow the schedule, ramps included: the count in each part is within
// five standard deviations of its expectation (the seed is fixed, so this never flakes).
func TestPoissonFollowsSchedule(t *testing.T) {
	s, err := ParseSchedule("0s:200,10s:0,20s:0->400,30s:50", 40*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	src := newPoissonSource(s, 42, 10, 20)
	var arrivals []Arrival
	for {
		a, ok := src.next()
		if !ok || a.At >= 40*time.Second {
			break
		}
		if a.PromptTokens != 10 || a.OutputTokens != 20 {
			t.Fatalf("lengths %d/%d, want 10/20", a.PromptTokens, a.OutputTokens)
		}
		if len(arrivals) > 0 && a.At < arrivals[len(arrivals)-1].At {
			t.Fatalf("arrival %v before the previous one", a.At)
		}
		arrivals = append(arrivals, a)
	}
	rs := &replaySource{arrivals: arrivals}
	for _, w := range [][2]time.Duration{{0, 10 * time.Second}, {10 * time.Second, 20 * time.Second},
		{20 * time.Second, 25 * time.Second}, {25 * time.Second, 30 * time.Second}, {30 * time.Second, 40 * time.Second}} {
		want := s.expected(w[0], w[1])
		got := rs.meanRate(w[0], w[1]) * (w[1] - w[0]).Seconds()
		if math.Abs(got-want) > 5*math.Sqrt(want)+0.5 {
			t.Errorf("%v-%v: %g arrivals, want about %g", w[0], w[1], got, want)
		}
	}

	// The same seed gives the same arrivals; another seed does not.
	again, other := newPoissonSource(s, 42, 10, 20), newPoissonSource(s, 43, 10, 20)
	differs := false
	for i := range 100 {
		a, _ := again.next()
		b, _ := other.next()
		if a != arrivals[i] {
			t.Fatalf("arrival %d with the same seed: %v, then %v", i, arrivals[i], a)
		}
		differs = differs || b != a
	}
	if !differs {
		t.Error("seeds 42 and 43 gave the same arrivals")
	}
}

// A schedule whose rate falls to zero for ever ends the arrivals.
func TestPoissonEnds(t *testing.T) {
	s, err := ParseSchedule("0s:100,1s:0", 0)
	if err != nil {
		t.Fatal(err)
	}
	src := newPoissonSource(s, 1, 1, 1)
	n := 0
	for {
		a, ok := src.next()
		if !ok {
			break
		}
		if a.At >= time.Second {
			t.Fatalf("arrival at %v, after the rate fell to 0", a.At)
		}
		n++
	}
	if n < 50 || n > 150 {
		t.Errorf("%d arrivals in a second at 100/s", n)
	}
}

func TestRateSeriesSchedule(t *testing.T) {
	pts := []trace.RatePoint{{Start: 0, RPS: 1}, {Start: 600 * time.Second, RPS: 3}, {Start: 1200 * time.Second, RPS: 2}}
	tests := []struct {
		name  string
		scale float64
		start time.Duration
		want  []Point
	}{
		{name: "as is", scale: 1, want: []Point{{0, 1, 1}, {600 * time.Second, 3, 3}, {1200 * time.Second, 2, 2}}},
		{name: "ten times faster", scale: 10, want: []Point{{0, 10, 10}, {60 * time.Second, 30, 30}, {120 * time.Second, 20, 20}}},
		{name: "from inside the second window", scale: 2, start: 900 * time.Second,
			want: []Point{{0, 6, 6}, {150 * time.Second, 4, 4}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, RateSeriesSchedule(pts, tc.scale, tc.start).Points()); diff != "" {
				t.Errorf("points (-want +got):\n%s", diff)
			}
		})
	}
}
