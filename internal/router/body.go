package router

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
)

// readChunk is how much the sniffer asks of the client body at a time.
const readChunk = 32 << 10

// sniffed is what the router learned of a request body before forwarding it.
type sniffed struct {
	model string
	// held is the body read so far: all of it when complete, else a prefix that ends at
	// or after the "model" value. It is the only copy the router keeps.
	held     []byte
	complete bool
	// promptAt is where the "prompt" or "messages" value starts in held; -1 if unknown.
	promptAt int
}

// errBodyJSON is a syntax error in the part of the body the sniffer read.
var errBodyJSON = errors.New("request body is not valid JSON")

// scanner walks the top level of a JSON object as it arrives, keeping what it read in buf
// (the one copy of the body prefix), so finding "model" costs no second copy of a long
// prompt. It checks strings, the nesting of brackets and the top level's syntax, which
// finds truncated and most broken bodies at a fraction of json.Valid's cost; the engine
// checks the rest, as it must anyway for the part that is streamed to it.
type scanner struct {
	src  io.Reader
	want int64 // Content-Length, or -1
	buf  []byte
	pos  int
	eof  bool
	err  error // read error other than EOF
}

// newScanner starts with room for first bytes: all of a body of known length up to it,
// so a small body is never copied.
func newScanner(src io.Reader, contentLength int64, first int) *scanner {
	size := int64(max(first, readChunk))
	if contentLength >= 0 {
		size = min(contentLength, size)
	}
	return &scanner{src: src, want: contentLength, buf: make([]byte, 0, size)}
}

// more reads from the client until it gets at least one byte, the body ends or a read
// fails. It reports whether buf grew.
func (s *scanner) more() bool {
	for !s.eof && s.err == nil {
		if s.want >= 0 && int64(len(s.buf)) >= s.want {
			// The server has enforced Content-Length; reading on would only fetch the EOF,
			// at the price of growing a full buffer.
			s.eof = true
			return false
		}
		if len(s.buf) == cap(s.buf) {
			s.grow()
		}
		n, err := s.src.Read(s.buf[len(s.buf):min(cap(s.buf), len(s.buf)+readChunk)])
		s.buf = s.buf[:len(s.buf)+n]
		switch {
		case err == io.EOF:
			s.eof = true
		case err != nil:
			s.err = err
		}
		if n > 0 {
			return true
		}
	}
	return false
}

// grow makes room for more of the body. With a known length it goes straight to all of
// it, since the prefix is needed whole and one copy of it beats doubling; else it doubles.
func (s *scanner) grow() {
	size := 2*cap(s.buf) + readChunk
	if s.want >= 0 {
		size = int(s.want)
	}
	nb := make([]byte, len(s.buf), size)
	copy(nb, s.buf)
	s.buf = nb
}

// peek returns the byte at pos, reading more if needed; ok is false at the end of the body.
func (s *scanner) peek() (c byte, ok bool) {
	for s.pos >= len(s.buf) {
		if !s.more() {
			return 0, false
		}
	}
	return s.buf[s.pos], true
}

// fail is the error for an unexpected end or byte: the read error if there was one.
func (s *scanner) fail() error {
	if s.err != nil {
		return s.err
	}
	return errBodyJSON
}

func (s *scanner) skipSpace() {
	for {
		c, ok := s.peek()
		if !ok || (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
			return
		}
		s.pos++
	}
}

func (s *scanner) expect(want byte) error {
	s.skipSpace()
	c, ok := s.peek()
	if !ok || c != want {
		return s.fail()
	}
	s.pos++
	return nil
}

// skipString moves past the string that starts at pos. It looks only for quotes (a
// vectorised search) and counts the backslashes before one to tell an escaped quote.
func (s *scanner) skipString() error {
	start := s.pos
	s.pos++ // the opening quote
	for {
		if _, ok := s.peek(); !ok {
			return s.fail()
		}
		i := bytes.IndexByte(s.buf[s.pos:], '"')
		if i < 0 {
			s.pos = len(s.buf)
			continue
		}
		q := s.pos + i
		s.pos = q + 1
		escapes := 0
		for j := q - 1; j > start && s.buf[j] == '\\'; j-- {
			escapes++
		}
		if escapes%2 == 0 {
			return nil
		}
	}
}

