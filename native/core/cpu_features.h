// Run-time CPU feature detection and the instruction set the kernels dispatch to.
#pragma once

namespace dg {

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false, avx512bf16 = false;
  bool avx512vnni = false;  // vpdpbusd: the quantized kernels use it under Isa::Avx512
};

enum class Isa { Scalar = 0, Avx2 = 1, Avx512 = 2 };

const CpuFeatures& cpu_features();
Isa best_isa();                  // the widest ISA this CPU (and this build) supports
Isa active_isa();                // what kernels use now: best_isa(), or DEEPGUARD_ISA=scalar|avx2|avx512
void set_active_isa(Isa isa);    // throws dg::Error("ERR_ISA_UNSUPPORTED") if the CPU lacks it
const char* isa_name(Isa isa);   // "scalar" | "avx2" | "avx512"
bool parse_isa(const char* name, Isa* out);

}  // namespace dg
