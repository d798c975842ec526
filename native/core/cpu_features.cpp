// CPU feature detection. An instruction set counts only when the CPU has it AND
// the OS saves its registers on context switch (XCR0 via xgetbv); otherwise the
// first AVX-512 instruction would fault or silently lose state.
#include "core/cpu_features.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "core/tensor.h"

#if defined(DG_X86)
#include <cpuid.h>
#endif

namespace dg {
namespace {

#if defined(DG_X86)
uint64_t xgetbv0() {
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return uint64_t(hi) << 32 | lo;
}

CpuFeatures detect() {
  CpuFeatures f;
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = c & (1u << 27);
  const bool avx = c & (1u << 28);
  if (!osxsave || !avx) return f;
  const uint64_t xcr0 = xgetbv0();
  const bool os_avx = (xcr0 & 0x6) == 0x6;         // XMM + YMM state
  const bool os_avx512 = (xcr0 & 0xe6) == 0xe6;    // + opmask, ZMM0-15 high, ZMM16-31
  if (!os_avx) return f;
  f.fma = c & (1u << 12);
  f.f16c = c & (1u << 29);
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return f;
  f.avx2 = b & (1u << 5);
  if (os_avx512) {
    f.avx512f = b & (1u << 16);
    f.avx512dq = b & (1u << 17);
    f.avx512bw = b & (1u << 30);
    f.avx512vl = b & (1u << 31);
    f.avx512vnni = c & (1u << 11);
    if (f.avx512f && a >= 1 && __get_cpuid_count(7, 1, &a, &b, &c, &d)) f.avx512bf16 = a & (1u << 5);
  }
  return f;
}
#else
CpuFeatures detect() { return CpuFeatures{}; }  // non-x86: scalar kernels only
#endif

Isa detect_best() {
  const CpuFeatures& f = cpu_features();
  const bool avx2 = f.avx2 && f.fma && f.f16c;
  if (avx2 && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq) return Isa::Avx512;
  if (avx2) return Isa::Avx2;
  return Isa::Scalar;
}

// DEEPGUARD_ISA lowers the ISA (for testing and benchmarking the fallbacks); a
// name the CPU cannot run, or an unknown name, leaves the best one in place.
Isa initial_isa() {
  Isa best = best_isa(), want;
  const char* env = std::getenv("DEEPGUARD_ISA");
  if (env && parse_isa(env, &want) && int(want) <= int(best)) return want;
  return best;
}

std::atomic<int>& active_slot() {
  static std::atomic<int> slot{int(initial_isa())};
  return slot;
}

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = detect();
  return f;
}

Isa best_isa() {
  static const Isa best = detect_best();
  return best;
}

Isa active_isa() { return Isa(active_slot().load(std::memory_order_relaxed)); }

void set_active_isa(Isa isa) {
  if (int(isa) > int(best_isa())) {
    throw Error("ERR_ISA_UNSUPPORTED", std::string("this CPU (or build) cannot run ") + isa_name(isa) +
                                           " kernels; the best available is " + isa_name(best_isa()));
  }
  active_slot().store(int(isa), std::memory_order_relaxed);
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Avx512: return "avx512";
    case Isa::Avx2: return "avx2";
    case Isa::Scalar: break;
  }
  return "scalar";
}

bool parse_isa(const char* name, Isa* out) {
  if (!name) return false;
  for (Isa isa : {Isa::Scalar, Isa::Avx2, Isa::Avx512}) {
    if (std::strcmp(name, isa_name(isa)) == 0) {
      *out = isa;
      return true;
    }
  }
  return false;
}

}  // namespace dg
