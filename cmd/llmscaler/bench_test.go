package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBenchFleetRefusesBadFlags checks that bad parameters are errors naming the flag,
// before anything is started (the controller "binary" here is an empty file).
func TestBenchFleetRefusesBadFlags(t *testing.T) {
	bin := t.TempDir()
	if err := os.WriteFile(filepath.Join(bin, "llmscaler-controller"), nil, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no agents", []string{"--agents", "0"}, "--agents 0"},
		{"negative agents", []string{"--agents", "-5"}, "--agents -5"},
		{"no GPUs", []string{"--gpus", "0"}, "--gpus 0"},
		{"more GPUs than a hello may claim", []string{"--gpus", "65"}, "--gpus 65"},
		{"more instances than GPUs", []string{"--gpus", "4", "--instances", "5"}, "--instances 5"},
		{"probes with no free GPU", []string{"--gpus", "2", "--instances", "2"}, "free GPU"},
		{"more probes than agents", []string{"--agents", "5", "--probes", "6"}, "one per agent"},
		{"failover needs a probe agent too", []string{"--agents", "5", "--probes", "5", "--failover"}, "--failover"},
		{"zero ramp", []string{"--ramp", "0"}, "--ramp 0"},
		{"short window", []string{"--duration", "10ms"}, "--duration"},
		{"fast interval", []string{"--interval", "1ms"}, "--interval"},
		{"stray argument", []string{"extra"}, `unexpected argument "extra"`},
		{"unknown flag", []string{"--agentz", "3"}, "agentz"},
		{"bad log level", []string{"--log-level", "loud"}, "--log-level"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			err := runBench(context.Background(), append([]string{"fleet", "--bin", bin, "--progress-interval", "-1s"}, tc.args...), &out)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one naming %q", err, tc.want)
			}
		})
	}
}

func TestBenchNamesAMissingController(t *testing.T) {
	dir := t.TempDir()
	err := runBench(context.Background(), []string{"fleet", "--bin", dir}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "no llmscaler-controller") || !strings.Contains(err.Error(), dir) {
		t.Errorf("error %v, want one saying there is no controller binary in %s", err, dir)
	}
}

// TestBenchAgentRefusesBadFlags checks `bench agent`'s parameters before anything starts
// (the binaries here are empty files).
func TestBenchAgentRefusesBadFlags(t *testing.T) {
	bin := t.TempDir()
	for _, b := range []string{"llmscaler-controller", "llmscaler-agent"} {
		if err := os.WriteFile(filepath.Join(bin, b), nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no GPUs", []string{"--gpus", "0"}, "--gpus 0"},
		{"more instances than GPUs", []string{"--gpus", "2", "--instances", "3"}, "--instances 3"},
		{"no instances", []string{"--instances", "0"}, "--instances 0"},
		{"short window", []string{"--duration", "10ms"}, "--duration"},
		{"fast interval", []string{"--interval", "1ms"}, "--interval"},
		{"negative load", []string{"--load", "-2"}, "--load -2"},
		{"stray argument", []string{"extra"}, `unexpected argument "extra"`},
		{"unknown flag", []string{"--agents", "3"}, "agents"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := runBench(context.Background(), append([]string{"agent", "--bin", bin}, tc.args...), &bytes.Buffer{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one naming %q", err, tc.want)
			}
		})
	}
}

func TestBenchAgentNamesAMissingAgent(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "llmscaler-controller"), nil, 0o755); err != nil {
		t.Fatal(err)
	}
	err := runBench(context.Background(), []string{"agent", "--bin", dir}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "no llmscaler-agent") || !strings.Contains(err.Error(), dir) {
		t.Errorf("error %v, want one saying there is no agent binary in %s", err, dir)
	}
}

func TestBenchSubcommands(t *testing.T) {
	if err := runBench(context.Background(), nil, &bytes.Buffer{}); err == nil {
		t.Error("bench without a benchmark should fail")
	}
	if err := runBench(context.Background(), []string{"fleeet"}, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "fleeet") {
		t.Errorf("unknown benchmark: %v", err)
	}
	var out bytes.Buffer
	if err := runBench(context.Background(), []string{"help"}, &out); err != nil || !strings.Contains(out.String(), "bench fleet") || !strings.Contains(out.String(), "bench agent") {
		t.Errorf("help: %v, %q", err, out.String())
	}
	for _, args := range [][]string{
		{"agents", "--agents", "0", "--controllers", "127.0.0.1:1"},
		{"agents", "--agents", "3"},
		{"etcd"},
	} {
		if err := runBench(context.Background(), args, &bytes.Buffer{}); err == nil {
			t.Errorf("bench %v should fail", args)
		}
	}
}
