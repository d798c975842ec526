// Measures sustained memory bandwidth the way decode uses memory: every thread
// of the pool streams through its share of a buffer much larger than the caches.
#pragma once
#include <cstdint>

namespace dg {

// Medians over `repeats` passes.
struct BandwidthResult {
  double read_gbps;  // parallel streaming read (sum of floats)
  double copy_gbps;  // parallel memcpy, counting bytes read + bytes written
};

BandwidthResult measure_bandwidth(uint64_t bytes, int repeats);

}  // namespace dg
