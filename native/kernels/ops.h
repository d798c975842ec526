// CPU reference kernels: one small function per op, named after the math.
// All activations are f32 and row-major; `T` is the number of token rows.
// Weights (Matrix) stay in their stored dtype (F32/F16/BF16), widened to f32 in
// registers; every reduction accumulates in f32.
//
// Backward passes (for LoRA training) go next to each forward in the same file.
// Every `*_backward` ACCUMULATES into its gradient outputs (+=, as in llm.c), so
// callers zero them first and residual branches simply add up; a nullptr
// gradient output is skipped (frozen weights). rope_backward alone works in place.
#pragma once
#include <cstdint>

#include "core/tensor.h"
#include "core/thread_pool.h"

namespace dg {

// ---- linear (matmul.cpp + matmul_avx2.cpp + matmul_avx512.cpp) ----------------
// y[T][out] = x[T][in] . W[out][in]^T (+ bias[out] when bias != nullptr).
// `accumulate`: y += ... instead of y = ... (LoRA adds onto the base output).
// Dispatches on active_isa(); splits output rows across the pool. Memory-bound at
// T = 1 (each weight byte read once), blocked for cache reuse when T is large.
void linear_forward(float* y, const float* x, const Matrix& w, const float* bias, int64_t T,
                    ThreadPool& pool, bool accumulate = false);

// Several linear layers over the same input x[T][in] in one pass of the pool
// (e.g. q/k/v, gate/up): one dispatch instead of one per matrix, so decode pays
// the thread start-up and tail once and the small k/v matrices share threads.
struct LinearOutput {
  float* y;
  Matrix w;
  const float* bias;
  bool accumulate;
};
void linear_forward_many(const LinearOutput* outs, int n_outs, const float* x, int64_t T, ThreadPool& pool);
// Backward of y = x W^T + b:
//   dx[T][in]   += dy . W       (W in its stored dtype, never copied: blocked and vectorized in
//                                matmul_backward_tile.h; column strips split across the pool)
//   dw[out][in] += dy^T . x     (f32; trainable weights only, e.g. LoRA factors; needs x)
//   db[out]     += sum_t dy[t]
void linear_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const Matrix& w, int64_t T,
                     ThreadPool& pool);

// ---- normalization (norm.cpp) -------------------------------------------------
// y = x / sqrt(mean(x^2) + eps) * w, per row of d. y may alias x.
void rmsnorm_forward(float* y, const float* x, const float* w, int64_t T, int64_t d, float eps);
// With r = 1/sqrt(mean(x^2) + eps) recomputed from x (one reduction per row):
//   dx += r (w * dy) - x r^3 sum(dy * w * x) / d;   dw += sum_t dy * x * r (dw may be nullptr).
void rmsnorm_backward(float* dx, float* dw, const float* dy, const float* x, const float* w, int64_t T, int64_t d,
                      float eps);

// ---- rotary embedding (rope.cpp) ----------------------------------------------
// cos/sin tables [T][head_dim/2] for the given positions: angle = position *
// inv_freq[i], computed in double (rope_scaling is already folded into
// inv_freq, see lib/rope.ts).
void rope_tables(float* cos_out, float* sin_out, const double* positions, int64_t T,
                 const float* inv_freq, int64_t half);
// In place, rotate-half form over x[T][n_heads * head_dim]:
// x1' = x1 cos - x2 sin, x2' = x2 cos + x1 sin, with x1 = first half, x2 = second half.
void rope_forward(float* x, const float* cos_t, const float* sin_t, int64_t T, int64_t n_heads,
                  int64_t head_dim);
// In place: dx = R^T dy (the rotation is orthogonal): g1' = g1 cos + g2 sin, g2' = g2 cos - g1 sin.
void rope_backward(float* dx, const float* cos_t, const float* sin_t, int64_t T, int64_t n_heads,
                   int64_t head_dim);

