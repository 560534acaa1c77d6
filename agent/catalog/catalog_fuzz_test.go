package catalog

import (
	"bytes"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/llmscaler/llmscaler/agent/scrape"
)

// fuzzFile is the catalog's name in FuzzParse: absolute, so that relative paths in it
// come back absolute.
const fuzzFile = "/srv/llmscaler/catalog.yaml"

// errLine is how each line of a catalog error starts: the file and a line number, or, for
// the YAML decoder's own errors, the file and "yaml: line N:". An empty file has no line.
var errLine = regexp.MustCompile(`^` + regexp.QuoteMeta(fuzzFile) + `:(\d+: | yaml: line (\d+): )`)

// FuzzParse feeds the catalog parser arbitrary YAML. It must never panic and must give the
// same answer twice. Every line of an error names the file and a line of the input. A
// catalog that parses holds only profiles that obey the documented rules (names, argv,
// placeholders, paths, bounds), and written back as YAML it parses to the same profiles.
// The seed corpus in testdata/fuzz/FuzzParse holds the example catalogs, TestLoad's, and
// YAML oddities: anchors and merge keys, several documents, tabs, a BOM, CRLF, NUL bytes,
// deep nesting, UTF-16.
func FuzzParse(f *testing.F) {
	f.Add([]byte("profiles:\n  - name: x\n    command: [srv]\n    dialect: vllm\n    comand: [srv]\n    gpus: -1\n"))
	f.Add([]byte("profiles:\n  - name: [x\n"))
	f.Add([]byte("# nothing yet\n"))
	f.Add([]byte("- a\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(fuzzFile, data)
		c2, err2 := Parse(fuzzFile, data)
		if (err == nil) != (err2 == nil) || err != nil && err.Error() != err2.Error() {
			t.Fatalf("Parse is not deterministic: %v, then %v", err, err2)
		}
		if err != nil {
			checkErrorLines(t, err.Error(), data)
			return
		}
		if !slices.Equal(c.Names(), c2.Names()) {
			t.Fatalf("Parse is not deterministic: %q, then %q", c.Names(), c2.Names())
		}
		for _, name := range c.Names() {
			p, ok := c.Profile(name)
			if !ok || p.Name != name {
				t.Fatalf("Names has %q, Profile finds %v", name, p)
			}
			checkFuzzedProfile(t, p)
		}
		checkRoundTrip(t, c)
	})
}

func checkErrorLines(t *testing.T, msg string, data []byte) {
	t.Helper()
	if msg == fuzzFile+`: is empty; want a mapping with key "profiles"` {
		return
	}
	utf16 := bytes.HasPrefix(data, []byte("\xff\xfe")) || bytes.HasPrefix(data, []byte("\xfe\xff"))
	lines := 1 // at most: YAML breaks lines at LF, CR, CRLF (counted twice here), NEL, LS, PS
	for _, brk := range []string{"\n", "\r", "\u0085", "\u2028", "\u2029"} {
		lines += strings.Count(string(data), brk)
	}
	for _, l := range strings.Split(msg, "\n") {
		m := errLine.FindStringSubmatch(l)
		if m == nil && utf16 && strings.HasPrefix(l, fuzzFile+": yaml: ") {
			continue // the decoder's reader errors have no line, and Parse finds none in UTF-16
		}
		if m == nil {
			t.Fatalf("error line %q does not start with %s:<line>:\nwhole error:\n%s", l, fuzzFile, msg)
		}
		n, _ := strconv.Atoi(m[1][:len(m[1])-2])
		if m[2] != "" {
			n, _ = strconv.Atoi(m[2])
		}
		// An empty node at the end ("---" alone) is on the line after the last.
		if n < 1 || n > lines+1 {
			t.Fatalf("error line %q names line %d of %d", l, n, lines)
		}
	}
}

