package catalog

import (
	"github.com/llmscaler/llmscaler/agent/scrape"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want string // the whole error message
	}{
		{
			name: "unknown key",
			yaml: `profiles:
  - name: a
    command: [srv]
    dialect: vllm
  - name: fake-llm
    comand: [srv]
    command: [srv]
    dialect: vllm
`,
			want: `catalog.yaml:6: profiles[1] "fake-llm": unknown key "comand"`,
		},
		{
			name: "bad duration",
			yaml: `profiles:
  - name: x
    command: [srv]
    dialect: vllm


    startup_timeout: 10 minutes
`,
			want: `catalog.yaml:7: profiles[0] "x": startup_timeout: "10 minutes" is not a duration`,
		},
		{
			name: "negative duration",
			yaml: `profiles:
  - {name: x, command: [srv], dialect: vllm, stop_grace: -1s}
`,
			want: `catalog.yaml:2: profiles[0] "x": stop_grace: "-1s" is negative`,
		},
		{
			name: "zero startup timeout",
			yaml: `profiles:
  - {name: x, command: [srv], dialect: vllm, startup_timeout: 0s}
`,
			want: `catalog.yaml:2: profiles[0] "x": startup_timeout: must be more than 0`,
		},
		{
			name: "duplicate name",
			yaml: `profiles:
  - name: x
    command: [srv]
    dialect: vllm
  - name: x
    command: [srv2]
    dialect: tgi
`,
			want: `catalog.yaml:5: profiles[1] "x": duplicate name; the profile at line 2 has it too`,
		},
		{
			name: "missing command",
			yaml: `profiles:
  - name: x
    dialect: vllm
`,
			want: `catalog.yaml:2: profiles[0] "x": missing required key "command"`,
		},
		{
			name: "missing name and dialect",
			yaml: `profiles:
  - command: [srv]
`,
			want: `catalog.yaml:2: profiles[0]: missing required key "name"` + "\n" +
				`catalog.yaml:2: profiles[0]: missing required key "dialect"`,
		},
		{
			name: "bad name",
			yaml: `profiles:
  - name: "a b"
    command: [srv]
    dialect: vllm
`,
			want: `catalog.yaml:2: profiles[0]: name "a b" must be letters, digits, '-', '.' and '_', starting and ending with a letter or digit`,
		},
		{
			name: "bad dialect",
			yaml: `profiles:
  - name: x
    command: [srv]
    dialect: triton
`,
			want: `catalog.yaml:4: profiles[0] "x": dialect: unknown metrics dialect "triton": want one of vllm, tgi, llamacpp, sglang`,
		},
		{
			name: "bad signal",
			yaml: `profiles:
  - name: x
    command: [srv]
    dialect: vllm
    stop_signal: SIGSTOP
`,
			want: `catalog.yaml:5: profiles[0] "x": stop_signal: "SIGSTOP" is not one of SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2`,
		},
		{
			name: "negative gpus",
			yaml: `profiles:
  - name: x
    command: [srv]
    dialect: vllm
    gpus: -1
`,
			want: `catalog.yaml:5: profiles[0] "x": gpus: -1 is negative`,
		},
		{
			name: "negative max restarts",
			yaml: `profiles:
  - name: x
    command: [srv]
    dialect: vllm
    max_restarts: -2
`,
			want: `catalog.yaml:5: profiles[0] "x": max_restarts: -2 is negative`,
		},
		{
			name: "not a number",
			yaml: `profiles:
  - name: x
    command: [srv]
    dialect: vllm
    gpu_memory_mib: 20GB
`,
			want: `catalog.yaml:5: profiles[0] "x": gpu_memory_mib: "20GB" is not a whole number`,
		},
		{
			name: "empty command",
			yaml: `profiles:
  - name: x
    command: []
    dialect: vllm
`,
			want: `catalog.yaml:3: profiles[0] "x": command is empty`,
		},
		{
			name: "command is a string",
			yaml: `profiles:
  - name: x
    command: vllm serve
    dialect: vllm
`,
			want: `catalog.yaml:3: profiles[0] "x": command: want a list of strings (argv, no shell), got "vllm serve"`,
		},
		{
			name: "placeholder in command[0]",
			yaml: `profiles:
  - name: x
    command: ["{deployment}"]
    dialect: vllm
`,
			want: `catalog.yaml:3: profiles[0] "x": command[0]: "{deployment}" may not use placeholders`,
		},
		{
			name: "placeholder in dir",
			yaml: `profiles:
  - name: x
    command: [srv]
    dialect: vllm
    dir: /srv/{instance_id}
`,
			want: `catalog.yaml:5: profiles[0] "x": dir: "/srv/{instance_id}" may not use placeholders`,
		},
		{
			name: "unknown placeholder in command",
			yaml: `profiles:
  - name: x
    command:
      - srv
      - --port={prot}
    dialect: vllm
`,
			want: `catalog.yaml:5: profiles[0] "x": command[1]: unknown placeholder {prot}; known: {port}, {host}, {gpus}, {instance_id}, {deployment}`,
		},
		{
			name: "unknown placeholder in env",
			yaml: `profiles:
  - name: x
    command: [srv]
    dialect: vllm
    env:
      MODEL: "{model}"
`,
			want: `catalog.yaml:6: profiles[0] "x": env[MODEL]: unknown placeholder {model}; known: {port}, {host}, {gpus}, {instance_id}, {deployment}`,
		},
		{
			name: "env sets CUDA_VISIBLE_DEVICES",
			yaml: `profiles:
  - name: x
    command: [srv]
    dialect: vllm
    env: {CUDA_VISIBLE_DEVICES: "0"}
`,
			want: `catalog.yaml:5: profiles[0] "x": env: CUDA_VISIBLE_DEVICES is set by the agent from the instance's GPUs`,
		},
		{
			name: "bad env name",
			yaml: `profiles:
  - name: x
    command: [srv]
    dialect: vllm
    env: {"A-B": "1"}
`,
			want: `catalog.yaml:5: profiles[0] "x": env: "A-B" is not a variable name (letters, digits and '_', not starting with a digit)`,
		},
		{
			name: "duplicate key",
			yaml: `profiles:
  - name: x
    command: [srv]
    dialect: vllm
    command: [srv2]
`,
			want: `catalog.yaml:5: profiles[0] "x": duplicate key "command"`,
		},
		{
			name: "health path without slash",
			yaml: `profiles:
  - name: x
    command: [srv]
    dialect: vllm
    health_path: health
`,
			want: `catalog.yaml:5: profiles[0] "x": health_path: "health" must start with "/"`,
		},
		{
			name: "profile not a mapping",
			yaml: `profiles:
  - x
`,
			want: `catalog.yaml:2: profiles[0]: want a mapping, got "x"`,
		},
		{
			name: "unknown top-level key",
			yaml: `profile:
  - name: x
`,
			want: `catalog.yaml:1: unknown key "profile"; the only key is "profiles"` + "\n" +
				`catalog.yaml:1: missing required key "profiles"`,
		},
		{
			name: "top level not a mapping",
			yaml: "- a\n",
			want: `catalog.yaml:1: want a mapping with key "profiles", got a list`,
		},
		{
			name: "empty file",
			yaml: "# nothing yet\n",
			want: `catalog.yaml: is empty; want a mapping with key "profiles"`,
		},
		{
			name: "several errors",
			yaml: `profiles:
  - name: x
    command: [srv]
    dialect: vllm
    gpus: many
  - name: y
    command: [srv]
    dialect: vllm
    drain_timeout: soon
`,
			want: `catalog.yaml:5: profiles[0] "x": gpus: "many" is not a whole number` + "\n" +
				`catalog.yaml:9: profiles[1] "y": drain_timeout: "soon" is not a duration`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("catalog.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatalf("Parse = %v, want error %q", c.Names(), tc.want)
			}
			if err.Error() != tc.want {
				t.Errorf("error:\n%s\nwant:\n%s", err, tc.want)
			}
		})
	}
}

