package sim

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Figure geometry. maxDrawPoints bounds the samples drawn per series: more than a 10 in
// wide panel can show, and few enough that seven one-hour figures draw in about a second.
const (
	maxDrawPoints    = 1500
	timelineWidth    = 10 * vg.Inch
	timelineHeight   = 12 * vg.Inch
	attainmentWidth  = 8 * vg.Inch
	attainmentHeight = 6 * vg.Inch
	legendGap        = 6 // points between a panel and its legend
	attainmentFile   = "attainment_vs_gpu_hours.png"
)

var (
	colQueue    = color.RGBA{R: 230, G: 120, B: 0, A: 255}
	colReady    = color.RGBA{R: 31, G: 119, B: 180, A: 255}
	colFleet    = color.RGBA{R: 23, G: 190, B: 207, A: 255}
	colTTFT     = color.RGBA{R: 31, G: 119, B: 180, A: 255}
	colE2E      = color.RGBA{R: 230, G: 120, B: 0, A: 255}
	colUp       = color.RGBA{R: 214, G: 39, B: 40, A: 255}
	colDown     = color.RGBA{R: 44, G: 160, B: 44, A: 255}
	colSLO      = color.RGBA{R: 148, G: 103, B: 189, A: 255}
	colDesired  = color.RGBA{R: 100, G: 100, B: 100, A: 255}
	colZero     = color.RGBA{R: 180, G: 180, B: 180, A: 255}
	dashes      = []vg.Length{vg.Points(5), vg.Points(3)}
	sloDashes   = []vg.Length{vg.Points(2), vg.Points(2)}
	legendFont  = font.From(plot.DefaultFont, 10)
	figureTitle = font.From(plot.DefaultFont, 14)
)

// PlotThresholds are the lines drawn on the GPU and response-time panels: the seed
// notebook's threshold policy defaults. A threshold that is not a positive finite number is
// not drawn.
type PlotThresholds struct {
	// GPUUp and GPUDown are GPU utilization thresholds, in percent [85, 30].
	GPUUp, GPUDown float64
	// ResponseUp and ResponseDown are mean response-time thresholds, in seconds [5, 1]; the
	// threshold policy compares them with the mean end-to-end latency.
	ResponseUp, ResponseDown float64
	// QueueUp and QueueDown are thresholds on the requests waiting in the deployment [10, 2].
	QueueUp, QueueDown float64
	// SLOTarget is the TTFT target, in seconds, drawn on the response-time panel when > 0.
	SLOTarget float64
}

// DefaultPlotThresholds returns the threshold policy's defaults (internal/policy, as the
// proto documents them) and the given TTFT target.
func DefaultPlotThresholds(sloTarget time.Duration) PlotThresholds {
	return PlotThresholds{
		GPUUp: 85, GPUDown: 30,
		ResponseUp: 5, ResponseDown: 1,
		QueueUp: 10, QueueDown: 2,
		SLOTarget: sloTarget.Seconds(),
	}
}

// WritePlots writes PNG figures into dir, making it, and returns the paths written, in
// order. For each result it writes "<policy>.png" (characters other than letters, digits,
// '.', '-' and '_' in the name become '_'), four panels stacked on one time axis, in
// minutes from the start:
//  1. queue length (requests waiting) and instances (ready, and ready+starting), with the
//     queue thresholds as dashed lines;
//  2. GPU utilization (%) with its up and down thresholds;
//  3. mean TTFT and mean end-to-end latency per interval (s) with the response-time
//     thresholds and the SLO target; intervals without a request leave a gap in the data,
//     which the line bridges;
//  4. scaling events: a marker per nonzero TimelinePoint.Change at y = Change (up above
//     zero, down below) and the desired count as a step line.
//
// Timelines longer than 1500 points are drawn from consecutive buckets: the maximum of the
// queue and replica counts (so spikes show) and the mean of utilization and latencies.
// Scaling events are drawn one by one. A result with an empty Timeline still gets a figure,
// with empty panels and the threshold lines over one minute. NaN and infinite values are
// not drawn.
//
// Last it writes "attainment_vs_gpu_hours.png": one labelled point per policy, x =
// GPUHours, y = SLOAttainment in percent; a policy whose figures are not finite is left
// out. Each file is written to a temporary name and renamed, so a reader never sees a
// partial PNG. Results must have distinct, non-empty policy names. On error the paths
// already written are returned with it.
func WritePlots(dir string, results []*Result, th PlotThresholds) ([]string, error) {
	names, err := plotFileNames(results)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	paths := make([]string, 0, len(results)+1)
	for i, r := range results {
		c, err := timelineFigure(r, th)
		if err != nil {
			return paths, fmt.Errorf("sim: plot %s: %w", r.Policy, err)
		}
		path := filepath.Join(dir, names[i])
		if err := writePNG(path, c); err != nil {
			return paths, err
		}
		paths = append(paths, path)
	}
	c, err := attainmentFigure(results)
	if err != nil {
		return paths, fmt.Errorf("sim: plot attainment: %w", err)
	}
	path := filepath.Join(dir, attainmentFile)
	if err := writePNG(path, c); err != nil {
		return paths, err
	}
	return append(paths, path), nil
}

