// attention_backward's per-head kernel (attention_backward_impl.h) compiled for AVX2.
#if defined(DG_X86)
#include "kernels/cpu/attention_backward_impl.h"

namespace dg::detail {

void attention_backward_head_avx2(const AttentionBackwardHead& a) { attention_backward_head(a); }

}  // namespace dg::detail
#endif  // DG_X86
