package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// Error kinds, the keys of Summary.Errors besides "http NNN" (a status other than 200, such
// as a router's 503 when no instance was free in time).
const (
	// KindNoTarget: no instance of the deployment was READY when the request arrived.
	KindNoTarget = "no ready instance"
	// KindConnect: the connection to the server could not be made.
	KindConnect = "connect"
	// KindTimeout: the request ran past the request timeout.
	KindTimeout = "timeout"
	// KindTransport: the request failed on the wire before a response came.
	KindTransport = "transport"
	// KindStream: the response stream broke, ended without [DONE], carried an error or no token.
	KindStream = "stream"
	// KindCancelled: the run ended (interrupted, or the drain timeout passed) while the request
	// was in flight.
	KindCancelled = "cancelled"
)

// httpKind is the error kind of a response status other than 200.
func httpKind(status int) string { return fmt.Sprintf("http %d", status) }

// prompt is the text of every request. The exact prompt length travels in the fake server's
// llmscaler.prompt_tokens extension; a real server sees this short prompt instead.
const prompt = "llmscaler load generator request."

// completionRequest is the body of POST /v1/completions.
type completionRequest struct {
	Model         string `json:"model,omitempty"`
	Prompt        string `json:"prompt"`
	MaxTokens     int    `json:"max_tokens"`
	Stream        bool   `json:"stream"`
	StreamOptions struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	// IgnoreEOS makes vLLM generate exactly max_tokens, as the fake server always does.
	IgnoreEOS bool `json:"ignore_eos"`
	// Llmscaler is the fake server's extension for an exact prompt length.
	Llmscaler struct {
		PromptTokens int `json:"prompt_tokens"`
	} `json:"llmscaler"`
}

// streamChunk is the part of an SSE data event the generator reads.
type streamChunk struct {
	Choices []struct {
		Text  string `json:"text"`
		Delta struct {
			Content string `json:"content"`
		} `json:"delta"`
	} `json:"choices"`
	Usage *struct {
		CompletionTokens int `json:"completion_tokens"`
	} `json:"usage"`
	Error *struct {
		Message string `json:"message"`
	} `json:"error"`
}

// outcome is what became of one request.
type outcome struct {
	kind   string // "" when it succeeded
	msg    string // what went wrong, for the log
	ttft   time.Duration
	e2e    time.Duration
	tokens int
}

// send posts one streaming completion to target and reads the stream to its end. runCtx ends
// when the run stops waiting for requests; timeout bounds this one.
func send(runCtx context.Context, client *http.Client, target, model string, a Arrival, timeout time.Duration) outcome {
	body := completionRequest{Model: model, Prompt: prompt, MaxTokens: a.OutputTokens, Stream: true, IgnoreEOS: true}
	body.StreamOptions.IncludeUsage = true
	body.Llmscaler.PromptTokens = a.PromptTokens
	b, err := json.Marshal(body)
	if err != nil {
		return outcome{kind: KindTransport, msg: err.Error()}
	}
	ctx, cancel := context.WithTimeout(runCtx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target+"/v1/completions", bytes.NewReader(b))
	if err != nil {
		return outcome{kind: KindTransport, msg: err.Error()}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")

	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return outcome{kind: classify(err, runCtx, ctx, KindTransport), msg: err.Error()}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// An answer, not a failure to connect: a router's 503 (no instance free in time) or
		// 429 counts under its status. Retry-After goes to the log; the request is not retried.
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		msg := errorMessage(body)
		if ra := resp.Header.Get("Retry-After"); ra != "" {
			msg += " (retry after " + ra + ")"
		}
		return outcome{kind: httpKind(resp.StatusCode), msg: msg}
	}

	out := outcome{}
	usage := -1
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		data, ok := bytes.CutPrefix(sc.Bytes(), []byte("data:"))
		if !ok {
			continue // blank separators, comments, event: and id: lines
		}
		data = bytes.TrimSpace(data)
		if string(data) == "[DONE]" {
			out.e2e = time.Since(start)
			if usage >= 0 {
				out.tokens = usage
			}
			if out.tokens == 0 {
				return outcome{kind: KindStream, msg: "stream ended without a token"}
			}
			return out
		}
		var ch streamChunk
		if err := json.Unmarshal(data, &ch); err != nil {
			return outcome{kind: KindStream, msg: fmt.Sprintf("bad event %.80q: %v", data, err)}
		}
		if ch.Error != nil {
			return outcome{kind: KindStream, msg: "error event: " + ch.Error.Message}
		}
		for _, c := range ch.Choices {
			if c.Text == "" && c.Delta.Content == "" {
				continue
			}
			if out.tokens == 0 {
				out.ttft = time.Since(start)
			}
			out.tokens++
		}
		if ch.Usage != nil {
			usage = ch.Usage.CompletionTokens
		}
	}
	if err := sc.Err(); err != nil {
		return outcome{kind: classify(err, runCtx, ctx, KindStream), msg: err.Error()}
	}
	return outcome{kind: KindStream, msg: "stream ended without [DONE]"}
}

// classify names the kind of a failed request: the run's end, the request's timeout, a failed
// connection, or else fallback.
func classify(err error, runCtx, reqCtx context.Context, fallback string) string {
	var op *net.OpError
	switch {
	case runCtx.Err() != nil:
		return KindCancelled
	case errors.Is(reqCtx.Err(), context.DeadlineExceeded):
		return KindTimeout
	case errors.As(err, &op) && op.Op == "dial":
		return KindConnect
	}
	return fallback
}

// errorMessage is the message of an OpenAI-style error body, or the body itself, cut short.
func errorMessage(body []byte) string {
	var e struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error.Message != "" {
		return e.Error.Message
	}
	body = bytes.TrimSpace(body)
	if len(body) > 200 {
		return string(body[:200]) + "..."
	}
	return string(body)
}
