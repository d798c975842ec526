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
// `bf16_activations`: for BF16 weights x is rounded to BF16 first (round to
// nearest even), as a BF16 model computes in PyTorch:
//   y[t][r] = sum_k bf16(x[t][k]) * W[r][k]  (f32 accumulation).
// With AMX, a width that is a multiple of 32 and T >= 4 that runs on
// tdpbf16ps tiles (matmul_amx.cpp), so each row's result is independent of T
// (>= 4) and of the thread split; otherwise (one token streams faster through
// AVX-512) the f32 kernels multiply the rounded values, which differs only in
// f32 summation order. Other dtypes ignore the flag.
void linear_forward(float* y, const float* x, const Matrix& w, const float* bias, int64_t T,
                    ThreadPool& pool, bool accumulate = false, bool bf16_activations = false);

// Several linear layers over the same input x[T][in] in one pass of the pool
// (e.g. q/k/v, gate/up): one dispatch instead of one per matrix, so decode pays
// the thread start-up and tail once and the small k/v matrices share threads.
struct LinearOutput {
  float* y;
  Matrix w;
  const float* bias;
  bool accumulate;
};
void linear_forward_many(const LinearOutput* outs, int n_outs, const float* x, int64_t T, ThreadPool& pool,
                         bool bf16_activations = false);
// Backward of y = x . W^T + b, every gradient ACCUMULATED (+=), llm.c style, so
// callers sum contributions (base + LoRA, several uses of one input); each
// output pointer may be nullptr to skip it:
//   dx[T][in]   += dy[T][out] . W[out][in]      (W in any stored dtype)
//   dw[out][in] += dy[T][out]^T . x[T][in]      (f32)
//   db[out]     += sum_t dy[t]
// dx: W read in its stored dtype, never transposed or copied whole: column strips of
// dx split across the pool, each widening W block by block into a small f32 buffer
// that register-blocked tiles of tokens stream (matmul_backward_tile.h; at T <= 4
// each weight byte is still read once). dw: the forward GEMM over transposed dy, x.
void linear_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const Matrix& w, int64_t T,
                     ThreadPool& pool);

// Calls of 16+ tokens (prefill, batched decode) on block-quantized weights, and
// calls of any T on BF16 weights with bf16_activations (see linear_forward),
// use AMX-BF16 tiles where the CPU has them and the active ISA is avx512,
// unless DEEPGUARD_AMX=0 or set_amx_enabled(false):
//   y[t][r] = sum_k bf16(x[t][k]) * bf16(W[r][k])   (f32 accumulation, K in steps of 32)
// i.e. the activations are rounded to BF16 as in a BF16 PyTorch model (BF16
// weights as stored; quantized ones dequantized exactly to BF16 except for
// rounding below their own quantization step). Fewer tokens, F32/F16 weights
// or a BF16 width not a multiple of 32 keep the f32-activation kernels.
// amx_active() says whether AMX is in use now.
void set_amx_enabled(bool enabled);
bool amx_active();

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
// kv_dtype: the cache's element type, F32 or BF16. A BF16 cache holds
// bf16(k), bf16(v) (round to nearest even of the f32 projections, k after RoPE;
// KvCache::write); each element is widened exactly to f32 as it is loaded
// (bits << 16), so the kernel computes the f32 math above on those values:
// scores, softmax, p.V and all accumulation stay f32. It halves the bytes a
// decode step reads per cached position (2 * n_kv_heads * hd * 2 per layer).
void attention_forward(float* out, const float* q, const void* k_cache, const void* v_cache,
                       int64_t capacity, int64_t T, int64_t pos0, int64_t n_heads,
                       int64_t n_kv_heads, int64_t hd, ThreadPool& pool, DType kv_dtype = DType::F32);
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
// Both at once for rows with targets[t] >= 0 and weights[t] != 0 (one exp per logit):
// dlogits[t] = weights[t] (softmax - onehot) (OVERWRITTEN, not accumulated: other rows untouched);
// returns the same weighted sum as cross_entropy_forward.
double cross_entropy_forward_backward(float* dlogits, const float* logits, const int32_t* targets, const float* weights,
                                      int64_t T, int64_t V);
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
// (logits, params, u); tie and NaN/inf rules are spelled out in sampling.cpp
// (NaN, +inf or all -inf logits throw ERR_NON_FINITE).
int32_t sample_token(const float* logits, int64_t vocab, const SamplingParams& p, double u);

// ---- security-module ops (layernorm.cpp, pointwise.cpp, layer_aggregate.cpp) ---
// Forward and backward side by side; every backward ACCUMULATES (+=) into its
// gradient outputs (dx, dw, ...), so callers zero them first. Single-pass over
// rows; row loops are split across the pool where a row is large enough.

// LayerNorm over rows of d: mean = sum x / d, var = sum (x - mean)^2 / d (biased),
// rstd = 1 / sqrt(var + eps), y = (x - mean) * rstd * w + b. Saves mean[T], rstd[T].
void layernorm_forward(float* y, float* mean, float* rstd, const float* x, const float* w, const float* b,
                       int64_t T, int64_t d, float eps);
