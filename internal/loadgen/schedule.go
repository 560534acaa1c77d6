package loadgen

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/llmscaler/llmscaler/internal/trace"
)

// Point is one point of a Schedule: from At until the next point the rate moves linearly from
// From to To requests per second. From == To is a step (a constant rate).
type Point struct {
	// At is the point's offset from the start of the run.
	At time.Duration
	// From is the rate at At, in requests per second.
	From float64
	// To is the rate reached at the next point (or at the end of the run, for the last point).
	To float64
}

// Schedule is an arrival rate over the time of a run, made of steps and linear ramps. Before
// the first point the rate is zero; the last point, when a step, holds for ever; when a ramp,
// it ends at the end of the run, after which the rate is zero.
type Schedule struct {
	points []Point
	end    time.Duration // where the last point's segment ends; 0: never
}

// ScheduleSyntax documents the syntax ParseSchedule reads, for flag help.
const ScheduleSyntax = `comma-separated points OFFSET:RATE (from OFFSET, RATE requests/s) or ` +
	`OFFSET:R1->R2 (from OFFSET, a linear ramp from R1 to R2 reached at the next point; on the ` +
	`last point, at --duration); OFFSET is a Go duration, increasing; before the first point ` +
	`the rate is 0; e.g. "0s:2,60s:10,120s:10->2"`

// ConstantRate is the schedule of a fixed rate from the start.
func ConstantRate(rps float64) Schedule { return Schedule{points: []Point{{From: rps, To: rps}}} }

// ParseSchedule reads a schedule in the syntax ScheduleSyntax describes. end is the end of the
// run (0: none); a ramp on the last point needs it, to know where the ramp ends.
func ParseSchedule(spec string, end time.Duration) (Schedule, error) {
	if strings.TrimSpace(spec) == "" {
		return Schedule{}, errors.New("empty schedule: want points like 0s:2,60s:10")
	}
	var pts []Point
	for i, item := range strings.Split(spec, ",") {
		item = strings.TrimSpace(item)
		off, rate, ok := strings.Cut(item, ":")
		if !ok {
			return Schedule{}, fmt.Errorf("point %d %q: want OFFSET:RATE or OFFSET:R1->R2", i+1, item)
		}
		at, err := time.ParseDuration(strings.TrimSpace(off))
		if err != nil {
			return Schedule{}, fmt.Errorf("point %d %q: offset %q is not a duration like 90s or 2m", i+1, item, off)
		}
		if at < 0 {
			return Schedule{}, fmt.Errorf("point %d %q: offset %s is negative", i+1, item, at)
		}
		if len(pts) > 0 && at <= pts[len(pts)-1].At {
			return Schedule{}, fmt.Errorf("point %d %q: offset %s is not after the previous point's %s", i+1, item, at, pts[len(pts)-1].At)
		}
		p := Point{At: at}
		r1, r2, ramp := strings.Cut(rate, "->")
		if p.From, err = parseRate(r1); err != nil {
			return Schedule{}, fmt.Errorf("point %d %q: %w", i+1, item, err)
		}
		p.To = p.From
		if ramp {
			if p.To, err = parseRate(r2); err != nil {
				return Schedule{}, fmt.Errorf("point %d %q: %w", i+1, item, err)
			}
		}
		pts = append(pts, p)
	}
	if end < 0 {
		return Schedule{}, fmt.Errorf("end %s is negative", end)
	}
	if last := pts[len(pts)-1]; last.From != last.To && end <= last.At {
		return Schedule{}, fmt.Errorf("the last point ramps %g->%g from %s but has no end: add a point after it, or a duration longer than %s",
			last.From, last.To, last.At, last.At)
	}
	return Schedule{points: pts, end: end}, nil
}

func parseRate(s string) (float64, error) {
	s = strings.TrimSpace(s)
	r, err := strconv.ParseFloat(s, 64)
	switch {
	case err != nil || math.IsNaN(r) || math.IsInf(r, 0):
		return 0, fmt.Errorf("rate %q is not a number of requests per second", s)
	case r < 0:
		return 0, fmt.Errorf("rate %s is negative", s)
	}
	return r, nil
}

