// Package trace reads LLM-serving workload traces: request traces (one request a row, in the
// Azure or the Mooncake format) and rate series (a request rate per window). It only parses:
// the load generator and the simulator decide what to do with the requests.
//
// Formats, told apart by the header line (extra columns are ignored, their order is free):
//
//	Azure      TIMESTAMP,ContextTokens,GeneratedTokens
//	           TIMESTAMP is a wall-clock time, "2006-01-02 15:04:05.9999999" (or RFC 3339)
//	Mooncake   timestamp_ms,input_length,output_length[,...]
//	           timestamp_ms is milliseconds since any origin
//	Rates      window_start_s,aggregate_rate_rps
//	           window_start_s is seconds since any origin; the rate holds until the next window
//
// Request times come back as offsets from the earliest request, sorted. A bad file gives an
// error that names the file, the line and the column, never a panic.
package trace

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Request is one request of a trace.
type Request struct {
	// At is the request's arrival as an offset from the trace's first request.
	At time.Duration
	// PromptTokens is the length of the prompt (the context) in tokens.
	PromptTokens int
	// OutputTokens is the number of tokens generated for it.
	OutputTokens int
}

// RatePoint is one window of a rate series: from Start until the next point's Start, requests
// arrive at RPS per second.
type RatePoint struct {
	// Start is the window's start as an offset from the first window's.
	Start time.Duration
	// RPS is the mean arrival rate in the window, in requests per second.
	RPS float64
}

// Format is the kind of a trace file, as its header says.
type Format int

const (
	// FormatUnknown is a header that matches no known format.
	FormatUnknown Format = iota
	// FormatAzure is the Azure LLM inference trace: TIMESTAMP,ContextTokens,GeneratedTokens.
	FormatAzure
	// FormatMooncake is the Mooncake trace turned into CSV: timestamp_ms,input_length,output_length,...
	FormatMooncake
	// FormatRates is a rate series: window_start_s,aggregate_rate_rps.
	FormatRates
)

// String names the format as the package doc does.
func (f Format) String() string {
	switch f {
	case FormatAzure:
		return "azure"
	case FormatMooncake:
		return "mooncake"
	case FormatRates:
		return "rates"
	default:
		return "unknown"
	}
}

// IsRequests reports whether the format has one request a row.
func (f Format) IsRequests() bool { return f == FormatAzure || f == FormatMooncake }

// columns are the names of a format's columns: time, then the two lengths (absent for rates).
var columns = map[Format][]string{
	FormatAzure:    {"TIMESTAMP", "ContextTokens", "GeneratedTokens"},
	FormatMooncake: {"timestamp_ms", "input_length", "output_length"},
	FormatRates:    {"window_start_s", "aggregate_rate_rps"},
}

// LineError is a problem with one line of a trace file.
type LineError struct {
	// File is the file's name as the caller gave it.
	File string
	// Line counts from 1, the header included.
	Line int
	// Column is the column at fault, or empty when the whole line is.
	Column string
	// Err says what is wrong.
	Err error
}

// Error reads "file:line: column: problem".
func (e *LineError) Error() string {
	if e.Column == "" {
		return fmt.Sprintf("%s:%d: %v", e.File, e.Line, e.Err)
	}
	return fmt.Sprintf("%s:%d: %s: %v", e.File, e.Line, e.Column, e.Err)
}

// Unwrap returns the underlying problem.
func (e *LineError) Unwrap() error { return e.Err }

// ErrWrongFormat is what LoadRequests and LoadRates wrap when the file is a trace of the other
// kind (requests where rates were wanted, or the reverse), or of no known kind.
var ErrWrongFormat = errors.New("wrong trace format")

// DetectFormat reads the header of the file at path and returns its format.
func DetectFormat(path string) (Format, error) {
	f, err := os.Open(path)
	if err != nil {
		return FormatUnknown, err
	}
	defer f.Close()
	sc := newScanner(f)
	if !sc.Scan() {
		if err := sc.Err(); err != nil {
			return FormatUnknown, fmt.Errorf("%s: %w", path, err)
		}
		return FormatUnknown, &LineError{File: path, Line: 1, Err: errors.New("empty file: want a header line")}
	}
	format, _ := detect(splitFields(headerLine(sc.Bytes())))
	return format, nil
}

// LoadRequests reads a request trace in the Azure or Mooncake format, sorted by arrival, with
// times relative to the earliest request.
func LoadRequests(path string) ([]Request, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadRequests(f, path)
}

