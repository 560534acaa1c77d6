package scrape

import (
	"flag"
	"os"
	"testing"
)

// TestMain bounds the minimisation of new fuzz inputs to 300 runs unless
// -fuzzminimizetime is given. The default, 60 s per input, is spent by go's minimiser trying
// every subset of a body's bytes; with bodies of a few KB (a metrics page) it took the whole
// of a 60 s `go test -fuzz=FuzzUpdate -fuzztime=60s` run, which then executed about 20 inputs.
// Bounded, the same run executes a few hundred thousand.
func TestMain(m *testing.M) {
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.fuzzminimizetime" })
	if !set {
		if err := flag.Set("test.fuzzminimizetime", "300x"); err != nil {
			panic(err)
		}
	}
	os.Exit(m.Run())
}
