// Package statuspage renders the controller's read-only status page: plain HTML from
// html/template with the replica history drawn as inline SVG, no JavaScript. It renders a
// view model (Page) and does no I/O, so it is tested without a controller; the controller
// gathers the Page from the same calls its admin API answers.
package statuspage

import (
	_ "embed"
	"fmt"
	"html/template"
	"io"
	"strings"
	"time"
)

// Refresh is how often the page reloads itself, in seconds.
const Refresh = 5

//go:embed page.html
var pageHTML string

var pageTemplate = template.Must(template.New("page").Funcs(template.FuncMap{
	"clock": clock,
	"mib":   mib,
	"span":  span,
}).Parse(pageHTML))

// Page is the status page as one controller sees the cluster at Now.
type Page struct {
	// Controller and Version name the controller that rendered the page.
	Controller, Version string
	Now                 time.Time
	// Leader is true when this controller leads: then the live sections (replica history,
	// GPU samples, instances) are filled, and LeaderSince is when its term began.
	Leader      bool
	LeaderSince time.Time
	Epoch       int64
	// LeaderID names the leader, "" while none is elected. On a follower, LeaderURL is the
	// leader's status page when its HTTP address is known, LeaderGRPC its gRPC address.
	LeaderID, LeaderURL, LeaderGRPC string
	// HistoryStep and HistorySpan say how the leader samples the replica history.
	HistoryStep, HistorySpan time.Duration
	// Problems are the parts of the page that could not be read, in words.
	Problems    []string
	Deployments []Deployment
	// Decisions are the most recent decisions of every deployment, newest first.
	Decisions []Decision
	// Nodes are the leader's live nodes; on a follower, the node records stored in etcd.
	Nodes []Node
}

// Deployment is one deployment's row.
type Deployment struct {
	Name, Profile string
	// Policy is the policy's name, PolicySettings what the spec sets of it ("" for defaults).
	Policy, PolicySettings string
	Min, Max               uint32
	// Live is true when the counts below are the leader's live view.
	Live bool
	// Desired is the count the controller drives towards; Replicas counts instances by phase.
	Desired  uint32
	Replicas map[string]uint32
	// Manual is the count held by hand, when HasManual; Paused is the autoscaler's pause.
	Manual    uint32
	HasManual bool
	Paused    bool
	// Message says why the deployment is not at its desired count, when it is not.
	Message string
	// History is the sampled replica counts, oldest first.
	History []Point
}

// Point is one sample of a deployment's replica counts.
type Point struct {
	Time           time.Time
	Desired, Ready uint32
}

// Decision is one journaled scaling decision.
type Decision struct {
	Time       time.Time
	Deployment string
	Policy     string
	From, To   uint32
	// Acted is false for a recommendation that was held (a clamp or a dry run).
	Acted bool
	// Reason is the policy's words, with the limits (clamps) that changed its recommendation.
	Reason string
	// Repeats is how many decisions in a row of the deployment read like this one, the
	// newest; Since is when the oldest of them was made.
	Repeats int
	Since   time.Time
}

// Node is one node with its GPUs and instances.
type Node struct {
	ID, State, Address, Backend string
	Cordoned, Draining          bool
	CordonReason                string
	LastSeen                    time.Time
	GPUs                        []GPU
	Instances                   []Instance
}

// GPU is one GPU with its latest sample, when there is one.
type GPU struct {
	Index     uint32
	Name      string
	MemoryMiB uint64
	// The latest sample's figures, where it has them (none on a follower).
	Utilization    float64
	HasUtilization bool
	MemoryUsedMiB  uint64
	HasMemoryUsed  bool
}

// Instance is one model-server instance on a node.
type Instance struct {
	ID, Deployment, Phase, Endpoint string
	GPUs                            []uint32
	Message                         string
}

// Render writes the page as HTML.
func Render(w io.Writer, p *Page) error {
	return pageTemplate.Execute(w, p)
}

// Refresh is the page's refresh interval in seconds, for the template.
func (p *Page) Refresh() int { return Refresh }

// Ago says how long before the page's time t was.
func (p *Page) Ago(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := p.Now.Sub(t)
	switch {
	case d < time.Second:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds ago", int(d.Minutes()), int(d.Seconds())%60)
	default:
		return fmt.Sprintf("%dh%02dm ago", int(d.Hours()), int(d.Minutes())%60)
	}
}

// Chart is a deployment's replica history drawn over the page's history span.
type Chart struct {
	Width, Height int
	// Desired and Ready are SVG polyline points.
	Desired, Ready string
	// Top is the count at the top of the chart.
	Top uint32
	// Summary is the chart in words.
	Summary string
}

// Chart draws d's history as step lines from Now-HistorySpan to Now.
func (p *Page) Chart(d Deployment) Chart {
	const w, h, pad = 240, 48, 3
	c := Chart{Width: w, Height: h, Top: 1}
	start := p.Now.Add(-p.HistorySpan)
	pts := d.History
	// Keep the last point before the span: it holds the counts at the span's start.
	for len(pts) > 1 && !pts[1].Time.After(start) {
		pts = pts[1:]
	}
	if len(pts) == 0 || p.HistorySpan <= 0 {
		c.Summary = "no history yet"
		return c
	}
	var loD, hiD, loR, hiR uint32 = pts[0].Desired, pts[0].Desired, pts[0].Ready, pts[0].Ready
	for _, pt := range pts {
		c.Top = max(c.Top, pt.Desired, pt.Ready)
		loD, hiD = min(loD, pt.Desired), max(hiD, pt.Desired)
		loR, hiR = min(loR, pt.Ready), max(hiR, pt.Ready)
	}
	x := func(t time.Time) float64 {
		f := float64(t.Sub(start)) / float64(p.HistorySpan)
		return w * min(max(f, 0), 1)
	}
	y := func(n uint32) float64 { return h - pad - float64(n)/float64(c.Top)*(h-2*pad) }
	c.Desired = steps(pts, x, y, func(pt Point) uint32 { return pt.Desired })
	c.Ready = steps(pts, x, y, func(pt Point) uint32 { return pt.Ready })
	c.Summary = fmt.Sprintf("over the last %s: desired %s, ready %s", span(p.HistorySpan), between(loD, hiD), between(loR, hiR))
	return c
}

// steps draws one count as a step line: it holds each value until the next point.
func steps(pts []Point, x func(time.Time) float64, y func(uint32) float64, v func(Point) uint32) string {
	var b strings.Builder
	for i, pt := range pts {
		if i > 0 {
			fmt.Fprintf(&b, " %.1f,%.1f", x(pt.Time), y(v(pts[i-1])))
		}
		fmt.Fprintf(&b, " %.1f,%.1f", x(pt.Time), y(v(pt)))
	}
	return strings.TrimSpace(b.String())
}

func between(lo, hi uint32) string {
	if lo == hi {
		return fmt.Sprint(lo)
	}
	return fmt.Sprintf("%d–%d", lo, hi)
}

func span(d time.Duration) string {
	if d%time.Hour == 0 {
		return fmt.Sprintf("%dh", d/time.Hour)
	}
	return d.Round(time.Second).String()
}

func clock(t time.Time) string {
	if t.IsZero() {
		return "–"
	}
	return t.UTC().Format("15:04:05")
}

// mib writes a memory size in MiB as GiB from 1 GiB on.
func mib(n uint64) string {
	if n >= 1024 {
		return fmt.Sprintf("%.1f GiB", float64(n)/1024)
	}
	return fmt.Sprintf("%d MiB", n)
}