// ReadRequests is LoadRequests on a reader; name is the file name errors give.
func ReadRequests(r io.Reader, name string) ([]Request, error) {
	p, err := newParser(r, name)
	if err != nil {
		return nil, err
	}
	if !p.format.IsRequests() {
		return nil, p.wrongFormat("a request trace: Azure (TIMESTAMP,ContextTokens,GeneratedTokens) or Mooncake (timestamp_ms,input_length,output_length,...)")
	}
	type row struct {
		at             int64 // nanoseconds from the trace's own origin
		prompt, output int
		line           int
	}
	var rows []row
	for p.next() {
		ts, err := p.field(0)
		if err != nil {
			return nil, err
		}
		var at int64
		if p.format == FormatAzure {
			at, err = p.wallClock(ts)
		} else {
			at, err = p.milliseconds(ts)
		}
		if err != nil {
			return nil, err
		}
		prompt, err := p.tokens(1)
		if err != nil {
			return nil, err
		}
		output, err := p.tokens(2)
		if err != nil {
			return nil, err
		}
		rows = append(rows, row{at: at, prompt: prompt, output: output, line: p.line})
	}
	if err := p.err(); err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, &LineError{File: name, Line: p.line, Err: errors.New("no requests after the header")}
	}
	// Traces are nearly always sorted already; a stable sort keeps the file's order for ties.
	slices.SortStableFunc(rows, func(a, b row) int {
		switch {
		case a.at < b.at:
			return -1
		case a.at > b.at:
			return 1
		}
		return 0
	})
	first := rows[0].at
	if last := rows[len(rows)-1]; last.at-first < 0 {
		// The true span is not negative: it overflowed.
		return nil, &LineError{File: name, Line: last.line, Column: columns[p.format][0],
			Err: errors.New("more than 292 years (what a time.Duration holds) after the earliest request")}
	}
	reqs := make([]Request, len(rows))
	for i, r := range rows {
		reqs[i] = Request{At: time.Duration(r.at - first), PromptTokens: r.prompt, OutputTokens: r.output}
	}
	return reqs, nil
}

// LoadRates reads a rate series, windows in increasing order, with starts relative to the first
// window's.
func LoadRates(path string) ([]RatePoint, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadRates(f, path)
}

// ReadRates is LoadRates on a reader; name is the file name errors give.
func ReadRates(r io.Reader, name string) ([]RatePoint, error) {
	p, err := newParser(r, name)
	if err != nil {
		return nil, err
	}
	if p.format != FormatRates {
		return nil, p.wrongFormat("a rate series (window_start_s,aggregate_rate_rps)")
	}
	var pts []RatePoint
	var first time.Duration
	for p.next() {
		ts, err := p.field(0)
		if err != nil {
			return nil, err
		}
		sec, err := p.number(0, ts)
		if err != nil {
			return nil, err
		}
		if math.Abs(sec) > maxSeconds {
			return nil, p.errorf(0, "%s is out of range", ts)
		}
		start := time.Duration(math.Round(sec * float64(time.Second)))
		rs, err := p.field(1)
		if err != nil {
			return nil, err
		}
		rps, err := p.number(1, rs)
		if err != nil {
			return nil, err
		}
		if rps < 0 {
			return nil, p.errorf(1, "%s is negative", rs)
		}
		if len(pts) == 0 {
			first = start
		} else if prev := pts[len(pts)-1].Start + first; start <= prev {
			return nil, p.errorf(0, "%s is not after the previous window (%g)", ts, prev.Seconds())
		} else if start-first < 0 {
			// The true span is positive: it overflowed.
			return nil, p.errorf(0, "%s is more than 292 years (what a time.Duration holds) after the first window", ts)
		}
		pts = append(pts, RatePoint{Start: start - first, RPS: rps})
	}
	if err := p.err(); err != nil {
		return nil, err
	}
	if len(pts) == 0 {
		return nil, &LineError{File: name, Line: p.line, Err: errors.New("no windows after the header")}
	}
	return pts, nil
}

// maxSeconds keeps times within what a time.Duration holds (about 292 years).
const maxSeconds = 9e9

// parser walks the data lines of a CSV trace. Fields are split on commas by hand: the traces
// have no quoting beyond, at most, quotes around a whole field, and encoding/csv would cost
// an allocation per field.
type parser struct {
	sc     *bufio.Scanner
	name   string
	format Format
	header []string
	idx    []int    // column index of each of columns[format]
	fields [][]byte // the current line's fields
	line   int
}

func newScanner(r io.Reader) *bufio.Scanner {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	return sc
}

func newParser(r io.Reader, name string) (*parser, error) {
	p := &parser{sc: newScanner(r), name: name, line: 1}
	if !p.sc.Scan() {
		if err := p.sc.Err(); err != nil {
			return nil, &LineError{File: name, Line: 1, Err: err}
		}
		return nil, &LineError{File: name, Line: 1, Err: errors.New("empty file: want a header line")}
	}
	hdr := splitFields(headerLine(p.sc.Bytes()))
	p.header = make([]string, len(hdr))
	for i, h := range hdr {
		p.header[i] = string(h)
	}
	p.format, p.idx = detect(hdr)
	return p, nil
}

// headerLine strips a UTF-8 byte order mark, which spreadsheet exports like to add.
func headerLine(b []byte) []byte { return bytes.TrimPrefix(b, []byte("\xef\xbb\xbf")) }

// detect finds the format whose column names all appear in the header.
func detect(hdr [][]byte) (Format, []int) {
	for _, f := range []Format{FormatAzure, FormatMooncake, FormatRates} {
		idx := make([]int, 0, 3)
		for _, name := range columns[f] {
			i := slices.IndexFunc(hdr, func(h []byte) bool { return string(h) == name })
			if i < 0 {
				break
			}
			idx = append(idx, i)
		}
		if len(idx) == len(columns[f]) {
			return f, idx
		}
	}
	return FormatUnknown, nil
}

