package router

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"
)

// apiError is an error answer in OpenAI's shape:
// {"error": {"message", "type", "param", "code"}}.
type apiError struct {
	status     int
	typ        string
	code       string
	param      string
	msg        string
	retryAfter time.Duration // > 0: send a Retry-After header
}

func (e *apiError) Error() string { return e.msg }

func invalidRequest(status int, code, param, format string, args ...any) *apiError {
	return &apiError{status: status, typ: "invalid_request_error", code: code, param: param, msg: fmt.Sprintf(format, args...)}
}

func serverError(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, typ: "server_error", code: code, msg: fmt.Sprintf(format, args...)}
}

// writeError answers with e. Fields left empty are null, as OpenAI sends them.
func writeError(w http.ResponseWriter, e *apiError) {
	nullable := func(s string) any {
		if s == "" {
			return nil
		}
		return s
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	if e.retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int(math.Ceil(e.retryAfter.Seconds()))))
	}
	w.WriteHeader(e.status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{
		"message": e.msg,
		"type":    e.typ,
		"param":   nullable(e.param),
		"code":    nullable(e.code),
	}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
