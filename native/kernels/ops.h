// CPU reference kernels: one small function per op, named after the math.
// All activations are f32 and row-major; `T` is the number of token rows.
// Weights (Matrix) stay in their stored dtype (F32/F16/BF16), widened to f32 in
// registers; every reduction accumulates in f32.
//
// Backward passes (for LoRA training) go next to each forward in the same file.
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

// Prefill (16+ tokens) on block-quantized weights uses AMX-BF16 tiles where the
// CPU has them and the active ISA is avx512 (weights and activations rounded
// to BF16), unless DEEPGUARD_AMX=0 or set_quant_amx(false). Returns whether
// AMX is in use now.
void set_quant_amx(bool enabled);
bool quant_amx_active();

// ---- normalization (norm.cpp) -------------------------------------------------
// y = x / sqrt(mean(x^2) + eps) * w, per row of d. y may alias x.
void rmsnorm_forward(float* y, const float* x, const float* w, int64_t T, int64_t d, float eps);

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

// ---- attention (attention.cpp) ------------------------------------------------
// Causal scaled-dot-product attention with grouped-query heads over a KV cache.
// q: [T][n_heads * hd] for positions pos0 .. pos0+T-1 (already rotated).
// k_cache, v_cache: [n_kv_heads][capacity][hd], filled for positions [0, pos0+T).
// out: [T][n_heads * hd]. Query head h reads kv head h / (n_heads / n_kv_heads).
// Softmax in f32 with max subtraction; scale 1/sqrt(hd).
void attention_forward(float* out, const float* q, const float* k_cache, const float* v_cache,
                       int64_t capacity, int64_t T, int64_t pos0, int64_t n_heads,
                       int64_t n_kv_heads, int64_t hd, ThreadPool& pool);

// ---- activations (activation.cpp) ---------------------------------------------
// out[i] = silu(gate[i]) * up[i], silu(x) = x / (1 + exp(-x)). out may alias gate.
void swiglu_forward(float* out, const float* gate, const float* up, int64_t n);

// ---- elementwise / lookup (elementwise.cpp) -----------------------------------
void add_inplace(float* y, const float* x, int64_t n);  // y += x
// out[t] = table[ids[t]] widened to f32. Ids must already be validated < rows.
void embedding_forward(float* out, const int32_t* ids, int64_t T, const Matrix& table);

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