func (p *parser) wrongFormat(want string) error {
	got := map[Format]string{
		FormatAzure: "an Azure header", FormatMooncake: "a Mooncake header", FormatRates: "a rate-series header",
		FormatUnknown: "an unknown header " + strconvQuote(strings.Join(p.header, ",")),
	}[p.format]
	return &LineError{File: p.name, Line: 1, Err: fmt.Errorf("%w: %s, want %s", ErrWrongFormat, got, want)}
}

// next moves to the next non-blank line and splits it. It returns false at the end of the
// input or on a read error (see err).
func (p *parser) next() bool {
	for p.sc.Scan() {
		p.line++
		b := bytes.TrimSpace(p.sc.Bytes())
		if len(b) == 0 {
			continue
		}
		p.fields = splitFields(b)
		return true
	}
	return false
}

func (p *parser) err() error {
	if err := p.sc.Err(); err != nil {
		return &LineError{File: p.name, Line: p.line + 1, Err: err}
	}
	return nil
}

// splitFields splits a line on commas and trims spaces and surrounding quotes from each field.
// The fields alias the line.
func splitFields(b []byte) [][]byte {
	fields := make([][]byte, 0, 4)
	for {
		i := bytes.IndexByte(b, ',')
		f := b
		if i >= 0 {
			f = b[:i]
		}
		f = bytes.TrimSpace(f)
		if len(f) >= 2 && f[0] == '"' && f[len(f)-1] == '"' {
			f = f[1 : len(f)-1]
		}
		fields = append(fields, f)
		if i < 0 {
			return fields
		}
		b = b[i+1:]
	}
}

func (p *parser) errorf(col int, format string, args ...any) error {
	return &LineError{File: p.name, Line: p.line, Column: columns[p.format][col], Err: fmt.Errorf(format, args...)}
}

// field returns the text of the format's col-th column on the current line.
func (p *parser) field(col int) (string, error) {
	if len(p.fields) != len(p.header) {
		return "", &LineError{File: p.name, Line: p.line,
			Err: fmt.Errorf("%d fields, want %d as in the header", len(p.fields), len(p.header))}
	}
	s := p.fields[p.idx[col]]
	if len(s) == 0 {
		return "", p.errorf(col, "empty")
	}
	return string(s), nil
}

// number parses a finite decimal number.
func (p *parser) number(col int, s string) (float64, error) {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, p.errorf(col, "%s is not a number", strconvQuote(s))
	}
	return v, nil
}

// tokens parses a token count: a whole number, zero or more.
func (p *parser) tokens(col int) (int, error) {
	s, err := p.field(col)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		if v, ferr := strconv.ParseFloat(s, 64); ferr == nil && !math.IsNaN(v) {
			return 0, p.errorf(col, "%s is not a whole number", s)
		}
		return 0, p.errorf(col, "%s is not a number", strconvQuote(s))
	}
	if n < 0 {
		return 0, p.errorf(col, "%d is negative", n)
	}
	return n, nil
}

// milliseconds parses a Mooncake timestamp into nanoseconds.
func (p *parser) milliseconds(s string) (int64, error) {
	if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
		if ms > maxSeconds*1e3 || ms < -maxSeconds*1e3 {
			return 0, p.errorf(0, "%s is out of range", s)
		}
		return ms * int64(time.Millisecond), nil
	}
	v, err := p.number(0, s)
	if err != nil {
		return 0, err
	}
	if math.Abs(v) > maxSeconds*1e3 {
		return 0, p.errorf(0, "%s is out of range", s)
	}
	return int64(math.Round(v * float64(time.Millisecond))), nil
}

// azureLayout is the Azure trace's timestamp; .9999999 accepts any number of fractional
// digits, none included.
const azureLayout = "2006-01-02 15:04:05.999999999"

// minWallClock and maxWallClock bound the times whose Unix nanoseconds an int64 holds.
var minWallClock, maxWallClock = time.Unix(0, math.MinInt64), time.Unix(0, math.MaxInt64)

// wallClock parses an Azure timestamp into nanoseconds since the Unix epoch. The trace has no
// zone; only differences matter, so it is read as UTC.
func (p *parser) wallClock(s string) (int64, error) {
	t, err := time.Parse(azureLayout, s)
	if err != nil {
		if t, err = time.Parse(time.RFC3339Nano, s); err != nil {
			return 0, p.errorf(0, "%s is not a time like \"2023-11-16 18:15:46.6805900\"", strconvQuote(s))
		}
	}
	if t.Before(minWallClock) || t.After(maxWallClock) {
		return 0, p.errorf(0, "%s is out of range (1677-09-21 to 2262-04-11)", strconvQuote(s))
	}
	return t.UnixNano(), nil
}

// strconvQuote quotes s for an error, cut short if it is long.
func strconvQuote(s string) string {
	const limit = 40
	if len(s) > limit {
		s = s[:limit] + "..."
	}
	return strconv.Quote(s)
}