func TestParseSyntaxError(t *testing.T) {
	_, err := Parse("catalog.yaml", []byte("profiles:\n  - name: [x\n"))
	if err == nil || !strings.HasPrefix(err.Error(), "catalog.yaml: yaml: line ") {
		t.Fatalf("error = %v, want one that starts with the file and the yaml line", err)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "catalog.yaml")
	data := `profiles:
  - name: fake-llm
    command: ["llmscaler", "fakeserver", "--host", "{host}", "--port", "{port}", "--model", "{deployment}"]
    env: {VLLM_LOGGING_LEVEL: INFO, EMPTY: }
    dir: models
    health_path: /healthz
    metrics_path: /prom
    dialect: tgi
    gpus: 2
    gpu_memory_mib: 20000
    startup_timeout: 90s
    drain_timeout: 5s
    stop_signal: SIGINT
    stop_grace: 1s
    max_restarts: 0
    max_in_flight: 64
  - name: local.server_2
    command: ["./bin/server", '{"level": 3}']
    dialect: llamacpp
  - name: abs
    command: [/usr/bin/srv]
    dialect: sglang
    gpus: 0
`
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got, want := c.Names(), []string{"abs", "fake-llm", "local.server_2"}; !slices.Equal(got, want) {
		t.Errorf("Names = %v, want %v", got, want)
	}
	if _, ok := c.Profile("nope"); ok {
		t.Error("Profile(nope) found a profile")
	}

	p, ok := c.Profile("fake-llm")
	if !ok {
		t.Fatal("Profile(fake-llm) not found")
	}
	want := Profile{
		Name:           "fake-llm",
		Command:        []string{"llmscaler", "fakeserver", "--host", "{host}", "--port", "{port}", "--model", "{deployment}"},
		Env:            map[string]string{"VLLM_LOGGING_LEVEL": "INFO", "EMPTY": ""},
		Dir:            filepath.Join(dir, "models"),
		HealthPath:     "/healthz",
		MetricsPath:    "/prom",
		Dialect:        scrape.TGI,
		GPUs:           2,
		GPUMemoryMiB:   20000,
		StartupTimeout: 90 * time.Second,
		DrainTimeout:   5 * time.Second,
		StopSignal:     syscall.SIGINT,
		StopGrace:      time.Second,
		MaxRestarts:    0,
		MaxInFlight:    64,
	}
	checkProfile(t, p, &want)

	p, _ = c.Profile("local.server_2")
	want = Profile{
		Name:           "local.server_2",
		Command:        []string{filepath.Join(dir, "bin/server"), `{"level": 3}`},
		HealthPath:     DefaultHealthPath,
		MetricsPath:    DefaultMetricsPath,
		Dialect:        scrape.LlamaCpp,
		GPUs:           DefaultGPUs,
		StartupTimeout: DefaultStartupTimeout,
		DrainTimeout:   DefaultDrainTimeout,
		StopSignal:     DefaultStopSignal,
		StopGrace:      DefaultStopGrace,
		MaxRestarts:    DefaultMaxRestarts,
	}
	checkProfile(t, p, &want)

	p, _ = c.Profile("abs")
	if p.Command[0] != "/usr/bin/srv" || p.GPUs != 0 {
		t.Errorf("abs: command[0] = %q, gpus = %d; want /usr/bin/srv, 0", p.Command[0], p.GPUs)
	}
}

func TestLoadNamesPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cat.yaml")
	if err := os.WriteFile(path, []byte("profiles:\n  - {name: x, command: [s], dialect: vlm}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	want := path + `:2: profiles[0] "x": dialect: unknown metrics dialect "vlm": want one of vllm, tgi, llamacpp, sglang`
	if err == nil || err.Error() != want {
		t.Errorf("Load error = %v, want %s", err, want)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Error("Load of a missing file succeeded")
	}
}

func checkProfile(t *testing.T, got, want *Profile) {
	t.Helper()
	switch {
	case got.Name != want.Name,
		!slices.Equal(got.Command, want.Command),
		len(got.Env) != len(want.Env),
		got.Dir != want.Dir,
		got.HealthPath != want.HealthPath,
		got.MetricsPath != want.MetricsPath,
		got.Dialect != want.Dialect,
		got.GPUs != want.GPUs,
		got.GPUMemoryMiB != want.GPUMemoryMiB,
		got.StartupTimeout != want.StartupTimeout,
		got.DrainTimeout != want.DrainTimeout,
		got.StopSignal != want.StopSignal,
		got.StopGrace != want.StopGrace,
		got.MaxRestarts != want.MaxRestarts:
		t.Errorf("profile %s:\n got %+v\nwant %+v", want.Name, *got, *want)
	}
	for k, v := range want.Env {
		if got.Env[k] != v {
			t.Errorf("profile %s: env[%s] = %q, want %q", want.Name, k, got.Env[k], v)
		}
	}
}

func TestExpand(t *testing.T) {
	c, err := Parse("catalog.yaml", []byte(`profiles:
  - name: p
    command: [srv, "--host={host}", --port, "{port}", --gpus, "{gpus}", "{instance_id}/{deployment}", '{"x": {port}}', "{port}{port}"]
    env: {B: "{deployment}", A: "id={instance_id}", PLAIN: "x"}
    dialect: vllm
`))
	if err != nil {
		t.Fatal(err)
	}
	p, _ := c.Profile("p")
	tests := []struct {
		name     string
		vars     Vars
		wantArgv []string
		wantEnv  []string
	}{
		{
			name:     "two gpus",
			vars:     Vars{Port: 8000, Host: "10.0.0.1", GPUs: []uint32{3, 1}, InstanceID: "i-1", Deployment: "llama"},
			wantArgv: []string{"srv", "--host=10.0.0.1", "--port", "8000", "--gpus", "3,1", "i-1/llama", `{"x": 8000}`, "80008000"},
			wantEnv:  []string{"A=id=i-1", "B=llama", "PLAIN=x", "CUDA_VISIBLE_DEVICES=3,1"},
		},
		{
			name:     "cpu only",
			vars:     Vars{Port: 1, Host: "127.0.0.1", InstanceID: "c", Deployment: "d"},
			wantArgv: []string{"srv", "--host=127.0.0.1", "--port", "1", "--gpus", "", "c/d", `{"x": 1}`, "11"},
			wantEnv:  []string{"A=id=c", "B=d", "PLAIN=x", "CUDA_VISIBLE_DEVICES="},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			argv, env := p.Expand(tc.vars)
			if !slices.Equal(argv, tc.wantArgv) {
				t.Errorf("argv = %q, want %q", argv, tc.wantArgv)
			}
			if !slices.Equal(env, tc.wantEnv) {
				t.Errorf("env = %q, want %q", env, tc.wantEnv)
			}
		})
	}
	// Expand must not change the profile.
	if p.Command[3] != "{port}" || p.Env["B"] != "{deployment}" {
		t.Errorf("Expand changed the profile: %q %v", p.Command, p.Env)
	}
}
