// One attention row, vectorized, written once over the traits V of
// simd_avx2.h / simd_avx512.h: the same math as attend_one in attention.cpp.
// Scores take one transposing reduction per four keys; the softmax runs over
// the context in vectors with a polynomial exp; P.V keeps up to four vectors of
// the output in registers while it streams the V rows. K and V are read in the
// cache's dtype D (F32, or BF16 widened by a 16-bit shift in V::load).
#pragma once
#include "kernels/cpu/attention_impl.h"
#include "kernels/cpu/simd_math.h"

namespace dg::detail {
namespace {

// s[0..n) = exp(s - max(s)) in place; returns their sum. Tails are padded with
// -inf lanes, which neither change the max nor add to the sum.
template <class V>
float softmax_numerators(float* s, int64_t n) {
  using vec = typename V::vec;
  constexpr int L = V::kLanes;
  const float neg_inf = -__builtin_inff();
  vec m = V::set1(neg_inf);
  int64_t j = 0;
  for (; j + L <= n; j += L) m = V::max(m, V::loadf(s + j));
  if (j < n) m = V::max(m, V::loadf_part(s + j, int(n - j), neg_inf));
  const vec mv = V::set1(V::reduce_max(m));
  vec sum = V::zero();
  for (j = 0; j + L <= n; j += L) {
    const vec p = exp_nonpositive<V>(V::sub(V::loadf(s + j), mv));
    V::store(s + j, p);
    sum = V::add(sum, p);
  }
  if (j < n) {
    const vec p = exp_nonpositive<V>(V::sub(V::loadf_part(s + j, int(n - j), neg_inf), mv));
    V::storef_part(s + j, p, int(n - j));
    sum = V::add(sum, p);
  }
  return V::reduce1(sum);
}

template <class V, DType D>
void attend_row(const AttentionRows& a) {
  using vec = typename V::vec;
  constexpr int L = V::kLanes;
  const int64_t n = a.n_ctx0, hd = a.hd;
  const float* q = a.q;
  float* s = a.scores;

  // scores[j] = scale * q . k_j
  const __m128 scale4 = _mm_set1_ps(a.scale);
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    const int64_t k0 = j * hd;
    vec c0 = V::zero(), c1 = V::zero(), c2 = V::zero(), c3 = V::zero();
    for (int64_t d = 0; d < hd; d += L) {
      const vec qv = V::loadf(q + d);
      c0 = V::fmadd(qv, V::template load<D>(a.k, k0 + d), c0);
      c1 = V::fmadd(qv, V::template load<D>(a.k, k0 + hd + d), c1);
      c2 = V::fmadd(qv, V::template load<D>(a.k, k0 + 2 * hd + d), c2);
      c3 = V::fmadd(qv, V::template load<D>(a.k, k0 + 3 * hd + d), c3);
    }
    _mm_storeu_ps(s + j, _mm_mul_ps(V::reduce4(c0, c1, c2, c3), scale4));
  }
  for (; j < n; ++j) {
    vec c = V::zero();
    for (int64_t d = 0; d < hd; d += L) c = V::fmadd(V::loadf(q + d), V::template load<D>(a.k, j * hd + d), c);
    s[j] = V::reduce1(c) * a.scale;
  }

  const vec inv = V::set1(1.f / softmax_numerators<V>(s, n));

