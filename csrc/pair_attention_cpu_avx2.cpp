// The pair-attention CPU kernels compiled for AVX2 + FMA, for this file only (the rest of the
// extension keeps the default flags, so the package runs on any x86-64 CPU);
// pair_attention_cpu.cpp uses them only when the CPU reports AVX2 and FMA.
#include "pair_attention_cpu.h"

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
// Standard headers first with the default target, so only our kernel code gets AVX2.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define PAIR_ATTENTION_NS wmfast_pair_attention_avx2
#include "pair_attention_kernel.h"
#undef PAIR_ATTENTION_NS
#pragma GCC pop_options

namespace wmfast_pair_attention {
Kernels<float> avx2_kernels_float() {
  Kernels<float> k;
  k.forward = &wmfast_pair_attention_avx2::forward_task<float>;
  k.backward = &wmfast_pair_attention_avx2::backward_task<float>;
  return k;
}
Kernels<double> avx2_kernels_double() {
  Kernels<double> k;
  k.forward = &wmfast_pair_attention_avx2::forward_task<double>;
  k.backward = &wmfast_pair_attention_avx2::backward_task<double>;
  return k;
}
}  // namespace wmfast_pair_attention
#else
namespace wmfast_pair_attention {
Kernels<float> avx2_kernels_float() { return {}; }
Kernels<double> avx2_kernels_double() { return {}; }
}  // namespace wmfast_pair_attention
#endif
