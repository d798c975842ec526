// Token sampling: temperature, top-k, top-p (nucleus), then the inverse CDF at u.
//
// Exact rules (the tests' reference follows them):
//  - NaN logits count as -inf. Greedy (temperature <= 0 or NaN) and the case
//    where every logit is -inf return the argmax, lowest index on ties (0 then).
//  - Weights e[i] = exp((l[i] - max) / temperature); +inf logits share the mass.
//  - "Most likely" orders by logit descending, then token id ascending.
//  - top_k keeps the k most likely; top_p then keeps the shortest such prefix
//    whose weight reaches top_p of the kept weight (at least one token).
//  - The survivors are renormalized and the CDF is walked in token-id order:
//    the result is the first token whose cumulative weight exceeds u * total.
// Candidates are selected with nth_element on a growing prefix, never a full
// sort of the vocabulary (152k entries for Qwen2).
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/ops.h"

namespace dg {
namespace {

// Index of the largest logit, lowest index on ties; NaN never wins (0 if all are -inf/NaN).
int64_t argmax(const float* logits, int64_t n) {
  int64_t best = 0;
  float m = std::isnan(logits[0]) ? -INFINITY : logits[0];
  for (int64_t i = 1; i < n; ++i) {
    if (logits[i] > m) {
      m = logits[i];
      best = i;
    }
  }
  return best;
}

// e[i] = exp((l[i] - max_l) / temperature) in [0, 1]; 0 for -inf and NaN. The
// l == max_l case also covers +inf logits (inf - inf would be NaN).
void softmax_weights(float* e, const float* logits, int64_t n, float max_l, float temperature) {
  for (int64_t i = 0; i < n; ++i) {
    const float l = logits[i];
    e[i] = l == max_l ? 1.f : l > -INFINITY ? std::exp((l - max_l) / temperature) : 0.f;
  }
}

// First of `ids` (in the given order) whose cumulative weight exceeds u * total.
template <class Id>
int32_t invert_cdf(const float* e, Id id, int64_t n, double u) {
  double total = 0.0;
  for (int64_t i = 0; i < n; ++i) total += e[id(i)];
  const double target = u * total;
  double cum = 0.0;
  int64_t last = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (e[id(i)] == 0.f) continue;
    cum += e[id(i)];
    last = i;
    if (cum > target) return int32_t(id(i));
  }
  return int32_t(id(last));  // u * total rounded past the end: the last token with weight
}

// Shortest prefix of cand[0, n) by likelihood whose weight reaches top_p of the
// whole; cand is reordered so that prefix comes first. Sorts only a growing
// prefix: nucleus sets are usually tiny next to the vocabulary.
template <class MoreLikely>
int64_t nucleus(std::vector<int32_t>& cand, int64_t n, const float* e, float top_p, MoreLikely more_likely) {
  double total = 0.0;
  for (int64_t i = 0; i < n; ++i) total += e[cand[i]];
  const double target = double(top_p) * total;
  double cum = 0.0;
  auto first = cand.begin();
  for (int64_t done = 0, m = std::min<int64_t>(64, n);; done = m, m = std::min(2 * m, n)) {
    if (m < n) std::nth_element(first + done, first + m, first + n, more_likely);
    std::sort(first + done, first + m, more_likely);
    for (int64_t i = done; i < m; ++i) {
      cum += e[cand[i]];
      if (cum >= target) return i + 1;
    }
    if (m == n) return n;
  }
}

}  // namespace

int32_t sample_token(const float* logits, int64_t vocab, const SamplingParams& p, double u) {
  if (vocab <= 0 || vocab > INT32_MAX) throw Error("ERR_ARGUMENT", "sample_token: vocab size must be in [1, 2^31)");
  const int64_t best = argmax(logits, vocab);
  const float max_l = logits[best];
  if (!(p.temperature > 0.f) || !(max_l > -INFINITY)) return int32_t(best);
  u = u > 0.0 ? std::min(u, std::nextafter(1.0, 0.0)) : 0.0;  // also maps NaN to 0

  thread_local std::vector<float> e;
  e.resize(size_t(vocab));
  softmax_weights(e.data(), logits, vocab, max_l, p.temperature);
  const bool use_k = p.top_k > 0 && p.top_k < vocab;
  const bool use_p = p.top_p < 1.f;  // NaN: off
  if (!use_k && !use_p) return invert_cdf(e.data(), [](int64_t i) { return i; }, vocab, u);

  // Only tokens with weight can be kept or drawn.
  thread_local std::vector<int32_t> cand;
  cand.clear();
  for (int64_t i = 0; i < vocab; ++i)
    if (e[i] > 0.f) cand.push_back(int32_t(i));
  auto more_likely = [logits](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  int64_t n = int64_t(cand.size());
  if (use_k && p.top_k < n) {
    std::nth_element(cand.begin(), cand.begin() + p.top_k, cand.end(), more_likely);
    n = p.top_k;
  }
  if (use_p) n = nucleus(cand, n, e.data(), p.top_p, more_likely);
  std::sort(cand.begin(), cand.begin() + n);
  return invert_cdf(e.data(), [&](int64_t i) { return cand[size_t(i)]; }, n, u);
}

}  // namespace dg