// With n = (x - mean) * rstd, g = dy * w:
//   dx += rstd * (g - mean_i(g) - n * mean_i(g * n)),  dw += sum_t dy * n,  db += sum_t dy.
void layernorm_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* mean,
                        const float* rstd, const float* w, int64_t T, int64_t d);

// y = max(x, 0) (y may alias x); backward from the output: dx += dy * [y > 0].
void relu_forward(float* y, const float* x, int64_t n);
void relu_backward(float* dx, const float* dy, const float* y, int64_t n);

// y = 1 / (1 + exp(-x)); backward from the output: dx += dy * y * (1 - y).
void sigmoid_forward(float* y, const float* x, int64_t n);
void sigmoid_backward(float* dx, const float* dy, const float* y, int64_t n);

// Inverted dropout with a counter-based generator: element i (global index
// offset + i) is kept iff splitmix64(seed, stream, offset + i) / 2^64 >= p, and
// then scaled by 1 / (1 - p); mask[i] = kept. Deterministic for (seed, stream,
// index) whatever the batch split or thread count. y may alias x.
void dropout_forward(float* y, uint8_t* mask, const float* x, int64_t n, float p, uint64_t seed, uint64_t stream,
                     uint64_t offset);
// dx += dy * mask / (1 - p).
void dropout_backward(float* dx, const float* dy, const uint8_t* mask, int64_t n, float p);

// Multi-layer aggregation of m hidden states per token. h is layer-major
// [m][N][d] (N tokens of any number of sequences); out is [N][d].
//
// attention (DESIGN.md "Aggregator"): per token
//   mu = mean_l h_l;  q = Wq mu + bq;  k_l = Wk h_l + bk;  v_l = Wv h_l + bv
//   alpha = softmax_l(q . k_l / sqrt(d));  out = Wo (sum_l alpha_l v_l) + bo
// computed without forming k_l and v_l (the same math, re-associated):
//   q . k_l = (Wk^T q) . h_l + q . bk,   sum_l alpha_l v_l = Wv (sum_l alpha_l h_l) + bv
// so a token costs four d x d products whatever m is, and each weight matrix is
// read once per call for all N tokens.
struct LayerAttentionParams {
  const float *wq, *bq, *wk, *bk, *wv, *bv, *wo, *bo;  // [d][d] weights ([out][in]), [d] biases
};
struct LayerAttentionGrads {
  float *wq, *bq, *wk, *bk, *wv, *bv, *wo, *bo;
};
// What the forward keeps for the backward: mu, q, u = Wk^T q, hbar = sum alpha_l
// h_l and o = Wv hbar + bv, each [N][d]; alpha [N][m].
struct LayerAttentionSaved {
  float *mu, *q, *u, *alpha, *hbar, *o;
};
void layer_attention_forward(float* out, const LayerAttentionSaved& s, const float* h, int64_t m, int64_t N,
                             int64_t d, const LayerAttentionParams& p, ThreadPool& pool);
// dh [m][N][d] and the parameter gradients accumulate. With c = 1/sqrt(d):
//   do = Wo^T dout, dhbar = Wv^T do, dalpha_l = dhbar . h_l + do . bv,
//   ds_l = alpha_l (dalpha_l - sum_j alpha_j dalpha_j),
//   dh_l += alpha_l dhbar + c ds_l u + (Wq^T dq) / m,  du = c sum_l ds_l h_l,
//   dq = Wk du + c (sum_l ds_l) bk,  dWk += q du^T,  dbk += c (sum_l ds_l) q.
void layer_attention_backward(float* dh, const LayerAttentionGrads& g, const float* dout, const LayerAttentionSaved& s,
                              const float* h, int64_t m, int64_t N, int64_t d, const LayerAttentionParams& p,
                              ThreadPool& pool);
// mean: out = (1/m) sum_l h_l;  dh_l += dout / m.
void layer_mean_forward(float* out, const float* h, int64_t m, int64_t N, int64_t d);
void layer_mean_backward(float* dh, const float* dout, int64_t m, int64_t N, int64_t d);
// last: out = h_{m-1} (the last layer of the list);  dh_{m-1} += dout.
void layer_last_forward(float* out, const float* h, int64_t m, int64_t N, int64_t d);
void layer_last_backward(float* dh, const float* dout, int64_t m, int64_t N, int64_t d);
// weighted: w = softmax(logits[m]) (written to weights[m]); out = sum_l w_l h_l.
// Backward: dh_l += w_l dout;  dlogits_l += w_l (g_l - sum_j w_j g_j), g_l = sum_t dout_t . h_l,t.
void layer_weighted_forward(float* out, float* weights, const float* h, const float* logits, int64_t m, int64_t N,
                            int64_t d);
void layer_weighted_backward(float* dh, float* dlogits, const float* dout, const float* h, const float* weights,
                             int64_t m, int64_t N, int64_t d);

}  // namespace dg
