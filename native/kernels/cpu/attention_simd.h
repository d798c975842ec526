// One attention row, vectorized, written once over the traits V of
// simd_avx2.h / simd_avx512.h: the same math as attend_one in attention.cpp.
// Scores take one transposing reduction per four keys; the softmax runs over
// the context in vectors with a polynomial exp; P.V keeps up to four vectors of
// the output in registers while it streams the V rows.
#pragma once
#include "kernels/cpu/attention_impl.h"

namespace dg::detail {
namespace {

// e^x for x <= 0 (softmax after max subtraction): Cephes expf, ~1 ulp. Inputs
// below -87.3 are clamped there (result ~1e-38 rather than a denormal or 0).
template <class V>
typename V::vec exp_nonpositive(typename V::vec x) {
  x = V::max(x, V::set1(-87.33654f));
  const typename V::vec n = V::round(V::mul(x, V::set1(1.44269504088896341f)));
  typename V::vec r = V::fnmadd(n, V::set1(0.693359375f), x);  // x - n ln2, in two parts
  r = V::fnmadd(n, V::set1(-2.12194440e-4f), r);
  typename V::vec p = V::set1(1.9875691500e-4f);
  p = V::fmadd(p, r, V::set1(1.3981999507e-3f));
  p = V::fmadd(p, r, V::set1(8.3334519073e-3f));
  p = V::fmadd(p, r, V::set1(4.1665795894e-2f));
  p = V::fmadd(p, r, V::set1(1.6666665459e-1f));
  p = V::fmadd(p, r, V::set1(5.0000001201e-1f));
  p = V::fmadd(p, V::mul(r, r), V::add(r, V::set1(1.f)));
  return V::scale_pow2(p, n);
}

template <class V>
void attend_row(const AttentionRow& a) {
  using vec = typename V::vec;
  constexpr int L = V::kLanes;
  const int64_t n = a.n_ctx, hd = a.hd;
  const float* q = a.q;
  float* s = a.scores;

  // scores[j] = scale * q . k_j
  const __m128 scale4 = _mm_set1_ps(a.scale);
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    const float* k0 = a.k + j * hd;
    vec c0 = V::zero(), c1 = V::zero(), c2 = V::zero(), c3 = V::zero();
    for (int64_t d = 0; d < hd; d += L) {
      const vec qv = V::loadf(q + d);
      c0 = V::fmadd(qv, V::loadf(k0 + d), c0);
      c1 = V::fmadd(qv, V::loadf(k0 + hd + d), c1);
      c2 = V::fmadd(qv, V::loadf(k0 + 2 * hd + d), c2);
      c3 = V::fmadd(qv, V::loadf(k0 + 3 * hd + d), c3);
    }
    _mm_storeu_ps(s + j, _mm_mul_ps(V::reduce4(c0, c1, c2, c3), scale4));
  }
  for (; j < n; ++j) {
    vec c = V::zero();
    for (int64_t d = 0; d < hd; d += L) c = V::fmadd(V::loadf(q + d), V::loadf(a.k + j * hd + d), c);
    s[j] = V::reduce1(c) * a.scale;
  }

  // p = exp(scores - max), in place; sum(p). Tails are padded with -inf lanes,
  // which neither change the max nor add to the sum.
  const float neg_inf = -__builtin_inff();
  vec m = V::set1(neg_inf);
  for (j = 0; j + L <= n; j += L) m = V::max(m, V::loadf(s + j));
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
  const vec inv = V::set1(1.f / V::reduce1(sum));

  // out = (p . V) / sum, four output vectors at a time.
  for (int64_t d0 = 0; d0 < hd; d0 += 4 * L) {
    const int nv = hd - d0 >= 4 * L ? 4 : int((hd - d0) / L);
    vec o0 = V::zero(), o1 = V::zero(), o2 = V::zero(), o3 = V::zero();
    const float* vr = a.v + d0;
    for (j = 0; j < n; ++j, vr += hd) {
      const vec p = V::set1(s[j]);
      o0 = V::fmadd(p, V::loadf(vr), o0);
      if (nv > 1) o1 = V::fmadd(p, V::loadf(vr + L), o1);
      if (nv > 2) o2 = V::fmadd(p, V::loadf(vr + 2 * L), o2);
      if (nv > 3) o3 = V::fmadd(p, V::loadf(vr + 3 * L), o3);
    }
    V::store(a.out + d0, V::mul(o0, inv));
    if (nv > 1) V::store(a.out + d0 + L, V::mul(o1, inv));
    if (nv > 2) V::store(a.out + d0 + 2 * L, V::mul(o2, inv));
    if (nv > 3) V::store(a.out + d0 + 3 * L, V::mul(o3, inv));
  }
}

}  // namespace
}  // namespace dg::detail
