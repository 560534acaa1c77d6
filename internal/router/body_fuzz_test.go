package router

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"testing/iotest"
	"unicode/utf8"
)

// fuzzMaxBody is the router's MaxBodyBytes in FuzzSniff: small, so that the limit is met.
const fuzzMaxBody = 4096

// FuzzSniff feeds the body sniffer arbitrary bodies, Content-Length values, prefix and
// replay sizes, read whole or in pieces as net/http's server hands them over. It must never
// panic; what it holds is a prefix of the body (all of it when complete) that with the rest
// of the stream makes the body; the prompt's start lies in it, with the bytes affinity
// hashes. For a body that is a valid JSON object (valid UTF-8: the sniffer compares bytes
// where encoding/json would substitute U+FFFD), the model is what encoding/json finds, or
// the refusal says why there is none. A valid body cut short, or followed by more than
// space, is refused; so is valid JSON that is not an object. Read one byte at a time the
// answer is the same as read whole. The seed corpus in testdata/fuzz/FuzzSniff holds the
// router tests' bodies and nasty ones: deep nesting, escapes, NUL bytes, a BOM, CRLF, huge
// numbers, unterminated strings, wrong Content-Lengths.
func FuzzSniff(f *testing.F) {
	for _, b := range []string{
		chatBody("a1", "hi"),
		`{"model":"b1","prompt":"hi"}`,
		`{"prompt":"hi","max_tokens":3,"stop":["}"],"model":"b1"}`,
		`{"model":"a\u0031","prompt":"x"}`,
		" \n{ \"model\" : \"a2\" ,\"prompt\":\"x\"}\n",
		`{"model":"m","messages":[`,
		`{"model":"m","prompt":"x",}`,
		`["model","m"]`,
		`{"model":5,"prompt":"x"}`,
	} {
		f.Add([]byte(b), int64(len(b)), uint16(64), uint16(1024), uint8(0))
	}
	f.Fuzz(func(t *testing.T, body []byte, contentLength int64, prefixBytes, replayBytes uint16, shape uint8) {
		prefix := int(prefixBytes % 512)
		replay := int(replayBytes) % (fuzzMaxBody + 1)
		if contentLength <= fuzzMaxBody {
			// A larger Content-Length is refused before the body is read.
			checkSniff(t, body, contentLength, prefix, replay, shape)
		}
		if len(body) > fuzzMaxBody {
			return
		}
		whole := sniffBody(body, int64(len(body)), prefix, replay, 0)
		bytewise := sniffBody(body, -1, prefix, replay, 1)
		if whole.sn.complete && bytewise.sn.complete && !whole.same(bytewise) {
			t.Fatalf("read whole: %s\nread a byte at a time: %s", whole, bytewise)
		}
		if whole.err == nil && bytewise.err == nil && whole.sn.model != bytewise.sn.model {
			t.Fatalf("model %q read whole, %q a byte at a time", whole.sn.model, bytewise.sn.model)
		}
		if json.Valid(body) && utf8.Valid(body) {
			checkAgainstJSON(t, body, whole, prefix)
			checkBroken(t, body)
		}
	})
}

// sniffResult is what sniff made of one delivery of a body.
type sniffResult struct {
	sn        sniffed
	err       *apiError
	delivered []byte // what the server's body reader gives, before any read error
	rest      []byte // what the stream still held after sniff
	restErr   error
}

func (r sniffResult) same(o sniffResult) bool {
	if (r.err == nil) != (o.err == nil) {
		return false
	}
	if r.err != nil {
		return *r.err == *o.err
	}
	return r.sn.model == o.sn.model && r.sn.promptAt == o.sn.promptAt && bytes.Equal(r.sn.held, o.sn.held)
}

func (r sniffResult) String() string {
	if r.err != nil {
		return "refused: " + r.err.code + " " + r.err.param + " " + r.err.msg
	}
	return "model " + strconvQuote(r.sn.model) + " held " + strconvQuote(string(r.sn.held))
}

func strconvQuote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// sniffBody delivers body as net/http's server does for a request with contentLength
// (-1: unknown): exactly that many bytes, and io.ErrUnexpectedEOF when the client sent
// fewer; all of it otherwise; past fuzzMaxBody, *http.MaxBytesError. shape picks how the
// reads are cut.
func sniffBody(body []byte, contentLength int64, prefix, replay int, shape uint8) sniffResult {
	delivered := body
	var src io.Reader = bytes.NewReader(body)
	switch {
	case contentLength >= 0 && int64(len(body)) >= contentLength:
		delivered = body[:contentLength]
		src = bytes.NewReader(delivered)
	case contentLength >= 0:
		src = io.MultiReader(src, iotest.ErrReader(io.ErrUnexpectedEOF))
	}
	switch shape % 4 {
	case 1:
		src = iotest.OneByteReader(src)
	case 2:
		src = iotest.HalfReader(src)
	case 3:
		src = iotest.DataErrReader(src)
	}
	src = http.MaxBytesReader(nil, io.NopCloser(src), fuzzMaxBody)
	r := sniffResult{delivered: delivered}
	r.sn, r.err = sniff(src, contentLength, prefix, replay)
	if r.err == nil {
		r.rest, r.restErr = io.ReadAll(src)
	}
	return r
}

