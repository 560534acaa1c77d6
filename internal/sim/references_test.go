package sim

import (
	"errors"
	"math"
	"os"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/llmscaler/llmscaler/internal/servermodel"
	"github.com/llmscaler/llmscaler/internal/trace"
)

const azureTrace = "../../../shared/traces/azure_llm_conv_2023.csv"

func a100(t testing.TB) servermodel.Params {
	t.Helper()
	p, err := servermodel.Profile("a100-80gb-llama3-8b")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// referenceWorkload is one of the workloads the references are tested on, on the default
// hardware profile: the seed pattern with 512/128-token requests (2 to 9 replicas), or the
// Azure conversation trace overlaid ten times and cut to 20 minutes (7 to 10 replicas).
func referenceWorkload(t testing.TB, name string) *Workload {
	t.Helper()
	switch name {
	case "seed":
		w, err := Seed(1, FixedLengths(512, 128), 1)
		if err != nil {
			t.Fatal(err)
		}
		return w
	case "azure":
		if _, err := os.Stat(azureTrace); err != nil {
			t.Skipf("no Azure trace at %s (the shared traces are not checked out): %v", azureTrace, err)
		}
		reqs, err := trace.LoadRequests(azureTrace)
		if err != nil {
			t.Fatal(err)
		}
		w, err := Overlay("azure conv", reqs, 10, 1)
		if err != nil {
			t.Fatal(err)
		}
		w.Truncate(20 * time.Minute)
		return w
	}
	t.Fatalf("unknown workload %q", name)
	return nil
}

// references are the two rows for one workload, computed once for every test that reads
// them: the oracle costs a few policy runs.
type references struct {
	cfg            Config
	env            Env
	static, oracle *Result
	staticN        int
	err            error
}

var (
	referencesMu   sync.Mutex
	referencesMemo = map[string]*references{}
)

func referencesFor(t *testing.T, name string) *references {
	t.Helper()
	w := referenceWorkload(t, name)
	referencesMu.Lock()
	defer referencesMu.Unlock()
	if r, ok := referencesMemo[name]; ok {
		return r
	}
	r := &references{cfg: Config{Params: a100(t), Workload: w}}
	r.static, r.oracle, r.staticN, r.err = References(r.cfg, 0.99)
	// The policies' environment as the command builds it: the capacity at the SLO as a
	// benchmark of the pool the load needs measures it, for the clairvoyant and as the slo
	// policy's prior.
	r.env = Env{Params: r.cfg.Params, Workload: w}
	capacity, _, err := FleetCapacity(r.cfg.Params, w, DefaultSLOTarget, ClairvoyantCalibration)
	if err != nil {
		t.Fatal(err)
	}
	r.env.Capacity, r.env.SLOPrior = capacity, capacity
	referencesMemo[name] = r
	return r
}

func TestOracleAndStatic(t *testing.T) {
	for _, tc := range []struct {
		name string
		// peaky: the load has a clear peak, so a plan that follows it must cost less than a
		// pool sized for it.
		peaky bool
	}{
		{"seed", true},
		{"azure", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := referencesFor(t, tc.name)
			if r.err != nil {
				t.Fatal(r.err)
			}
			t.Logf("static %d replicas: %.4f attainment, %.3f GPU-hours; oracle: %.4f, %.3f GPU-hours (%s)",
				r.staticN, r.static.SLOAttainment, r.static.GPUHours, r.oracle.SLOAttainment, r.oracle.GPUHours, r.oracle.Note)
			if r.static.Policy != PolicyStatic || r.oracle.Policy != PolicyOracle {
				t.Errorf("rows named %q and %q, want %q and %q", r.static.Policy, r.oracle.Policy, PolicyStatic, PolicyOracle)
			}
			if r.static.SLOAttainment < 0.99 {
				t.Errorf("static pool of %d reaches %.4f attainment, want at least 0.99", r.staticN, r.static.SLOAttainment)
			}
			if r.staticN > r.cfg.withDefaults().MinReplicas {
				fewer, err := runStatic(r.cfg.withDefaults(), r.staticN-1)
				if err != nil {
					t.Fatal(err)
				}
				if fewer.SLOAttainment >= 0.99 {
					t.Errorf("a static pool of %d reaches %.4f attainment: %d is not the fewest", r.staticN-1, fewer.SLOAttainment, r.staticN)
				}
			}
			if r.oracle.SLOAttainment < 0.99 {
				t.Errorf("oracle reaches %.4f attainment, want at least 0.99", r.oracle.SLOAttainment)
			}
			if r.oracle.GPUHours > r.static.GPUHours {
				t.Errorf("oracle costs %.3f GPU-hours, more than the static pool's %.3f", r.oracle.GPUHours, r.static.GPUHours)
			}
			if tc.peaky && !(r.oracle.GPUHours < 0.8*r.static.GPUHours) {
				t.Errorf("oracle costs %.3f GPU-hours on a peaked load, want well under the static pool's %.3f", r.oracle.GPUHours, r.static.GPUHours)
			}
		})
	}
}

