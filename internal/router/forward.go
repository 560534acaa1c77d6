package router

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// statusClientGone is the status counted for a request whose client went away first
// (nginx's 499); the client gets nothing.
const statusClientGone = 499

// serveGeneration routes a completions or chat completions request.
func (r *Router) serveGeneration(w http.ResponseWriter, req *http.Request) {
	arrived := r.cfg.Now()
	if req.ContentLength > r.cfg.MaxBodyBytes {
		r.answer(w, noDeployment, sniffError(&http.MaxBytesError{Limit: r.cfg.MaxBodyBytes}))
		return
	}
	src := http.MaxBytesReader(w, req.Body, r.cfg.MaxBodyBytes)
	sn, apiErr := sniff(src, req.ContentLength, r.cfg.PrefixAffinityBytes, r.cfg.ReplayBytes)
	if apiErr != nil {
		r.answer(w, noDeployment, apiErr)
		return
	}
	d := r.table.Load().byModel[sn.model]
	if d == nil {
		r.answer(w, noDeployment, modelNotFound(sn.model))
		return
	}
	f := &forward{
		r:       r,
		d:       d,
		model:   sn.model,
		w:       w,
		req:     req,
		aff:     r.affinityOf(req, sn),
		arrived: arrived,
		body:    body{held: sn.held, length: req.ContentLength},
	}
	if sn.complete {
		f.body.length = int64(len(sn.held))
	} else {
		f.body.rest = src
	}
	d.arrive()
	// Count the request however serve ends, a panic included.
	o := outcome{status: http.StatusInternalServerError, failed: true}
	defer func() { r.finish(d, o) }()
	o = f.serve()
	if o.abort {
		// The instance broke off a response already under way: end the client's
		// connection too, so it sees a truncated answer and not a complete one.
		panic(http.ErrAbortHandler)
	}
}

// finish counts a request that serve is done with.
func (r *Router) finish(d *deployment, o outcome) {
	d.finish(o)
	r.metrics.requests.WithLabelValues(d.name, statusLabel(o.status)).Inc()
	if o.retried {
		r.metrics.retries.WithLabelValues(d.name).Inc()
	}
	if o.tokens > 0 {
		r.metrics.tokens.WithLabelValues(d.name).Add(float64(o.tokens))
	}
	if o.measured {
		r.metrics.ttft.WithLabelValues(d.name).Observe(o.ttft.Seconds())
		r.metrics.e2e.WithLabelValues(d.name).Observe(o.e2e.Seconds())
	}
}

func modelNotFound(model string) *apiError {
	return invalidRequest(http.StatusNotFound, "model_not_found", "model", "the model %q does not exist", model)
}

func statusLabel(code int) string { return strconv.Itoa(code) }

// affinityOf is the request's preference for an instance: its affinity header, else the
// leading bytes of its prompt, else none.
func (r *Router) affinityOf(req *http.Request, sn sniffed) affinity {
	if h := r.cfg.AffinityHeader; h != "" {
		if v := req.Header.Get(h); v != "" {
			return affinity{hash: hashBytes([]byte(v)), ok: true}
		}
	}
	if n := r.cfg.PrefixAffinityBytes; n > 0 && sn.promptAt >= 0 {
		end := min(len(sn.held), sn.promptAt+n)
		return affinity{hash: hashBytes(sn.held[sn.promptAt:end]), ok: true}
	}
	return affinity{}
}

// forward is one client request on its way through the router.
type forward struct {
	r       *Router
	d       *deployment
	model   string
	w       http.ResponseWriter
	req     *http.Request
	body    body
	aff     affinity
	arrived time.Time
}

// serve finds an instance, forwards the request, retries once on another instance when
// that is safe, and relays the answer.
func (f *forward) serve() outcome {
	ctx := f.req.Context()
	in, err := f.d.acquire(ctx, f.aff, nil)
	if err != nil {
		return f.noInstance(ctx, err)
	}
	retried := false
	for {
		o, retry := f.try(ctx, in, !retried)
		if !retry {
			o.retried = retried
			return o
		}
		retried = true
		next, err := f.d.acquire(ctx, f.aff, in)
		if err != nil {
			o := f.noInstance(ctx, err)
			o.retried = true
			return o
		}
		f.d.log.Debug("retrying", "instance_id", next.id, "after", in.id)
		in = next
	}
}

// noInstance answers a request that got no instance.
func (f *forward) noInstance(ctx context.Context, err error) outcome {
	if ctx.Err() != nil {
		return outcome{status: statusClientGone, cancelled: true}
	}
	var e *apiError
	switch {
	case errors.Is(err, errGone):
		e = modelNotFound(f.model)
	case errors.Is(err, errQueueFull):
		e = serverError(http.StatusServiceUnavailable, "queue_full",
			"too many requests are waiting for deployment %q; retry later", f.d.name)
	default:
		e = serverError(http.StatusServiceUnavailable, "no_instance",
			"no instance of deployment %q was free in time; retry later", f.d.name)
	}
	if e.status == http.StatusServiceUnavailable {
		e.retryAfter = f.r.cfg.RetryAfter
	}
	writeError(f.w, e)
	return outcome{status: e.status, rejected: e.status == http.StatusServiceUnavailable}
}

