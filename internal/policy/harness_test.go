package policy

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/llmscaler/llmscaler/internal/window"
	llmscalerv1 "github.com/llmscaler/llmscaler/proto/llmscaler/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// fleet is a fake deployment on a fake clock: replicas with a fixed capacity serve arrivals
// split evenly among the ready ones (a fluid model of continuous batching), report a sample
// each second into a real window.Deployment, and the real Autoscaler decides; its decisions
// are acted on at once, new replicas turning ready after the cold start.
type fleet struct {
	t     *testing.T
	now   time.Time
	dep   *window.Deployment
	as    *Autoscaler
	reps  []*fakeReplica
	ids   int
	carry float64 // queued requests of replicas removed, handed to the survivors

	capacity  float64 // requests/s one ready replica serves
	coldStart time.Duration
	rate      func(elapsed time.Duration) float64
	rng       *rand.Rand // Poisson arrivals when set, the exact rate otherwise
	min, max  int
	paused    bool

	decisions []Decision // journal-worthy ones
	counts    []int      // Ready+Starting after each tick
	queues    []float64  // requests queued after each tick
}

type fakeReplica struct {
	id      string
	started time.Time
	ready   bool
	queue   float64
	frozen  bool // its agent stopped reporting: the replica serves, its data goes stale
}

type fleetOpt func(*fleet)

func withReplicas(n int) fleetOpt {
	return func(f *fleet) {
		f.reps = nil
		for range n {
			f.addReplica(true)
		}
	}
}
func withColdStart(d time.Duration) fleetOpt { return func(f *fleet) { f.coldStart = d } }
func withNoise(seed uint64) fleetOpt {
	return func(f *fleet) { f.rng = rand.New(rand.NewPCG(seed, seed+1)) }
}
func withBounds(lo, hi int) fleetOpt { return func(f *fleet) { f.min, f.max = lo, hi } }

func newFleet(t *testing.T, p *llmscalerv1.Policy, rate func(time.Duration) float64, opts ...fleetOpt) *fleet {
	t.Helper()
	as, err := NewAutoscaler(p)
	if err != nil {
		t.Fatal(err)
	}
	cfg := as.Config()
	cfg.ReportInterval = time.Second
	f := &fleet{
		t: t, now: epoch, as: as, dep: window.NewDeployment(cfg),
		capacity: 10, coldStart: 10 * time.Second, rate: rate, min: 1, max: 50,
	}
	f.addReplica(true)
	for _, o := range opts {
		o(f)
	}
	return f
}

func (f *fleet) addReplica(ready bool) *fakeReplica {
	f.ids++
	r := &fakeReplica{id: fmt.Sprintf("r%d", f.ids), started: f.now, ready: ready}
	f.reps = append(f.reps, r)
	return r
}

func (f *fleet) elapsed() time.Duration { return f.now.Sub(epoch) }

func (f *fleet) arrivals() float64 {
	lambda := f.rate(f.elapsed())
	if f.rng == nil {
		return lambda
	}
	return poisson(f.rng, lambda)
}

func poisson(rng *rand.Rand, lambda float64) float64 {
	if lambda > 30 {
		return math.Max(0, math.Round(lambda+math.Sqrt(lambda)*rng.NormFloat64()))
	}
	l, k, p := math.Exp(-lambda), 0.0, 1.0
	for {
		p *= rng.Float64()
		if p <= l {
			return k
		}
		k++
	}
}

// step advances one second: serve, report, tick, decide, act.
func (f *fleet) step() Decision {
	f.now = f.now.Add(time.Second)
	var ready []*fakeReplica
	for _, r := range f.reps {
		if !r.ready && !f.now.Before(r.started.Add(f.coldStart)) {
			r.ready = true
		}
		if r.ready {
			ready = append(ready, r)
		}
	}
	in := f.arrivals() + f.carry
	f.carry = 0
	if len(ready) == 0 {
		f.carry = in
	}
	for _, r := range f.reps {
		s := window.Sample{Time: f.now}
		phase := window.Starting
		if r.ready {
			phase = window.Ready
			backlog := r.queue + in/float64(len(ready))
			served := math.Min(backlog, f.capacity)
			r.queue = backlog - served
			wait := r.queue / f.capacity
			n := uint64(served + 0.5)
			util := 100 * served / f.capacity
			s = window.Sample{
				Time: f.now, Waiting: r.queue, Running: 2 * served,
				KVCache: util / 125, HasKVCache: true, GPUUtil: util, HasGPUUtil: true,
				TTFT:           window.Summary{P50: 0.1 + wait/2, P95: 0.25 + wait, Count: n},
				E2E:            window.Summary{P50: 2 + wait/2, P95: 4 + wait, Count: n},
				FinishedPerSec: served, PromptTPS: 500 * served, GenerationTPS: 200 * served,
			}
		}
		if !r.frozen {
			f.dep.Observe(r.id, phase, s)
		}
	}
	f.dep.Tick(f.now)
	cfg := f.as.Config()
	d := f.as.Evaluate(f.input(cfg))
	if d.Recommended != d.Current || d.Change {
		f.decisions = append(f.decisions, d)
	}
	if d.Change && !d.DryRun {
		f.scale(d.Desired)
	}
	f.counts = append(f.counts, len(f.reps))
	f.queues = append(f.queues, f.queue())
	return d
}