// readString returns the string that starts at pos, unescaped.
func (s *scanner) readString() (string, error) {
	start := s.pos
	if err := s.skipString(); err != nil {
		return "", err
	}
	raw := s.buf[start:s.pos]
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw[1 : len(raw)-1]), nil
	}
	var v string
	if err := json.Unmarshal(raw, &v); err != nil {
		return "", errBodyJSON
	}
	return v, nil
}

// skipValue moves past the value that starts at pos, checking only that brackets nest.
func (s *scanner) skipValue() error {
	c, ok := s.peek()
	if !ok {
		return s.fail()
	}
	switch c {
	case '"':
		return s.skipString()
	case '{', '[':
		var stack []byte
		for {
			c, ok := s.peek()
			if !ok {
				return s.fail()
			}
			switch c {
			case '"':
				if err := s.skipString(); err != nil {
					return err
				}
				continue
			case '{':
				stack = append(stack, '}')
			case '[':
				stack = append(stack, ']')
			case '}', ']':
				if len(stack) == 0 || stack[len(stack)-1] != c {
					return errBodyJSON
				}
				stack = stack[:len(stack)-1]
				if len(stack) == 0 {
					s.pos++
					return nil
				}
			}
			s.pos++
		}
	default:
		start := s.pos
		for {
			c, ok := s.peek()
			if !ok || !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c == '-' || c == '+' || c == '.' || c == 'E') {
				break
			}
			s.pos++
		}
		if s.pos == start {
			return s.fail()
		}
		return nil
	}
}

// sniffError maps a sniffing failure to the answer the client gets.
func sniffError(err error) *apiError {
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return invalidRequest(http.StatusRequestEntityTooLarge, "request_too_large", "",
			"request body is larger than %d bytes", tooLarge.Limit)
	case errors.Is(err, errModelType):
		return invalidRequest(http.StatusBadRequest, "", "model", "model must be a string")
	case errors.Is(err, errModelTwice):
		return invalidRequest(http.StatusBadRequest, "", "model", "model is given more than once")
	case errors.Is(err, errBodyJSON):
		return invalidRequest(http.StatusBadRequest, "invalid_json", "", "request body is not valid JSON")
	default:
		return invalidRequest(http.StatusBadRequest, "", "", "reading request body: %v", err)
	}
}

// sniff reads src up to the top-level "model" value (and, with prefixBytes > 0, that many
// bytes of the "prompt" or "messages" value), then on to replayBytes or the end. A body
// read whole has its top level checked to the end; the engine checks what lies deeper and
// what the router streams to it.
func sniff(src io.Reader, contentLength int64, prefixBytes, replayBytes int) (sniffed, *apiError) {
	s := newScanner(src, contentLength, replayBytes)
	out := sniffed{promptAt: -1}
	at, err := s.top(&out, prefixBytes > 0)
	if err != nil {
		return sniffed{}, sniffError(err)
	}
	if out.model == "" {
		return sniffed{}, invalidRequest(http.StatusBadRequest, "", "model", "you must provide a model parameter")
	}
	if out.promptAt >= 0 {
		for len(s.buf) < out.promptAt+prefixBytes && s.more() {
		}
	}
	for len(s.buf) < replayBytes && s.more() {
	}
	if !s.eof && (int64(len(s.buf)) == s.want || len(s.buf) < cap(s.buf)) {
		// The body may have ended with the last read: look, without growing the buffer.
		s.more()
	}
	if s.err != nil {
		return sniffed{}, sniffError(s.err)
	}
	if s.eof {
		if err := s.finish(at); err != nil {
			return sniffed{}, sniffError(err)
		}
	}
	out.held, out.complete = s.buf, s.eof
	return out, nil
}

// where top stopped in the top-level object.
type place int

const (
	atValue    place = iota // at the start of a member's value
	afterValue              // just after a member's value
	atEnd                   // past the closing brace
)

