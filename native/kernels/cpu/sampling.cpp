// Token sampling: temperature, top-k, top-p (nucleus), then the inverse CDF at u.
//
// Exact rules (the tests' reference follows them):
//  - A NaN or +inf logit, or a row where every logit is -inf, is an error
//    (ERR_NON_FINITE): such logits come from a broken model or bias, and any
//    token picked from them would be arbitrary. -inf logits (banned tokens)
//    are fine. Greedy (temperature <= 0) returns the argmax, lowest index on ties.
//  - Weights e[i] = exp((l[i] - max) / temperature).
//  - "Most likely" orders by logit descending, then token id ascending.
//  - top_k keeps the k most likely; top_p then keeps the shortest such prefix
//    whose weight reaches top_p of the kept weight (at least one token).
//  - The survivors are renormalized and the CDF is walked in token-id order:
//    the result is the first token whose cumulative weight exceeds u * total.
// Candidates are found in linear time by bucketing weights; only the tokens of
// one bucket are ever sorted, never the vocabulary (152k entries for Qwen2).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/ops.h"

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
// Zero weights never move the sum past the target, so they are never picked.
template <class Id>
int32_t invert_cdf(const float* e, Id id, int64_t n, double u) {
  double total = 0.0;
  for (int64_t i = 0; i < n; ++i) total += e[id(i)];
  const double target = u * total;
  double cum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    cum += e[id(i)];
    if (cum > target) return int32_t(id(i));
  }
  // u * total rounded past the end: the last token with weight.
  int64_t last = n - 1;
  while (last > 0 && e[id(last)] == 0.f) --last;
  return int32_t(id(last));
}

// Orders tokens by weight in ~1000 buckets: the f32 bits of a weight in (0, 1]
// (exponent + 3 mantissa bits) are monotone in it, so every token of a higher
// bucket is more likely than every token of a lower one.
int bucket(float e) {
  uint32_t bits;
  std::memcpy(&bits, &e, 4);
  return int(bits >> 20);
}

// Collects into `out` the weighted tokens among ids id(0..n) whose bucket is at
// or above the one where the running total of amount(id), most likely bucket
// first, reaches `target`: first those of higher buckets ([0, *sure)), then
// those of the boundary bucket. Returns the amount held by the higher buckets.
template <class Id, class Amount>
double split_at_bucket(Id id, int64_t n, const float* e, double target, Amount amount, std::vector<int32_t>& out,
                       int64_t* sure) {
  // The most likely token has weight 1, so the scan starts at a non-empty bucket.
  const int top = bucket(1.f);
  std::vector<double> per_bucket(size_t(top) + 1, 0.0);
  for (int64_t i = 0; i < n; ++i)
    if (e[id(i)] > 0.f) per_bucket[size_t(bucket(e[id(i)]))] += amount(id(i));
  int boundary = top;
  double above = 0.0;
  for (; boundary > 0 && above + per_bucket[size_t(boundary)] < target; --boundary)
    above += per_bucket[size_t(boundary)];
  // Branch-free appends: whether a token falls above the boundary is a coin
  // flip the branch predictor would keep losing.
  out.resize(size_t(n) + 1);  // + 1: the slot each pass writes past its last keep
  int64_t m = 0;
  for (int64_t i = 0; i < n; ++i) {
    out[size_t(m)] = id(i);
    m += e[id(i)] > 0.f && bucket(e[id(i)]) > boundary;
  }
  *sure = m;
  for (int64_t i = 0; i < n; ++i) {
    out[size_t(m)] = id(i);
    m += e[id(i)] > 0.f && bucket(e[id(i)]) == boundary;
  }
  out.resize(size_t(m));
  return above;
}

// out = the k most likely weighted tokens among ids id(0..n), in no particular order.
template <class Id, class MoreLikely>
void keep_top_k(Id id, int64_t n, const float* e, int64_t k, MoreLikely more_likely, std::vector<int32_t>& out) {
  int64_t sure;
  split_at_bucket(id, n, e, double(k), [](int32_t) { return 1.0; }, out, &sure);
  if (k >= int64_t(out.size())) return;  // fewer weighted tokens than k
  std::nth_element(out.begin() + sure, out.begin() + k, out.end(), more_likely);
  out.resize(size_t(k));
}

// out = the shortest prefix, by likelihood, of the weighted tokens among ids
// id(0..n) whose weight reaches top_p of their total (at least one token).
template <class Id, class MoreLikely>
void keep_nucleus(Id id, int64_t n, const float* e, float top_p, MoreLikely more_likely, std::vector<int32_t>& out) {
  double total = 0.0;
  for (int64_t i = 0; i < n; ++i) total += e[id(i)];
  const double target = double(top_p) * total;
  int64_t sure;
  double cum = split_at_bucket(id, n, e, target, [e](int32_t t) { return double(e[t]); }, out, &sure);
  // Only the boundary bucket needs ordering.
  std::sort(out.begin() + sure, out.end(), more_likely);
  size_t keep = size_t(sure);
  while (keep < out.size() && (keep == 0 || cum < target)) cum += e[out[keep++]];
  out.resize(keep);
}

}  // namespace

int32_t sample_token(const float* logits, int64_t vocab, const SamplingParams& p, double u) {
  if (vocab <= 0 || vocab > INT32_MAX) throw Error("ERR_ARGUMENT", "sample_token: vocab size must be in [1, 2^31)");
  for (int64_t i = 0; i < vocab; ++i)
    if (std::isnan(logits[i]) || logits[i] == INFINITY)
      throw Error("ERR_NON_FINITE", "logit " + std::to_string(i) + " is " + (std::isnan(logits[i]) ? "NaN" : "+Infinity") +
                                        "; cannot sample a token");
  const int64_t best = argmax(logits, vocab);
  const float max_l = logits[best];
  if (!(max_l > -INFINITY)) throw Error("ERR_NON_FINITE", "every logit is -Infinity; no token can be sampled");
  if (!(p.temperature > 0.f)) return int32_t(best);
  u = u > 0.0 ? std::min(u, std::nextafter(1.0, 0.0)) : 0.0;  // also maps NaN to 0

  thread_local std::vector<float> e;
  e.resize(size_t(vocab));
  softmax_weights(e.data(), logits, vocab, max_l, p.temperature);
  const bool use_k = p.top_k > 0 && p.top_k < vocab;
  const bool use_p = p.top_p < 1.f;  // NaN: off
  auto vocab_id = [](int64_t i) { return int32_t(i); };
  if (!use_k && !use_p) return invert_cdf(e.data(), vocab_id, vocab, u);

  auto more_likely = [logits](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  thread_local std::vector<int32_t> kept, nucleus;
  if (use_k) keep_top_k(vocab_id, vocab, e.data(), p.top_k, more_likely, kept);
  if (use_p && use_k) {
    auto kept_id = [&](int64_t i) { return kept[size_t(i)]; };
    keep_nucleus(kept_id, int64_t(kept.size()), e.data(), p.top_p, more_likely, nucleus);
    kept.swap(nucleus);
  } else if (use_p) {
    keep_nucleus(vocab_id, vocab, e.data(), p.top_p, more_likely, kept);
  }
  // Walk the CDF in token order over the kept weights, all others zeroed.
  thread_local std::vector<float> kept_e;
  kept_e.assign(size_t(vocab), 0.f);
  for (int32_t id : kept) kept_e[size_t(id)] = e[size_t(id)];
  return invert_cdf(kept_e.data(), vocab_id, vocab, u);
}

}  // namespace dg