func (f *fleet) input(cfg window.Config) Input {
	in := Input{
		Now: f.now, Deployment: "chat", ColdStart: f.coldStart, Min: f.min, Max: f.max,
		Paused: f.paused, ReportInterval: time.Second,
		Stable: f.dep.Values(f.now, cfg.Stable), Panic: f.dep.Values(f.now, cfg.Panic),
		Long: f.dep.Totals(f.now, cfg.History),
	}
	for _, r := range f.reps {
		if r.ready {
			in.Ready++
		} else {
			in.Starting++
			in.StartingSince = append(in.StartingSince, r.started)
		}
	}
	return in
}

// scale starts replicas, or stops starting ones first and then the least loaded ready ones,
// whose queues the router sends to the others.
func (f *fleet) scale(n int) {
	for len(f.reps) < n {
		f.addReplica(f.coldStart == 0)
	}
	for len(f.reps) > n {
		victim := -1
		for i, r := range f.reps {
			if !r.ready {
				victim = i
			}
		}
		if victim < 0 {
			victim = 0
			for i, r := range f.reps {
				if r.queue < f.reps[victim].queue {
					victim = i
				}
			}
		}
		f.carry += f.reps[victim].queue
		f.dep.Remove(f.reps[victim].id)
		f.reps = append(f.reps[:victim], f.reps[victim+1:]...)
	}
}

func (f *fleet) run(d time.Duration) {
	for end := f.now.Add(d); f.now.Before(end); {
		f.step()
	}
}

// runUntil steps until cond holds or d passes, and reports whether it held.
func (f *fleet) runUntil(d time.Duration, cond func() bool) bool {
	for end := f.now.Add(d); f.now.Before(end); {
		f.step()
		if cond() {
			return true
		}
	}
	return false
}

func (f *fleet) count() int { return len(f.reps) }

// changes counts acted changes (ups, downs) among decisions in [from, to) of elapsed time.
func (f *fleet) changes(from, to time.Duration) (ups, downs int) {
	for _, d := range f.decisions {
		el := d.Time.Sub(epoch)
		if el < from || el >= to || !d.Change || d.DryRun {
			continue
		}
		if d.Desired > d.Current {
			ups++
		} else {
			downs++
		}
	}
	return ups, downs
}

// peak is the largest count in [from, to) seconds of elapsed time.
func (f *fleet) peak(from, to time.Duration) int {
	p := 0
	for i := int(from / time.Second); i < int(to/time.Second) && i < len(f.counts); i++ {
		p = max(p, f.counts[i])
	}
	return p
}

// lowest is the smallest count in [from, to) seconds of elapsed time.
func (f *fleet) lowest(from, to time.Duration) int {
	low := math.MaxInt
	for i := int(from / time.Second); i < int(to/time.Second) && i < len(f.counts); i++ {
		low = min(low, f.counts[i])
	}
	return low
}

// downsWithQueue counts acted scale-downs in [from, to) taken while at least q requests
// were queued.
func (f *fleet) downsWithQueue(from, to time.Duration, q float64) int {
	n := 0
	for _, d := range f.decisions {
		el := d.Time.Sub(epoch)
		if el < from || el >= to || !d.Change || d.DryRun || d.Desired >= d.Current {
			continue
		}
		if i := int(el / time.Second); i > 0 && i <= len(f.queues) && f.queues[i-1] >= q {
			n++
		}
	}
	return n
}

// maxQueue is the longest queue in [from, to) of elapsed time.
func (f *fleet) maxQueue(from, to time.Duration) float64 {
	q := 0.0
	for i := int(from / time.Second); i < int(to/time.Second) && i < len(f.queues); i++ {
		q = max(q, f.queues[i])
	}
	return q
}

// firstChange is the elapsed time of the first acted change at or after from, or -1.
func (f *fleet) firstChange(from time.Duration, up bool) time.Duration {
	for _, d := range f.decisions {
		if el := d.Time.Sub(epoch); el >= from && d.Change && !d.DryRun && (d.Desired > d.Current) == up {
			return el
		}
	}
	return -1
}