// try sends one attempt to in. retry is true when it failed before anything reached the
// client and another attempt can send the body again; in's slot is freed either way.
func (f *forward) try(ctx context.Context, in *instance, mayRetry bool) (o outcome, retry bool) {
	started := f.r.cfg.Now()
	rd, g := f.body.open()
	stop := func() {
		if g != nil && !g.close() {
			f.body.consumed = true
		}
	}
	out, err := f.outbound(ctx, in, rd)
	if err != nil {
		stop()
		f.d.endAttempt(in, attemptEnd{failed: true, err: err})
		writeError(f.w, serverError(http.StatusBadGateway, "bad_endpoint", "bad endpoint URL for instance %q", in.id))
		return outcome{status: http.StatusBadGateway, failed: true}, false
	}
	resp, err := f.r.rt.RoundTrip(out)
	if err != nil {
		stop()
		if ctx.Err() != nil {
			f.d.endAttempt(in, attemptEnd{cancelled: true})
			return outcome{status: statusClientGone, cancelled: true}, false
		}
		if g != nil {
			if rerr := g.readErr(); rerr != nil {
				// The client's body failed (too large, or broken off): not the instance's fault.
				f.d.endAttempt(in, attemptEnd{})
				e := sniffError(rerr)
				writeError(f.w, e)
				return outcome{status: e.status}, false
			}
		}
		f.d.endAttempt(in, attemptEnd{failed: true, err: err})
		if mayRetry && f.body.replayable() && f.d.hasOther(in) {
			return outcome{}, true
		}
		f.d.log.Debug("instance unreachable", "instance_id", in.id, "error", err)
		writeError(f.w, serverError(http.StatusBadGateway, "instance_unreachable",
			"instance %q of deployment %q failed: %v", in.id, f.d.name, err))
		return outcome{status: http.StatusBadGateway, failed: true}, false
	}
	if resp.StatusCode >= 500 && mayRetry && f.d.hasOther(in) {
		// Nothing reached the client yet. Stop the body first, so the count of what this
		// attempt consumed is final.
		stop()
		if f.body.replayable() {
			_ = resp.Body.Close()
			f.d.endAttempt(in, attemptEnd{failed: true, err: fmt.Errorf("status %d", resp.StatusCode)})
			return outcome{}, true
		}
	}
	defer stop()
	return f.relay(ctx, in, resp, started), false
}

// outbound is the attempt's request to in.
func (f *forward) outbound(ctx context.Context, in *instance, rd io.Reader) (*http.Request, error) {
	base := in.base.Load()
	u := *base
	u.Path = strings.TrimSuffix(base.Path, "/") + f.req.URL.Path
	u.RawPath = ""
	u.RawQuery = f.req.URL.RawQuery
	out, err := http.NewRequestWithContext(ctx, f.req.Method, u.String(), rd)
	if err != nil {
		return nil, err
	}
	out.ContentLength = f.body.length
	out.Header = f.req.Header.Clone()
	removeHopHeaders(out.Header)
	// The client's expectation was met by the router, which has read from the body already.
	out.Header.Del("Expect")
	if _, ok := out.Header["User-Agent"]; !ok {
		out.Header.Set("User-Agent", "") // not Go's default
	}
	if ip, _, err := net.SplitHostPort(f.req.RemoteAddr); err == nil {
		if prior := out.Header.Values("X-Forwarded-For"); len(prior) > 0 {
			ip = strings.Join(prior, ", ") + ", " + ip
		}
		out.Header.Set("X-Forwarded-For", ip)
	}
	return out, nil
}

// hopHeaders are the hop-by-hop headers of RFC 9110 section 7.6.1, which a proxy drops.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

