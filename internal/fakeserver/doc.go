// Package fakeserver is a stand-in LLM server for demos and tests on machines without GPUs:
// "llmscaler fakeserver (simulated)". It speaks enough of the OpenAI API and of vLLM's
// Prometheus metrics for a load generator and the autoscaler to treat it as a vLLM replica,
// but it runs no model: one goroutine drives a servermodel.Engine on wall-clock time, and
// tokens are released when the model says they would be.
//
// Endpoints:
//
//	GET  /health               503 until the cold start has passed since Run began, then 200
//	                           (late while busy, with Config.HealthStallBusy; see below)
//	GET  /v1/models            the one model; owned_by says "llmscaler fakeserver (simulated)"
//	POST /v1/completions       OpenAI completions, streaming (SSE) or not
//	POST /v1/chat/completions  OpenAI chat completions, streaming (SSE) or not
//	GET  /metrics              vLLM's metric names (vllm:...), label model_name
//
// Before the server is healthy, /v1/... answer 503. Errors have OpenAI's shape:
// {"error": {"message", "type", "param", "code"}}. Request bodies are capped (1 MiB by
// default; 413 above it).
//
// Lengths. The server always generates exactly max_tokens tokens (max_completion_tokens
// wins when both are set; default 128) of filler text ("token token ..."), with
// finish_reason "length", like vLLM with ignore_eos. The prompt length is estimated from the
// prompt or the messages' text as the larger of its word count and a quarter of its
// characters, or is the length of a prompt given as token ids. A load generator that wants
// an exact prompt length sets the extension field
//
//	"llmscaler": {"prompt_tokens": 1024}
//
// which overrides the estimate. Every response carries "system_fingerprint":
// "llmscaler-fakeserver" so that no one mistakes it for a real model.
//
// Busy health. A real llama.cpp llama-server stops answering /health within a liveness
// probe's deadline while it works through a long queue, though it keeps generating and its
// token counters keep growing. Config.HealthStallBusy (llmscaler fakeserver
// --health-stall-busy DURATION) models that: while any generation request is in flight,
// queued or running, /health answers only after that long, or never if the client gives up
// first. Generation and /metrics are not slowed, so the counters of /metrics go on advancing.
// It is off by default: vLLM's /health answers while it is busy.
package fakeserver