// TestReferencesAgainstPolicies holds the oracle to what it is for: no policy that reaches
// the target costs less. The policies get what the command gives them: the measured capacity
// at the SLO, the warm start, and for the clairvoyant the least headroom that reaches the
// target. It runs every policy on both workloads, ray's 64 replicas for 20 s apiece under
// -race, so -short skips it.
func TestReferencesAgainstPolicies(t *testing.T) {
	if testing.Short() {
		t.Skip("runs every policy on two workloads, over a minute under -race")
	}
	for _, workload := range []string{"seed", "azure"} {
		for _, name := range PolicyNames {
			t.Run(workload+"/"+name, func(t *testing.T) {
				r := referencesFor(t, workload)
				if r.err != nil {
					t.Fatal(r.err)
				}
				env := r.env
				cfg := r.cfg
				cfg.InitialReplicas = WarmReplicas(env)
				var res *Result
				if name == PolicyClairvoyant {
					var err error
					if _, res, err = TuneClairvoyant(cfg, env, 0.99); err != nil {
						t.Fatal(err)
					}
				} else {
					sc, err := NewScaler(name, env)
					if err != nil {
						t.Fatal(err)
					}
					if res, err = Run(cfg, sc); err != nil {
						t.Fatal(err)
					}
				}
				t.Logf("%s: %.4f attainment, %.3f GPU-hours; oracle %.3f", name, res.SLOAttainment, res.GPUHours, r.oracle.GPUHours)
				if res.SLOAttainment >= 0.99 && res.GPUHours < r.oracle.GPUHours {
					t.Errorf("%s reaches %.4f attainment with %.3f GPU-hours, less than the oracle's %.3f", name, res.SLOAttainment, res.GPUHours, r.oracle.GPUHours)
				}
			})
		}
	}
}

