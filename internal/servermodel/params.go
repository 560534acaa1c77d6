package servermodel

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Params are the capacity and timing of one replica: one model on one GPU (or a CPU, for the
// tiny profile). The hardware profiles below say where each default comes from.
type Params struct {
	// MaxConcurrency is the most sequences in the running batch at once (vLLM --max-num-seqs).
	MaxConcurrency int
	// MaxBatchTokens is the prefill token budget of one iteration (vLLM
	// --max-num-batched-tokens). Longer prompts are prefilled in chunks.
	MaxBatchTokens int
	// KVCacheTokens is the KV cache capacity in tokens. A request needs prompt+output tokens
	// of it to be admitted; requests wait while it is full.
	KVCacheTokens int

	// PrefillBase is the fixed cost of a prefill iteration (scheduling, kernel launches,
	// the sampling step).
	PrefillBase time.Duration
	// PrefillPerToken is the cost of each prompt token prefilled in an iteration; prefill is
	// compute-bound, so it is linear in the tokens.
	PrefillPerToken time.Duration
	// DecodeBase is the cost of a decode iteration at batch size zero: mostly reading the
	// weights once from HBM, which every step does whatever the batch.
	DecodeBase time.Duration
	// DecodePerSeq is the extra cost of each sequence in a decode iteration (its KV reads
	// and its share of the matmuls).
	DecodePerSeq time.Duration

	// ColdStart is the time from process start to healthy: loading the weights, compiling,
	// capturing CUDA graphs, profiling memory for the KV cache.
	ColdStart time.Duration
}

// PrefillTime is how long an iteration that prefills tokens prompt tokens takes.
func (p Params) PrefillTime(tokens int) time.Duration {
	return p.PrefillBase + time.Duration(tokens)*p.PrefillPerToken
}

// DecodeTime is how long a decode iteration over a batch of sequences takes.
func (p Params) DecodeTime(batch int) time.Duration {
	return p.DecodeBase + time.Duration(batch)*p.DecodePerSeq
}

// Validate reports the first field that makes p unusable.
func (p Params) Validate() error {
	switch {
	case p.MaxConcurrency < 1:
		return fmt.Errorf("max concurrency %d: want at least 1", p.MaxConcurrency)
	case p.MaxBatchTokens < 1:
		return fmt.Errorf("max batch tokens %d: want at least 1", p.MaxBatchTokens)
	case p.KVCacheTokens < 2:
		return fmt.Errorf("kv cache tokens %d: want at least 2", p.KVCacheTokens)
	case p.PrefillBase < 0 || p.PrefillPerToken < 0 || p.DecodeBase < 0 || p.DecodePerSeq < 0:
		return errors.New("iteration times must not be negative")
	case p.PrefillTime(1) <= 0:
		return errors.New("prefill base and per-token time are both zero: an iteration must take time")
	case p.DecodeTime(1) <= 0:
		return errors.New("decode base and per-sequence time are both zero: an iteration must take time")
	case p.ColdStart < 0:
		return fmt.Errorf("cold start %s: must not be negative", p.ColdStart)
	}
	return nil
}

// Llama-3-8B holds 128 KiB of KV per token in bf16: 32 layers x 8 KV heads x 128 head dim x
// 2 (K and V) x 2 bytes (config.json of meta-llama/Meta-Llama-3-8B). On an 80 GB GPU at vLLM's
// default --gpu-memory-utilization 0.9 that leaves about 71 GiB, less ~15 GiB of weights and
// ~3-4 GiB of activations and CUDA graphs, so ~52 GiB or ~420k tokens; rounded down.
const llama3KVTokens80GB = 400_000

// Cold start of vLLM serving Llama-3.1-8B-Instruct with the weights and the torch.compile
// cache already on local disk: 82 s (weights 18 s, Dynamo 10 s, graph compile 13 s, CUDA
// graph capture 7 s, engine init and imports 34 s) on an L40S; 294 s when the weights are
// downloaded too. Source: Tensorfuse, "Reducing GPU Cold Start Time when using vLLM",
// https://tensorfuse.io/docs/blogs/reducing_gpu_cold_start (2025-09-01). Startup is mostly
// CPU-bound ("Breaking the Ice: Analyzing Cold Start Latency in vLLM",
// https://arxiv.org/html/2606.07362), so the same figure stands for A100 and H100 hosts.
const llama3ColdStart = 80 * time.Second

// profiles are the named hardware profiles. The GPU figures are for
// meta-llama/Meta-Llama-3-8B-Instruct in bf16 on one GPU, measured by Lambda with vLLM's
// benchmark_serving.py: https://github.com/LambdaLabsML/vllm-benchmark (benchmark_v0.md and
// results/prompt_10/1x{A100,H100}-80GB-SXM/Meta-Llama-3-8B-Instruct_tp1_len2048.json, vLLM
// v0.6.0 with --num-scheduler-steps 10, so a streamed inter-token gap there spans 10 steps).
var profiles = map[string]Params{
	"a100-80gb-llama3-8b": {
		// vLLM's defaults for the OpenAI server on an A100, which it keeps small on purpose
		// (EngineArgs.get_batch_defaults in vllm/engine/arg_utils.py; vLLM PR #17885).
		MaxConcurrency: 256,
		MaxBatchTokens: 2048,
		KVCacheTokens:  llama3KVTokens80GB,
		// Lambda, 1xA100-80GB-SXM: ten prompts with 1,369 tokens in all, sent at once,
		// had their first tokens after 127 ms; 15 ms + 1,369 x 82 us = 127 ms (~12k
		// prompt tokens/s, about 60% of the A100's 312 bf16 TFLOPS at 16 GFLOP a token).
		PrefillBase:     15 * time.Millisecond,
		PrefillPerToken: 82 * time.Microsecond,
		// Same run: 115 ms per 10 decode steps with about ten sequences running, 11.5 ms a
		// step; 10 ms + 10 x 150 us = 11.5 ms. At 256 sequences this gives 48 ms, between
		// Lambda's 42.9 ms (v0.5.4, 320 prompts, Llama-3.1-8B-FP8 on 1xA100) and twice the
		// H100's 25.6 ms (Lambda: the H100 is about 2x faster than the A100). A single
		// stream on an A100-40GB runs at ~75 tokens/s, 13.3 ms a step (J. Musgrave, "vLLM
		// throughput-latency sweep on NVIDIA A100",
		// https://johnmusgrave.com/p/vllm-throughput-latency-sweep-on); the 80GB part has
		// 30% more memory bandwidth.
		DecodeBase:   10 * time.Millisecond,
		DecodePerSeq: 150 * time.Microsecond,
		ColdStart:    llama3ColdStart,
	},
	"h100-80gb-llama3-8b": {
		// vLLM's defaults for the OpenAI server on GPUs of 70 GiB or more other than the
		// A100 (EngineArgs.get_batch_defaults in vllm/engine/arg_utils.py).
		MaxConcurrency: 1024,
		MaxBatchTokens: 8192,
		KVCacheTokens:  llama3KVTokens80GB,
		// Lambda, 1xH100-80GB-SXM: the same 1,369 prompt tokens had their first tokens after
		// 62 ms; 12 ms + 1,369 x 36 us = 61 ms (~28k prompt tokens/s).
		PrefillBase:     12 * time.Millisecond,
		PrefillPerToken: 36 * time.Microsecond,
		// Same run: 72 ms per 10 steps at about ten sequences, 7.2 ms a step; and Lambda's
		// Llama 3.1 8B run at --max-num-seqs 256 (v0.6.0, 10 scheduler steps) had a median
		// time per output token of 25.57 ms. 6.5 ms + n x 75 us gives 7.3 ms at 10 and
		// 25.7 ms at 256; beyond 256 it is an extrapolation.
		DecodeBase:   6500 * time.Microsecond,
		DecodePerSeq: 75 * time.Microsecond,
		ColdStart:    llama3ColdStart,
	},
	// cpu-tiny is no real hardware: it is small and fast so that tests and demos on machines
	// without GPUs see queues build and drain within seconds. A 128-token answer takes about
	// 0.65 s alone and 1.5 s in a full batch of 8.
	"cpu-tiny": {
		MaxConcurrency:  8,
		MaxBatchTokens:  512,
		KVCacheTokens:   8192,
		PrefillBase:     2 * time.Millisecond,
		PrefillPerToken: 10 * time.Microsecond,
		DecodeBase:      4 * time.Millisecond,
		DecodePerSeq:    1 * time.Millisecond,
		ColdStart:       2 * time.Second,
	},
}

// Profiles returns a copy of the named hardware profiles.
func Profiles() map[string]Params { return maps.Clone(profiles) }

// ProfileNames returns the names of the hardware profiles, sorted.
func ProfileNames() []string { return slices.Sorted(maps.Keys(profiles)) }

// Profile returns the named hardware profile, or an error that lists the names there are.
func Profile(name string) (Params, error) {
	p, ok := profiles[name]
	if !ok {
		return Params{}, fmt.Errorf("unknown hardware profile %q: want one of %s", name, strings.Join(ProfileNames(), ", "))
	}
	return p, nil
}