// checkFuzzedProfile checks the rules the package doc gives for a profile.
func checkFuzzedProfile(t *testing.T, p *Profile) {
	t.Helper()
	alnum := func(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' }
	if n := p.Name; n == "" || len(n) > 128 || !alnum(n[0]) || !alnum(n[len(n)-1]) ||
		strings.ContainsFunc(n, func(r rune) bool { return r > 0x7f || !alnum(byte(r)) && r != '-' && r != '.' && r != '_' }) {
		t.Errorf("profile name %q", n)
	}
	if len(p.Command) == 0 || p.Command[0] == "" || placeholder.MatchString(p.Command[0]) {
		t.Fatalf("profile %q: command %q", p.Name, p.Command)
	}
	if strings.Contains(p.Command[0], "/") && !strings.HasPrefix(p.Command[0], "/") {
		t.Errorf("profile %q: command[0] %q is relative with a '/'", p.Name, p.Command[0])
	}
	if p.Dir != "" && (!strings.HasPrefix(p.Dir, "/") || placeholder.MatchString(p.Dir)) {
		t.Errorf("profile %q: dir %q", p.Name, p.Dir)
	}
	for _, a := range append(slices.Clone(p.Command[1:]), slices.Collect(maps.Values(p.Env))...) {
		for _, m := range placeholder.FindAllStringSubmatch(a, -1) {
			if !slices.Contains([]string{"port", "host", "gpus", "instance_id", "deployment"}, m[1]) {
				t.Errorf("profile %q: %q has placeholder %s", p.Name, a, m[0])
			}
		}
	}
	for k := range p.Env {
		if !envName.MatchString(k) || k == CUDAVisibleDevices {
			t.Errorf("profile %q: env %q", p.Name, k)
		}
	}
	if !strings.HasPrefix(p.HealthPath, "/") || !strings.HasPrefix(p.MetricsPath, "/") {
		t.Errorf("profile %q: paths %q %q", p.Name, p.HealthPath, p.MetricsPath)
	}
	if _, err := scrape.ParseDialect(string(p.Dialect)); err != nil {
		t.Errorf("profile %q: dialect %q", p.Name, p.Dialect)
	}
	if p.GPUs < 0 || p.MaxRestarts < 0 || p.MaxInFlight < 0 || p.StartupTimeout <= 0 || p.DrainTimeout < 0 || p.StopGrace < 0 {
		t.Errorf("profile %q: negative count or duration in %+v", p.Name, *p)
	}
	if signalName(p) == "" {
		t.Errorf("profile %q: stop signal %v", p.Name, p.StopSignal)
	}

	// Values of digits only cannot spell a placeholder, so none may be left after Expand.
	argv, env := p.Expand(Vars{Port: 8000, Host: "10.0.0.1", GPUs: []uint32{3, 1}, InstanceID: "7", Deployment: "9"})
	if len(argv) != len(p.Command) || argv[0] != p.Command[0] {
		t.Fatalf("profile %q: Expand gave argv %q for command %q", p.Name, argv, p.Command)
	}
	if len(env) != len(p.Env)+1 || env[len(env)-1] != CUDAVisibleDevices+"=3,1" {
		t.Fatalf("profile %q: Expand gave env %q", p.Name, env)
	}
	for _, a := range append(argv[1:], env...) {
		for _, m := range placeholder.FindAllStringSubmatch(a, -1) {
			if slices.Contains([]string{"port", "host", "gpus", "instance_id", "deployment"}, m[1]) {
				t.Errorf("profile %q: %q still has %s after Expand", p.Name, a, m[0])
			}
		}
	}
}

func signalName(p *Profile) string {
	for _, s := range stopSignals {
		if s.sig == p.StopSignal {
			return s.name
		}
	}
	return ""
}

// fuzzProfile is a Profile as the catalog file spells it.
type fuzzProfile struct {
	Name           string            `yaml:"name"`
	Command        []string          `yaml:"command"`
	Env            map[string]string `yaml:"env,omitempty"`
	Dir            string            `yaml:"dir,omitempty"`
	HealthPath     string            `yaml:"health_path"`
	MetricsPath    string            `yaml:"metrics_path"`
	Dialect        string            `yaml:"dialect"`
	GPUs           string            `yaml:"gpus"`
	GPUMemoryMiB   string            `yaml:"gpu_memory_mib"`
	StartupTimeout string            `yaml:"startup_timeout"`
	DrainTimeout   string            `yaml:"drain_timeout"`
	StopSignal     string            `yaml:"stop_signal"`
	StopGrace      string            `yaml:"stop_grace"`
	MaxRestarts    string            `yaml:"max_restarts"`
	MaxInFlight    string            `yaml:"max_in_flight"`
}

// checkRoundTrip writes c's profiles back as a catalog and parses that: it must give the
// same profiles.
func checkRoundTrip(t *testing.T, c *Catalog) {
	t.Helper()
	var doc struct {
		Profiles []fuzzProfile `yaml:"profiles"`
	}
	for _, name := range c.Names() {
		p, _ := c.Profile(name)
		doc.Profiles = append(doc.Profiles, fuzzProfile{
			Name: p.Name, Command: p.Command, Env: p.Env, Dir: p.Dir, HealthPath: p.HealthPath,
			MetricsPath: p.MetricsPath, Dialect: string(p.Dialect), GPUs: strconv.Itoa(p.GPUs),
			GPUMemoryMiB: strconv.FormatUint(p.GPUMemoryMiB, 10), StartupTimeout: p.StartupTimeout.String(),
			DrainTimeout: p.DrainTimeout.String(), StopSignal: signalName(p), StopGrace: p.StopGrace.String(),
			MaxRestarts: strconv.Itoa(p.MaxRestarts), MaxInFlight: strconv.Itoa(p.MaxInFlight),
		})
	}
	if len(doc.Profiles) == 0 {
		return // an empty list writes back as "profiles: []", a different but valid catalog
	}
	out, err := yaml.Marshal(&doc)
	if err != nil {
		t.Fatalf("marshal the parsed catalog: %v", err)
	}
	back, err := Parse(fuzzFile, out)
	if err != nil {
		t.Fatalf("the parsed catalog written back does not parse: %v\n%s", err, out)
	}
	if !slices.Equal(back.Names(), c.Names()) {
		t.Fatalf("written back, names %q became %q\n%s", c.Names(), back.Names(), out)
	}
	for _, name := range c.Names() {
		p, _ := c.Profile(name)
		q, _ := back.Profile(name)
		if !slices.Equal(p.Command, q.Command) || !maps.Equal(p.Env, q.Env) || p.Dir != q.Dir ||
			p.HealthPath != q.HealthPath || p.MetricsPath != q.MetricsPath || p.Dialect != q.Dialect ||
			p.GPUs != q.GPUs || p.GPUMemoryMiB != q.GPUMemoryMiB || p.StartupTimeout != q.StartupTimeout ||
			p.DrainTimeout != q.DrainTimeout || p.StopSignal != q.StopSignal || p.StopGrace != q.StopGrace ||
			p.MaxRestarts != q.MaxRestarts || p.MaxInFlight != q.MaxInFlight {
			t.Fatalf("written back, profile %q\n%+v\nbecame\n%+v\n%s", name, *p, *q, out)
		}
	}
}