// tinyLoad is a small load for cpu-tiny replicas: a ramp from 10 to 60 req/s and back over
// 2 minutes, which needs 1 to 4 replicas.
func tinyLoad(t *testing.T) *Workload {
	t.Helper()
	rates := []trace.RatePoint{{Start: 0, RPS: 10}, {Start: 30 * time.Second, RPS: 35}, {Start: 60 * time.Second, RPS: 60}, {Start: 90 * time.Second, RPS: 20}}
	w, err := FromRates("tiny ramp", rates, 1, FixedLengths(64, 32), 3)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// TestOracleCheckpointMatchesRun holds the references' trial runs to the simulator they stand in
// for: a checkpoint run, with a fixed count or playing a plan, must meet the target for
// exactly the requests Run does, and cost the same GPU time.
func TestOracleCheckpointMatchesRun(t *testing.T) {
	slow := tiny(t)
	slow.ColdStart = 2500 * time.Millisecond // not a whole number of report intervals
	for _, tc := range []struct {
		name   string
		params servermodel.Params
		fixed  int   // a fixed count, or
		plan   []int // the plan's counts per 10 s window
	}{
		{"fixed pool", tiny(t), 3, nil},
		{"overloaded pool", tiny(t), 1, nil},
		{"plan up and down", tiny(t), 0, []int{1, 2, 4, 4, 2, 1, 3, 1, 1, 2, 5, 1}},
		{"plan with a long cold start", slow, 0, []int{2, 1, 1, 4, 1, 3, 3, 1, 2, 1, 1, 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := tinyLoad(t)
			cfg := Config{Params: tc.params, Workload: w, MaxReplicas: 8}.withDefaults()
			var res *Result
			var c *checkpoint
			if tc.plan == nil {
				var err error
				if res, err = runStatic(cfg, tc.fixed); err != nil {
					t.Fatal(err)
				}
				// The trials' fixed pool, which never stops...
				c = newCheckpoint(cfg, -1)
				c.advance(math.MaxInt64, tc.fixed)
				if got, want := c.j.met, int(math.Round(res.SLOAttainment*float64(res.Requests))); got != want {
					t.Errorf("fixed checkpoint run met the target for %d requests, Run for %d", got, want)
				}
				// ...and the pool played as a plan, which does.
				pool := cfg
				pool.MinReplicas, pool.MaxReplicas = tc.fixed, tc.fixed
				c = newCheckpoint(pool, -1)
				c.play(&OraclePlan{Window: 10 * time.Second, Min: tc.fixed})
			} else {
				lead := (cfg.Params.ColdStart + cfg.ReportInterval - 1) / cfg.ReportInterval * cfg.ReportInterval
				plan := &OraclePlan{Window: 10 * time.Second, Ready: tc.plan, Lead: lead, Min: 1}
				run := cfg
				run.InitialReplicas = plan.at(0)
				var err error
				if res, err = Run(run, plan); err != nil {
					t.Fatal(err)
				}
				if res.ScaleEvents == 0 {
					t.Fatal("the plan never scaled")
				}
				c = newCheckpoint(cfg, -1)
				c.play(plan)
			}
			if got, want := c.j.met, int(math.Round(res.SLOAttainment*float64(res.Requests))); got != want {
				t.Errorf("checkpoint run met the target for %d requests, Run for %d", got, want)
			}
			if got, want := c.r.gpuTime.Hours(), res.GPUHours; math.Abs(got-want) > 1e-12 {
				t.Errorf("checkpoint run cost %.6f GPU-hours, Run %.6f", got, want)
			}
		})
	}
}

// TestOracleCheckpointClone runs one checkpoint on from a clone and from the original
// with different counts, then the other way round: each evolves as a fresh run to the same
// point would.
func TestOracleCheckpointClone(t *testing.T) {
	cfg := Config{Params: tiny(t), Workload: tinyLoad(t), MaxReplicas: 8}.withDefaults()
	at := func(first, second int) judge {
		c := newCheckpoint(cfg, -1)
		c.advance(45*time.Second, first)
		c.advance(math.MaxInt64, second)
		return c.j
	}
	c := newCheckpoint(cfg, -1)
	c.advance(45*time.Second, 2)
	d := c.clone()
	c.advance(math.MaxInt64, 1)
	d.advance(math.MaxInt64, 4)
	if want := at(2, 1); c.j != want {
		t.Errorf("original after the clone: %+v, want %+v", c.j, want)
	}
	if want := at(2, 4); d.j != want {
		t.Errorf("clone: %+v, want %+v", d.j, want)
	}
}

func TestOracleObserveIsRun(t *testing.T) {
	w, err := Seed(0.3, FixedLengths(64, 32), 2)
	if err != nil {
		t.Fatal(err)
	}
	w.Truncate(3 * time.Minute)
	cfg := Config{Params: tiny(t), Workload: w, MaxReplicas: 16}
	sc, err := NewScaler(PolicyTarget, Env{Params: cfg.Params, Workload: w})
	if err != nil {
		t.Fatal(err)
	}
	want, err := Run(cfg, sc)
	if err != nil {
		t.Fatal(err)
	}
	sc, _ = NewScaler(PolicyTarget, Env{Params: cfg.Params, Workload: w})
	got, ttft, err := observe(cfg, sc)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("observe gave\n%+v\nRun gave\n%+v", got, want)
	}
	met := 0
	for _, x := range ttft {
		if x <= DefaultSLOTarget.Seconds() {
			met++
		}
	}
	if got := float64(met) / float64(len(ttft)); got != want.SLOAttainment {
		t.Errorf("the TTFTs observe returns meet the target for %.4f of requests, Run says %.4f", got, want.SLOAttainment)
	}
}

