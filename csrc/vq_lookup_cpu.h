// Interface between vq_lookup_cpu.cpp and the per-ISA copies of the micro-kernel.
#pragma once

#include <cstdint>

namespace wmfast::vq {

// Nearest code for rows [0, n) of z (fp32, row stride ldz) over pre-packed panels
// (see vq_lookup_kernel.h) -> index[0, n).
using ArgminRowsFn = void (*)(const float* z, int64_t n, int64_t ldz, int64_t D, const float* panels,
                              const float* norms, int64_t num_panels, int64_t panels_per_block,
                              int64_t* index);

struct ArgminKernel {
  const char* name;    // "avx2" or "default"
  int64_t width;       // codes per panel (SIMD lanes); 0 when the kernel is not compiled in
  ArgminRowsFn argmin;
};

// Defined in vq_lookup_cpu_avx2.cpp; width 0 on builds that are not x86-64 GCC/Clang.
ArgminKernel avx2_kernel();

}  // namespace wmfast::vq