  // out = (p . V) / sum, four output vectors at a time.
  for (int64_t d0 = 0; d0 < hd; d0 += 4 * L) {
    const int nv = hd - d0 >= 4 * L ? 4 : int((hd - d0) / L);
    vec o0 = V::zero(), o1 = V::zero(), o2 = V::zero(), o3 = V::zero();
    int64_t vr = d0;  // element offset of row j's output slice in V
    for (j = 0; j < n; ++j, vr += hd) {
      const vec p = V::set1(s[j]);
      o0 = V::fmadd(p, V::template load<D>(a.v, vr), o0);
      if (nv > 1) o1 = V::fmadd(p, V::template load<D>(a.v, vr + L), o1);
      if (nv > 2) o2 = V::fmadd(p, V::template load<D>(a.v, vr + 2 * L), o2);
      if (nv > 3) o3 = V::fmadd(p, V::template load<D>(a.v, vr + 3 * L), o3);
    }
    V::store(a.out + d0, V::mul(o0, inv));
    if (nv > 1) V::store(a.out + d0 + L, V::mul(o1, inv));
    if (nv > 2) V::store(a.out + d0 + 2 * L, V::mul(o2, inv));
    if (nv > 3) V::store(a.out + d0 + 3 * L, V::mul(o3, inv));
  }
}


// Four consecutive query rows of one head (prefill): each K and V vector
// loaded feeds four rows, a quarter of attend_row's loads per FMA. Row r sees
// keys [0, n_ctx0 + r); the scores of later keys (at most three, all inside
// the filled cache) are computed, then zeroed after that row's softmax.
// Needs 16 accumulators + 4 loads live: meant for 32-register ISAs.
template <class V, DType D>
void attend_rows4(const AttentionRows& a) {
  using vec = typename V::vec;
  constexpr int L = V::kLanes;
  const int64_t hd = a.hd, n = a.n_ctx0 + 3;  // keys seen by the last row
  const int64_t ls = a.n_ctx0 + 3;            // row stride of a.scores
  const float* q[4] = {a.q, a.q + a.ld, a.q + 2 * a.ld, a.q + 3 * a.ld};
  float* s[4] = {a.scores, a.scores + ls, a.scores + 2 * ls, a.scores + 3 * ls};

  // scores[r][j] = scale * q_r . k_j, a 4 x 4 block of keys at a time.
  const __m128 scale4 = _mm_set1_ps(a.scale);
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    const int64_t k0 = j * hd;
    vec c[4][4];
    for (int r = 0; r < 4; ++r)
      for (int kk = 0; kk < 4; ++kk) c[r][kk] = V::zero();
    for (int64_t d = 0; d < hd; d += L) {
      const vec kv[4] = {V::template load<D>(a.k, k0 + d), V::template load<D>(a.k, k0 + hd + d),
                         V::template load<D>(a.k, k0 + 2 * hd + d), V::template load<D>(a.k, k0 + 3 * hd + d)};
      for (int r = 0; r < 4; ++r) {
        const vec qv = V::loadf(q[r] + d);
        for (int kk = 0; kk < 4; ++kk) c[r][kk] = V::fmadd(qv, kv[kk], c[r][kk]);
      }
    }
    for (int r = 0; r < 4; ++r) _mm_storeu_ps(s[r] + j, _mm_mul_ps(V::reduce4(c[r][0], c[r][1], c[r][2], c[r][3]), scale4));
  }
  for (; j < n; ++j) {
    for (int r = 0; r < 4; ++r) {
      vec c = V::zero();
      for (int64_t d = 0; d < hd; d += L) c = V::fmadd(V::loadf(q[r] + d), V::template load<D>(a.k, j * hd + d), c);
      s[r][j] = V::reduce1(c) * a.scale;
    }
  }

  // Per-row softmax over that row's own keys; its masked keys get p = 0.
  vec inv[4];
  for (int r = 0; r < 4; ++r) {
    const int64_t nr = a.n_ctx0 + r;
    inv[r] = V::set1(1.f / softmax_numerators<V>(s[r], nr));
    for (int64_t m = nr; m < n; ++m) s[r][m] = 0.f;
  }

  // out_r = (p_r . V) / sum_r, four output vectors of four rows at a time.
  for (int64_t d0 = 0; d0 < hd; d0 += 4 * L) {
    const int nv = hd - d0 >= 4 * L ? 4 : int((hd - d0) / L);
    vec o[4][4];
    for (int r = 0; r < 4; ++r)
      for (int b = 0; b < 4; ++b) o[r][b] = V::zero();
    int64_t vr = d0;
    for (j = 0; j < n; ++j, vr += hd) {
      vec vv[4];
      for (int b = 0; b < nv; ++b) vv[b] = V::template load<D>(a.v, vr + b * L);
      for (int r = 0; r < 4; ++r) {
        const vec p = V::set1(s[r][j]);
        for (int b = 0; b < nv; ++b) o[r][b] = V::fmadd(p, vv[b], o[r][b]);
      }
    }
    for (int r = 0; r < 4; ++r)
      for (int b = 0; b < nv; ++b) V::store(a.out + r * a.ld + d0 + b * L, V::mul(o[r][b], inv[r]));
  }
}

// Each ISA file's entry points: the instantiation for the cache's dtype.
template <class V>
void attend_row_any(const AttentionRows& a) {
  a.kv == DType::BF16 ? attend_row<V, DType::BF16>(a) : attend_row<V, DType::F32>(a);
}
template <class V>
void attend_rows4_any(const AttentionRows& a) {
  a.kv == DType::BF16 ? attend_rows4<V, DType::BF16>(a) : attend_rows4<V, DType::F32>(a);
}

}  // namespace
}  // namespace dg::detail
