// Package loadgen is `llmscaler load`: an open-loop load generator for OpenAI-compatible LLM
// servers, for trying the autoscaler and testing it.
//
// # Arrivals
//
// Arrivals never wait for responses (open loop): a slow server builds a queue, as it would
// with real users, instead of slowing the generator down. They come from one of:
//
//   - a constant rate (Config.RPS): a Poisson process, exponential gaps;
//   - a schedule (Config.Schedule): a Poisson process whose rate follows steps and linear
//     ramps, drawn exactly by time rescaling (see ScheduleSyntax and ParseSchedule):
//     "0s:2,60s:10,120s:10->2" is 2 requests/s for a minute, 10/s for a minute, then a ramp
//     from 10/s down to 2/s that ends with the run (--duration);
//   - a trace (Config.TraceFile, package trace): a request trace is replayed with its own
//     arrival times and lengths; a rate series gives Poisson arrivals at each window's rate.
//
// Config.RateScale K compresses a trace's time: every gap between arrivals is divided by K,
// so the rate is K times the trace's, bursts and all, and an hour of trace takes 60/K
// minutes. Config.TraceStart skips the trace up to an offset (in trace time). Config.Seed
// makes the Poisson draws repeatable.
//
// Config.MaxInFlight bounds the requests in flight; an arrival above it is dropped and
// counted, never queued, so the generator cannot run out of memory against a stalled server.
//
// # Targets
//
// One server (Config.URL), or the READY instances of a deployment, listed through the
// controller's admin API (AdminService/ListInstances) every second. Each request goes to the
// instance with the fewest requests outstanding from this generator, ties taken in turn. A
// request that arrives while no instance is READY counts as an error of kind "no ready
// instance"; it does not wait.
//
// Or a router (Config.Router, package router): every request goes to that one URL with the
// deployment's name (or Config.Model) as its model, and the router picks the instance, waits
// for one to start or answers 503 with Retry-After. Such answers count as "http 503" (or
// "http 429", "http 502", ...), like any other status; the generator does not retry them,
// so what the router turned away shows in the summary. The controller is not needed.
//
// # Requests and figures
//
// Each request is POST /v1/completions with stream true, max_tokens the output length,
// ignore_eos (so vLLM, too, generates exactly that many tokens), and the prompt length in the
// fake server's extension "llmscaler": {"prompt_tokens": N}; a real server sees a short prompt.
// TTFT is the time from sending to the first SSE event that carries a token; end-to-end is
// the time to [DONE]. Failures are counted by kind: "http NNN", "connect", "timeout",
// "transport", "stream", "cancelled" and "no ready instance". Percentiles are exact, from
// all the recorded values.
package loadgen
