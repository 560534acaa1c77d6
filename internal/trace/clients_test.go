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

func TestLoadClients(t *testing.T) {
	got, err := LoadClients(filepath.Join("testdata", "clients"))
	if err != nil {
		t.Fatal(err)
	}
	// Starts at 3600 s and 4200 s become offsets from the earliest window of both files; CRLF
	// and a blank line are fine; README.txt is not a client file.
	want := []Client{
		{Name: "a-trace.csv", Windows: []ClientWindow{
			{Start: 0, RPS: 2, CV: 1.5, Pattern: PatternGamma, Shape: 0.444, Scale: 0.5},
			{Start: 10 * time.Minute},
			{Start: 20 * time.Minute, RPS: 0.5, CV: 3, Pattern: PatternWeibull, Shape: 0.4, Scale: 0.1},
		}},
		{Name: "b-trace.csv", Windows: []ClientWindow{
			{Start: 10 * time.Minute, RPS: 1, CV: 1, Pattern: PatternGamma, Shape: 1, Scale: 1},
			{Start: 20 * time.Minute, RPS: 3, CV: 1, Pattern: PatternGamma, Shape: 1, Scale: 1},
		}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("clients (-want +got):\n%s", diff)
	}
	rates := ClientRates(got)
	wantRates := []RatePoint{{Start: 0, RPS: 2}, {Start: 10 * time.Minute, RPS: 1}, {Start: 20 * time.Minute, RPS: 3.5}}
	if diff := cmp.Diff(wantRates, rates); diff != "" {
		t.Errorf("aggregate rates (-want +got):\n%s", diff)
	}
}

func TestClientRatesUnaligned(t *testing.T) {
	minute := func(m int) time.Duration { return time.Duration(m) * time.Minute }
	clients := []Client{
		{Windows: []ClientWindow{{Start: minute(0), RPS: 1}, {Start: minute(10), RPS: 2}}},   // to minute 20
		{Windows: []ClientWindow{{Start: minute(5), RPS: 10}, {Start: minute(25), RPS: 20}}}, // to minute 45
		{Windows: []ClientWindow{{Start: minute(40), RPS: 100}}},                             // to minute 50
	}
	want := []RatePoint{
		{Start: minute(0), RPS: 1}, {Start: minute(5), RPS: 11}, {Start: minute(10), RPS: 12},
		{Start: minute(25), RPS: 20}, {Start: minute(40), RPS: 120},
	}
	if diff := cmp.Diff(want, ClientRates(clients)); diff != "" {
		t.Errorf("aggregate rates (-want +got):\n%s", diff)
	}
}

// Every kind of bad client file gives an error that names the file, the line and the column.
func TestBadClientFiles(t *testing.T) {
	tests := []struct {
		file string
		want string
	}{
		{file: "client_bad_number.csv", want: `client_bad_number.csv:2: rate_rps: "abc" is not a number`},
		{file: "client_nan.csv", want: `client_nan.csv:1: cv: "NaN" is not a number`},
		{file: "client_empty_field.csv", want: `client_empty_field.csv:1: rate_rps: empty`},
		{file: "client_bad_pattern.csv", want: `client_bad_pattern.csv:1: pattern: unknown pattern "Poisson": want Gamma, Weibull or empty`},
		{file: "client_negative_rate.csv", want: `client_negative_rate.csv:2: rate_rps: -1 is negative`},
		{file: "client_bad_shape.csv", want: `client_bad_shape.csv:1: shape: 0: want a positive Gamma shape`},
		{file: "client_bad_scale.csv", want: `client_bad_scale.csv:1: scale: -1: want a positive Weibull scale`},
		{file: "client_missing_field.csv", want: `client_missing_field.csv:1: 5 fields, want 6`},
		{file: "client_no_pattern.csv", want: `client_no_pattern.csv:1: pattern: empty, but the rate is 1`},
		{file: "client_not_increasing.csv", want: `client_not_increasing.csv:3: window_start_s: 600 is not after the previous window (600)`},
		{file: "client_header.csv", want: `client_header.csv:1: window_start_s: "window_start_s" is not a number`},
		{file: "empty.csv", want: `empty.csv:1: no windows`},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			path := filepath.Join("testdata", tc.file)
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			_, err = ReadClient(f, path)
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

func TestLoadClientsErrors(t *testing.T) {
	tests := []struct {
		name, dir, want string
	}{
		{name: "a bad file", dir: "clients_bad", want: `testdata/clients_bad/b-trace.csv:2: rate_rps: "x" is not a number`},
		{name: "no client files", dir: ".", want: `testdata: no client trace files (*-trace.csv)`},
		{name: "no folder", dir: "no-such-folder", want: `stat testdata/no-such-folder: no such file or directory`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadClients(filepath.Join("testdata", tc.dir))
			if err == nil || err.Error() != tc.want {
				t.Errorf("error %v, want %s", err, tc.want)
			}
		})
	}
}

// The shared m-mid folder loads: 109 clients of 2016 windows, 1,790 req/s in all on average.
func TestSharedClients(t *testing.T) {
	clients, err := LoadClients(sharedTrace(t, "servegen_m-mid"))
	if err != nil {
		t.Fatal(err)
	}
	if len(clients) != 109 {
		t.Errorf("%d clients, want 109", len(clients))
	}
	for _, c := range clients {
		if len(c.Windows) != 2016 || c.Windows[0].Start != 0 || c.Windows[2015].Start != 2015*10*time.Minute {
			t.Fatalf("%s: %d windows from %v to %v", c.Name, len(c.Windows), c.Windows[0].Start, c.Windows[len(c.Windows)-1].Start)
		}
	}
	rates := ClientRates(clients)
	var sum float64
	for _, p := range rates {
		sum += p.RPS
	}
	if mean := sum / float64(len(rates)); len(rates) != 2016 || mean < 1780 || mean > 1800 {
		t.Errorf("%d windows, mean rate %.1f; want 2016 and about 1790", len(rates), mean)
	}
}
