package policy

import (
	"math"
	"time"

	"github.com/llmscaler/llmscaler/internal/window"
)

// The capacity model bounds how far the slo policy may probe its capacity estimate upwards
// when no prior was configured (see probeCapacity). It rests on how a continuous-batching
// server (vLLM, SGLang, TGI, llama.cpp with parallel slots) spends its time. While it holds
// any sequence it runs iterations back to back; each costs a fixed part (reading the
// weights, launching kernels), a part per running sequence (its KV reads) and a part per
// prompt token prefilled, and each advances every decoding sequence by one token. So one
// second of a busy replica is
//
//	1 = alpha * steps/s + beta * output tokens/s + gamma * prompt tokens/s,
//	steps/s = output tokens/s / B,  B = running sequences per replica,
//
// which is linear in the three unknown costs and holds whatever the load, so a least-squares
// fit over the panic windows learns them from the load the replicas happen to carry. For
// requests of L output and P prompt tokens, delta = beta*L + gamma*P is a request's work
// apart from the fixed part of its steps, and a replica serving x requests/s holds
//
//	B(x) = alpha*L*x / (1 - delta*x)
//
// sequences: it can serve at most m = 1/delta requests/s, however large its batch, and its
// batch is bounded by the KV cache, B_kv = B / (KV cache use), since each sequence holds its
// tokens there; the batch reaches a bound B_lim at x = B_lim / (alpha*L + delta*B_lim).
const (
	// modelTau is the time constant of the regression's exponential weights: long enough
	// to hold the spread of batch sizes a probe walks through, short enough to follow a
	// change of request mix within the hour.
	modelTau = 30 * time.Minute
	// modelMinWeight is how much sample time the fit needs before it bounds anything.
	modelMinWeight = 5 * time.Minute
	// modelMinBatch is the least batch per replica a sample needs: below a few sequences a
	// replica is idle part of the time, and the busy second above is less than a second.
	modelMinBatch = 3
	// modelRho is the share of the model's throughput bound m the probe may reach: near m
	// the batch, and with it the queue, grows without bound on a small rise of the load.
	modelRho = 0.9
	// modelKVShare is the share of the KV cache's batch bound the probe may plan for.
	modelKVShare = 0.8
	// modelRidge is the fit's ridge, as a share of each diagonal of its normal equations.
	modelRidge = 1e-3
)

// batchModel is an exponentially weighted least-squares fit of the busy second over the
// panic windows that had no queue.
type batchModel struct {
	w    float64       // weight: sample seconds
	zz   [3][3]float64 // weighted sums of z_i z_j
	z    [3]float64    // weighted sums of z_i (y = 1)
	last time.Time
}

// observe adds one panic window's per-replica rates, weighted by dt, decaying what came
// before by modelTau.
func (m *batchModel) observe(now time.Time, dt time.Duration, p *window.Values) {
	if p.Ready <= 0 || p.Starting > 0 || p.Stale > 0 || p.GenerationTPS <= 0 ||
		p.Running < modelMinBatch*float64(p.Ready) || p.Waiting >= backlogNoise*float64(p.Ready) ||
		p.Covered < p.Span*9/10 {
		return
	}
	if !m.last.IsZero() && now.After(m.last) {
		k := math.Exp(-now.Sub(m.last).Seconds() / modelTau.Seconds())
		m.w *= k
		for i := range 3 {
			m.z[i] *= k
			for j := range 3 {
				m.zz[i][j] *= k
			}
		}
	}
	m.last = now
	n := float64(p.Ready)
	gen := p.GenerationTPS / n
	z := [3]float64{gen / (p.Running / n), gen, max(p.PromptTPS, 0) / n}
	wt := dt.Seconds()
	m.w += wt
	for i := range 3 {
		m.z[i] += wt * z[i]
		for j := range 3 {
			m.zz[i][j] += wt * z[i] * z[j]
		}
	}
}

// costs are the fitted alpha, beta and gamma (seconds per step, per output token, per
// prompt token), and whether the fit has enough weight and a step cost of at least zero.
func (m *batchModel) costs() (c [3]float64, ok bool) {
	if m.w < modelMinWeight.Seconds() {
		return c, false
	}
	// Normal equations with a ridge of modelRidge of each diagonal. Output and prompt
	// tokens rise together with the load: while the request mix holds still only their
	// costs summed over a request are known (which is all the bounds need for that mix),
	// and the ridge settles the split between them on the smallest costs, instead of on
	// the noise.
	a := m.zz
	b := m.z
	for i := range 3 {
		a[i][i] *= 1 + modelRidge
	}
	for col := range 3 {
		piv := col
		for r := col + 1; r < 3; r++ {
			if math.Abs(a[r][col]) > math.Abs(a[piv][col]) {
				piv = r
			}
		}
		if a[piv][col] == 0 {
			return c, false
		}
		a[col], a[piv] = a[piv], a[col]
		b[col], b[piv] = b[piv], b[col]
		for r := col + 1; r < 3; r++ {
			f := a[r][col] / a[col][col]
			for k := col; k < 3; k++ {
				a[r][k] -= f * a[col][k]
			}
			b[r] -= f * b[col]
		}
	}
	for i := 2; i >= 0; i-- {
		v := b[i]
		for k := i + 1; k < 3; k++ {
			v -= a[i][k] * c[k]
		}
		c[i] = v / a[i][i]
	}
	return c, c[0] >= 0
}

// ceiling is the most requests/s per replica the model lets a probe plan for, from the
// fit and the stable window's request mix: modelRho of the throughput bound m, and the rate
// at which the batch reaches modelKVShare of the KV cache's bound. ok is false when the
// model cannot say (no fit yet, no token counts, an idle window).
func (m *batchModel) ceiling(st *window.Values) (float64, bool) {
	c, ok := m.costs()
	if !ok || st.Ready <= 0 || st.FinishedPerSec <= 0 || st.GenerationTPS <= 0 || st.Running <= 0 {
		return 0, false
	}
	out := st.GenerationTPS / st.FinishedPerSec // tokens per request
	prompt := max(st.PromptTPS, 0) / st.FinishedPerSec
	delta := c[1]*out + c[2]*prompt
	if delta <= 0 {
		return 0, false
	}
	limit := modelRho / delta
	if st.KVCache > 0 {
		kv := modelKVShare * st.Running / float64(st.Ready) / st.KVCache
		limit = min(limit, kv/(c[0]*out+delta*kv))
	}
	return limit, true
}
