package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/llmscaler/llmscaler/internal/servermodel"
	"github.com/llmscaler/llmscaler/internal/trace"
)

// Scales of a suite workload: the Done-when bars differ between them.
const (
	ScaleHour = "hour"
	ScaleDay  = "day"
)

// SuiteAttainment is the SLO attainment every suite result is judged at.
const SuiteAttainment = 0.99

// SuiteWorkload is one workload of the suite: how to make it for a seed and what it runs on.
type SuiteWorkload struct {
	// Name identifies it on the scoreboard; Scale is ScaleHour or ScaleDay.
	Name, Scale string
	// About says what it is and how it was scaled, for the scoreboard's legend.
	About string
	// Hardware names the replicas' profile; SLOTarget is the TTFT target.
	Hardware  string
	SLOTarget time.Duration
	// Make builds the workload for a seed.
	Make func(seed uint64) (*Workload, error)
	// Long marks a workload left out unless asked for (fourteen days).
	Long bool
	// Step, when set, is when the load first rises faster than a cold start, with nothing
	// before it to foretell it: the suite then finds how many replicas any policy must
	// hold at that moment to reach SuiteAttainment at all (see StepReplicas).
	Step time.Duration
}

// SuiteWorkloads is the battery `llmscaler sim suite` runs, from the traces in dir (the
// shared traces folder): the shared request traces at rate scales that need 8-40 replicas,
// ServeGen per-client day-scale traffic (and the same rates with Poisson arrivals, to show
// what the burstiness costs), and synthetic shapes with a known right answer.
func SuiteWorkloads(dir string) ([]SuiteWorkload, error) {
	azure, err := trace.LoadRequests(filepath.Join(dir, "azure_llm_conv_2023.csv"))
	if err != nil {
		return nil, err
	}
	moon, err := trace.LoadRequests(filepath.Join(dir, "mooncake_synthetic.csv"))
	if err != nil {
		return nil, err
	}
	rates, err := trace.LoadRates(filepath.Join(dir, "servegen_m-large_rate_10min.csv"))
	if err != nil {
		return nil, err
	}
	clients, err := trace.LoadClients(filepath.Join(dir, "servegen_m-mid"))
	if err != nil {
		return nil, err
	}
	lengths, err := LengthsFrom(azure)
	if err != nil {
		return nil, err
	}
	const a100, h100 = "a100-80gb-llama3-8b", "h100-80gb-llama3-8b"
	day := 24 * time.Hour
	// m-mid's clients sum to 1,336 req/s on its first day: these scales make 20 req/s (a
	// day through 8-14 replicas) and, for the busy hour, 40 req/s.
	const mmidDay, mmidHour = 20.0 / 1336, 40.0 / 1336
	shape := func(name string, base float64) func(uint64) (*Workload, error) {
		return func(seed uint64) (*Workload, error) { return Shape(name, base, lengths, seed) }
	}
	ws := []SuiteWorkload{
		{Name: "azure-conv", Scale: ScaleHour, Hardware: a100, SLOTarget: 2 * time.Second,
			About: "Azure conversation trace, 10 overlaid copies (55 req/s)",
			Make:  func(seed uint64) (*Workload, error) { return Overlay("azure", azure, 10, seed) }},
		{Name: "mooncake", Scale: ScaleHour, Hardware: h100, SLOTarget: 5 * time.Second,
			About: "Mooncake long-context trace, 4 overlaid copies (16 req/s, mean prompt 15k)",
			Make:  func(seed uint64) (*Workload, error) { return Overlay("mooncake", moon, 4, seed) }},
		{Name: "seed", Scale: ScaleHour, Hardware: a100, SLOTarget: 2 * time.Second,
			About: "seed notebook: 15 req/s, ramp to 100, decline (Poisson, 512/128 tokens)",
			Make:  func(seed uint64) (*Workload, error) { return Seed(1, FixedLengths(512, 128), seed) }},
		{Name: "mmid-hour", Scale: ScaleHour, Hardware: a100, SLOTarget: 2 * time.Second,
			About: "ServeGen m-mid per-client arrivals, hour 12-13 of day 1 at 40 req/s, Azure lengths",
			Make: func(seed uint64) (*Workload, error) {
				w, err := FromClients("m-mid", clients, mmidHour, lengths, seed, 13*time.Hour)
				if err != nil {
					return nil, err
				}
				return w.Slice(12*time.Hour, 13*time.Hour), nil
			}},
		{Name: "onoff", Scale: ScaleHour, Hardware: a100, SLOTarget: 2 * time.Second,
			About: "on/off: 3 min at 15 req/s, 2 min at 75, twelve times", Make: shape("onoff", 15), Step: OnOffLow},
		{Name: "flash", Scale: ScaleHour, Hardware: a100, SLOTarget: 2 * time.Second,
			About: "flash crowd: 15 req/s, 10x within 10 s for 5 min", Make: shape("flash", 15), Step: FlashStart},
		{Name: "ramp", Scale: ScaleHour, Hardware: a100, SLOTarget: 2 * time.Second,
			About: "slow ramp from 15 to 75 req/s over an hour", Make: shape("ramp", 15)},
		{Name: "idle", Scale: ScaleHour, Hardware: a100, SLOTarget: 2 * time.Second,
			About: "40 req/s, 30 min of nothing, 40 req/s again", Make: shape("idle", 40), Step: IdleLoadBefore + IdleGap},
		{Name: "heavytail", Scale: ScaleHour, Hardware: a100, SLOTarget: 2 * time.Second,
			About: "30 req/s with lognormal prompts (median 400, p99 13k tokens)", Make: shape("heavytail", 30)},
		{Name: "mmid-day", Scale: ScaleDay, Hardware: a100, SLOTarget: 2 * time.Second,
			About: "ServeGen m-mid per-client arrivals, day 1 at 20 req/s (1.7 M requests)",
			Make: func(seed uint64) (*Workload, error) {
				return FromClients("m-mid", clients, mmidDay, lengths, seed, day)
			}},
		{Name: "mmid-day-poisson", Scale: ScaleDay, Hardware: a100, SLOTarget: 2 * time.Second,
			About: "the same rates as mmid-day with Poisson arrivals",
			Make: func(seed uint64) (*Workload, error) {
				w, err := FromRates("m-mid rates", trace.ClientRates(clients), mmidDay, lengths, seed)
				if err != nil {
					return nil, err
				}
				w.Truncate(day)
				return w, nil
			}},
		{Name: "mlarge-day", Scale: ScaleDay, Hardware: a100, SLOTarget: 2 * time.Second,
			About: "ServeGen m-large aggregate rates, day 1 x0.1 (Poisson, 2.4 M requests)",
			Make: func(seed uint64) (*Workload, error) {
				w, err := FromRates("m-large", rates, 0.1, lengths, seed)
				if err != nil {
					return nil, err
				}
				w.Truncate(day)
				return w, nil
			}},
		{Name: "diurnal", Scale: ScaleDay, Hardware: a100, SLOTarget: 2 * time.Second,
			About: "a diurnal day: 8 req/s at night, 32 at noon", Make: shape("diurnal", 8)},
		{Name: "mmid-14d", Scale: ScaleDay, Hardware: a100, SLOTarget: 2 * time.Second, Long: true,
			About: "ServeGen m-mid per-client arrivals, all fourteen days at 20/1336 of its rate",
			Make: func(seed uint64) (*Workload, error) {
				return FromClients("m-mid", clients, mmidDay, lengths, seed, 0)
			}},
	}
	return ws, nil
}

