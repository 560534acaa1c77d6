package sim

import (
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/llmscaler/llmscaler/internal/trace"
)

// oneWindowClient is a client with one window of DispersionWindow at rps, then a window of
// nothing that ends it.
func oneWindowClient(name string, p trace.Pattern, shape, rps float64) trace.Client {
	return trace.Client{Name: name, Windows: []trace.ClientWindow{
		{Start: 0, RPS: rps, Pattern: p, Shape: shape, Scale: 1},
		{Start: DispersionWindow},
	}}
}

func sortedByArrival(reqs []trace.Request) bool {
	return slices.IsSortedFunc(reqs, func(a, b trace.Request) int { return cmpDur(a.At, b.At) })
}

// gapCV is the coefficient of variation of the gaps between reqs' arrivals.
func gapCV(reqs []trace.Request) float64 {
	var s, ss float64
	n := float64(len(reqs) - 1)
	for i := 1; i < len(reqs); i++ {
		g := (reqs[i].At - reqs[i-1].At).Seconds()
		s += g
		ss += g * g
	}
	mean := s / n
	return math.Sqrt(ss/n-mean*mean) / mean
}

// Each window holds its rate x scale x length requests, rounded down or up: never further.
func TestFromClientsWindowCounts(t *testing.T) {
	rates := []float64{0, 0.001, 0.4, 1.5, 7, 33.3}
	var clients []trace.Client
	for i, p := range []trace.Pattern{trace.PatternGamma, trace.PatternWeibull} {
		c := trace.Client{Name: p.String()}
		for j, r := range rates {
			c.Windows = append(c.Windows, trace.ClientWindow{
				Start: time.Duration(j) * DispersionWindow, RPS: r + float64(i), Pattern: p, Shape: 0.3 + float64(j)/2, Scale: 1,
			})
		}
		clients = append(clients, c)
	}
	const scale = 0.37
	w, err := FromClients("two", clients, scale, FixedLengths(100, 10), 5, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !sortedByArrival(w.Requests) {
		t.Fatal("requests not sorted by arrival")
	}
	for _, c := range clients {
		counts := make([]int, len(c.Windows))
		single, err := FromClients("one", []trace.Client{c}, scale, FixedLengths(100, 10), 5, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range single.Requests {
			counts[r.At/DispersionWindow]++
		}
		for j, win := range c.Windows {
			want := win.RPS * scale * DispersionWindow.Seconds()
			if got := float64(counts[j]); got < math.Floor(want) || got > math.Ceil(want) {
				t.Errorf("%s window %d: %v requests, want %v rounded", c.Name, j, got, want)
			}
		}
	}
	for _, r := range w.Requests {
		if r.PromptTokens != 100 || r.OutputTokens != 10 {
			t.Fatalf("lengths %d/%d, want 100/10", r.PromptTokens, r.OutputTokens)
		}
	}
}

// A rate far below one request a window still makes its mean number of requests.
func TestFromClientsSmallRates(t *testing.T) {
	c := trace.Client{Name: "rare"}
	for j := range 2016 {
		c.Windows = append(c.Windows, trace.ClientWindow{Start: time.Duration(j) * DispersionWindow, RPS: 0.001, Pattern: trace.PatternGamma, Shape: 0.5, Scale: 1})
	}
	w, err := FromClients("rare", []trace.Client{c}, 1, FixedLengths(1, 1), 9, 0)
	if err != nil {
		t.Fatal(err)
	}
	// 2016 windows of 0.6 requests, each 0 or 1 (variance 0.24).
	mean, sd := 2016*0.6, math.Sqrt(2016*0.24)
	if got := float64(len(w.Requests)); math.Abs(got-mean) > 5*sd {
		t.Errorf("%v requests, want about %v", got, mean)
	}
}

// The gaps within a window keep the distribution's coefficient of variation.
func TestFromClientsGapCV(t *testing.T) {
	tests := []struct {
		name    string
		pattern trace.Pattern
		shape   float64
		want    float64
	}{
		{"gamma 0.25", trace.PatternGamma, 0.25, 2},
		{"gamma 1 (Poisson)", trace.PatternGamma, 1, 1},
		{"gamma 4", trace.PatternGamma, 4, 0.5},
		{"gamma 100", trace.PatternGamma, 100, 0.1},
		{"weibull 0.5", trace.PatternWeibull, 0.5, math.Sqrt(5)}, // sqrt(G(1+2/c)/G(1+1/c)^2 - 1)
		{"weibull 1 (Poisson)", trace.PatternWeibull, 1, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := oneWindowClient(tc.name, tc.pattern, tc.shape, 50) // 30,000 requests
			w, err := FromClients("cv", []trace.Client{c}, 1, FixedLengths(1, 1), 11, 0)
			if err != nil {
				t.Fatal(err)
			}
			if got := gapCV(w.Requests); math.Abs(got-tc.want) > 0.08*tc.want {
				t.Errorf("gap CV %.3f, want %.3f", got, tc.want)
			}
		})
	}
}

// A Gamma of shape 0.007 (CV 12, as in m-mid) spans more than a float64 does; its gaps still
// come out finite, sorted and inside the window, most of them zero.
func TestFromClientsExtremeShape(t *testing.T) {
	for _, p := range []trace.Pattern{trace.PatternGamma, trace.PatternWeibull} {
		c := oneWindowClient(p.String(), p, 0.007, 10)
		w, err := FromClients("extreme", []trace.Client{c}, 1, FixedLengths(1, 1), 3, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(w.Requests) != 6000 || !sortedByArrival(w.Requests) || w.Requests[0].At < 0 || w.Duration() >= DispersionWindow {
			t.Errorf("%s: %d requests over [%v, %v]", p, len(w.Requests), w.Requests[0].At, w.Duration())
		}
	}
}

func TestFromClientsDeterministicAndUntil(t *testing.T) {
	c := trace.Client{Name: "c"}
	for j := range 12 {
		c.Windows = append(c.Windows, trace.ClientWindow{Start: time.Duration(j) * DispersionWindow, RPS: 2, Pattern: trace.PatternWeibull, Shape: 0.6, Scale: 1})
	}
	clients := []trace.Client{c, c}
	l := FixedLengths(5, 5)
	all, err := FromClients("c", clients, 1, l, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := FromClients("c", clients, 1, l, 1, 0)
	if !slices.Equal(all.Requests, again.Requests) {
		t.Error("two workloads with one seed differ")
	}
	other, _ := FromClients("c", clients, 1, l, 2, 0)
	if slices.Equal(all.Requests, other.Requests) {
		t.Error("workloads with different seeds are the same")
	}
	// Two clients with one trace draw different arrivals.
	if n := len(all.Requests); n < 2 || all.Requests[0].At == all.Requests[1].At {
		t.Errorf("the two clients' first arrivals are both at %v", all.Requests[0].At)
	}
	// until stops generating and gives the start of the whole.
	until := 25 * time.Minute
	part, err := FromClients("c", clients, 1, l, 1, until)
	if err != nil {
		t.Fatal(err)
	}
	all.Truncate(until)
	if len(part.Requests) == 0 || !slices.Equal(part.Requests, all.Requests) {
		t.Errorf("until %v: %d requests, not the first %d of the whole", until, len(part.Requests), len(all.Requests))
	}
}

func TestFromClientsRejects(t *testing.T) {
	good := oneWindowClient("good", trace.PatternGamma, 1, 1)
	bad := func(f func(*trace.ClientWindow)) []trace.Client {
		c := oneWindowClient("bad", trace.PatternGamma, 1, 1)
		f(&c.Windows[0])
		return []trace.Client{good, c}
	}
	tests := []struct {
		name    string
		clients []trace.Client
		scale   float64
		until   time.Duration
	}{
		{"no clients", nil, 1, 0},
		{"zero scale", []trace.Client{good}, 0, 0},
		{"NaN scale", []trace.Client{good}, math.NaN(), 0},
		{"infinite scale", []trace.Client{good}, math.Inf(1), 0},
		{"negative until", []trace.Client{good}, 1, -time.Second},
		{"negative rate", bad(func(w *trace.ClientWindow) { w.RPS = -1 }), 1, 0},
		{"NaN rate", bad(func(w *trace.ClientWindow) { w.RPS = math.NaN() }), 1, 0},
		{"no pattern", bad(func(w *trace.ClientWindow) { w.Pattern = trace.PatternNone }), 1, 0},
		{"zero shape", bad(func(w *trace.ClientWindow) { w.Shape = 0 }), 1, 0},
		{"unordered", bad(func(w *trace.ClientWindow) { w.Start = DispersionWindow }), 1, 0},
		{"too many requests", []trace.Client{good}, 1e8, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := FromClients("x", tc.clients, tc.scale, FixedLengths(1, 1), 1, tc.until); err == nil {
				t.Error("accepted")
			}
		})
	}
}

// ../../../shared/traces/servegen_m-mid, beside the repository.
const mMidDir = "../../../shared/traces/servegen_m-mid"

func loadMMid(tb testing.TB) []trace.Client {
	tb.Helper()
	if _, err := os.Stat(mMidDir); err != nil {
		tb.Skipf("the ServeGen m-mid traces are not at %s (%v): skipping the real-data check", filepath.Clean(mMidDir), err)
	}
	clients, err := trace.LoadClients(mMidDir)
	if err != nil {
		tb.Fatal(err)
	}
	return clients
}

// ratesBefore is the windows of rates that start before until.
func ratesBefore(rates []trace.RatePoint, until time.Duration) []trace.RatePoint {
	i, _ := slices.BinarySearchFunc(rates, until, func(p trace.RatePoint, t time.Duration) int { return cmpDur(p.Start, t) })
	return rates[:i]
}

// scaleTo is the rate scale that makes rates' mean over [0, until) total rps.
func scaleTo(rates []trace.RatePoint, until time.Duration, rps float64) float64 {
	var sum float64
	n := 0
	for _, p := range rates {
		if p.Start < until {
			sum += p.RPS
			n++
		}
	}
	return rps / (sum / float64(n))
}

// Per-client m-mid arrivals are far burstier than Poisson arrivals at the same rates, and
// hold the rates they are scaled to.
func TestFromClientsMMid(t *testing.T) {
	clients := loadMMid(t)
	const until, total = 3 * time.Hour, 20.0
	rates := trace.ClientRates(clients)
	scale := scaleTo(rates, until, total)
	w, err := FromClients("m-mid", clients, scale, FixedLengths(512, 128), 1, until)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := float64(len(w.Requests)), total*until.Seconds(); math.Abs(got-want) > 0.01*want {
		t.Errorf("%v requests, want about %v", got, want)
	}
	if w.Duration() >= until || !sortedByArrival(w.Requests) {
		t.Errorf("arrivals end at %v, want sorted and before %v", w.Duration(), until)
	}
	p, err := FromRates("m-mid", ratesBefore(rates, until), scale, FixedLengths(512, 128), 1)
	if err != nil {
		t.Fatal(err)
	}
	p.Truncate(until)
	for _, tc := range []struct {
		bin    time.Duration
		factor float64 // at least this many times Poisson's dispersion
	}{{time.Second, 2.5}, {10 * time.Second, 4}} {
		bin := tc.bin
		cb, err := MeasureBurstiness(w, bin)
		if err != nil {
			t.Fatal(err)
		}
		pb, err := MeasureBurstiness(p, bin)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%v bins: clients %+v; Poisson %+v", bin, cb, pb)
		if pb.WindowDispersion > 1.2 || cb.WindowDispersion < tc.factor*pb.WindowDispersion {
			t.Errorf("%v bins: dispersion within windows %.2f for clients, %.2f for Poisson; want Poisson about 1 and clients at least %g times that",
				bin, cb.WindowDispersion, pb.WindowDispersion, tc.factor)
		}
	}
}

// BenchmarkFromClients generates one day of the m-mid clients scaled to 20 req/s in all
// (about 1.7 M requests), and reports the burstiness of the last run against Poisson
// arrivals at the same rates.
func BenchmarkFromClients(b *testing.B) {
	clients := loadMMid(b)
	const until, total = 24 * time.Hour, 20.0
	rates := trace.ClientRates(clients)
	scale := scaleTo(rates, until, total)
	l := FixedLengths(512, 128)
	var w *Workload
	for b.Loop() {
		var err error
		if w, err = FromClients("m-mid", clients, scale, l, 1, until); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(len(w.Requests)), "requests")
	p, err := FromRates("m-mid", ratesBefore(rates, until), scale, l, 1)
	if err != nil {
		b.Fatal(err)
	}
	p.Truncate(until)
	for _, m := range []struct {
		bin  time.Duration
		unit string
	}{{time.Second, "1s"}, {10 * time.Second, "10s"}, {time.Minute, "1m"}} {
		for _, v := range []struct {
			w    *Workload
			kind string
		}{{w, "clients"}, {p, "poisson"}} {
			bu, err := MeasureBurstiness(v.w, m.bin)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(bu.Dispersion, v.kind+"-disp-"+m.unit)
			b.ReportMetric(bu.WindowDispersion, v.kind+"-windisp-"+m.unit)
			b.ReportMetric(bu.PeakToMean, v.kind+"-peak/mean-"+m.unit)
			if m.bin == time.Second {
				b.ReportMetric(bu.GapCV, v.kind+"-gapCV")
			}
		}
	}
}
