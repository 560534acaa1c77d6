package main

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/llmscaler/llmscaler/internal/sim"
)

// simWorkload picks the generator the flags name, and --duration reaches it without changing
// what the replay sees.
func TestSimWorkload(t *testing.T) {
	clients := filepath.Join("testdata", "clients")
	rates := filepath.Join("testdata", "rates.csv")
	type testCase struct {
		name             string
		rates, workload  string
		arrivals         string
		until            time.Duration
		wantName, errHas string
	}
	tests := []testCase{
		{name: "clients folder", rates: clients, wantName: "2 clients, rates x1, per-client Gamma/Weibull gaps"},
		{name: "clients folder, clients", rates: clients, arrivals: "clients", until: 15 * time.Minute, wantName: "per-client"},
		{name: "clients folder, poisson", rates: clients, arrivals: "poisson", wantName: "rates x1, Poisson"},
		{name: "rate file", rates: rates, wantName: "rates x1, Poisson"},
		{name: "rate file, poisson", rates: rates, arrivals: "poisson", until: 15 * time.Minute, wantName: "Poisson"},
		{name: "rate file, clients", rates: rates, arrivals: "clients", errHas: "has only aggregate rates"},
		{name: "unknown arrivals", rates: clients, arrivals: "bursty", errHas: `--arrivals "bursty": want clients or poisson`},
		{name: "arrivals without rates", workload: "seed", arrivals: "poisson", errHas: "--arrivals goes with --rates"},
		{name: "no client files", rates: "testdata", errHas: "no client trace files"},
		{name: "seed", workload: "seed", wantName: "seed ("},
		{name: "unknown workload", workload: "nope", errHas: "want seed, onoff, flash"},
	}
	for _, name := range sim.ShapeNames {
		if name != "diurnal" { // a day of arrivals: Shape's own tests cover it
			tests = append(tests, testCase{name: name, workload: name, wantName: name + " ("})
		}
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, err := simWorkload("", tc.rates, tc.workload, "", 1, "overlay", tc.arrivals, 1, tc.until)
			if tc.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errHas) {
					t.Fatalf("error %v, want one with %q", err, tc.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(w.Name, tc.wantName) || len(w.Requests) == 0 {
				t.Errorf("workload %q with %d requests, want a name with %q", w.Name, len(w.Requests), tc.wantName)
			}
			if tc.until == 0 {
				return
			}
			// The arrivals before until are those of the whole workload.
			whole, err := simWorkload("", tc.rates, tc.workload, "", 1, "overlay", tc.arrivals, 1, 0)
			if err != nil {
				t.Fatal(err)
			}
			w.Truncate(tc.until)
			whole.Truncate(tc.until)
			if !slices.Equal(w.Requests, whole.Requests) {
				t.Errorf("with until %v: %d requests before it, %d without", tc.until, len(w.Requests), len(whole.Requests))
			}
		})
	}
}