// plotFileNames returns each result's file name, or an error when one is nil, unnamed, or
// would overwrite another figure.
func plotFileNames(results []*Result) ([]string, error) {
	names := make([]string, len(results))
	seen := map[string]string{attainmentFile: "the attainment chart"}
	for i, r := range results {
		if r == nil || r.Policy == "" {
			return nil, fmt.Errorf("sim: plot result %d: no policy name", i)
		}
		name := strings.Map(fileNameRune, r.Policy) + ".png"
		if other, ok := seen[name]; ok {
			return nil, fmt.Errorf("sim: plot %q: file %s is also %s", r.Policy, name, other)
		}
		seen[name] = "policy " + strconv.Quote(r.Policy)
		names[i] = name
	}
	return names, nil
}

func fileNameRune(c rune) rune {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '-', c == '_':
		return c
	}
	return '_'
}

// writePNG encodes c into a temporary file beside path, then renames it to path.
func writePNG(path string, c *vgimg.Canvas) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err := (vgimg.PngCanvas{Canvas: c}).WriteTo(f); err != nil {
		return fmt.Errorf("sim: write %s: %w", path, err)
	}
	if err := f.Chmod(0o644); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("sim: write %s: %w", path, err)
	}
	return os.Rename(f.Name(), path)
}

// plotPoint is one drawn sample of a timeline: a bucket of consecutive points.
type plotPoint struct {
	// Minute is the mean of the points' Second, in minutes.
	Minute float64
	// Queue, Ready, Fleet (Ready+Starting) and Desired are the bucket's maxima.
	Queue, Ready, Fleet, Desired int
	// GPUUtil, TTFT and E2E are means of the finite values; NaN when there are none.
	GPUUtil, TTFT, E2E float64
}

// downsample splits tl into n buckets of consecutive points (as even as integer division
// makes them) and aggregates each; with n <= 0 or n >= len(tl) every point is its own bucket.
func downsample(tl []TimelinePoint, n int) []plotPoint {
	if n <= 0 || n > len(tl) {
		n = len(tl)
	}
	out := make([]plotPoint, n)
	for b := range out {
		out[b] = aggregate(tl[b*len(tl)/n : (b+1)*len(tl)/n])
	}
	return out
}

// aggregate summarises a non-empty bucket.
func aggregate(pts []TimelinePoint) plotPoint {
	var sec, gpu, ttft, e2e finiteMean
	var p plotPoint
	for i, t := range pts {
		sec.add(t.Second)
		gpu.add(t.GPUUtil)
		ttft.add(t.TTFTMean)
		e2e.add(t.E2EMean)
		if i == 0 || t.Queue > p.Queue {
			p.Queue = t.Queue
		}
		if i == 0 || t.Ready > p.Ready {
			p.Ready = t.Ready
		}
		if i == 0 || t.Ready+t.Starting > p.Fleet {
			p.Fleet = t.Ready + t.Starting
		}
		if i == 0 || t.Desired > p.Desired {
			p.Desired = t.Desired
		}
	}
	p.Minute = sec.value() / 60
	p.GPUUtil, p.TTFT, p.E2E = gpu.value(), ttft.value(), e2e.value()
	return p
}

