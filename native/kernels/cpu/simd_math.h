// Elementwise math written once over the SIMD traits V of simd_avx2.h /
// simd_avx512.h (include one of them first): exp for the softmax, and the
// SwiGLU activation. Unnamed namespace: each ISA's translation unit keeps its
// own copy (see matmul_impl.h).
#pragma once
#include <cstdint>

namespace dg::detail {
namespace {

// e^x for x <= 0 (softmax after max subtraction; SwiGLU's e^-|g|): Cephes expf, ~1 ulp. Inputs
// below -87.3 are clamped there (result ~1e-38 rather than a denormal or 0).
// NaN stays NaN, as in the scalar kernel: x86 max returns its second operand
// when either is NaN, so the constant goes first. (With x first, a NaN score
// became a finite weight on AVX2/AVX-512 and gave finite, wrong outputs.)
template <class V>
typename V::vec exp_nonpositive(typename V::vec x) {
  x = V::max(V::set1(-87.33654f), x);
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

// out[i] = silu(gate[i]) * up[i] for i < n, as swiglu_forward (ops.h). With
// e = e^-|g| (never overflows), sigmoid(g) = 1 / (1 + e) for g >= 0 and
// e / (1 + e) for g < 0. out may alias gate.
template <class V>
void swiglu_any(float* out, const float* gate, const float* up, int64_t n) {
  using vec = typename V::vec;
  auto silu_times = [](vec g, vec u) {
    const vec e = exp_nonpositive<V>(V::min(g, V::sub(V::zero(), g)));
    const vec s = V::div(V::select_negative(g, e, V::set1(1.f)), V::add(V::set1(1.f), e));
    return V::mul(V::mul(g, s), u);
  };
  constexpr int L = V::kLanes;
  int64_t i = 0;
  for (; i + L <= n; i += L) V::store(out + i, silu_times(V::loadf(gate + i), V::loadf(up + i)));
  if (i < n) {
    const int m = int(n - i);
    V::storef_part(out + i, silu_times(V::loadf_part(gate + i, m, 0.f), V::loadf_part(up + i, m, 0.f)), m);
  }
}

}  // namespace
}  // namespace dg::detail