// ---- attention (attention.cpp) ------------------------------------------------
// Causal scaled-dot-product attention with grouped-query heads over a KV cache.
// q: [T][n_heads * hd] for positions pos0 .. pos0+T-1 (already rotated).
// k_cache, v_cache: [n_kv_heads][capacity][hd], filled for positions [0, pos0+T).
// out: [T][n_heads * hd]. Query head h reads kv head h / (n_heads / n_kv_heads).
// Softmax in f32 with max subtraction; scale 1/sqrt(hd).
void attention_forward(float* out, const float* q, const float* k_cache, const float* v_cache,
                       int64_t capacity, int64_t T, int64_t pos0, int64_t n_heads,
                       int64_t n_kv_heads, int64_t hd, ThreadPool& pool);
// Backward of attention_forward for a whole causal sequence (pos0 = 0, capacity = T):
// q, dq, dout: [T][n_heads * hd]; k, v, dk, dv: [n_kv_heads][T][hd]. Probabilities are
// recomputed per row (no [H][T][T] buffer is saved): with p = softmax(s), s_j = scale q.k_j,
//   dv_j += p_j dout;  dS_j = p_j (dout.v_j - sum_i p_i dout.v_i);  dq += scale sum_j dS_j k_j;
//   dk_j += scale dS_j q. Query heads of one kv head are summed into its dk/dv (GQA).
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                        const float* v, int64_t T, int64_t n_heads, int64_t n_kv_heads, int64_t hd, ThreadPool& pool);

// ---- activations (activation.cpp) ---------------------------------------------
// out[i] = silu(gate[i]) * up[i], silu(x) = x / (1 + exp(-x)). out may alias gate.
void swiglu_forward(float* out, const float* gate, const float* up, int64_t n);
// dup += dout silu(g); dgate += dout up s(g) (1 + g (1 - s(g))), s = sigmoid.
void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up, int64_t n);

// ---- elementwise / lookup (elementwise.cpp) -----------------------------------
void add_inplace(float* y, const float* x, int64_t n);  // y += x
// out[t] = table[ids[t]] widened to f32. Ids must already be validated < rows.
void embedding_forward(float* out, const int32_t* ids, int64_t T, const Matrix& table);
// dtable[ids[t]] += dout[t] (f32 [rows][d]); ids already validated.
void embedding_backward(float* dtable, const float* dout, const int32_t* ids, int64_t T, int64_t d);

// ---- losses over logits [T][V] (loss.cpp) -------------------------------------
// Cross-entropy: lse[t] = logsumexp(logits[t]) (written for every row); returns
// sum_t weights[t] (lse[t] - logits[t][targets[t]]) over rows with targets[t] >= 0.
double cross_entropy_forward(float* lse, const float* logits, const int32_t* targets, const float* weights, int64_t T,
                             int64_t V);
// dlogits[t] += weights[t] (softmax(logits[t]) - onehot(targets[t])) for rows with targets[t] >= 0.
void cross_entropy_backward(float* dlogits, const float* logits, const float* lse, const int32_t* targets,
                            const float* weights, int64_t T, int64_t V);
// KL(p_base || p) = sum_i p_base,i (log p_base,i - log p_i) per row, p = softmax(logits);
// returns sum_t weights[t] KL_t and, when dlogits != nullptr, dlogits[t] += weights[t] (p - p_base).
double kl_forward_backward(float* dlogits, const float* base_logits, const float* logits, const float* weights,
                           int64_t T, int64_t V);

// ---- sampling (sampling.cpp) --------------------------------------------------
struct SamplingParams {
  float temperature = 0.f;  // <= 0: greedy (argmax, lowest index on ties)
  int32_t top_k = 0;        // 0: off
  float top_p = 1.f;        // 1: off
};
// Picks one token from logits[vocab] (not modified) with the uniform draw u in [0, 1):
// softmax(logits / temperature), keep the top_k most likely, then the smallest
// prefix (by descending probability) whose mass reaches top_p, renormalize,
// and invert the CDF, taken in token-id order, at u. Deterministic for a given
// (logits, params, u); tie and NaN/inf rules are spelled out in sampling.cpp.
int32_t sample_token(const float* logits, int64_t vocab, const SamplingParams& p, double u);

}  // namespace dg
