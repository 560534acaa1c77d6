package sim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/llmscaler/llmscaler/internal/trace"
)

// MaxGeneratedRequests bounds the requests FromClients makes (about 1.6 GB of them), so that
// a rate scale left at 1 on a busy trace is an error rather than a machine out of memory.
const MaxGeneratedRequests = 50_000_000

// FromClients draws the arrivals of ServeGen per-client traces (trace.LoadClients) the way
// ServeGen's generator does, and sums them: in each window of each client, n requests whose
// inter-arrival gaps are drawn from the window's Gamma or Weibull distribution (its shape,
// hence its coefficient of variation, as the trace gives it) and rescaled so that the window
// holds them. The workload is the union of all clients' arrivals, sorted, with lengths from l.
//
// n is the window's rate times scale times its length, rounded at random (down, or up with
// probability the fraction) so that its mean is exact even for small rates. Scaling keeps
// every client and the shape of its gaps, and shrinks or stretches only their scale: thinning
// bursty arrivals at random would make them close to Poisson. Precisely, n+1 gaps are drawn
// and scaled to sum to the window's length, and the requests arrive at the ends of the first
// n (ServeGen draws ceil(rate x length) gaps, scales them the same way, and drops the request
// at the window's end, so it makes one request fewer a window on average). A client's last
// window lasts as long as the one before it (trace.Client.WindowEnd).
//
// until > 0 stops generating there (arrivals at or after until are not made); 0 generates
// every window. Each client draws from its own random stream of seed, so a workload made with
// until is the start of the one made without. More than MaxGeneratedRequests is an error.
func FromClients(name string, clients []trace.Client, scale float64, l Lengths, seed uint64, until time.Duration) (*Workload, error) {
	if !(scale > 0) || math.IsInf(scale, 0) {
		return nil, fmt.Errorf("rate scale %v: want a positive number", scale)
	}
	if until < 0 {
		return nil, fmt.Errorf("until %v: want 0 (everything) or a positive duration", until)
	}
	if len(clients) == 0 {
		return nil, fmt.Errorf("%s: no clients", name)
	}
	expected, active := 0.0, 0
	for _, c := range clients {
		for j, w := range c.Windows {
			if err := checkClientWindow(c, j); err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			start, end := w.Start, c.WindowEnd(j)
			if until > 0 {
				if start >= until {
					break
				}
				end = min(end, until)
			}
			expected += w.RPS * scale * (end - start).Seconds()
			if w.RPS > 0 {
				active++
			}
		}
	}
	if expected > MaxGeneratedRequests {
		return nil, fmt.Errorf("%s: rates x%g make about %.3g requests, more than %d: lower the rate scale or the duration", name, scale, expected, MaxGeneratedRequests)
	}
	// Each window makes its mean rounded down or up: at most one more than its mean.
	times := make([]time.Duration, 0, int(expected)+active)
	var gaps []float64
	for i, c := range clients {
		rng := rand.New(rand.NewPCG(seed, 0x2545f4914f6cdd1d^uint64(i)*0x9e3779b97f4a7c15))
		for j, w := range c.Windows {
			start, end := w.Start, c.WindowEnd(j)
			if until > 0 && start >= until {
				break
			}
			mean := w.RPS * scale * (end - start).Seconds()
			n := int(mean)
			if rng.Float64() < mean-float64(n) {
				n++
			}
			if n == 0 {
				continue
			}
			gaps = drawGaps(gaps[:0], rng, w.Pattern, w.Shape, n+1)
			total := 0.0
			for _, g := range gaps {
				total += g
			}
			span := float64(end - start)
			cum := 0.0
			for _, g := range gaps[:n] {
				cum += g
				t := start + time.Duration(span*(cum/total))
				if t >= end {
					t = end - 1 // rounding, or a last gap too small to tell: keep it in its window
				}
				if until > 0 && t >= until {
					break
				}
				times = append(times, t)
			}
		}
	}
	slices.Sort(times)
	rng := rand.New(rand.NewPCG(seed, 0x94d049bb133111eb))
	reqs := make([]trace.Request, len(times))
	for k, t := range times {
		p, o := l.draw(rng)
		reqs[k] = trace.Request{At: t, PromptTokens: p, OutputTokens: o}
	}
	return &Workload{
		Name:     fmt.Sprintf("%s, %d clients, rates x%g, per-client Gamma/Weibull gaps", name, len(clients), scale),
		Requests: reqs,
	}, nil
}