// changeTimes lists the elapsed times of acted changes in one direction.
func (f *fleet) changeTimes(up bool) []time.Duration {
	var out []time.Duration
	for _, d := range f.decisions {
		if d.Change && !d.DryRun && (d.Desired > d.Current) == up {
			out = append(out, d.Time.Sub(epoch))
		}
	}
	return out
}

func (f *fleet) queue() float64 {
	q := f.carry
	for _, r := range f.reps {
		q += r.queue
	}
	return q
}

func (f *fleet) clamped(kind string) int {
	n := 0
	for _, d := range f.decisions {
		for _, c := range d.Clamps {
			if c.Kind == kind {
				n++
			}
		}
	}
	return n
}

func (f *fleet) journal() string {
	var b strings.Builder
	for _, d := range f.decisions {
		if d.Change {
			fmt.Fprintf(&b, "  %6s %s\n", d.Time.Sub(epoch), d.Reason)
		}
	}
	return b.String()
}

// Load shapes.
func flat(rps float64) func(time.Duration) float64 { return func(time.Duration) float64 { return rps } }

func stepAt(at time.Duration, before, after float64) func(time.Duration) float64 {
	return func(el time.Duration) float64 {
		if el < at {
			return before
		}
		return after
	}
}

func burst(at, length time.Duration, base, peak float64) func(time.Duration) float64 {
	return func(el time.Duration) float64 {
		if el >= at && el < at+length {
			return peak
		}
		return base
	}
}

// onOff is low for off, then high for on, repeated.
func onOff(off, on time.Duration, low, high float64) func(time.Duration) float64 {
	return func(el time.Duration) float64 {
		if el%(off+on) >= off {
			return high
		}
		return low
	}
}

func ramp(from, to time.Duration, lo, hi float64) func(time.Duration) float64 {
	return func(el time.Duration) float64 {
		switch {
		case el < from:
			return lo
		case el >= to:
			return hi
		}
		return lo + (hi-lo)*float64(el-from)/float64(to-from)
	}
}

// Policies.
func sloPolicy(mod func(*llmscalerv1.SloPolicy)) *llmscalerv1.Policy {
	s := &llmscalerv1.SloPolicy{PriorRequestsPerSecond: ptr(10.0)}
	if mod != nil {
		mod(s)
	}
	return &llmscalerv1.Policy{Kind: &llmscalerv1.Policy_Slo{Slo: s}}
}

func thresholdPolicy(mod func(*llmscalerv1.ThresholdPolicy)) *llmscalerv1.Policy {
	t := &llmscalerv1.ThresholdPolicy{}
	if mod != nil {
		mod(t)
	}
	return &llmscalerv1.Policy{Kind: &llmscalerv1.Policy_Threshold{Threshold: t}}
}

func targetPolicy(mod func(*llmscalerv1.TargetPolicy)) *llmscalerv1.Policy {
	t := &llmscalerv1.TargetPolicy{Target: 16}
	if mod != nil {
		mod(t)
	}
	return &llmscalerv1.Policy{Kind: &llmscalerv1.Policy_Target{Target: t}}
}

func ptr[T any](v T) *T { return &v }

func dur(d time.Duration) *durationpb.Duration { return durationpb.New(d) }

// valuesFor is a window of ready replicas with the given arrival rate and queue, serving
// at most 10 requests/s each, with latencies that grow with the queue.
func valuesFor(span time.Duration, ready int, arrival, waiting float64) window.Values {
	served := math.Min(arrival, 10*float64(ready))
	wait := waiting / math.Max(served, 1)
	return window.Values{
		Span: span, Covered: span, ArrivalRate: arrival, Waiting: waiting, Running: 2 * served,
		FinishedPerSec: served, TTFTP50: 0.1 + wait/2, TTFTP95: 0.25 + wait, E2EP50: 2 + wait/2, E2EP95: 4 + wait,
		E2EMean: 2.5 + wait/2, Requests: uint64(served * span.Seconds()), Ready: ready,
		GPUUtil: 100 * served / (10 * float64(ready)), KVCache: 0.5,
	}
}

// fleetCase is one table test of a policy: a load over time on a fake fleet, and a check of
// what the policy did with it.
type fleetCase struct {
	name   string
	policy *llmscalerv1.Policy // nil: the table's default policy
	rate   func(time.Duration) float64
	opts   []fleetOpt
	run    time.Duration
	check  func(t *testing.T, f *fleet)
}

// runFleetCases runs each case on a fresh fleet, with def when a case names no policy.
func runFleetCases(t *testing.T, tests []fleetCase, def *llmscalerv1.Policy) {
	t.Helper()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.policy
			if p == nil {
				p = def
			}
			f := newFleet(t, p, tc.rate, tc.opts...)
			f.run(tc.run)
			tc.check(t, f)
		})
	}
}
