package trace

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"
)

// Pattern is the distribution of a client's inter-arrival gaps in a window of a ServeGen
// per-client trace.
type Pattern int

const (
	// PatternNone is a window in which the client sent nothing (the file's empty pattern).
	PatternNone Pattern = iota
	// PatternGamma is a Gamma distribution: scipy's gamma(a=Shape, scale=Scale), whose
	// coefficient of variation is 1/sqrt(Shape).
	PatternGamma
	// PatternWeibull is a Weibull distribution: scipy's weibull_min(c=Shape, scale=Scale).
	PatternWeibull
)

// String names the pattern as the trace files do ("" for PatternNone).
func (p Pattern) String() string {
	switch p {
	case PatternGamma:
		return "Gamma"
	case PatternWeibull:
		return "Weibull"
	default:
		return ""
	}
}

// ClientWindow is one window of a ServeGen client: from Start until the next window's Start
// the client sends RPS requests per second on average, with inter-arrival gaps drawn from
// Pattern with Shape and Scale.
type ClientWindow struct {
	// Start is the window's start as an offset from the earliest window of all the clients
	// loaded together.
	Start time.Duration
	// RPS is the client's mean arrival rate in the window, in requests per second.
	RPS float64
	// CV is the coefficient of variation of the gaps the trace measured (informative: the
	// gap distribution is Pattern with Shape).
	CV float64
	// Pattern is the gap distribution; PatternNone when the client sent nothing.
	Pattern Pattern
	// Shape is the distribution's shape parameter (Gamma's a, Weibull's c): it alone sets
	// the gaps' coefficient of variation.
	Shape float64
	// Scale is the distribution's scale parameter, in seconds. ServeGen rescales the gaps to
	// fill the window at RPS, so the scale does not change the arrivals.
	Scale float64
}

// Client is one client group of a ServeGen per-client trace: one file of a folder.
type Client struct {
	// Name is the file's base name, e.g. "chunk-0-trace.csv".
	Name string
	// Windows are in increasing order of Start.
	Windows []ClientWindow
}

// ClientFilePattern is the glob LoadClients reads in a folder: ServeGen's own loader reads
// the files whose names end in "-trace.csv".
const ClientFilePattern = "*-trace.csv"

// clientColumns name the columns of a client file, for errors: the file has no header.
var clientColumns = [...]string{"window_start_s", "rate_rps", "cv", "pattern", "shape", "scale"}

// LoadClients reads every ClientFilePattern file of dir as a ServeGen per-client trace,
// ordered by file name. Rows have no header and read
//
//	window_start_s,rate_rps,cv,pattern,shape,scale
//
// with pattern Gamma, Weibull, or empty (then the rate must be 0). Window starts come back
// relative to the earliest window of all the files, so the clients stay aligned. A folder
// with no such file is an error; so is a bad file, with an error that names the file, the
// line and the column.
func LoadClients(dir string) ([]Client, error) {
	paths, err := filepath.Glob(filepath.Join(dir, ClientFilePattern))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	if len(paths) == 0 {
		if _, err := os.Stat(dir); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%s: no client trace files (%s)", dir, ClientFilePattern)
	}
	clients := make([]Client, 0, len(paths))
	origin := time.Duration(math.MaxInt64)
	for _, path := range paths {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		c, err := ReadClient(f, path)
		f.Close()
		if err != nil {
			return nil, err
		}
		c.Name = filepath.Base(path)
		if len(c.Windows) > 0 {
			origin = min(origin, c.Windows[0].Start)
		}
		clients = append(clients, c)
	}
	for _, c := range clients {
		for i := range c.Windows {
			c.Windows[i].Start -= origin
		}
	}
	return clients, nil
}