// checkClientWindow rejects what trace.ReadClient would, for clients built by hand.
func checkClientWindow(c trace.Client, j int) error {
	w := c.Windows[j]
	switch {
	case j > 0 && w.Start <= c.Windows[j-1].Start:
		return fmt.Errorf("client %s window %d: starts at %v, not after the previous window", c.Name, j, w.Start)
	case !(w.RPS >= 0) || math.IsInf(w.RPS, 0):
		return fmt.Errorf("client %s window %d: rate %v: want a non-negative number", c.Name, j, w.RPS)
	case w.RPS == 0:
		return nil
	case w.Pattern != trace.PatternGamma && w.Pattern != trace.PatternWeibull:
		return fmt.Errorf("client %s window %d: rate %v with no Gamma or Weibull pattern", c.Name, j, w.RPS)
	case !(w.Shape > 0) || math.IsInf(w.Shape, 0):
		return fmt.Errorf("client %s window %d: %s shape %v: want a positive number", c.Name, j, w.Pattern, w.Shape)
	}
	return nil
}

// drawGaps appends k gaps of the pattern with the given shape, in units of their largest
// (only their ratios matter: FromClients rescales them to fill the window). They are drawn as
// logarithms, because a Gamma of shape 0.007 or a Weibull of shape 0.2 (both in the m-mid
// trace) spans more orders of magnitude than a float64 does.
func drawGaps(dst []float64, rng *rand.Rand, p trace.Pattern, shape float64, k int) []float64 {
	var g logGamma
	if p == trace.PatternGamma {
		g = newLogGamma(shape)
	}
	top := math.Inf(-1)
	for range k {
		var lg float64
		if p == trace.PatternGamma {
			lg = g.draw(rng)
		} else {
			// Weibull: scale x E^(1/shape) with E a standard exponential.
			lg = math.Log(rng.ExpFloat64()) / shape
		}
		dst = append(dst, lg)
		top = max(top, lg)
	}
	for i, lg := range dst {
		if lg == top {
			dst[i] = 1 // also when top is infinite
		} else {
			dst[i] = math.Exp(lg - top)
		}
	}
	return dst
}

// logGamma draws the logarithm of a Gamma(shape, 1) variate: Marsaglia and Tsang's method
// ("A simple method for generating gamma variables", 2000), with the shape < 1 boost
// G(a) = G(a+1) x U^(1/a) taken in logarithms.
type logGamma struct {
	boost float64 // 1/a when a < 1, else 0
	d, c  float64
}

func newLogGamma(shape float64) logGamma {
	var g logGamma
	a := shape
	if a < 1 {
		g.boost = 1 / a
		a++
	}
	g.d = a - 1.0/3
	g.c = 1 / math.Sqrt(9*g.d)
	return g
}

func (g logGamma) draw(rng *rand.Rand) float64 {
	var lg float64
	for {
		x := rng.NormFloat64()
		v := 1 + g.c*x
		if v <= 0 {
			continue
		}
		v = v * v * v
		u := rng.Float64()
		x2 := x * x
		if u < 1-0.0331*x2*x2 || math.Log(u) < 0.5*x2+g.d*(1-v+math.Log(v)) {
			lg = math.Log(g.d * v)
			break
		}
	}
	if g.boost > 0 {
		lg -= rng.ExpFloat64() * g.boost // log(U)/a, with -log(U) a standard exponential
	}
	return lg
}