// finiteMean is the mean of the finite values added to it.
type finiteMean struct {
	sum float64
	n   int
}

func (m *finiteMean) add(x float64) {
	if finite(x) {
		m.sum += x
		m.n++
	}
}

func (m *finiteMean) value() float64 {
	if m.n == 0 {
		return math.NaN()
	}
	return m.sum / float64(m.n)
}

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

// series returns the finite (Minute, y) pairs of pts.
func series(pts []plotPoint, y func(plotPoint) float64) plotter.XYs {
	xys := make(plotter.XYs, 0, len(pts))
	for _, p := range pts {
		if v := y(p); finite(p.Minute) && finite(v) {
			xys = append(xys, plotter.XY{X: p.Minute, Y: v})
		}
	}
	return xys
}

// scalingEvents returns the finite (minute, Change) pairs of tl's nonzero changes of the
// given sign.
func scalingEvents(tl []TimelinePoint, up bool) plotter.XYs {
	var xys plotter.XYs
	for _, t := range tl {
		if (up && t.Change > 0 || !up && t.Change < 0) && finite(t.Second) {
			xys = append(xys, plotter.XY{X: t.Second / 60, Y: float64(t.Change)})
		}
	}
	return xys
}

// panel is one plot and its legend, drawn beside it rather than over the data. The first
// error from building a plotter is kept in err.
type panel struct {
	*plot.Plot
	legend plot.Legend
	x0, x1 float64
	err    error
}

func newPanel(ylabel string, x0, x1 float64) *panel {
	p := &panel{Plot: plot.New(), legend: plot.NewLegend(), x0: x0, x1: x1}
	p.X.Label.Text = "time (min)"
	p.Y.Label.Text = ylabel
	p.X.Tick.Marker, p.Y.Tick.Marker = plot.TickerFunc(roundTicks), plot.TickerFunc(roundTicks)
	p.Add(plotter.NewGrid())
	p.legend.Top, p.legend.Left = true, true
	p.legend.TextStyle.Font = legendFont
	return p
}

func (p *panel) line(name string, xys plotter.XYs, c color.Color, step plotter.StepKind) {
	l, err := plotter.NewLine(xys)
	if err != nil {
		p.fail(err)
		return
	}
	l.Color, l.Width, l.StepStyle = c, vg.Points(1.2), step
	p.Add(l)
	p.legend.Add(name, l)
}

// threshold draws a dashed horizontal line at y across the time range, when y > 0, and
// labels it name (y unit).
func (p *panel) threshold(name string, y float64, unit string, c color.Color, d []vg.Length) {
	if !finite(y) || y <= 0 {
		return
	}
	l, err := plotter.NewLine(plotter.XYs{{X: p.x0, Y: y}, {X: p.x1, Y: y}})
	if err != nil {
		p.fail(err)
		return
	}
	l.Color, l.Width, l.Dashes = c, vg.Points(1), d
	p.Add(l)
	p.legend.Add(name+" ("+strconv.FormatFloat(y, 'g', 4, 64)+unit+")", l)
}

func (p *panel) markers(name string, xys plotter.XYs, c color.Color, shape draw.GlyphDrawer) {
	s, err := plotter.NewScatter(xys)
	if err != nil {
		p.fail(err)
		return
	}
	s.GlyphStyle = draw.GlyphStyle{Color: c, Radius: vg.Points(3.5), Shape: shape}
	p.Add(s)
	p.legend.Add(name, s)
}

func (p *panel) fail(err error) {
	if p.err == nil {
		p.err = err
	}
}

// finish fixes the X range on the shared time range (Add widens it to the data) and puts 0
// on the Y axis.
func (p *panel) finish() {
	p.X.Min, p.X.Max = p.x0, p.x1
	p.Y.Min = math.Min(p.Y.Min, 0)
}

// timeRange is 0 to the last finite Second, in minutes; one minute when there is none.
func timeRange(tl []TimelinePoint) (float64, float64) {
	x1 := 0.0
	for _, t := range tl {
		if finite(t.Second) {
			x1 = math.Max(x1, t.Second/60)
		}
	}
	if x1 == 0 {
		x1 = 1
	}
	return 0, x1
}

