package cli

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	good := write("good.yaml", "addr: 10.0.0.1:1\nlog-level: debug\n")
	for _, tc := range []struct {
		name     string
		args     []string
		wantOK   bool
		wantErr  string
		wantAddr string
		wantLvl  string
	}{
		{"no file", nil, true, "", "127.0.0.1:1", "info"},
		{"file beats default", []string{"--config", good}, true, "", "10.0.0.1:1", "debug"},
		{"flag beats file", []string{"--config", good, "--log-level", "warn"}, true, "", "10.0.0.1:1", "warn"},
		{"version reads no file", []string{"--config", filepath.Join(dir, "missing.yaml"), "--version"}, false, "", "127.0.0.1:1", "info"},
		{"missing file", []string{"--config", filepath.Join(dir, "missing.yaml")}, false,
			"read config: open " + filepath.Join(dir, "missing.yaml") + ": no such file or directory", "", ""},
		{"bad key", []string{"--config", write("bad.yaml", "\nadr: x\n")}, false,
			filepath.Join(dir, "bad.yaml") + `:2: unknown key "adr" (did you mean "addr"?)`, "", ""},
		{"config in the file", []string{"--config", write("nested.yaml", "config: good.yaml\n")}, false,
			filepath.Join(dir, "nested.yaml") + `:1: "config" cannot be set in a config file`, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			addr := fs.String("addr", "127.0.0.1:1", "")
			var c Common
			c.Register(fs)
			stdout := os.Stdout
			os.Stdout, _ = os.Open(os.DevNull)
			ok, err := c.Parse(fs, tc.args)
			os.Stdout = stdout
			switch {
			case ok != tc.wantOK:
				t.Fatalf("Parse = %v, %v; want ok %v", ok, err, tc.wantOK)
			case tc.wantErr == "" && err != nil, tc.wantErr != "" && (err == nil || err.Error() != tc.wantErr):
				t.Fatalf("Parse error:\n got %v\nwant %s", err, tc.wantErr)
			case tc.wantOK && (*addr != tc.wantAddr || c.LogLevel != tc.wantLvl):
				t.Errorf("addr %q, log level %q; want %q, %q", *addr, c.LogLevel, tc.wantAddr, tc.wantLvl)
			}
		})
	}
}

func TestCheckExampleReservesCommonFlags(t *testing.T) {
	path := filepath.Join(t.TempDir(), "example.yaml")
	if err := os.WriteFile(path, []byte("# log-level: info\n# log-json: false\n# pprof-addr: \"\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	newFlags := func() *flag.FlagSet {
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		new(Common).Register(fs)
		return fs
	}
	if err := CheckExample(path, newFlags); err != nil {
		t.Errorf("CheckExample: %v", err)
	}
	if err := os.WriteFile(path, []byte("# log-level: info\n# pprof-addr: \"\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := CheckExample(path, newFlags); err == nil || !strings.HasSuffix(err.Error(), `does not show flags "log-json"`) {
		t.Errorf("CheckExample error %v; want it to miss log-json", err)
	}
}
