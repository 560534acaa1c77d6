package fakeserver

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/llmscaler/llmscaler/internal/servermodel"
)

// tokenText is the filler text of every generated token.
const tokenText = "token "

// generationRequest is the part of an OpenAI completions or chat completions body the fake
// server reads; other fields are accepted and ignored.
type generationRequest struct {
	Model               string          `json:"model"`
	Prompt              json.RawMessage `json:"prompt"`
	Messages            []chatMessage   `json:"messages"`
	MaxTokens           *int            `json:"max_tokens"`
	MaxCompletionTokens *int            `json:"max_completion_tokens"`
	N                   *int            `json:"n"`
	Stream              bool            `json:"stream"`
	StreamOptions       *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	// Llmscaler is the fake server's extension: exact lengths from the load generator.
	Llmscaler *struct {
		PromptTokens *int `json:"prompt_tokens"`
	} `json:"llmscaler"`
}

type chatMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

// apiError is an error answered to the client in OpenAI's shape.
type apiError struct {
	status int
	typ    string
	param  string
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func badRequest(param, format string, args ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, typ: "invalid_request_error", param: param, msg: fmt.Sprintf(format, args...)}
}

func writeError(w http.ResponseWriter, e *apiError) {
	var param any
	if e.param != "" {
		param = e.param
	}
	writeJSON(w, e.status, map[string]any{"error": map[string]any{
		"message": e.msg, "type": e.typ, "param": param, "code": nil,
	}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

var errStarting = &apiError{status: http.StatusServiceUnavailable, typ: "service_unavailable_error",
	msg: displayName + " is still starting (simulated cold start)"}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	if !s.isHealthy() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "starting", "server": displayName})
		return
	}
	if stall := s.cfg.HealthStallBusy; stall > 0 && s.inFlight.Load() > 0 {
		// Like a busy llama-server: the answer comes late, after a prober's deadline.
		t := time.NewTimer(stall)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return // the prober gave up; nobody reads an answer
		case <-s.stopping:
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "stopping", "server": displayName})
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "server": displayName})
}

func (s *Server) handleModels(w http.ResponseWriter, _ *http.Request) {
	if !s.isHealthy() {
		writeError(w, errStarting)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"object": "list",
		"data": []map[string]any{{
			"id": s.cfg.Model, "object": "model", "created": s.created,
			"owned_by": displayName, "root": s.cfg.Model, "parent": nil,
			"max_model_len": s.cfg.Params.KVCacheTokens,
		}},
	})
}

// parsed is a validated generation request.
type parsed struct {
	promptTokens, maxTokens int
	stream, includeUsage    bool
}

// parse reads and checks the body of a completions (chat false) or chat completions request.
func (s *Server) parse(w http.ResponseWriter, r *http.Request, chat bool) (parsed, *apiError) {
	var req generationRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)).Decode(&req); err != nil {
		if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
			return parsed{}, &apiError{status: http.StatusRequestEntityTooLarge, typ: "invalid_request_error",
				msg: fmt.Sprintf("request body larger than %d bytes", mbe.Limit)}
		}
		return parsed{}, badRequest("", "invalid JSON body: %v", err)
	}
	if req.Model != "" && req.Model != s.cfg.Model {
		return parsed{}, &apiError{status: http.StatusNotFound, typ: "not_found_error", param: "model",
			msg: fmt.Sprintf("the model %q does not exist; this server has %q", req.Model, s.cfg.Model)}
	}
	if req.N != nil && *req.N != 1 {
		return parsed{}, badRequest("n", "n %d: the fake server makes one choice per request", *req.N)
	}
	p := parsed{maxTokens: DefaultMaxTokens, stream: req.Stream}
	p.includeUsage = req.Stream && req.StreamOptions != nil && req.StreamOptions.IncludeUsage
	switch {
	case req.MaxCompletionTokens != nil:
		p.maxTokens = *req.MaxCompletionTokens
	case req.MaxTokens != nil:
		p.maxTokens = *req.MaxTokens
	}
	if p.maxTokens < 1 {
		return parsed{}, badRequest("max_tokens", "max_tokens %d: want at least 1", p.maxTokens)
	}

	var err *apiError
	if chat {
		p.promptTokens, err = messagesTokens(req.Messages)
	} else {
		p.promptTokens, err = promptTokens(req.Prompt)
	}
	if err != nil {
		return parsed{}, err
	}
	if ext := req.Llmscaler; ext != nil && ext.PromptTokens != nil {
		if *ext.PromptTokens < 1 {
			return parsed{}, badRequest("llmscaler.prompt_tokens", "llmscaler.prompt_tokens %d: want at least 1", *ext.PromptTokens)
		}
		p.promptTokens = *ext.PromptTokens
	}
	if limit := s.cfg.Params.KVCacheTokens; p.promptTokens+p.maxTokens > limit {
		return parsed{}, badRequest("max_tokens", "this model's maximum context length is %d tokens; the request has %d prompt tokens and max_tokens %d",
			limit, p.promptTokens, p.maxTokens)
	}
	return p, nil
}

