// The vq_lookup micro-kernel compiled for AVX2 + FMA, for this file only (the rest of the
// extension keeps the default flags, so the package still runs on any x86-64 CPU);
// vq_lookup_cpu.cpp calls it only when the CPU reports AVX2 and FMA.
#include "vq_lookup_cpu.h"

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
// Every header the vector headers depend on is included first, with the default target, so
// only the at::vec::AVX2 code and our kernel below are compiled for AVX2.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <ostream>
#include <type_traits>
#include <vector>

#include <ATen/NumericUtils.h>
#include <ATen/native/Math.h>
#include <ATen/native/cpu/zmath.h>
#include <c10/macros/Macros.h>
#include <c10/util/BFloat16-math.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <c10/util/Load.h>
#include <c10/util/TypeCast.h>
#include <c10/util/complex.h>
#include <c10/util/copysign.h>
#include <c10/util/irange.h>
#include <immintrin.h>  // before __AVX__ is defined below: the intrinsic headers test it

// sleef.h (pulled in by the AVX2 vector header) declares its 256-bit functions only when
// __AVX__ is defined, and `#pragma GCC target` does not define it: declare them here. They
// are declarations only; our kernel calls none of them.
#ifndef __AVX__
#define __AVX__ 1
#define WMFAST_UNDEF_AVX
#endif
#define SLEEF_STATIC_LIBS
#include <sleef.h>
#ifdef WMFAST_UNDEF_AVX
#undef __AVX__
#undef WMFAST_UNDEF_AVX
#endif

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#include "vq_lookup_kernel.h"

namespace {
void argmin_rows_avx2(const float* z, int64_t n, int64_t ldz, int64_t D, const float* panels, const float* norms,
                      int64_t num_panels, int64_t panels_per_block, int64_t* index) {
  std::vector<RowBest> best(n);
  argmin_rows(z, n, ldz, D, panels, norms, num_panels, panels_per_block, best.data(), index);
}
}  // namespace
#pragma GCC pop_options

namespace wmfast::vq {
ArgminKernel avx2_kernel() { return {"avx2", kVecWidth, &argmin_rows_avx2}; }
}  // namespace wmfast::vq

#else

namespace wmfast::vq {
ArgminKernel avx2_kernel() { return {"avx2", 0, nullptr}; }
}  // namespace wmfast::vq

#endif
