package trace

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
)

// FuzzRead feeds arbitrary bytes to the three readers: request traces (Azure, Mooncake),
// rate series and ServeGen client files. None may panic. An error is a *LineError that names
// the file and a line of the input, and its text starts "file:line:". What parses keeps the
// documented contract: requests sorted by arrival from 0, token counts not negative; rate
// windows and client windows strictly increasing, rates finite and not negative. The seed
// corpus in testdata/fuzz/FuzzRead holds the test files and edge cases: a BOM, CRLF, NUL
// bytes, quoted fields, times at the edges of what a time.Duration holds, a line too long.
func FuzzRead(f *testing.F) {
	for _, s := range []string{
		"TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:50.9951690,396,109\n\n2023-11-16 18:15:48.5,879,55",
		"timestamp_ms,input_length,output_length,num_hash_blocks\r\n1000,40160,6,79\r\n1000,36640,4,72\r\n1040,23769,3,47\r\n",
		"window_start_s,aggregate_rate_rps\n600,2.5\n1200,0\n1800,10.25\n",
		"0,1,1,Gamma,1,1\n600,abc,1,Gamma,1,1\n",
		"time,prompt,output\n0,1,2\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		const name = "trace.csv"
		lines := 1 + bytes.Count(data, []byte("\n"))

		reqs, err := ReadRequests(bytes.NewReader(data), name)
		checkLineError(t, err, name, lines)
		if err == nil {
			checkRequests(t, reqs)
		}

		pts, err := ReadRates(bytes.NewReader(data), name)
		checkLineError(t, err, name, lines)
		if err == nil {
			if len(pts) == 0 || pts[0].Start != 0 {
				t.Fatalf("rates start at %v, want 0: %v", pts[0].Start, pts)
			}
			for i, p := range pts {
				if math.IsNaN(p.RPS) || math.IsInf(p.RPS, 0) || p.RPS < 0 {
					t.Fatalf("window %d: rate %v", i, p.RPS)
				}
				if i > 0 && p.Start <= pts[i-1].Start {
					t.Fatalf("window %d starts at %v, not after %v", i, p.Start, pts[i-1].Start)
				}
			}
		}

		c, err := ReadClient(bytes.NewReader(data), name)
		checkLineError(t, err, name, lines)
		if err == nil {
			checkClient(t, c)
		}
	})
}

func checkLineError(t *testing.T, err error, name string, lines int) {
	t.Helper()
	if err == nil {
		return
	}
	var le *LineError
	if !errors.As(err, &le) {
		t.Fatalf("error %q (%T) is not a *LineError", err, err)
	}
	if le.File != name || le.Line < 1 || le.Line > lines {
		t.Fatalf("error %q names %s line %d of %d", err, le.File, le.Line, lines)
	}
	if prefix := fmt.Sprintf("%s:%d: ", name, le.Line); !strings.HasPrefix(err.Error(), prefix) {
		t.Fatalf("error %q does not start with %q", err, prefix)
	}
}

func checkRequests(t *testing.T, reqs []Request) {
	t.Helper()
	if len(reqs) == 0 || reqs[0].At != 0 {
		t.Fatalf("requests do not start at 0: %v", reqs[:min(len(reqs), 3)])
	}
	for i, r := range reqs {
		if r.PromptTokens < 0 || r.OutputTokens < 0 {
			t.Fatalf("request %d: %d prompt and %d output tokens", i, r.PromptTokens, r.OutputTokens)
		}
		if i > 0 && r.At < reqs[i-1].At {
			t.Fatalf("request %d at %v, before request %d at %v", i, r.At, i-1, reqs[i-1].At)
		}
	}
}

func checkClient(t *testing.T, c Client) {
	t.Helper()
	if len(c.Windows) == 0 {
		t.Fatal("a client without windows parsed")
	}
	for i, w := range c.Windows {
		finite := func(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }
		if !finite(w.RPS) || !finite(w.CV) || !finite(w.Shape) || !finite(w.Scale) || w.RPS < 0 || w.CV < 0 {
			t.Fatalf("window %d: %+v", i, w)
		}
		if w.RPS > 0 && (w.Pattern == PatternNone || w.Shape <= 0 || w.Scale <= 0) {
			t.Fatalf("window %d has requests but no distribution: %+v", i, w)
		}
		if i > 0 && w.Start <= c.Windows[i-1].Start {
			t.Fatalf("window %d starts at %v, not after %v", i, w.Start, c.Windows[i-1].Start)
		}
	}
}
