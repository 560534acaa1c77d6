package sim

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"
)

// syntheticResult is a result with n one-second timeline points: a load wave, a latency NaN
// every seventh interval (no request), and a scaling event every 40 s alternating up and down.
func syntheticResult(policy string, n int) *Result {
	r := &Result{Policy: policy, SLOAttainment: 0.9, GPUHours: float64(n) / 3600 * 4}
	desired := 4
	for i := range n {
		wave := math.Sin(float64(i) / 60)
		p := TimelinePoint{
			Second:   float64(i + 1),
			Arrivals: 5 + int(5*wave),
			Queue:    max(0, int(30*wave)),
			Starting: i % 3,
			Ready:    desired,
			GPUUtil:  60 + 35*wave,
			TTFTMean: 1 + wave,
			E2EMean:  6 + 3*wave,
		}
		if i%7 == 0 {
			p.TTFTMean, p.E2EMean = math.NaN(), math.NaN()
		}
		if i%40 == 39 {
			p.Change = 2
			if i%80 == 79 {
				p.Change = -1
			}
			desired += p.Change
		}
		p.Desired = desired
		r.Timeline = append(r.Timeline, p)
	}
	return r
}

func readFile(t *testing.T, path string) *bytes.Reader {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.NewReader(b)
}

func pngSize(t *testing.T, path string) image.Config {
	t.Helper()
	cfg, err := png.DecodeConfig(readFile(t, path))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return cfg
}

// pixelsNear counts the pixels of the PNG at path within 40 (per channel, of 255) of c,
// in the top quarter of the image: the queue panel.
func pixelsNear(t *testing.T, path string, c color.RGBA) int {
	t.Helper()
	img, err := png.Decode(readFile(t, path))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	near := func(a uint32, b uint8) bool { return math.Abs(float64(a>>8)-float64(b)) <= 40 }
	n := 0
	bounds := img.Bounds()
	for y := bounds.Min.Y; y < bounds.Min.Y+bounds.Dy()/4; y++ {
		for x := bounds.Min.X; x < bounds.Max.X; x++ {
			r, g, b, _ := img.At(x, y).RGBA()
			if near(r, c.R) && near(g, c.G) && near(b, c.B) {
				n++
			}
		}
	}
	return n
}

func TestWritePlots(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "plots")
	empty := &Result{Policy: "empty", SLOAttainment: math.NaN(), GPUHours: math.Inf(1)}
	odd := &Result{Policy: "odd values", Timeline: []TimelinePoint{
		{Second: 1, GPUUtil: math.NaN(), TTFTMean: math.Inf(1), E2EMean: math.NaN()},
		{Second: math.NaN(), Queue: 3, GPUUtil: math.Inf(-1), TTFTMean: 2, E2EMean: math.Inf(1), Change: 1},
	}}
	results := []*Result{syntheticResult("threshold", 300), syntheticResult("slo/fast", 450), empty, odd}
	paths, err := WritePlots(dir, results, DefaultPlotThresholds(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}

	want := []string{"threshold.png", "slo_fast.png", "empty.png", "odd_values.png", "attainment_vs_gpu_hours.png"}
	for i := range want {
		want[i] = filepath.Join(dir, want[i])
	}
	if !slices.Equal(paths, want) {
		t.Fatalf("paths = %q, want %q", paths, want)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(want) {
		t.Errorf("dir holds %d files, want %d (no temporary files left)", len(entries), len(want))
	}
	for _, p := range paths {
		cfg := pngSize(t, p)
		minW, minH := 900, 1100 // 10 x 12 in at 96 dpi
		if filepath.Base(p) == "attainment_vs_gpu_hours.png" {
			minW, minH = 700, 500
		}
		if cfg.Width < minW || cfg.Height < minH || cfg.Width > 3*minW || cfg.Height > 3*minH {
			t.Errorf("%s is %dx%d, want about %dx%d", p, cfg.Width, cfg.Height, minW, minH)
		}
	}

	// The queue series is drawn: the queue panel of a figure with data has far more
	// queue-coloured pixels than the empty one's, whose only queue colour is its legend swatch.
	full, none := pixelsNear(t, paths[0], colQueue), pixelsNear(t, paths[2], colQueue)
	if full < none+500 {
		t.Errorf("queue-coloured pixels: %d with data, %d without; the series is not drawn", full, none)
	}
}

func TestWritePlotsRejects(t *testing.T) {
	for _, tc := range []struct {
		name    string
		results []*Result
	}{
		{"same policy twice", []*Result{{Policy: "a"}, {Policy: "a"}}},
		{"names collide once made safe", []*Result{{Policy: "a/b"}, {Policy: "a_b"}}},
		{"policy named like the attainment chart", []*Result{{Policy: "attainment_vs_gpu_hours"}}},
		{"no policy name", []*Result{{}}},
		{"nil result", []*Result{nil}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			paths, err := WritePlots(dir, tc.results, DefaultPlotThresholds(time.Second))
			if err == nil || len(paths) != 0 {
				t.Fatalf("WritePlots = %q, %v; want an error and nothing written", paths, err)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("dir holds %d files after an error", len(entries))
			}
		})
	}
}