func TestStaticOracleDeterministic(t *testing.T) {
	cfg := Config{Params: tiny(t), Workload: tinyLoad(t), MaxReplicas: 8}
	s1, o1, n1, err := References(cfg, 0.99)
	if err != nil {
		t.Fatal(err)
	}
	s2, o2, n2, err := References(cfg, 0.99)
	if err != nil {
		t.Fatal(err)
	}
	if n1 != n2 || !reflect.DeepEqual(s1, s2) || !reflect.DeepEqual(o1, o2) {
		t.Errorf("two runs differ:\n%d %+v %+v\n%d %+v %+v", n1, s1, o1, n2, s2, o2)
	}
	if o1.SLOAttainment < 0.99 || o1.GPUHours > s1.GPUHours {
		t.Errorf("oracle %.4f attainment, %.4f GPU-hours; static %.4f GPU-hours", o1.SLOAttainment, o1.GPUHours, s1.GPUHours)
	}
}

func TestStaticOracleUnreachable(t *testing.T) {
	p := tiny(t)
	for _, tc := range []struct {
		name string
		cfg  Config
		// oracleUnreachable: Oracle itself knows that no plan can reach the target.
		oracleUnreachable bool
	}{
		{
			// Three replicas' load on at most one.
			name: "too few replicas allowed",
			cfg:  Config{Params: p, Workload: constant(t, 3*ReplicaCapacity(p, 64, 32), 30*time.Second, 1), MaxReplicas: 1},
		},
		{
			// Prompts whose prefill alone takes longer than the target.
			name: "prompts too long for the target",
			cfg: Config{Params: p, SLOTarget: 20 * time.Millisecond, MaxReplicas: 4, Workload: func() *Workload {
				w, err := FromRates("long", []trace.RatePoint{{RPS: 5}, {Start: 20 * time.Second, RPS: 5}}, 1, FixedLengths(4000, 8), 1)
				if err != nil {
					t.Fatal(err)
				}
				return w
			}()},
			oracleUnreachable: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, res, err := Static(tc.cfg, 0.99)
			if !errors.Is(err, ErrUnreachable) {
				t.Fatalf("Static: error %v, want ErrUnreachable", err)
			}
			if max := tc.cfg.withDefaults().MaxReplicas; n != max || res == nil || res.SLOAttainment >= 0.99 {
				t.Errorf("Static gave %d replicas and %+v, want the run of the most, %d, short of the target", n, res, max)
			}
			if _, _, err := Oracle(tc.cfg, 0.99); tc.oracleUnreachable != errors.Is(err, ErrUnreachable) {
				t.Errorf("Oracle: error %v, want ErrUnreachable: %v", err, tc.oracleUnreachable)
			}
			s, o, _, err := References(tc.cfg, 0.99)
			if !errors.Is(err, ErrUnreachable) || s == nil || o == nil || o.Policy != PolicyOracle || o.GPUHours != s.GPUHours {
				t.Errorf("References: %v, %+v, %+v: want ErrUnreachable with both rows the largest pool's", err, s, o)
			}
		})
	}
}

func TestStaticFewest(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		lo, hi, guess, least int // least: the first that meets; > hi for none
		want                 int
		wantOK               bool
		maxCalls             int
	}{
		{"guess is the answer", 1, 64, 9, 9, 9, true, 8},
		{"answer above the guess", 1, 64, 5, 9, 9, true, 8},
		{"answer far above", 1, 64, 1, 40, 40, true, 14},
		{"answer below the guess", 1, 64, 20, 3, 3, true, 10},
		{"the least allowed", 2, 10, 6, 1, 2, true, 6},
		{"none meets", 1, 8, 4, 9, 8, false, 6},
		{"guess out of range", 1, 8, 30, 5, 5, true, 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			n, ok := fewest(tc.lo, tc.hi, tc.guess, func(n int) bool { calls++; return n >= tc.least })
			if n != tc.want || ok != tc.wantOK {
				t.Errorf("fewest = %d, %v, want %d, %v", n, ok, tc.want, tc.wantOK)
			}
			if calls > tc.maxCalls {
				t.Errorf("%d calls, want at most %d", calls, tc.maxCalls)
			}
		})
	}
}