// SuiteOptions says what RunSuite runs.
type SuiteOptions struct {
	// Seeds to run each workload with.
	Seeds []uint64
	// Policies besides the two references (static and oracle, always run).
	Policies []string
	// Parallel is how many simulations run at once [GOMAXPROCS].
	Parallel int
	// SLOPrior picks the slo policy's prior: "benchmark" (the capacity at the SLO, as a
	// benchmark measures it) or "default".
	SLOPrior string
	// Progress, when set, is told of each finished job.
	Progress func(done, total int, what string)
	// Timeline keeps each result's timeline (for plots).
	Timeline bool
}

// SuiteEntry is one workload and seed on the scoreboard.
type SuiteEntry struct {
	Workload string  `json:"workload"`
	Scale    string  `json:"scale"`
	Seed     uint64  `json:"seed"`
	Requests int     `json:"requests"`
	Capacity float64 `json:"capacity_at_slo_rps"`
	// StaticReplicas is the static pool's size.
	StaticReplicas int `json:"static_replicas"`
	// StepReplicas, for a workload with a Step, is the fewest replicas a policy must hold
	// at the step to reach SuiteAttainment at all, and StepBelow the most it can attain
	// with one fewer (see StepReplicas). Both are 0 without a step.
	StepReplicas int     `json:"step_replicas,omitempty"`
	StepBelow    float64 `json:"step_bound_below,omitempty"`
	// Results holds every policy's row, then static's and oracle's.
	Results []*Result `json:"results"`
	// Verdict is "pass" or the Done-when bars slo misses, in words.
	Verdict string `json:"verdict"`
	// Wall is how long the entry's simulations took, added up.
	Wall time.Duration `json:"wall_ns"`
}

// Result returns the named policy's row.
func (e *SuiteEntry) Result(policy string) *Result {
	for _, r := range e.Results {
		if r.Policy == policy {
			return r
		}
	}
	return nil
}