// estimateTokens is the prompt length of text: the larger of its words and a quarter of its
// characters, a common rule of thumb for English with BPE tokenizers, and at least 1.
func estimateTokens(text string) int {
	return max(1, len(strings.Fields(text)), (utf8.RuneCountInString(text)+3)/4)
}

// promptTokens measures a completions prompt: a string, one string in an array, or token ids.
func promptTokens(raw json.RawMessage) (int, *apiError) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, badRequest("prompt", "prompt is required")
	}
	var text string
	if json.Unmarshal(raw, &text) == nil {
		return estimateTokens(text), nil
	}
	var texts []string
	if json.Unmarshal(raw, &texts) == nil && len(texts) == 1 {
		return estimateTokens(texts[0]), nil
	}
	var ids []int
	if json.Unmarshal(raw, &ids) == nil && len(ids) > 0 {
		return len(ids), nil
	}
	var idLists [][]int
	if json.Unmarshal(raw, &idLists) == nil && len(idLists) == 1 && len(idLists[0]) > 0 {
		return len(idLists[0]), nil
	}
	return 0, badRequest("prompt", "prompt must be a string, an array of one string, or an array of token ids")
}

// messagesTokens measures chat messages: the estimate of all their text together.
func messagesTokens(msgs []chatMessage) (int, *apiError) {
	if len(msgs) == 0 {
		return 0, badRequest("messages", "messages is required")
	}
	texts := make([]string, len(msgs))
	for i, m := range msgs {
		text, ok := messageText(m.Content)
		if !ok {
			return 0, badRequest(fmt.Sprintf("messages[%d].content", i), "content must be a string or an array of parts")
		}
		texts[i] = text
	}
	return estimateTokens(strings.Join(texts, "\n")), nil
}

func messageText(raw json.RawMessage) (string, bool) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", true
	}
	var text string
	if json.Unmarshal(raw, &text) == nil {
		return text, true
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if json.Unmarshal(raw, &parts) != nil {
		return "", false
	}
	var texts []string
	for _, p := range parts {
		if p.Type == "text" {
			texts = append(texts, p.Text)
		}
	}
	return strings.Join(texts, " "), true
}