func TestOraclePlanDesired(t *testing.T) {
	plan := &OraclePlan{Window: 30 * time.Second, Ready: []int{4, 2, 2, 2, 6, 3}, Lead: 40 * time.Second, Min: 1}
	for _, tc := range []struct {
		at   time.Duration
		want int
	}{
		// Window 1 (2) is within a lead of time 0, but window 0's 4 are needed now.
		{0, 4},
		{29 * time.Second, 4},
		// From window 1 the next lead holds windows 1 and 2: the drop to 2 happens.
		{30 * time.Second, 2},
		// Window 4's 6 are started a lead before it, at 80 s.
		{79 * time.Second, 2},
		{80 * time.Second, 6},
		{120 * time.Second, 6},
		// Window 5 (3) is the last: then the minimum.
		{150 * time.Second, 3},
		{180 * time.Second, 1},
	} {
		if got := plan.at(tc.at); got != tc.want {
			t.Errorf("at %s: %d, want %d", tc.at, got, tc.want)
		}
	}
	// A dip shorter than a lead is kept warm.
	dip := &OraclePlan{Window: 30 * time.Second, Ready: []int{5, 2, 5}, Lead: 40 * time.Second, Min: 1}
	if got := dip.at(30 * time.Second); got != 5 {
		t.Errorf("a one-window dip under a 40 s lead: %d at its start, want 5 kept warm", got)
	}
}

// diurnal is a day-shaped load: rates from lo to hi and back over d, in 10-minute windows,
// with prompts long enough that 20 req/s needs about ten A100 replicas.
func diurnal(b *testing.B, lo, hi float64, d time.Duration) *Workload {
	b.Helper()
	var rates []trace.RatePoint
	for t := time.Duration(0); t < d; t += 10 * time.Minute {
		x := float64(t) / float64(d)
		rates = append(rates, trace.RatePoint{Start: t, RPS: lo + (hi-lo)*(1-math.Cos(2*math.Pi*x))/2})
	}
	w, err := FromRates("diurnal", rates, 1, FixedLengths(4096, 256), 1)
	if err != nil {
		b.Fatal(err)
	}
	w.Truncate(d)
	return w
}

// BenchmarkReferences times Static and Oracle against one plain Run of the slo policy (with
// the command's benchmark prior and warm start) on the same workload, and reports each as a
// multiple of that run.
func BenchmarkReferences(b *testing.B) {
	for _, bc := range []struct {
		name     string
		workload func(b *testing.B) *Workload
	}{
		{"seed", func(b *testing.B) *Workload { return referenceWorkload(b, "seed") }},
		{"diurnal-3h", func(b *testing.B) *Workload { return diurnal(b, 10, 30, 3*time.Hour) }},
		{"diurnal-24h", func(b *testing.B) *Workload { return diurnal(b, 10, 30, 24*time.Hour) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			w := bc.workload(b)
			p := a100(b)
			env := Env{Params: p, Workload: w}
			capacity, _, err := FleetCapacity(p, w, DefaultSLOTarget, ClairvoyantCalibration)
			if err != nil {
				b.Fatal(err)
			}
			env.Capacity, env.SLOPrior = capacity, capacity
			cfg := Config{Params: p, Workload: w}
			warm := cfg
			warm.InitialReplicas = WarmReplicas(env)
			b.ResetTimer()
			var sloT, staticT, oracleT time.Duration
			for range b.N {
				sc, err := NewScaler(PolicySLO, env)
				if err != nil {
					b.Fatal(err)
				}
				start := time.Now()
				slo, err := Run(warm, sc)
				if err != nil {
					b.Fatal(err)
				}
				sloT += time.Since(start)
				start = time.Now()
				n, static, err := Static(cfg, 0.99)
				if err != nil {
					b.Fatal(err)
				}
				staticT += time.Since(start)
				start = time.Now()
				oracle, plan, err := Oracle(cfg, 0.99)
				if err != nil {
					b.Fatal(err)
				}
				oracleT += time.Since(start)
				b.Logf("%d requests; slo %.4f %.2f GPU-h peak %d; static %d: %.4f %.2f; oracle %.4f %.2f (%d passes, spend %.1f)",
					len(w.Requests), slo.SLOAttainment, slo.GPUHours, slo.PeakReplicas, n, static.SLOAttainment, static.GPUHours,
					oracle.SLOAttainment, oracle.GPUHours, plan.Passes, plan.Spend)
			}
			b.ReportMetric(sloT.Seconds()/float64(b.N), "slo_s/op")
			b.ReportMetric(staticT.Seconds()/sloT.Seconds(), "static_x_slo")
			b.ReportMetric(oracleT.Seconds()/sloT.Seconds(), "oracle_x_slo")
		})
	}
}