func removeHopHeaders(h http.Header) {
	for _, v := range h.Values("Connection") {
		for name := range strings.SplitSeq(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range hopHeaders {
		h.Del(name)
	}
}

// Relay buffers. A buffer is held for the whole life of a response, and an SSE stream lives
// for its whole generation while sending events of a few hundred bytes, so streams get a
// small buffer (at 10,000 open streams the large one made 100 MiB of the router's heap) and
// other answers, read whole as fast as they come, a large one.
var (
	streamBuffers = sync.Pool{New: func() any { b := make([]byte, 4<<10); return &b }}
	copyBuffers   = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}
)

// relay passes the instance's answer to the client as it arrives, flushing after every
// read so that SSE events are not held back, and measures it.
func (f *forward) relay(ctx context.Context, in *instance, resp *http.Response, started time.Time) (o outcome) {
	defer resp.Body.Close()
	// Free the slot however relay ends, a panic included.
	a := attemptEnd{failed: true, err: errors.New("relay did not finish")}
	defer func() { f.d.endAttempt(in, a) }()
	now := f.r.cfg.Now
	h := f.w.Header()
	removeHopHeaders(resp.Header)
	for k, vv := range resp.Header {
		h[k] = vv
	}
	f.w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(f.w)

	var m meter = nopMeter{}
	pool := &copyBuffers
	if ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); ct == "text/event-stream" {
		m = &sseMeter{}
		pool = &streamBuffers
	} else if ct == "application/json" && resp.StatusCode < 300 {
		m = &jsonMeter{}
	}
	bp := pool.Get().(*[]byte)
	defer pool.Put(bp)
	buf := *bp
	var first time.Time
	var readErr, writeErr error
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			t := now()
			if first.IsZero() {
				first = t
			}
			m.feed(buf[:n], t)
			if _, writeErr = f.w.Write(buf[:n]); writeErr != nil {
				break
			}
			_ = rc.Flush()
		}
		if err != nil {
			if err != io.EOF {
				readErr = err
			}
			break
		}
	}
	end := now()
	if t := m.firstData(); !t.IsZero() {
		first = t
	}
	if first.IsZero() {
		first = end
	}
	tokens := m.tokens()
	a = attemptEnd{tokens: tokens}
	o = outcome{status: resp.StatusCode, tokens: tokens}
	switch {
	case writeErr != nil || (readErr != nil && ctx.Err() != nil):
		a.cancelled, o.cancelled, o.status = true, true, statusClientGone
	case readErr != nil:
		a.failed, a.err = true, readErr
		o.failed, o.abort = true, true
		f.d.log.Debug("response broke off", "instance_id", in.id, "error", readErr)
	default:
		a.failed = resp.StatusCode >= 500
		a.err = fmt.Errorf("status %d", resp.StatusCode)
		o.failed = a.failed
		if resp.StatusCode < 400 {
			a.measured, a.ttft, a.e2e = true, first.Sub(started), end.Sub(started)
			o.measured, o.ttft, o.e2e = true, first.Sub(f.arrived), end.Sub(f.arrived)
		}
	}
	return o
}

// meter watches a response go by for its first token and its token count.
type meter interface {
	feed(p []byte, now time.Time)
	// firstData is when the first token came, or zero to take the first byte.
	firstData() time.Time
	tokens() uint64
}

type nopMeter struct{}

func (nopMeter) feed([]byte, time.Time) {}
func (nopMeter) firstData() time.Time   { return time.Time{} }
func (nopMeter) tokens() uint64         { return 0 }

// maxCapture bounds the JSON answer kept to read its usage, and an SSE line kept to read
// one; longer ones are passed on unread.
const (
	maxCapture = 1 << 20
	maxSSELine = 64 << 10
)

// usageOf reads usage.completion_tokens of a JSON object.
func usageOf(b []byte) (uint64, bool) {
	var v struct {
		Usage *struct {
			CompletionTokens *uint64 `json:"completion_tokens"`
		} `json:"usage"`
	}
	if json.Unmarshal(b, &v) != nil || v.Usage == nil || v.Usage.CompletionTokens == nil {
		return 0, false
	}
	return *v.Usage.CompletionTokens, true
}

// jsonMeter keeps a bounded copy of a JSON answer to read its usage at the end.
type jsonMeter struct {
	buf  []byte
	over bool
}

func (m *jsonMeter) feed(p []byte, _ time.Time) {
	if m.over || len(m.buf)+len(p) > maxCapture {
		m.over, m.buf = true, nil
		return
	}
	m.buf = append(m.buf, p...)
}

func (m *jsonMeter) firstData() time.Time { return time.Time{} }

func (m *jsonMeter) tokens() uint64 {
	n, _ := usageOf(m.buf)
	return n
}

// sseMeter reads an SSE stream line by line as it passes: each data event other than
// [DONE] counts as a token unless the stream reports usage, whose last
// completion_tokens then wins.
type sseMeter struct {
	line     []byte // the current line, up to maxSSELine
	over     bool   // the current line is longer than that
	events   uint64
	usage    uint64
	hasUsage bool
	first    time.Time
}

var (
	dataField  = []byte("data:")
	doneMarker = []byte("[DONE]")
	usageKey   = []byte(`"completion_tokens"`)
)

func (m *sseMeter) feed(p []byte, now time.Time) {
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			m.keep(p)
			return
		}
		m.keep(p[:i])
		m.endLine(now)
		p = p[i+1:]
	}
}

func (m *sseMeter) keep(p []byte) {
	if room := maxSSELine - len(m.line); len(p) > room {
		p, m.over = p[:room], true
	}
	m.line = append(m.line, p...)
}

func (m *sseMeter) endLine(now time.Time) {
	line := bytes.TrimSuffix(m.line, []byte("\r"))
	over := m.over
	m.line, m.over = m.line[:0], false
	payload, ok := bytes.CutPrefix(line, dataField)
	if !ok {
		return
	}
	payload = bytes.TrimPrefix(payload, []byte(" "))
	if !over && bytes.Equal(payload, doneMarker) {
		return
	}
	m.events++
	if m.first.IsZero() {
		m.first = now
	}
	if !over && bytes.Contains(payload, usageKey) {
		if n, ok := usageOf(payload); ok {
			m.usage, m.hasUsage = n, true
		}
	}
}

func (m *sseMeter) firstData() time.Time { return m.first }

func (m *sseMeter) tokens() uint64 {
	if m.hasUsage {
		return m.usage
	}
	return m.events
}