// ReadClient reads one ServeGen per-client trace (see LoadClients) from r; name is the file
// name errors give and the client's Name. Window starts are the file's own, in seconds since
// its origin; a file with no rows is an error.
func ReadClient(r io.Reader, name string) (Client, error) {
	sc := newScanner(r)
	c := Client{Name: name}
	line := 0
	bad := func(col int, format string, args ...any) error {
		return &LineError{File: name, Line: line, Column: clientColumns[col], Err: fmt.Errorf(format, args...)}
	}
	for sc.Scan() {
		line++
		b := sc.Bytes()
		if line == 1 {
			b = headerLine(b)
		}
		fields := splitFields(bytes.TrimSpace(b))
		if len(fields) == 1 && len(fields[0]) == 0 {
			continue // a blank line
		}
		if len(fields) != len(clientColumns) {
			return Client{}, &LineError{File: name, Line: line,
				Err: fmt.Errorf("%d fields, want %d (window_start_s,rate_rps,cv,pattern,shape,scale)", len(fields), len(clientColumns))}
		}
		var num [len(clientColumns)]float64
		for col, f := range fields {
			if col == 3 {
				continue
			}
			if len(f) == 0 {
				return Client{}, bad(col, "empty")
			}
			v, err := strconv.ParseFloat(string(f), 64)
			if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
				return Client{}, bad(col, "%s is not a number", strconvQuote(string(f)))
			}
			num[col] = v
		}
		if math.Abs(num[0]) > maxSeconds {
			return Client{}, bad(0, "%s is out of range", fields[0])
		}
		w := ClientWindow{
			Start: time.Duration(math.Round(num[0] * float64(time.Second))),
			RPS:   num[1], CV: num[2], Shape: num[4], Scale: num[5],
		}
		switch string(fields[3]) {
		case "":
			w.Pattern = PatternNone
		case "Gamma":
			w.Pattern = PatternGamma
		case "Weibull":
			w.Pattern = PatternWeibull
		default:
			return Client{}, bad(3, "unknown pattern %s: want Gamma, Weibull or empty", strconvQuote(string(fields[3])))
		}
		switch {
		case w.RPS < 0:
			return Client{}, bad(1, "%s is negative", fields[1])
		case w.CV < 0:
			return Client{}, bad(2, "%s is negative", fields[2])
		case w.Pattern == PatternNone && w.RPS > 0:
			return Client{}, bad(3, "empty, but the rate is %s: a window with requests needs Gamma or Weibull", fields[1])
		case w.Pattern != PatternNone && w.RPS > 0 && !(w.Shape > 0):
			return Client{}, bad(4, "%s: want a positive %s shape", fields[4], w.Pattern)
		case w.Pattern != PatternNone && w.RPS > 0 && !(w.Scale > 0):
			return Client{}, bad(5, "%s: want a positive %s scale", fields[5], w.Pattern)
		}
		if n := len(c.Windows); n > 0 && w.Start <= c.Windows[n-1].Start {
			return Client{}, bad(0, "%s is not after the previous window (%g)", fields[0], c.Windows[n-1].Start.Seconds())
		}
		c.Windows = append(c.Windows, w)
	}
	if err := sc.Err(); err != nil {
		return Client{}, &LineError{File: name, Line: line + 1, Err: err}
	}
	if len(c.Windows) == 0 {
		return Client{}, &LineError{File: name, Line: max(line, 1), Err: errors.New("no windows")}
	}
	return c, nil
}

// ClientRates is the clients' aggregate rate series: at every window start of any client,
// the sum of the rates of the windows that hold it. A client's last window lasts as long as
// the one before it (10 minutes if it has only one), as the simulator reads a rate series
// (but a series of one window lasts a minute there). It is the series to compare per-client arrivals with Poisson arrivals at the same rates.
func ClientRates(clients []Client) []RatePoint {
	var starts []time.Duration
	for _, c := range clients {
		for _, w := range c.Windows {
			starts = append(starts, w.Start)
		}
	}
	slices.Sort(starts)
	starts = slices.Compact(starts)
	out := make([]RatePoint, len(starts))
	for i, s := range starts {
		out[i].Start = s
	}
	for _, c := range clients {
		j := 0 // the client's window holding starts[i], or the next one
		for i, s := range starts {
			for j < len(c.Windows) && windowEnd(c.Windows, j) <= s {
				j++
			}
			if j < len(c.Windows) && c.Windows[j].Start <= s {
				out[i].RPS += c.Windows[j].RPS
			}
		}
	}
	return out
}

// DefaultClientWindow is how long the only window of a one-window client lasts.
const DefaultClientWindow = 10 * time.Minute

// windowEnd is where window i of ws ends: at the next window's start, or, for the last, as
// long after its start as the one before it lasted.
func windowEnd(ws []ClientWindow, i int) time.Duration {
	switch {
	case i+1 < len(ws):
		return ws[i+1].Start
	case i > 0:
		return ws[i].Start + (ws[i].Start - ws[i-1].Start)
	}
	return ws[i].Start + DefaultClientWindow
}

// WindowEnd is where window i of c ends: at the next window's start, or, for the last, as
// long after its start as the one before it lasted (DefaultClientWindow if it is the only
// one).
func (c Client) WindowEnd(i int) time.Duration { return windowEnd(c.Windows, i) }
