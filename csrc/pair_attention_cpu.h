// Pair-window attention on the CPU: shapes and the table of per-task kernels (one table per
// instruction set; pair_attention_cpu.cpp picks one at run time).
#pragma once

#include <cstdint>

namespace wmfast_pair_attention {

struct Shape {
  int64_t N, T, P, D;  // rows (batch * heads), frames, tokens per frame, head dim
  int64_t W() const { return T - 1; }
};

inline int64_t forward_scratch(int64_t P, int64_t D) { return 7 * P + 3 * D; }
inline int64_t backward_scratch(int64_t P, int64_t D) { return 15 * P; }

template <typename scalar_t>
struct Kernels {
  void (*forward)(const Shape&, int64_t n, int64_t t, const scalar_t* q, const scalar_t* kt,
                  const scalar_t* v, bool pool, scalar_t* out, scalar_t* part, scalar_t* lse,
                  scalar_t* scratch) = nullptr;
  void (*backward)(const Shape&, int64_t n, int64_t t, const scalar_t* q, const scalar_t* kt,
                   const scalar_t* v, const scalar_t* vt, const scalar_t* g, const scalar_t* delta,
                   const scalar_t* lse, bool pool, scalar_t* ds_rows, scalar_t* dq, scalar_t* dk3,
                   scalar_t* dv3, scalar_t* col, scalar_t* scratch) = nullptr;
};

// The AVX2 + FMA build of the kernels (pair_attention_cpu_avx2.cpp); null pointers where the
// compiler or the architecture does not have it.
Kernels<float> avx2_kernels_float();
Kernels<double> avx2_kernels_double();

}  // namespace wmfast_pair_attention
