package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/llmscaler/llmscaler/internal/servermodel"
	"github.com/llmscaler/llmscaler/internal/sim"
	"github.com/llmscaler/llmscaler/internal/trace"
)

// runSim replays a workload through each policy on simulated replicas and prints a table.
func runSim(ctx context.Context, args []string, out io.Writer) error {
	if len(args) > 0 && args[0] == "suite" {
		return runSuite(ctx, args[1:], out)
	}
	fs := flag.NewFlagSet("llmscaler sim", flag.ContinueOnError)
	traceFile := fs.String("trace", "", "request trace: Azure (TIMESTAMP,ContextTokens,GeneratedTokens) or Mooncake (timestamp_ms,input_length,output_length)")
	ratesFile := fs.String("rates", "", "rate series (window_start_s,aggregate_rate_rps): Poisson arrivals per window; or a folder of ServeGen per-client traces (*-trace.csv, e.g. servegen_m-mid): see --arrivals")
	arrivals := fs.String("arrivals", "", "with --rates FOLDER: clients (the default: each client's own Gamma/Weibull inter-arrival gaps per window, every client's rate x --rate-scale) or poisson (Poisson arrivals at the clients' summed rates x --rate-scale)")
	workload := fs.String("workload", "", "built-in workload: seed (low load 5 min, ramp to minute 15, high to minute 20, decline to minute 30), or a shape around "+strconv.FormatFloat(sim.ShapeBaseRPS, 'g', -1, 64)+" req/s x --rate-scale: onoff (3 min at base, 2 min at 5x, for an hour), flash (10x base within 10 s at minute 10, for 5 min; 40 min), diurnal (base to 4x base and back, sinusoid, 24 h), ramp (base to 5x over an hour; 70 min), idle (20 min load, 30 min none, 10 min load), heavytail (base for 30 min, lognormal prompts up to 32k tokens, ignoring --lengths)")
	lengthsFile := fs.String("lengths", "", "with --rates or --workload: request trace to sample prompt/output lengths from (default: 512 prompt, 128 output tokens)")
	scale := fs.Float64("rate-scale", 1, "multiply the arrival rate by K: with --trace see --scale-mode; with --rates or --workload every rate is multiplied by K")
	scaleMode := fs.String("scale-mode", "overlay", "with --trace: overlay (K copies of the trace, each shifted by a random offset under a minute: same pace, K times the rate) or compress (arrival gaps divided by K: K times the rate and K times the pace)")
	sloPrior := fs.String("slo-prior", "benchmark", "the slo policy's prior capacity per replica: benchmark (the capacity at the SLO printed in the header: the highest rate per replica at which a pool of simulated replicas, as many as the mean load needs, keeps 99.5 % of this workload's attainable requests within the TTFT target over 5 minutes of Poisson arrivals, as a user measures it with vLLM's benchmark_serving.py), default (the policy's own default), or requests/s")
	seed := fs.Uint64("seed", 1, "seed of the random arrivals and lengths: the same seed gives the same results")
	policies := fs.String("policies", strings.Join(append(slices.Clone(sim.PolicyNames), sim.PolicyStatic, sim.PolicyOracle), ","), "comma-separated policies to compare; static (the fewest always-warm replicas that reach 99 % attainment: no autoscaler) and oracle (a plan that knows every arrival, never above static) are the references")
	hardware := fs.String("hardware", "a100-80gb-llama3-8b", "hardware profile of every replica: "+strings.Join(servermodel.ProfileNames(), ", "))
	sloTarget := fs.Duration("slo-target", sim.DefaultSLOTarget, "TTFT a request must meet")
	minReplicas := fs.Int("min-replicas", 1, "fewest replicas")
	initial := fs.Int("initial-replicas", 0, "replicas ready at the start (0: what the first minute's arrivals need)")
	maxReplicas := fs.Int("max-replicas", sim.DefaultMaxReplicas, "most replicas")
	duration := fs.Duration("duration", 0, "replay only arrivals before this offset (after scaling; 0: all)")
	outDir := fs.String("out", "", "write summary.json, timeline.csv and PNG plots (four panels per policy, SLO attainment against GPU-hours) to this directory")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	params, err := servermodel.Profile(*hardware)
	if err != nil {
		return err
	}
	w, err := simWorkload(*traceFile, *ratesFile, *workload, *lengthsFile, *scale, *scaleMode, *arrivals, *seed, *duration)
	if err != nil {
		return err
	}
	w.Truncate(*duration)
	if len(w.Requests) == 0 {
		return errors.New("the workload has no requests")
	}
	names := strings.Split(*policies, ",")
	env := sim.Env{Params: params, Workload: w, SLOTarget: *sloTarget}
	var pool int
	if env.Capacity, pool, err = sim.FleetCapacity(params, w, *sloTarget, sim.ClairvoyantCalibration); err != nil {
		return err
	}
	if env.Capacity <= 0 {
		return fmt.Errorf("%s replicas miss the %s TTFT target for more than 0.5 %% of these requests even at a trickle: raise --slo-target or pick faster --hardware", *hardware, *sloTarget)
	}
	priorNote := "the policy's default"
	switch *sloPrior {
	case "default":
	case "benchmark":
		env.SLOPrior = env.Capacity
		priorNote = "the capacity at the SLO, as a user measures it with a benchmark"
	default:
		v, err := strconv.ParseFloat(*sloPrior, 64)
		if err != nil || !(v > 0) || math.IsInf(v, 0) {
			return fmt.Errorf("--slo-prior %q: want benchmark, default or a positive requests/s", *sloPrior)
		}
		env.SLOPrior = v
		priorNote = fmt.Sprintf("%g req/s per replica", v)
	}
	var scalers []sim.Scaler
	refs := false
	for _, n := range names {
		if n = strings.TrimSpace(n); n == sim.PolicyStatic || n == sim.PolicyOracle {
			refs = true
			continue
		}
		sc, err := sim.NewScaler(n, env)
		if err != nil {
			return err
		}
		scalers = append(scalers, sc)
	}
	if *initial <= 0 {
		*initial = sim.WarmReplicas(env)
	}
	fmt.Fprintf(out, "workload: %s: %d requests over %s; hardware %s; TTFT SLO %s; %d replicas warm at the start\n",
		w.Name, len(w.Requests), w.Duration().Round(time.Second), *hardware, *sloTarget, *initial)
	fmt.Fprintf(out, "attainable: %.2f %% of requests meet the TTFT target alone on an idle replica; capacity at the SLO: %.2f req/s per replica in a pool of %d; slo prior: %s\n",
		100*sim.Attainable(params, w, *sloTarget), env.Capacity, pool, priorNote)
	cfg := sim.Config{Params: params, Workload: w, SLOTarget: *sloTarget,
		MinReplicas: *minReplicas, MaxReplicas: *maxReplicas, InitialReplicas: *initial, Timeline: *outDir != ""}
	var results []*sim.Result
	var clairvoyantNote string
	begin := time.Now()
	for i, sc := range scalers {
		if err := ctx.Err(); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "\rsim: %d/%d policies done, running %s...   ", i, len(scalers), sc.Name())
		var res *sim.Result
		if _, ok := sc.(*sim.Clairvoyant); ok {
			var c *sim.Clairvoyant
			c, res, err = sim.TuneClairvoyant(cfg, env, sim.ClairvoyantAttainment)
			if err == nil {
				clairvoyantNote = fmt.Sprintf("clairvoyant: headroom %+.2f, the least that reaches %.0f %% attainment\n", c.Headroom(), 100*sim.ClairvoyantAttainment)
			}
		} else {
			res, err = sim.Run(cfg, sc)
		}
		if err != nil {
			return fmt.Errorf("policy %s: %w", sc.Name(), err)
		}
		results = append(results, res)
	}
	var refNote string
	if refs {
		fmt.Fprintf(os.Stderr, "\rsim: %d/%d policies done, running the static and oracle references...   ", len(scalers), len(scalers))
		static, oracle, n, err := sim.References(cfg, sim.SuiteAttainment)
		if err != nil && !errors.Is(err, sim.ErrUnreachable) {
			return fmt.Errorf("references: %w", err)
		}
		for _, name := range names {
			switch strings.TrimSpace(name) {
			case sim.PolicyStatic:
				results = append(results, static)
			case sim.PolicyOracle:
				results = append(results, oracle)
			}
		}
		refNote = fmt.Sprintf("static: %d always-warm replicas, the fewest that reach %.0f %% attainment; oracle: %s\n", n, 100*sim.SuiteAttainment, oracle.Note)
		if err != nil {
			refNote += fmt.Sprintf("(%v)\n", err)
		}
	}
	fmt.Fprintf(os.Stderr, "\rsim: %d policies in %s%50s\n", len(results), time.Since(begin).Round(time.Millisecond), "")
	if err := sim.WriteTable(out, results); err != nil {
		return err
	}
	fmt.Fprint(out, clairvoyantNote)
	fmt.Fprint(out, refNote)
	if *outDir == "" {
		return nil
	}
	if err := sim.WriteFiles(*outDir, results); err != nil {
		return err
	}
	paths, err := sim.WritePlots(*outDir, results, sim.DefaultPlotThresholds(*sloTarget))
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "wrote summary.json, timeline.csv and %d plots to %s\n", len(paths), *outDir)
	return nil
}

