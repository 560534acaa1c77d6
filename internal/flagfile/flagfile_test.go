package flagfile

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// settings is a daemon's worth of flags of every kind Apply handles.
type settings struct {
	grpcAddr    string
	interval    time.Duration
	logJSON     bool
	maxQueue    int
	controllers List
	labels      Map
	config      string
	version     bool
}

func newFlags() (*flag.FlagSet, *settings) {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(new(strings.Builder))
	s := &settings{controllers: List{"127.0.0.1:7400"}}
	fs.StringVar(&s.grpcAddr, "grpc-addr", "127.0.0.1:7400", "")
	fs.DurationVar(&s.interval, "report-interval", time.Second, "")
	fs.BoolVar(&s.logJSON, "log-json", false, "")
	fs.IntVar(&s.maxQueue, "max-queue", 1000, "")
	fs.Var(&s.controllers, "controller", "")
	fs.Var(&s.labels, "labels", "")
	fs.StringVar(&s.config, "config", "", "")
	fs.BoolVar(&s.version, "version", false, "")
	return fs, s
}

var reserved = []string{"config", "version"}

func TestApplyErrors(t *testing.T) {
	for _, tc := range []struct {
		name, file, want string
	}{
		{"unknown key", "grpc-addr: a:1\ngrpc-adr: b:1\n", `agent.yaml:2: unknown key "grpc-adr" (did you mean "grpc-addr"?)`},
		{"underscore", "report_interval: 2s\n", `agent.yaml:1: unknown key "report_interval" (did you mean "report-interval"?)`},
		{"unknown key, nothing near", "colour: blue\n", `agent.yaml:1: unknown key "colour"`},
		{"bad duration", "log-json: true\n\nreport-interval: fast\n", `agent.yaml:3: report-interval: time: invalid duration "fast"`},
		{"duration without unit", "report-interval: 5\n", `agent.yaml:1: report-interval: time: missing unit in duration "5"`},
		{"bad bool", "log-json: yes\n", `agent.yaml:1: log-json: want true or false, got "yes"`},
		{"bad number", "max-queue: lots\n", `agent.yaml:1: max-queue: want a number, got "lots"`},
		{"number out of range", "max-queue: 99999999999999999999\n", `agent.yaml:1: max-queue: "99999999999999999999" is out of range`},
		{"duplicate key", "grpc-addr: a:1\nmax-queue: 5\ngrpc-addr: b:1\n", `agent.yaml:3: duplicate key "grpc-addr" (first at line 1)`},
		{"top level list", "- grpc-addr: a:1\n", `agent.yaml:1: want a mapping of flag names to values, got a list`},
		{"top level scalar", "grpc-addr\n", `agent.yaml:1: want a mapping of flag names to values, got "grpc-addr"`},
		{"nested mapping", "grpc-addr:\n  host: a\n  port: 1\n", `agent.yaml:2: grpc-addr: want a single value, got a mapping`},
		{"list for a plain flag", "grpc-addr: [a:1, b:1]\n", `agent.yaml:1: grpc-addr: want a single value, got a list`},
		{"list in a list", "controller:\n  - a:1\n  - [b:1]\n", `agent.yaml:3: controller[1]: want a single value, got a list`},
		{"empty list element", "controller: [a:1, '', b:1]\n", `agent.yaml:1: controller[1]: empty element`},
		{"stray comma", "controller: a:1,,b:1\n", `agent.yaml:1: controller: element 1 of "a:1,,b:1" is empty (stray comma?)`},
		{"list in a map", "labels:\n  zone: [a, b]\n", `agent.yaml:2: labels.zone: want a single value, got a list`},
		{"duplicate map key", "labels:\n  zone: a\n  zone: b\n", `agent.yaml:3: labels: duplicate key "zone" (first at line 2)`},
		{"bad pair", "labels: zone\n", `agent.yaml:1: labels: "zone" is not key=value`},
		{"no value", "grpc-addr:\n", `agent.yaml:1: grpc-addr: no value (write "" for an empty one)`},
		{"non-scalar key", "[a]: b\n", `agent.yaml:1: want a name as key, got a list`},
		{"config in the file", "config: other.yaml\n", `agent.yaml:1: "config" cannot be set in a config file`},
		{"version in the file", "version: true\n", `agent.yaml:1: "version" cannot be set in a config file`},
		{"syntax error", "grpc-addr: a:1\nmax-queue: 5: 6\n", `agent.yaml: yaml: line 2: mapping values are not allowed in this context`},
		{"tab", "grpc-addr: a:1\n\tmax-queue: 5\n", `agent.yaml: yaml: line 2: found a tab character that violates indentation`},
		{"two documents", "grpc-addr: a:1\n---\nmax-queue: 5\n", `agent.yaml:2: a second YAML document; want one mapping of flag names to values`},
		{"every error", "grpc-adr: a\nmax-queue: x\n", "agent.yaml:1: unknown key \"grpc-adr\" (did you mean \"grpc-addr\"?)\nagent.yaml:2: max-queue: want a number, got \"x\""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs, _ := newFlags()
			err := Apply(fs, "agent.yaml", []byte(tc.file), reserved...)
			if err == nil || err.Error() != tc.want {
				t.Errorf("Apply error:\n got %v\nwant %s", err, tc.want)
			}
		})
	}
}