// top walks the top-level object until it has the model (and the prompt's start, if
// wanted) or the object ends, and says where it stopped.
func (s *scanner) top(out *sniffed, wantPrompt bool) (place, error) {
	if err := s.expect('{'); err != nil {
		return atEnd, err
	}
	s.skipSpace()
	if c, ok := s.peek(); ok && c == '}' {
		s.pos++
		return atEnd, nil
	}
	for {
		key, err := s.key()
		if err != nil {
			return atEnd, err
		}
		if key == "model" && out.model != "" {
			return atEnd, errModelTwice
		}
		switch {
		case key == "model":
			c, ok := s.peek()
			if !ok {
				return atEnd, s.fail()
			}
			if c != '"' {
				return atEnd, errModelType
			}
			if out.model, err = s.readString(); err != nil {
				return atEnd, err
			}
		case (key == "prompt" || key == "messages") && wantPrompt && out.promptAt < 0:
			out.promptAt = s.pos
			if out.model != "" {
				return atValue, nil
			}
			if err := s.skipValue(); err != nil {
				return atEnd, err
			}
		default:
			if err := s.skipValue(); err != nil {
				return atEnd, err
			}
		}
		if out.model != "" && (!wantPrompt || out.promptAt >= 0) {
			return afterValue, nil
		}
		if end, err := s.separator(); err != nil || end {
			return atEnd, err
		}
	}
}

// key reads a member's name and the colon after it, and moves to the value.
func (s *scanner) key() (string, error) {
	s.skipSpace()
	if c, ok := s.peek(); !ok || c != '"' {
		return "", s.fail()
	}
	k, err := s.readString()
	if err != nil {
		return "", err
	}
	if err := s.expect(':'); err != nil {
		return "", err
	}
	s.skipSpace()
	return k, nil
}

// separator reads the comma after a member, or the closing brace (end).
func (s *scanner) separator() (end bool, err error) {
	s.skipSpace()
	c, ok := s.peek()
	if !ok {
		return false, s.fail()
	}
	s.pos++
	switch c {
	case ',':
		return false, nil
	case '}':
		return true, nil
	}
	return false, errBodyJSON
}

// finish walks the rest of a body read whole from where top stopped: the remaining
// members, the closing brace, and nothing after it but space.
func (s *scanner) finish(at place) error {
	if at == atValue {
		if err := s.skipValue(); err != nil {
			return err
		}
		at = afterValue
	}
	for at == afterValue {
		end, err := s.separator()
		if err != nil {
			return err
		}
		if end {
			break
		}
		if key, err := s.key(); err != nil {
			return err
		} else if key == "model" {
			return errModelTwice
		}
		if err := s.skipValue(); err != nil {
			return err
		}
	}
	s.skipSpace()
	if _, ok := s.peek(); ok {
		return errBodyJSON
	}
	return nil
}

// errModelType is a "model" that is not a string.
var errModelType = errors.New("model must be a string")

// errModelTwice is a second "model" in the part of the body the sniffer read: the engine
// would serve the last one, not the one the request was routed by.
var errModelTwice = errors.New("model is given more than once")

// errAttemptOver is what a failed attempt's transport reads once the router gave up on it.
var errAttemptOver = errors.New("router: attempt abandoned")

// gate hands the part of the body the router did not hold to one attempt, counting what
// the attempt consumed. Once closed it gives nothing more, so a transport still writing a
// failed attempt cannot take bytes that a retry needs.
type gate struct {
	mu     sync.Mutex
	src    io.Reader
	n      int64
	err    error // first read error other than EOF
	closed atomic.Bool
}

func (g *gate) Read(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed.Load() {
		return 0, errAttemptOver
	}
	n, err := g.src.Read(p)
	g.n += int64(n)
	if err != nil && err != io.EOF && g.err == nil {
		g.err = err
	}
	return n, err
}

// close stops the gate and reports whether the attempt consumed nothing of src. It never
// waits: a read under way counts as consuming.
func (g *gate) close() (untouched bool) {
	g.closed.Store(true)
	if !g.mu.TryLock() {
		return false
	}
	defer g.mu.Unlock()
	return g.n == 0
}

// readErr is the first read error the attempt met, such as *http.MaxBytesError.
func (g *gate) readErr() error {
	if !g.mu.TryLock() {
		return nil
	}
	defer g.mu.Unlock()
	return g.err
}

// body is a request body as the router forwards it: what it held, then the rest of the
// client's stream.
type body struct {
	held     []byte
	rest     io.Reader // nil when held is complete
	length   int64     // Content-Length to send, -1 when unknown
	consumed bool      // an attempt took bytes of rest
}

// open returns the reader for one attempt and its gate (nil when the body is held whole).
func (b *body) open() (io.Reader, *gate) {
	if b.rest == nil {
		return bytes.NewReader(b.held), nil
	}
	g := &gate{src: b.rest}
	return io.MultiReader(bytes.NewReader(b.held), g), g
}

// replayable reports whether another attempt can send the whole body again.
func (b *body) replayable() bool { return b.rest == nil || !b.consumed }