// handleGeneration serves /v1/completions (chat false) and /v1/chat/completions: it submits
// the request to the engine and answers as the engine releases tokens.
func (s *Server) handleGeneration(w http.ResponseWriter, r *http.Request, chat bool) {
	if !s.isHealthy() {
		writeError(w, errStarting)
		return
	}
	req, apiErr := s.parse(w, r, chat)
	if apiErr != nil {
		writeError(w, apiErr)
		return
	}
	s.inFlight.Add(1)
	defer s.inFlight.Add(-1)

	id := s.nextID.Add(1)
	p := newPending()
	arrival := time.Now()
	select {
	case s.submitCh <- submission{req: servermodel.Request{ID: id, PromptTokens: req.promptTokens, OutputTokens: req.maxTokens, Arrival: arrival}, p: p}:
	case <-r.Context().Done():
		return
	case <-s.loopDone:
		writeError(w, &apiError{status: http.StatusServiceUnavailable, typ: "service_unavailable_error", msg: displayName + " is shutting down"})
		return
	}
	finished := false
	defer func() {
		if finished {
			return
		}
		// The client went away or the server is stopping: free the request's place.
		select {
		case s.abortCh <- id:
		case <-s.loopDone:
		}
	}()

	resp := response{s: s, chat: chat, req: req, id: id, created: arrival.Unix()}
	if req.stream {
		resp.startStream(w)
	}
	sent := 0
	for {
		select {
		case <-p.notify:
		case <-r.Context().Done():
			return
		case <-s.loopDone:
			if !req.stream {
				writeError(w, &apiError{status: http.StatusServiceUnavailable, typ: "service_unavailable_error", msg: displayName + " stopped before the request finished"})
			}
			return
		}
		tokens, done, err := p.state()
		if err != nil {
			finished = true
			if !req.stream {
				writeError(w, &apiError{status: http.StatusServiceUnavailable, typ: "service_unavailable_error", msg: err.Error()})
			}
			return
		}
		if req.stream {
			for sent < tokens {
				sent++
				resp.writeChunk(w, sent)
			}
			if done {
				resp.endStream(w)
			}
			_ = http.NewResponseController(w).Flush()
		}
		if done {
			finished = true
			if !req.stream {
				resp.writeWhole(w)
			}
			s.log.Debug("request finished", "request_id", id, "prompt_tokens", req.promptTokens,
				"completion_tokens", req.maxTokens, "e2e", time.Since(arrival))
			return
		}
	}
}

// response writes one request's answer in the completions or chat completions format.
type response struct {
	s       *Server
	chat    bool
	req     parsed
	id      uint64
	created int64
}

func (r *response) base(object string) map[string]any {
	prefix := "cmpl-fake-"
	if r.chat {
		prefix = "chatcmpl-fake-"
	}
	return map[string]any{
		"id": fmt.Sprintf("%s%d", prefix, r.id), "object": object, "created": r.created,
		"model": r.s.cfg.Model, "system_fingerprint": Fingerprint,
	}
}

func (r *response) usage() map[string]int {
	return map[string]int{
		"prompt_tokens": r.req.promptTokens, "completion_tokens": r.req.maxTokens,
		"total_tokens": r.req.promptTokens + r.req.maxTokens,
	}
}

func (r *response) writeWhole(w http.ResponseWriter) {
	text := strings.Repeat(tokenText, r.req.maxTokens)
	var body map[string]any
	if r.chat {
		body = r.base("chat.completion")
		body["choices"] = []map[string]any{{
			"index": 0, "message": map[string]any{"role": "assistant", "content": text},
			"logprobs": nil, "finish_reason": "length",
		}}
	} else {
		body = r.base("text_completion")
		body["choices"] = []map[string]any{{"index": 0, "text": text, "logprobs": nil, "finish_reason": "length"}}
	}
	body["usage"] = r.usage()
	writeJSON(w, http.StatusOK, body)
}

func (r *response) startStream(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("Connection", "keep-alive")
	w.WriteHeader(http.StatusOK)
	_ = http.NewResponseController(w).Flush()
}

// writeChunk writes the SSE event of the n-th token (from 1).
func (r *response) writeChunk(w http.ResponseWriter, n int) {
	var finish any
	if n == r.req.maxTokens {
		finish = "length"
	}
	var body map[string]any
	if r.chat {
		delta := map[string]any{"content": tokenText}
		if n == 1 {
			delta["role"] = "assistant"
		}
		body = r.base("chat.completion.chunk")
		body["choices"] = []map[string]any{{"index": 0, "delta": delta, "logprobs": nil, "finish_reason": finish}}
	} else {
		body = r.base("text_completion")
		body["choices"] = []map[string]any{{"index": 0, "text": tokenText, "logprobs": nil, "finish_reason": finish}}
	}
	writeEvent(w, body)
}

func (r *response) endStream(w http.ResponseWriter) {
	if r.req.includeUsage {
		object := "text_completion"
		if r.chat {
			object = "chat.completion.chunk"
		}
		body := r.base(object)
		body["choices"] = []any{}
		body["usage"] = r.usage()
		writeEvent(w, body)
	}
	_, _ = fmt.Fprint(w, "data: [DONE]\n\n")
}

func writeEvent(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // maps of plain values always marshal
	}
	_, _ = fmt.Fprintf(w, "data: %s\n\n", b)
}
