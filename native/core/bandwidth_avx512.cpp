// The streaming read of measure_bandwidth with 64-byte loads (compiled with
// AVX-512 flags): the scalar loop's 16-byte loads on this Xeon read ~25% less
// than a decode kernel streams, which made "time / bound" come out below 1.
#if defined(DG_X86)
#include <immintrin.h>

#include <cstdint>

namespace dg::detail {

// Sum of n floats (n a multiple of 64), four independent vector accumulators,
// prefetching 1 KiB ahead as the decode kernels do.
float stream_sum_avx512(const float* p, int64_t n) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (int64_t i = 0; i < n; i += 64) {
    const char* c = reinterpret_cast<const char*>(p + i);
    for (int k = 0; k < 4; ++k) _mm_prefetch(c + 1024 + 64 * k, _MM_HINT_T0);
    a0 = _mm512_add_ps(a0, _mm512_loadu_ps(p + i));
    a1 = _mm512_add_ps(a1, _mm512_loadu_ps(p + i + 16));
    a2 = _mm512_add_ps(a2, _mm512_loadu_ps(p + i + 32));
    a3 = _mm512_add_ps(a3, _mm512_loadu_ps(p + i + 48));
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

}  // namespace dg::detail
#endif  // DG_X86
