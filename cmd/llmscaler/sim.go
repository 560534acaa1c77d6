package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/llmscaler/llmscaler/internal/servermodel"
	"github.com/llmscaler/llmscaler/internal/sim"
	"github.com/llmscaler/llmscaler/internal/trace"
)

// runSim replays a workload through each policy on simulated replicas and prints a table.
func runSim(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("llmscaler sim", flag.ContinueOnError)
	traceFile := fs.String("trace", "", "request trace: Azure (TIMESTAMP,ContextTokens,GeneratedTokens) or Mooncake (timestamp_ms,input_length,output_length)")
	ratesFile := fs.String("rates", "", "rate series (window_start_s,aggregate_rate_rps): Poisson arrivals per window")
	workload := fs.String("workload", "", "built-in workload: seed (low load 5 min, ramp to minute 15, high to minute 20, decline to minute 30)")
	lengthsFile := fs.String("lengths", "", "with --rates or --workload: request trace to sample prompt/output lengths from (default: 512 prompt, 128 output tokens)")
	scale := fs.Float64("rate-scale", 1, "with --trace: compress time by K (arrival gaps divided by K, so K times the rate, same shape); with --rates or --workload: multiply every rate by K")
	seed := fs.Uint64("seed", 1, "seed of the random arrivals and lengths: the same seed gives the same results")
	policies := fs.String("policies", strings.Join(sim.PolicyNames, ","), "comma-separated policies to compare")
	hardware := fs.String("hardware", "a100-80gb-llama3-8b", "hardware profile of every replica: "+strings.Join(servermodel.ProfileNames(), ", "))
	sloTarget := fs.Duration("slo-target", sim.DefaultSLOTarget, "TTFT a request must meet")
	minReplicas := fs.Int("min-replicas", 1, "fewest replicas")
	initial := fs.Int("initial-replicas", 0, "replicas ready at the start (0: what the first minute's arrivals need)")
	maxReplicas := fs.Int("max-replicas", sim.DefaultMaxReplicas, "most replicas")
	duration := fs.Duration("duration", 0, "replay only arrivals before this offset (after scaling; 0: all)")
	outDir := fs.String("out", "", "write summary.json and timeline.csv to this directory")
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
	w, err := simWorkload(*traceFile, *ratesFile, *workload, *lengthsFile, *scale, *seed)
	if err != nil {
		return err
	}
	w.Truncate(*duration)
	names := strings.Split(*policies, ",")
	env := sim.Env{Params: params, Workload: w, SLOTarget: *sloTarget}
	var scalers []sim.Scaler
	for _, n := range names {
		sc, err := sim.NewScaler(strings.TrimSpace(n), env)
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
	cfg := sim.Config{Params: params, Workload: w, SLOTarget: *sloTarget,
		MinReplicas: *minReplicas, MaxReplicas: *maxReplicas, InitialReplicas: *initial, Timeline: *outDir != ""}
	var results []*sim.Result
	begin := time.Now()
	for i, sc := range scalers {
		if err := ctx.Err(); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "\rsim: %d/%d policies done, running %s...   ", i, len(scalers), sc.Name())
		res, err := sim.Run(cfg, sc)
		if err != nil {
			return fmt.Errorf("policy %s: %w", sc.Name(), err)
		}
		results = append(results, res)
	}
	fmt.Fprintf(os.Stderr, "\rsim: %d policies in %s%30s\n", len(scalers), time.Since(begin).Round(time.Millisecond), "")
	if err := sim.WriteTable(out, results); err != nil {
		return err
	}
	if *outDir != "" {
		return sim.WriteFiles(*outDir, results)
	}
	return nil
}

func simWorkload(traceFile, ratesFile, workload, lengthsFile string, scale float64, seed uint64) (*sim.Workload, error) {
	n := 0
	for _, s := range []string{traceFile, ratesFile, workload} {
		if s != "" {
			n++
		}
	}
	if n != 1 {
		return nil, errors.New("give exactly one of --trace, --rates and --workload")
	}
	if traceFile != "" {
		reqs, err := trace.LoadRequests(traceFile)
		if err != nil {
			return nil, err
		}
		return sim.FromRequests(traceFile, reqs, scale)
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
		rates, err := trace.LoadRates(ratesFile)
		if err != nil {
			return nil, err
		}
		return sim.FromRates(ratesFile, rates, scale, lengths, seed)
	}
	if workload != "seed" {
		return nil, fmt.Errorf("unknown workload %q: want seed", workload)
	}
	return sim.Seed(scale, lengths, seed)
}
