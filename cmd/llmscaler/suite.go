package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/llmscaler/llmscaler/internal/sim"
)

// runSuite runs the scaling battery and prints the scoreboard.
func runSuite(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("llmscaler sim suite", flag.ContinueOnError)
	traces := fs.String("traces", "../shared/traces", "folder of the shared traces (azure_llm_conv_2023.csv, mooncake_synthetic.csv, servegen_m-large_rate_10min.csv, servegen_m-mid/)")
	only := fs.String("workloads", "", "comma-separated workloads to run (default: all but the long ones); see --list")
	long := fs.Bool("long", false, "also run the long workloads (fourteen days)")
	list := fs.Bool("list", false, "list the workloads and exit")
	seeds := fs.String("seeds", "1", "seeds: a list (1,2,3) or a range (1-5)")
	policies := fs.String("policies", "threshold,target,slo,hpa,kpa,ray", "policies to judge besides static and oracle (clairvoyant is slow: it bisects its headroom)")
	prior := fs.String("slo-prior", "benchmark", "the slo policy's prior: benchmark (the capacity at the SLO) or default")
	parallel := fs.Int("parallel", runtime.GOMAXPROCS(0), "simulations run at once")
	jsonFile := fs.String("json", "", "write the scoreboard as JSON to this file")
	outDir := fs.String("out", "", "write plots per workload and seed (four panels per policy, attainment against GPU-hours) under this directory")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the run to this file (go tool pprof reads it)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *prior != "benchmark" && *prior != "default" {
		return fmt.Errorf("--slo-prior %q: want benchmark or default", *prior)
	}
	all, err := sim.SuiteWorkloads(*traces)
	if err != nil {
		return fmt.Errorf("%w (set --traces to the shared traces folder)", err)
	}
	if *list {
		for _, w := range all {
			fmt.Fprintf(out, "%-18s %-4s %s, %s, TTFT %s\n", w.Name, w.Scale, w.About, w.Hardware, w.SLOTarget)
		}
		return nil
	}
	var ws []sim.SuiteWorkload
	want := map[string]bool{}
	for _, n := range strings.Split(*only, ",") {
		if n = strings.TrimSpace(n); n != "" {
			want[n] = true
		}
	}
	known := map[string]bool{}
	for _, w := range all {
		known[w.Name] = true
		if (len(want) == 0 && (!w.Long || *long)) || want[w.Name] {
			ws = append(ws, w)
		}
	}
	for n := range want {
		if !known[n] {
			return fmt.Errorf("--workloads: unknown workload %q (see --list)", n)
		}
	}
	sd, err := parseSeeds(*seeds)
	if err != nil {
		return err
	}
	var pols []string
	for _, p := range strings.Split(*policies, ",") {
		if p = strings.TrimSpace(p); p != "" {
			pols = append(pols, p)
		}
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	begin := time.Now()
	entries, err := sim.RunSuite(ctx, ws, sim.SuiteOptions{
		Seeds: sd, Policies: pols, Parallel: *parallel, SLOPrior: *prior, Timeline: *outDir != "",
		Progress: func(done, total int, what string) {
			fmt.Fprintf(os.Stderr, "\rsuite: %d/%d jobs, %s done, %s%20s", done, total, what, time.Since(begin).Round(time.Second), "")
		},
	})
	fmt.Fprintln(os.Stderr)
	if err != nil {
		return err
	}
	if err := sim.WriteScoreboard(out, entries); err != nil {
		return err
	}
	pass := 0
	for _, e := range entries {
		if e.Verdict == "pass" {
			pass++
		}
	}
	fmt.Fprintf(out, "slo passes %d of %d workload-seeds; %s wall on %d parallel simulations\n", pass, len(entries), time.Since(begin).Round(time.Second), *parallel)
	if *jsonFile != "" {
		b, err := json.MarshalIndent(entries, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(*jsonFile, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	if *outDir != "" {
		for _, e := range entries {
			dir := filepath.Join(*outDir, fmt.Sprintf("%s-seed%d", e.Workload, e.Seed))
			if err := sim.WriteFiles(dir, e.Results); err != nil {
				return err
			}
			if _, err := sim.WritePlots(dir, e.Results, sim.DefaultPlotThresholds(2*time.Second)); err != nil {
				return err
			}
		}
		fmt.Fprintf(out, "wrote plots under %s\n", *outDir)
	}
	return nil
}

// parseSeeds reads "1,2,3" or "1-5".
func parseSeeds(s string) ([]uint64, error) {
	var out []uint64
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.ParseUint(lo, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("--seeds %q: %q is not a seed", s, part)
		}
		b := a
		if isRange {
			if b, err = strconv.ParseUint(hi, 10, 64); err != nil || b < a || b-a > 1000 {
				return nil, fmt.Errorf("--seeds %q: %q is not a range of seeds", s, part)
			}
		}
		for x := a; x <= b; x++ {
			out = append(out, x)
		}
	}
	return out, nil
}
