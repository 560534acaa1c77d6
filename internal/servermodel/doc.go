// Package servermodel is the timing model of one LLM server replica that does continuous
// batching, in the manner of vLLM. It is pure: no I/O, no goroutines and no wall clock. The
// caller passes the time in, so the fake server drives it on wall-clock time and the simulator
// on a simulated clock over hour-long traces with many replicas.
//
// An Engine holds a FCFS waiting queue and a running batch. Each call to Step runs one
// scheduling iteration:
//
//   - Prefill first. Sequences admitted earlier whose prompts are still only partly prefilled
//     go first, then waiting requests are admitted in arrival order while the running batch is
//     below Params.MaxConcurrency, prefill token budget (Params.MaxBatchTokens) is left, and
//     the KV cache can hold the request's prompt and its whole output. A prompt longer than
//     the budget left is prefilled in chunks over several iterations, as vLLM's chunked prefill
//     does. If any tokens are prefilled, the iteration takes Params.PrefillTime(tokens), and a
//     request whose prompt is now fully prefilled gets its first token at the end of it.
//   - Otherwise, a decode iteration: every running sequence gets one token, and the iteration
//     takes Params.DecodeTime(batch size), so per-token latency grows with the batch.
//
// Running sequences do not decode during a prefill iteration. This is the prefill-first
// schedule of vLLM's V0 engine; V1 mixes decodes into prefill iterations, which this model
// leaves for later.
//
// A request reserves KV for prompt plus output tokens when it is admitted, so it never has to
// be preempted; KVUsage reports the reserved fraction, which is why it reads near 1 when the
// cache, not the concurrency limit, is what keeps requests waiting.
//
// A decode iteration emits one EventToken per running sequence, which the fake server streams
// and the simulator has no use for; Engine.SetTokenEvents turns them off and changes nothing
// else. Step costs O(events + admitted requests + finished requests x log batch), so with
// token events off a decode iteration costs little more than the requests that finish in it,
// whatever the batch. It does not allocate once the engine's slices have grown to the working
// size.
package servermodel