// RunSuite runs every workload with every seed through the policies and both references,
// Parallel simulations at a time, and judges each entry.
func RunSuite(ctx context.Context, ws []SuiteWorkload, o SuiteOptions) ([]*SuiteEntry, error) {
	if o.Parallel <= 0 {
		o.Parallel = runtime.GOMAXPROCS(0)
	}
	if len(o.Seeds) == 0 {
		o.Seeds = []uint64{1}
	}
	for _, p := range o.Policies {
		if !slices.Contains(PolicyNames, p) {
			return nil, fmt.Errorf("unknown policy %q: want some of %s", p, strings.Join(PolicyNames, ", "))
		}
	}
	type prepared struct {
		entry *SuiteEntry
		cfg   Config
		env   Env
		slots []*Result // one per policy, then static, oracle
		mu    sync.Mutex
		// The references' own results, put together once both are done.
		staticErr, planErr error
		plan               *Result
		pending            int // jobs not finished
	}
	var (
		mu    sync.Mutex
		done  int
		total int
		first error
	)
	fail := func(err error) {
		mu.Lock()
		if first == nil {
			first = err
		}
		mu.Unlock()
	}
	// Unbuffered: a workload is built only when a worker is free to start on it, so memory
	// holds the workloads being simulated, not the whole battery (a day is 1.7-2.4 M requests).
	jobs := make(chan func())
	var wg sync.WaitGroup
	for range o.Parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				j()
			}
		}()
	}
	var preps []*prepared
	// Workloads are built one at a time as their jobs are queued, so memory holds only
	// those being simulated.
	for _, w := range ws {
		for _, seed := range o.Seeds {
			if ctx.Err() != nil {
				break
			}
			begin := time.Now()
			wl, err := w.Make(seed)
			if err != nil {
				close(jobs)
				wg.Wait()
				return nil, fmt.Errorf("workload %s: %w", w.Name, err)
			}
			params, err := servermodel.Profile(w.Hardware)
			if err != nil {
				close(jobs)
				wg.Wait()
				return nil, err
			}
			env := Env{Params: params, Workload: wl, SLOTarget: w.SLOTarget}
			if env.Capacity, _, err = FleetCapacity(params, wl, w.SLOTarget, ClairvoyantCalibration); err != nil {
				close(jobs)
				wg.Wait()
				return nil, fmt.Errorf("workload %s: %w", w.Name, err)
			}
			if o.SLOPrior != "default" {
				env.SLOPrior = env.Capacity
			}
			pr := &prepared{
				entry: &SuiteEntry{Workload: w.Name, Scale: w.Scale, Seed: seed, Requests: len(wl.Requests), Capacity: env.Capacity, Wall: time.Since(begin)},
				env:   env,
				slots: make([]*Result, len(o.Policies)+2),
			}
			pr.pending = len(o.Policies) + 2
			if w.Step > 0 {
				pr.pending++
			}
			pr.cfg = Config{Params: params, Workload: wl, SLOTarget: w.SLOTarget, InitialReplicas: WarmReplicas(env), Timeline: o.Timeline}
			preps = append(preps, pr)
			tag := fmt.Sprintf("%s seed %d", w.Name, seed)
			timed := func(what string, f func() error) func() {
				mu.Lock()
				total++
				mu.Unlock()
				return func() {
					if ctx.Err() != nil {
						return
					}
					t0 := time.Now()
					if err := f(); err != nil {
						fail(fmt.Errorf("%s, %s: %w", tag, what, err))
					}
					pr.mu.Lock()
					pr.entry.Wall += time.Since(t0)
					if pr.pending--; pr.pending == 0 {
						// The entry's last job: its requests are no longer needed.
						pr.cfg.Workload, pr.env.Workload = nil, nil
					}
					pr.mu.Unlock()
					mu.Lock()
					done++
					d, n := done, total
					mu.Unlock()
					if o.Progress != nil {
						o.Progress(d, n, tag+" "+what)
					}
				}
			}
			n := len(o.Policies)
			// The two references run as two jobs, queued before the policies: on a day-scale
			// workload each costs a few policy runs, and queued last they ran on one worker
			// each after the policies were done (the fourteen days took 9 min 11 s that way).
			jobs <- timed("static", func() error {
				staticN, static, err := Static(pr.cfg, SuiteAttainment)
				if err != nil && !errors.Is(err, ErrUnreachable) {
					return err
				}
				pr.mu.Lock()
				pr.slots[n], pr.entry.StaticReplicas, pr.staticErr = static, staticN, err
				pr.mu.Unlock()
				return nil
			})
			jobs <- timed("oracle", func() error {
				plan, _, err := Oracle(pr.cfg, SuiteAttainment)
				pr.mu.Lock()
				pr.plan, pr.planErr = plan, err
				pr.mu.Unlock()
				return nil
			})
			if w.Step > 0 {
				jobs <- timed("step bound", func() error {
					n, below, _, err := StepReplicas(pr.cfg, w.Step, SuiteAttainment)
					pr.mu.Lock()
					pr.entry.StepReplicas, pr.entry.StepBelow = n, below
					pr.mu.Unlock()
					return err
				})
			}
			for i, name := range o.Policies {
				jobs <- timed(name, func() error {
					var res *Result
					var err error
					if name == PolicyClairvoyant {
						_, res, err = TuneClairvoyant(pr.cfg, pr.env, ClairvoyantAttainment)
					} else {
						var sc Scaler
						if sc, err = NewScaler(name, pr.env); err == nil {
							res, err = Run(pr.cfg, sc)
						}
					}
					pr.slots[i] = res
					return err
				})
			}
		}
	}
	close(jobs)
	wg.Wait()
	if first != nil {
		return nil, first
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := make([]*SuiteEntry, len(preps))
	for i, pr := range preps {
		n := len(o.Policies)
		pr.slots[n+1] = OracleRow(pr.slots[n], pr.entry.StaticReplicas, pr.staticErr, pr.plan, pr.planErr)
		pr.entry.Results = pr.slots
		pr.entry.Verdict = Judge(pr.entry)
		out[i] = pr.entry
	}
	return out, nil
}