// timelineFigure draws r's four panels and the figure title.
func timelineFigure(r *Result, th PlotThresholds) (*vgimg.Canvas, error) {
	pts := downsample(r.Timeline, maxDrawPoints)
	x0, x1 := timeRange(r.Timeline)

	queue := newPanel("queue (requests), instances (replicas)", x0, x1)
	queue.line("queue (requests waiting)", series(pts, func(p plotPoint) float64 { return float64(p.Queue) }), colQueue, plotter.NoStep)
	queue.line("ready replicas", series(pts, func(p plotPoint) float64 { return float64(p.Ready) }), colReady, plotter.PostStep)
	queue.line("ready + starting", series(pts, func(p plotPoint) float64 { return float64(p.Fleet) }), colFleet, plotter.PostStep)
	queue.threshold("queue up threshold", th.QueueUp, "", colUp, dashes)
	queue.threshold("queue down threshold", th.QueueDown, "", colDown, dashes)

	gpu := newPanel("GPU utilization (%)", x0, x1)
	gpu.line("GPU utilization, ready replicas", series(pts, func(p plotPoint) float64 { return p.GPUUtil }), colReady, plotter.NoStep)
	gpu.threshold("GPU up threshold", th.GPUUp, " %", colUp, dashes)
	gpu.threshold("GPU down threshold", th.GPUDown, " %", colDown, dashes)

	resp := newPanel("response time (s)", x0, x1)
	resp.line("mean TTFT", series(pts, func(p plotPoint) float64 { return p.TTFT }), colTTFT, plotter.NoStep)
	resp.line("mean end-to-end", series(pts, func(p plotPoint) float64 { return p.E2E }), colE2E, plotter.NoStep)
	resp.threshold("response up threshold", th.ResponseUp, " s", colUp, dashes)
	resp.threshold("response down threshold", th.ResponseDown, " s", colDown, dashes)
	resp.threshold("TTFT SLO target", th.SLOTarget, " s", colSLO, sloDashes)

	events := newPanel("replicas (change, desired)", x0, x1)
	if zero, err := plotter.NewLine(plotter.XYs{{X: x0}, {X: x1}}); err != nil {
		events.fail(err)
	} else {
		zero.Color = colZero
		events.Add(zero)
	}
	events.line("desired replicas", series(pts, func(p plotPoint) float64 { return float64(p.Desired) }), colDesired, plotter.PostStep)
	events.markers("scale up (+change)", scalingEvents(r.Timeline, true), colUp, draw.PyramidGlyph{})
	events.markers("scale down (-change)", scalingEvents(r.Timeline, false), colDown, invertedPyramid{})

	panels := []*panel{queue, gpu, resp, events}
	for _, p := range panels {
		if p.err != nil {
			return nil, p.err
		}
		p.finish()
	}
	gpu.Y.Max = math.Max(gpu.Y.Max, 100)

	title := fmt.Sprintf("%s: SLO attainment %.2f %%, %.2f GPU-hours", r.Policy, 100*r.SLOAttainment, r.GPUHours)
	return drawPanels(panels, title), nil
}

// drawPanels stacks panels on one canvas with aligned data areas, each legend in a right
// margin as wide as the widest legend, and the title above.
func drawPanels(panels []*panel, title string) *vgimg.Canvas {
	img := vgimg.New(timelineWidth, timelineHeight)
	dc := draw.New(img)

	titleStyle := text.Style{Color: color.Black, Font: figureTitle, XAlign: draw.XCenter, YAlign: draw.YTop, Handler: plot.DefaultTextHandler}
	dc.FillText(titleStyle, vg.Point{X: dc.Center().X, Y: dc.Max.Y - vg.Points(6)}, title)

	var legendWidth vg.Length
	for _, p := range panels {
		r := p.legend.Rectangle(draw.Canvas{})
		legendWidth = max(legendWidth, r.Max.X-r.Min.X)
	}
	tiles := draw.Tiles{
		Rows: len(panels), Cols: 1,
		PadTop:    titleStyle.Height(title) + vg.Points(12),
		PadBottom: vg.Points(6), PadLeft: vg.Points(6),
		PadRight: legendWidth + 2*vg.Points(legendGap),
		PadY:     vg.Points(10),
	}
	plots := make([][]*plot.Plot, len(panels))
	for i, p := range panels {
		plots[i] = []*plot.Plot{p.Plot}
	}
	canvases := plot.Align(plots, tiles, dc)
	for i, p := range panels {
		c := canvases[i][0]
		p.Draw(c)
		data := p.DataCanvas(c)
		p.legend.Draw(draw.Canvas{Canvas: c.Canvas, Rectangle: vg.Rectangle{
			Min: vg.Point{X: c.Max.X + vg.Points(legendGap), Y: data.Min.Y},
			Max: vg.Point{X: dc.Max.X, Y: data.Max.Y},
		}})
	}
	return img
}

