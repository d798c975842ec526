// The sampler's seeded uniform stream: xoshiro128** seeded through splitmix32,
// bit-identical to lib/random.ts, so a seed gives the same tokens whether a
// sequence is sampled by the scheduler or by a custom loop in TypeScript.
#pragma once
#include <cstdint>

namespace dg {

class Xoshiro128 {
 public:
  // seed: an integer in [0, 2^53) (as JavaScript numbers hold it).
  explicit Xoshiro128(uint64_t seed) {
    uint32_t x = uint32_t(seed) ^ uint32_t(seed >> 32);
    for (uint32_t& s : s_) {
      x += 0x9e3779b9u;  // splitmix32
      uint32_t z = x;
      z = (z ^ (z >> 16)) * 0x85ebca6bu;
      z = (z ^ (z >> 13)) * 0xc2b2ae35u;
      s = z ^ (z >> 16);
    }
  }

  uint32_t next_u32() {
    const uint32_t result = rotl(s_[1] * 5u, 7) * 9u;
    const uint32_t t = s_[1] << 9;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 11);
    return result;
  }

  // Uniform in [0, 1) with 53 random bits.
  double next_double() {
    const uint32_t hi = next_u32() >> 5, lo = next_u32() >> 6;
    return (double(hi) * 67108864.0 + double(lo)) / 9007199254740992.0;
  }

 private:
  static uint32_t rotl(uint32_t x, int k) { return (x << k) | (x >> (32 - k)); }
  uint32_t s_[4];
};

}  // namespace dg