// simWorkload builds the workload the flags ask for. until > 0 (--duration) lets a generator
// stop there rather than make arrivals the caller drops.
func simWorkload(traceFile, ratesFile, workload, lengthsFile string, scale float64, scaleMode, arrivals string, seed uint64, until time.Duration) (*sim.Workload, error) {
	n := 0
	for _, s := range []string{traceFile, ratesFile, workload} {
		if s != "" {
			n++
		}
	}
	if n != 1 {
		return nil, errors.New("give exactly one of --trace, --rates and --workload")
	}
	switch {
	case arrivals != "" && ratesFile == "":
		return nil, errors.New("--arrivals goes with --rates FOLDER")
	case arrivals != "" && arrivals != "clients" && arrivals != "poisson":
		return nil, fmt.Errorf("--arrivals %q: want clients or poisson", arrivals)
	}
	if traceFile != "" {
		reqs, err := trace.LoadRequests(traceFile)
		if err != nil {
			return nil, err
		}
		switch scaleMode {
		case "overlay":
			return sim.Overlay(traceFile, reqs, scale, seed)
		case "compress":
			return sim.FromRequests(traceFile, reqs, scale)
		}
		return nil, fmt.Errorf("--scale-mode %q: want overlay or compress", scaleMode)
	}
	lengths := sim.FixedLengths(512, 128)
	if lengthsFile != "" {
		reqs, err := trace.LoadRequests(lengthsFile)
		if err != nil {
			return nil, err
		}
		if lengths, err = sim.LengthsFrom(reqs); err != nil {
			return nil, err
		}
	}
	if ratesFile != "" {
		var rates []trace.RatePoint
		if st, err := os.Stat(ratesFile); err == nil && st.IsDir() {
			clients, err := trace.LoadClients(ratesFile)
			if err != nil {
				return nil, err
			}
			if arrivals != "poisson" {
				return sim.FromClients(ratesFile, clients, scale, lengths, seed, until)
			}
			rates = trace.ClientRates(clients)
		} else {
			if arrivals == "clients" {
				return nil, fmt.Errorf("--arrivals %q: a rate file (%s) has only aggregate rates: poisson, or give a folder of per-client traces", arrivals, ratesFile)
			}
			if rates, err = trace.LoadRates(ratesFile); err != nil {
				return nil, err
			}
		}
		if until > 0 {
			// Windows after the one that starts at or after until make only arrivals the
			// caller drops; that one stays, so the window before it keeps its end.
			if i := slices.IndexFunc(rates, func(p trace.RatePoint) bool { return p.Start >= until }); i >= 0 {
				rates = rates[:i+1]
			}
		}
		return sim.FromRates(ratesFile, rates, scale, lengths, seed)
	}
	if workload == "seed" {
		return sim.Seed(scale, lengths, seed)
	}
	if !slices.Contains(sim.ShapeNames, workload) {
		return nil, fmt.Errorf("unknown workload %q: want seed, %s", workload, strings.Join(sim.ShapeNames, ", "))
	}
	return sim.Shape(workload, sim.ShapeBaseRPS*scale, lengths, seed)
}