func TestDownsample(t *testing.T) {
	nan := math.NaN()
	queue := []int{1, 7, 3, 2, 9, 9, 0, 4, 5, 6}
	ttft := []float64{1, 3, nan, nan, 2, nan, 4, 8, math.Inf(1), 5}
	var tl []TimelinePoint
	for i, q := range queue {
		tl = append(tl, TimelinePoint{
			Second: float64(60 * (i + 1)), Queue: q, Ready: i, Starting: 10 - i, Desired: 10 - i,
			GPUUtil: float64(10 * i), TTFTMean: ttft[i],
		})
	}
	got := downsample(tl, 5)
	if len(got) != 5 {
		t.Fatalf("%d buckets, want 5", len(got))
	}
	wantQueue := []int{7, 3, 9, 4, 6}
	wantReady := []int{1, 3, 5, 7, 9}
	wantDesired := []int{10, 8, 6, 4, 2}
	wantMinute := []float64{1.5, 3.5, 5.5, 7.5, 9.5}
	wantGPU := []float64{5, 25, 45, 65, 85}
	wantTTFT := []float64{2, nan, 2, 6, 5}
	for i, p := range got {
		if p.Queue != wantQueue[i] || p.Ready != wantReady[i] || p.Fleet != 10 || p.Desired != wantDesired[i] {
			t.Errorf("bucket %d: queue, ready, fleet, desired = %d, %d, %d, %d; want %d, %d, 10, %d",
				i, p.Queue, p.Ready, p.Fleet, p.Desired, wantQueue[i], wantReady[i], wantDesired[i])
		}
		if p.Minute != wantMinute[i] || p.GPUUtil != wantGPU[i] {
			t.Errorf("bucket %d: minute, gpu = %v, %v; want %v, %v", i, p.Minute, p.GPUUtil, wantMinute[i], wantGPU[i])
		}
		if !(p.TTFT == wantTTFT[i] || math.IsNaN(p.TTFT) && math.IsNaN(wantTTFT[i])) {
			t.Errorf("bucket %d: ttft = %v, want %v", i, p.TTFT, wantTTFT[i])
		}
	}

	if n := len(downsample(tl, 0)); n != len(tl) {
		t.Errorf("downsample(tl, 0) has %d points, want every point (%d)", n, len(tl))
	}
	if n := len(downsample(tl, 3)); n != 3 {
		t.Errorf("downsample(tl, 3) has %d points, want 3", n)
	}

	// A NaN latency is a gap in the line, not a zero.
	xys := series(downsample(tl, len(tl)), func(p plotPoint) float64 { return p.TTFT })
	if len(xys) != 6 {
		t.Errorf("TTFT series has %d points, want the 6 finite ones", len(xys))
	}
	for _, xy := range xys {
		if xy.Y == 0 {
			t.Errorf("TTFT series has a zero at minute %v", xy.X)
		}
	}
}

// BenchmarkWritePlots writes the figures of seven one-hour runs, as the simulator command
// does for its seven policies.
func BenchmarkWritePlots(b *testing.B) {
	var results []*Result
	for i := range 7 {
		results = append(results, syntheticResult("policy"+strconv.Itoa(i), 3600))
	}
	th := DefaultPlotThresholds(2 * time.Second)
	dir := b.TempDir()
	for b.Loop() {
		if _, err := WritePlots(dir, results, th); err != nil {
			b.Fatal(err)
		}
	}
}
