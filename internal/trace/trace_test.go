package trace

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestLoadRequests(t *testing.T) {
	tests := []struct {
		name string
		file string
		want []Request
	}{
		{
			// Rows out of order, a blank line, a duplicate time and no final newline: sorted
			// stably, relative to the earliest row.
			name: "azure",
			file: "azure.csv",
			want: []Request{
				{At: 0, PromptTokens: 374, OutputTokens: 44},
				{At: 0, PromptTokens: 91, OutputTokens: 16},
				{At: 1819410 * time.Microsecond, PromptTokens: 879, OutputTokens: 55},
				{At: 4314579 * time.Microsecond, PromptTokens: 396, OutputTokens: 109},
			},
		},
		{
			// CRLF line ends, an extra column, times that start at 1 s.
			name: "mooncake",
			file: "mooncake.csv",
			want: []Request{
				{At: 0, PromptTokens: 40160, OutputTokens: 6},
				{At: 0, PromptTokens: 36640, OutputTokens: 4},
				{At: 40 * time.Millisecond, PromptTokens: 23769, OutputTokens: 3},
				{At: 1277 * time.Millisecond, PromptTokens: 32140, OutputTokens: 92},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := LoadRequests(filepath.Join("testdata", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("requests (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoadRates(t *testing.T) {
	got, err := LoadRates(filepath.Join("testdata", "rates.csv"))
	if err != nil {
		t.Fatal(err)
	}
	want := []RatePoint{{Start: 0, RPS: 2.5}, {Start: 600 * time.Second, RPS: 0}, {Start: 1200 * time.Second, RPS: 10.25}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("rates (-want +got):\n%s", diff)
	}
}

// Every kind of bad file gives an error that names the file, the line and the column, and
// no panic.
func TestBadFiles(t *testing.T) {
	tests := []struct {
		file  string
		rates bool // load with LoadRates
		want  string
	}{
		{file: "azure_bad_number.csv", want: `azure_bad_number.csv:3: ContextTokens: "abc" is not a number`},
		{file: "azure_bad_time.csv", want: `azure_bad_time.csv:3: TIMESTAMP: "16/11/2023 18:15" is not a time like "2023-11-16 18:15:46.6805900"`},
		{file: "azure_missing_field.csv", want: `azure_missing_field.csv:3: 2 fields, want 3 as in the header`},
		{file: "azure_negative.csv", want: `azure_negative.csv:2: GeneratedTokens: -44 is negative`},
		{file: "azure_empty_field.csv", want: `azure_empty_field.csv:3: ContextTokens: empty`},
		{file: "mooncake_bad_timestamp.csv", want: `mooncake_bad_timestamp.csv:3: timestamp_ms: "12x" is not a number`},
		{file: "mooncake_fractional_tokens.csv", want: `mooncake_fractional_tokens.csv:2: output_length: 6.5 is not a whole number`},
		{file: "rates_not_increasing.csv", rates: true, want: `rates_not_increasing.csv:4: window_start_s: 600 is not after the previous window (600)`},
		{file: "rates_negative.csv", rates: true, want: `rates_negative.csv:3: aggregate_rate_rps: -2 is negative`},
		{file: "rates_bad_number.csv", rates: true, want: `rates_bad_number.csv:3: aggregate_rate_rps: "NaN" is not a number`},
		{file: "unknown_header.csv", want: `unknown_header.csv:1: wrong trace format: an unknown header "time,prompt,output", want a request trace`},
		{file: "rates.csv", want: `rates.csv:1: wrong trace format: a rate-series header, want a request trace`},
		{file: "azure.csv", rates: true, want: `azure.csv:1: wrong trace format: an Azure header, want a rate series`},
		{file: "header_only.csv", want: `header_only.csv:2: no requests after the header`},
		{file: "empty.csv", want: `empty.csv:1: empty file: want a header line`},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			path := filepath.Join("testdata", tc.file)
			var err error
			if tc.rates {
				_, err = LoadRates(path)
			} else {
				_, err = LoadRequests(path)
			}
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.HasPrefix(err.Error(), "testdata/"+tc.want) {
				t.Errorf("error %q\nwant it to start with %q", err, "testdata/"+tc.want)
			}
			var le *LineError
			if !errors.As(err, &le) || le.File != path {
				t.Errorf("error %v is not a *LineError for %s", err, path)
			}
		})
	}
}

func TestMissingFile(t *testing.T) {
	_, err := LoadRequests(filepath.Join("testdata", "no-such-file.csv"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("error %v, want one that is os.ErrNotExist", err)
	}
}

func TestDetectFormat(t *testing.T) {
	for file, want := range map[string]Format{
		"azure.csv": FormatAzure, "mooncake.csv": FormatMooncake, "rates.csv": FormatRates, "unknown_header.csv": FormatUnknown,
	} {
		got, err := DetectFormat(filepath.Join("testdata", file))
		if err != nil || got != want {
			t.Errorf("DetectFormat(%s) = %v, %v; want %v", file, got, err, want)
		}
	}
}

// sharedTraces is where the real traces live when the shared folder is checked out beside
// the repository.
const sharedTraces = "../../../shared/traces"

func sharedTrace(t testing.TB, name string) string {
	t.Helper()
	path := filepath.Join(sharedTraces, name)
	if _, err := os.Stat(path); err != nil {
		t.Skipf("shared trace %s not here: %v", name, err)
	}
	return path
}

// The real traces load, with the row counts, spans and rates their README gives.
func TestSharedTraces(t *testing.T) {
	requests := []struct {
		file string
		rows int
		span time.Duration // about
	}{
		{file: "azure_llm_conv_2023.csv", rows: 19366, span: 58 * time.Minute},
		{file: "mooncake_synthetic.csv", rows: 3993, span: 17 * time.Minute},
	}
	for _, tc := range requests {
		t.Run(tc.file, func(t *testing.T) {
			path := sharedTrace(t, tc.file)
			start := time.Now()
			reqs, err := LoadRequests(path)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: %d requests in %v", tc.file, len(reqs), time.Since(start))
			if len(reqs) != tc.rows {
				t.Errorf("%d requests, want %d", len(reqs), tc.rows)
			}
			span := reqs[len(reqs)-1].At
			if span < tc.span-time.Minute || span > tc.span+time.Minute {
				t.Errorf("span %v, want about %v", span, tc.span)
			}
			for i, r := range reqs {
				if r.PromptTokens < 1 || r.OutputTokens < 1 || (i > 0 && r.At < reqs[i-1].At) {
					t.Fatalf("request %d: %+v", i, r)
				}
			}
		})
	}
	t.Run("servegen_m-large_rate_10min.csv", func(t *testing.T) {
		pts, err := LoadRates(sharedTrace(t, "servegen_m-large_rate_10min.csv"))
		if err != nil {
			t.Fatal(err)
		}
		if len(pts) != 2016 || pts[1].Start != 10*time.Minute || pts[len(pts)-1].Start != (2016-1)*10*time.Minute {
			t.Errorf("%d windows, second at %v, last at %v", len(pts), pts[1].Start, pts[len(pts)-1].Start)
		}
		var sum float64
		for _, p := range pts {
			sum += p.RPS
		}
		if mean := sum / float64(len(pts)); mean < 190 || mean > 200 {
			t.Errorf("mean rate %.1f, want about 196", mean)
		}
	})
}

// BenchmarkLoadAzure measures loading the largest shared trace.
func BenchmarkLoadAzure(b *testing.B) {
	path := sharedTrace(b, "azure_llm_conv_2023.csv")
	for b.Loop() {
		if _, err := LoadRequests(path); err != nil {
			b.Fatal(err)
		}
	}
}