// Judge says whether slo meets the suite's bars on e: it reaches SuiteAttainment wherever
// oracle does; its GPU-hours are at most static's on an hour-long workload and at most 0.8x
// static's and 1.25x oracle's on a day-scale one, and at most those of every other policy
// that attains as much. It returns "pass" or the bars missed, joined by "; ".
func Judge(e *SuiteEntry) string {
	slo, st, or := e.Result(PolicySLO), e.Result(PolicyStatic), e.Result(PolicyOracle)
	if slo == nil || st == nil || or == nil {
		return "no verdict: slo, static and oracle must all run"
	}
	var miss []string
	if or.SLOAttainment >= SuiteAttainment && slo.SLOAttainment < SuiteAttainment {
		m := fmt.Sprintf("attainment %.2f %% < %.0f %% (oracle %.2f %%", 100*slo.SLOAttainment, 100*SuiteAttainment, 100*or.SLOAttainment)
		if e.StepReplicas > 1 {
			m += fmt.Sprintf("; any policy: at most %.2f %% with fewer than %d replicas at the step, static %d", 100*e.StepBelow, e.StepReplicas, e.StaticReplicas)
		}
		miss = append(miss, m+")")
	}
	// Every GPU-hour bar missed is named, not only the tighter one.
	type bar struct {
		limit float64
		what  string
	}
	bars := []bar{{st.GPUHours, "static"}}
	if e.Scale == ScaleDay {
		bars = []bar{{0.8 * st.GPUHours, "0.8x static"}, {1.25 * or.GPUHours, "1.25x oracle"}}
	}
	for _, b := range bars {
		if slo.GPUHours > b.limit+1e-9 {
			miss = append(miss, fmt.Sprintf("%.2f GPU-h > %s %.2f", slo.GPUHours, b.what, b.limit))
		}
	}
	for _, r := range e.Results {
		if r == nil || r.Policy == PolicySLO || r.Policy == PolicyStatic || r.Policy == PolicyOracle {
			continue
		}
		if r.SLOAttainment >= slo.SLOAttainment && r.GPUHours < slo.GPUHours {
			miss = append(miss, fmt.Sprintf("%s cheaper at >= attainment", r.Policy))
		}
	}
	if len(miss) == 0 {
		return "pass"
	}
	return strings.Join(miss, "; ")
}

// WriteScoreboard prints one row per entry and policy: attainment, GPU-hours and their ratio
// to static and to oracle, with the entry's verdict on its slo row.
func WriteScoreboard(w io.Writer, entries []*SuiteEntry) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "workload\tscale\tseed\tpolicy\tattainment\tGPU-h\tx static\tx oracle\tpeak\tverdict")
	for _, e := range entries {
		st, or := e.Result(PolicyStatic), e.Result(PolicyOracle)
		for _, r := range e.Results {
			if r == nil {
				continue
			}
			verdict := ""
			switch r.Policy {
			case PolicySLO:
				verdict = e.Verdict
			case PolicyStatic:
				verdict = fmt.Sprintf("%d replicas", e.StaticReplicas)
			case PolicyOracle:
				verdict = r.Note
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%.2f %%\t%.2f\t%s\t%s\t%d\t%s\n", e.Workload, e.Scale, e.Seed, r.Policy,
				100*r.SLOAttainment, r.GPUHours, ratio(r, st), ratio(r, or), r.PeakReplicas, verdict)
		}
	}
	return tw.Flush()
}

func ratio(r, ref *Result) string {
	if ref == nil || ref.GPUHours <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.3f", r.GPUHours/ref.GPUHours)
}