func TestApplyValues(t *testing.T) {
	defaults := settings{grpcAddr: "127.0.0.1:7400", interval: time.Second, maxQueue: 1000, controllers: List{"127.0.0.1:7400"}}
	for _, tc := range []struct {
		name string
		args []string
		file string
		want func(s *settings)
	}{
		{"empty file", nil, "", func(*settings) {}},
		{"only comments", nil, "# nothing set\n", func(*settings) {}},
		{"null document", nil, "---\n", func(*settings) {}},
		{"file beats default", nil, "grpc-addr: 10.0.0.1:7400\nreport-interval: 250ms\nlog-json: true\nmax-queue: 5\n", func(s *settings) {
			s.grpcAddr, s.interval, s.logJSON, s.maxQueue = "10.0.0.1:7400", 250*time.Millisecond, true, 5
		}},
		{"flag beats file", []string{"--grpc-addr", "10.9.9.9:1", "--log-json=false"}, "grpc-addr: 10.0.0.1:7400\nlog-json: true\nmax-queue: 5\n", func(s *settings) {
			s.grpcAddr, s.maxQueue = "10.9.9.9:1", 5
		}},
		{"flag at its default beats file", []string{"--max-queue", "1000"}, "max-queue: 5\n", func(*settings) {}},
		{"empty string", nil, "grpc-addr: ''\n", func(s *settings) { s.grpcAddr = "" }},
		{"flow list", nil, "controller: [c1:7400, https://c2:7400]\n", func(s *settings) { s.controllers = List{"c1:7400", "https://c2:7400"} }},
		{"block list", nil, "controller:\n  - c1:7400\n  - c2:7400\n", func(s *settings) { s.controllers = List{"c1:7400", "c2:7400"} }},
		{"comma-separated list", nil, "controller: c1:7400, c2:7400\n", func(s *settings) { s.controllers = List{"c1:7400", "c2:7400"} }},
		{"empty list", nil, "controller: []\n", func(s *settings) { s.controllers = nil }},
		{"map", nil, "labels:\n  zone: eu-1\n  gpu: h100\n", func(s *settings) { s.labels = Map{"zone": "eu-1", "gpu": "h100"} }},
		{"map as text", nil, "labels: zone=eu-1, gpu=h100\n", func(s *settings) { s.labels = Map{"zone": "eu-1", "gpu": "h100"} }},
		{"alias", nil, "grpc-addr: &a 10.0.0.1:7400\ncontroller: *a\n", func(s *settings) {
			s.grpcAddr, s.controllers = "10.0.0.1:7400", List{"10.0.0.1:7400"}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs, got := newFlags()
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			if err := Apply(fs, "agent.yaml", []byte(tc.file), reserved...); err != nil {
				t.Fatal(err)
			}
			want := defaults
			want.controllers = List{"127.0.0.1:7400"}
			tc.want(&want)
			if diff := cmp.Diff(want, *got, cmp.AllowUnexported(settings{})); diff != "" {
				t.Errorf("settings (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoadUnreadable(t *testing.T) {
	fs, _ := newFlags()
	path := filepath.Join(t.TempDir(), "agent.yaml")
	err := Load(fs, path, reserved...)
	if want := "read config: open " + path + ": no such file or directory"; err == nil || err.Error() != want {
		t.Errorf("Load error:\n got %v\nwant %s", err, want)
	}
}

func TestCheckExample(t *testing.T) {
	newFS := func() *flag.FlagSet { fs, _ := newFlags(); return fs }
	for _, tc := range []struct {
		name, file, want string
	}{
		{"complete", "# Where to listen.\ngrpc-addr: 127.0.0.1:7400\n# report-interval: 1s\n# log-json: false\nmax-queue: 1000\n" +
			"# controller: [a:1, b:1]\n# labels: {zone: a}\n", ""},
		{"flag missing", "grpc-addr: a:1\n# report-interval: 1s\n", `does not show flags "controller", "labels", "log-json", "max-queue"`},
		{"unknown live key", "grpc-adr: a:1\n", `unknown key "grpc-adr"`},
		{"unknown commented key", "# grpc-adr: a:1\n", `(uncommented):1: unknown key "grpc-adr"`},
		{"bad commented value", "# report-interval: soon\n", `(uncommented):1: report-interval: time: invalid duration "soon"`},
		{"prose that looks like a setting", "# note: this is prose\n", `(uncommented):1: unknown key "note"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "example.yaml")
			if err := os.WriteFile(path, []byte(tc.file), 0o644); err != nil {
				t.Fatal(err)
			}
			err := CheckExample(path, newFS, reserved...)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("CheckExample: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("CheckExample error:\n got %v\nwant it to contain %s", err, tc.want)
			}
		})
	}
}

func TestDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"abc", "", 3}, {"grpc-adr", "grpc-addr", 1}, {"lables", "labels", 1}, {"kitten", "sitting", 3},
	} {
		if got := distance(tc.a, tc.b); got != tc.want {
			t.Errorf("distance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}