// attainmentFigure plots SLO attainment against GPU-hours, a labelled point per policy.
func attainmentFigure(results []*Result) (*vgimg.Canvas, error) {
	var pts plotter.XYLabels
	for _, r := range results {
		if y := 100 * r.SLOAttainment; finite(r.GPUHours) && finite(y) {
			pts.XYs = append(pts.XYs, plotter.XY{X: r.GPUHours, Y: y})
			pts.Labels = append(pts.Labels, r.Policy)
		}
	}
	p := plot.New()
	p.Title.Text = "SLO attainment against cost, one point per policy"
	p.X.Label.Text = "GPU-hours"
	p.Y.Label.Text = "SLO attainment (% of requests within the TTFT target)"
	p.X.Tick.Marker, p.Y.Tick.Marker = plot.TickerFunc(roundTicks), plot.TickerFunc(roundTicks)
	p.Add(plotter.NewGrid())
	s, err := plotter.NewScatter(pts.XYs)
	if err != nil {
		return nil, err
	}
	s.GlyphStyle = draw.GlyphStyle{Color: colReady, Radius: vg.Points(4), Shape: draw.CircleGlyph{}}
	labels, err := plotter.NewLabels(pts)
	if err != nil {
		return nil, err
	}
	labels.Offset = vg.Point{X: vg.Points(6), Y: vg.Points(2)}
	p.Add(s, labels)
	if len(pts.XYs) == 0 {
		p.X.Min, p.X.Max, p.Y.Min, p.Y.Max = 0, 1, 0, 100
	}
	p.Title.Padding = vg.Points(8)
	img := vgimg.New(attainmentWidth, attainmentHeight)
	margin := vg.Points(10)
	p.Draw(draw.Crop(draw.New(img), margin, -margin, margin, -margin))
	return img, nil
}

// roundTicks marks 4 to 9 round values (1, 2 or 5 times a power of ten apart) with a minor
// tick halfway: the default ticker aims at 3, too few to read a time off an hour's axis.
func roundTicks(lo, hi float64) []plot.Tick {
	if !finite(lo) || !finite(hi) || hi <= lo {
		return nil
	}
	raw := (hi - lo) / 8
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := 10 * mag
	for _, m := range []float64{1, 2, 5} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	decimals := max(0, -int(math.Floor(math.Log10(step))))
	var ticks []plot.Tick
	for k := math.Ceil(2 * lo / step); k <= math.Floor(2*hi/step); k++ {
		v := k * step / 2
		if v == 0 {
			v = 0 // not -0, which would be labelled "-0"
		}
		if math.Mod(k, 2) == 0 {
			ticks = append(ticks, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'f', decimals, 64)})
		} else {
			ticks = append(ticks, plot.Tick{Value: v})
		}
	}
	return ticks
}

// invertedPyramid is a filled triangle pointing down, the marker of a scale-down event.
type invertedPyramid struct{}

// DrawGlyph implements draw.GlyphDrawer.
func (invertedPyramid) DrawGlyph(c *draw.Canvas, sty draw.GlyphStyle, pt vg.Point) {
	r := sty.Radius * 1.25
	var path vg.Path
	path.Move(vg.Point{X: pt.X, Y: pt.Y - r})
	path.Line(vg.Point{X: pt.X - r*0.866, Y: pt.Y + r/2})
	path.Line(vg.Point{X: pt.X + r*0.866, Y: pt.Y + r/2})
	path.Close()
	c.Fill(path)
}