// RateSeriesSchedule turns a rate series into a schedule of steps, compressed in time by
// scale as a trace replay is: the window that starts at S in the series starts at
// (S-start)/scale in the run, with its rate times scale. The window under start begins the run.
func RateSeriesSchedule(pts []trace.RatePoint, scale float64, start time.Duration) Schedule {
	var s Schedule
	for i, p := range pts {
		if i+1 < len(pts) && pts[i+1].Start <= start {
			continue // over before the run starts
		}
		at := time.Duration(0)
		if p.Start > start {
			at = time.Duration(float64(p.Start-start) / scale)
		}
		s.points = append(s.points, Point{At: at, From: p.RPS * scale, To: p.RPS * scale})
	}
	return s
}

// Points returns the schedule's points.
func (s Schedule) Points() []Point { return append([]Point(nil), s.points...) }

// String writes the schedule in the syntax ParseSchedule reads.
func (s Schedule) String() string {
	var b strings.Builder
	for i, p := range s.points {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s:%g", p.At, p.From)
		if p.To != p.From {
			fmt.Fprintf(&b, "->%g", p.To)
		}
	}
	return b.String()
}

// segment returns the bounds, in seconds, of point i's segment; b is +Inf when it never ends.
func (s Schedule) segment(i int) (a, b float64) {
	a = s.points[i].At.Seconds()
	switch {
	case i+1 < len(s.points):
		b = s.points[i+1].At.Seconds()
	case s.end > 0 && s.points[i].From != s.points[i].To:
		b = s.end.Seconds()
	default:
		b = math.Inf(1)
	}
	return a, b
}

// rateIn is the rate at t (seconds) within point i's segment, and the segment's slope.
func (s Schedule) rateIn(i int, t float64) (rate, slope float64) {
	p := s.points[i]
	if p.From == p.To {
		return p.From, 0
	}
	a, b := s.segment(i)
	slope = (p.To - p.From) / (b - a)
	return p.From + slope*(t-a), slope
}

// Rate is the arrival rate at offset t, in requests per second.
func (s Schedule) Rate(t time.Duration) float64 {
	ts := t.Seconds()
	for i := len(s.points) - 1; i >= 0; i-- {
		if a, b := s.segment(i); ts >= a {
			if ts >= b {
				return 0
			}
			r, _ := s.rateIn(i, ts)
			return r
		}
	}
	return 0
}

// expected is the expected number of arrivals in [from, to): the integral of the rate.
func (s Schedule) expected(from, to time.Duration) float64 {
	x, y := from.Seconds(), to.Seconds()
	var n float64
	for i := range s.points {
		a, b := s.segment(i)
		lo, hi := math.Max(a, x), math.Min(b, y)
		if hi <= lo {
			continue
		}
		r0, _ := s.rateIn(i, lo)
		r1, _ := s.rateIn(i, hi)
		n += (r0 + r1) / 2 * (hi - lo)
	}
	return n
}

// meanRate is the mean arrival rate over [from, to).
func (s Schedule) meanRate(from, to time.Duration) float64 {
	if to <= from {
		return s.Rate(from)
	}
	return s.expected(from, to) / (to - from).Seconds()
}

// after returns the time (seconds) at which the integral of the rate from t reaches e, or
// false if it never does. This is the inversion step of the time-rescaling method: with e
// drawn from Exp(1), it gives the next arrival of a Poisson process whose rate follows the
// schedule, exactly, ramps included.
func (s Schedule) after(t, e float64) (float64, bool) {
	for i := range s.points {
		a, b := s.segment(i)
		if t >= b {
			continue
		}
		t = math.Max(t, a)
		r0, slope := s.rateIn(i, t)
		length := b - t
		area := math.Inf(1)
		if !math.IsInf(length, 1) {
			area = r0*length + slope*length*length/2
		} else if r0 == 0 {
			return 0, false // a rate of zero for ever
		}
		if e <= area && area > 0 {
			// Solve r0*x + slope*x^2/2 = e; this form stays accurate when slope is near 0.
			disc := math.Max(0, r0*r0+2*slope*e)
			return t + 2*e/(r0+math.Sqrt(disc)), true
		}
		e -= area
		t = b
	}
	return 0, false
}