func checkSniff(t *testing.T, body []byte, contentLength int64, prefix, replay int, shape uint8) {
	t.Helper()
	r := sniffBody(body, contentLength, prefix, replay, shape)
	if r.err != nil {
		if r.err.status != http.StatusBadRequest && r.err.status != http.StatusRequestEntityTooLarge {
			t.Fatalf("refusal with status %d: %s", r.err.status, r.err.msg)
		}
		return
	}
	held, d := r.sn.held, r.delivered
	if r.sn.model == "" {
		t.Fatal("sniff accepted a body without a model")
	}
	if !bytes.HasPrefix(d, held) || len(held) > fuzzMaxBody {
		t.Fatalf("held %q is not a prefix of the body %q", held, d)
	}
	if r.sn.complete && (len(held) != len(d) || len(r.rest) != 0) {
		t.Fatalf("complete, but held %d bytes of %d with %d left", len(held), len(d), len(r.rest))
	}
	if r.restErr == nil && !bytes.Equal(append(bytes.Clone(held), r.rest...), d) {
		t.Fatalf("held %q and the rest %q do not make the body %q", held, r.rest, d)
	}
	switch at := r.sn.promptAt; {
	case at == -1:
	case prefix == 0 || at < 0 || at > len(held):
		t.Fatalf("prompt at %d of %d held bytes (prefix %d)", at, len(held), prefix)
	case len(held) < min(at+prefix, len(d)) && !r.sn.complete && r.restErr == nil:
		t.Fatalf("prompt at %d, %d bytes held, want %d for affinity", at, len(held), min(at+prefix, len(d)))
	}
	if !r.sn.complete && len(held) < replay && r.restErr == nil {
		t.Fatalf("incomplete with %d bytes held, want at least %d", len(held), replay)
	}
}

// topLevel is what encoding/json finds at the top level of an object: the model as the
// engine reads it (the last "model"), how many "model" keys there are, and the offset of
// the first "prompt" or "messages" value and its raw text.
type topLevel struct {
	model      json.RawMessage
	models     int
	promptAt   int
	promptText json.RawMessage
}

func readTopLevel(body []byte) (topLevel, bool) {
	top := topLevel{promptAt: -1}
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return top, false
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return top, false
		}
		key, _ := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return top, false
		}
		switch {
		case key == "model":
			top.model = v
			top.models++
		case (key == "prompt" || key == "messages") && top.promptAt < 0:
			top.promptAt = int(dec.InputOffset()) - len(v)
			top.promptText = v
		}
	}
	return top, true
}

func checkAgainstJSON(t *testing.T, body []byte, r sniffResult, prefix int) {
	t.Helper()
	top, isObject := readTopLevel(body)
	if !isObject {
		if r.err == nil {
			t.Fatalf("valid JSON that is not an object was accepted: %q", body)
		}
		return
	}
	var model string
	isString := json.Unmarshal(top.model, &model) == nil && top.models > 0
	switch {
	case top.models > 1:
		// encoding/json (and Python's json, and so the engine) takes the last.
		if r.err == nil && r.sn.model != model {
			t.Fatalf("body with %d models routed as %q; the engine reads %q: %q", top.models, r.sn.model, model, body)
		}
	case top.models == 0 || isString && model == "":
		if r.err == nil || r.err.param != "model" {
			t.Fatalf("body without a model: %s", r)
		}
	case !isString:
		if r.err == nil || r.err.param != "model" || r.err.msg != "model must be a string" {
			t.Fatalf("body with model %s: %s", top.model, r)
		}
	case r.err != nil:
		t.Fatalf("valid body with model %q refused: %s: %q", model, r, body)
	case r.sn.model != model:
		t.Fatalf("sniffed model %q, encoding/json finds %q: %q", r.sn.model, model, body)
	case prefix > 0 && r.sn.promptAt != top.promptAt:
		t.Fatalf("prompt at %d, encoding/json finds it at %d: %q", r.sn.promptAt, top.promptAt, body)
	case r.sn.promptAt >= 0 && !bytes.HasPrefix(body[r.sn.promptAt:], top.promptText):
		t.Fatalf("prompt at %d does not start %q", r.sn.promptAt, top.promptText)
	}
}

// checkBroken checks that a valid body cut short, or with more than space after it, is
// refused when read whole.
func checkBroken(t *testing.T, body []byte) {
	t.Helper()
	trimmed := bytes.TrimRight(body, " \t\r\n")
	for _, broken := range [][]byte{
		trimmed[:len(trimmed)-1],
		trimmed[:len(trimmed)/2],
		append(bytes.Clone(body), '}'),
		append(bytes.Clone(body), ",{}"...),
		append(bytes.Clone(body), '"'),
	} {
		if r := sniffBody(broken, int64(len(broken)), 0, fuzzMaxBody, 0); r.err == nil {
			t.Fatalf("broken body %q accepted as model %q", broken, r.sn.model)
		}
	}
}
