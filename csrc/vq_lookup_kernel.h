// The vq_lookup CPU micro-kernel, written once against ATen's portable SIMD type
// at::vec::Vectorized<float>. It is compiled twice: by vq_lookup_cpu.cpp with the default
// build flags, and by vq_lookup_cpu_avx2.cpp with AVX2+FMA enabled for that file only;
// vq_lookup_cpu.cpp picks one at run time. Everything here has internal linkage, so the
// two copies never clash at link time.
//
// Layout (prepared once per call by vq_lookup_cpu.cpp):
//   panels [P, D, W]  P = ceil(K / W) panels of W codes, transposed and pre-scaled by -2,
//                     so that one vector load gives the same coordinate of W codes
//   norms  [P * W]    ||c||^2 per code; +inf for the padding codes of the last panel
// For a row z the kernel scans score_j = ||c_j||^2 - 2 z.c_j (||z||^2 is the same for
// every code, so it never changes the argmin) and keeps the smallest, lowest index first.
#pragma once

#include <cstdint>
#include <limits>

#include <ATen/cpu/vec/vec.h>

namespace {

using Vec = at::vec::Vectorized<float>;
constexpr int kVecWidth = Vec::size();
// 6 rows x 2 panels = 12 accumulators: enough independent FMA chains to hide the FMA
// latency, and they (plus 2 code vectors and a broadcast) fit in the 16 AVX2 registers.
constexpr int kRows = 6;

struct RowBest {
  float score;
  int32_t index;
};

// Lane-wise running minimum of one row over the panels of one code block. Indices are
// carried as floats (exact below 2^24, checked by the caller) so one blendv moves both.
struct LaneBest {
  Vec score = Vec(std::numeric_limits<float>::infinity());
  Vec index = Vec(0.f);

  inline void merge(const Vec& s, const Vec& idx) {
    // Strict < with panels visited in increasing code order keeps the lowest index on ties.
    Vec better = s < score;
    score = Vec::blendv(score, s, better);
    index = Vec::blendv(index, idx, better);
  }

  // Horizontal minimum over the lanes; among equal scores the lowest code index wins.
  inline RowBest reduce() const {
    alignas(64) float s[kVecWidth];
    alignas(64) float i[kVecWidth];
    score.store(s);
    index.store(i);
    RowBest best{s[0], static_cast<int32_t>(i[0])};
    for (int l = 1; l < kVecWidth; ++l) {
      int32_t li = static_cast<int32_t>(i[l]);
      if (s[l] < best.score || (s[l] == best.score && li < best.index)) best = {s[l], li};
    }
    return best;
  }
};

inline Vec lane_iota() {
  alignas(64) float v[kVecWidth];
  for (int l = 0; l < kVecWidth; ++l) v[l] = static_cast<float>(l);
  return Vec::loadu(v);
}

// Scores of R rows against NP consecutive panels (NP * W codes), merged into best[R].
//   z      [R, D] row-major with row stride ldz;  panel [NP][D][W];  norms [NP * W]
template <int R, int NP>
inline void micro_tile(const float* z, int64_t ldz, int64_t D, const float* panel, const float* norms,
                       float first_code, const Vec& iota, LaneBest* best) {
  Vec acc[R][NP];
  for (int p = 0; p < NP; ++p) {
    Vec n = Vec::loadu(norms + p * kVecWidth);
    for (int r = 0; r < R; ++r) acc[r][p] = n;
  }
  const int64_t panel_stride = D * kVecWidth;
  for (int64_t d = 0; d < D; ++d) {
    Vec c[NP];
    for (int p = 0; p < NP; ++p) c[p] = Vec::loadu(panel + p * panel_stride + d * kVecWidth);
    for (int r = 0; r < R; ++r) {
      Vec zb(z[r * ldz + d]);
      for (int p = 0; p < NP; ++p) acc[r][p] = at::vec::fmadd(zb, c[p], acc[r][p]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int p = 0; p < NP; ++p) {
      best[r].merge(acc[r][p], iota + Vec(first_code + static_cast<float>(p * kVecWidth)));
    }
  }
}

// R rows against panels [p0, p1): running minimum in registers, then one horizontal reduce.
template <int R>
inline void scan_rows(const float* z, int64_t ldz, int64_t D, const float* panels, const float* norms,
                      int64_t p0, int64_t p1, RowBest* out) {
  const Vec iota = lane_iota();
  LaneBest best[R];
  const int64_t panel_stride = D * kVecWidth;
  int64_t p = p0;
  for (; p + 2 <= p1; p += 2) {
    micro_tile<R, 2>(z, ldz, D, panels + p * panel_stride, norms + p * kVecWidth,
                     static_cast<float>(p * kVecWidth), iota, best);
  }
  if (p < p1) {
    micro_tile<R, 1>(z, ldz, D, panels + p * panel_stride, norms + p * kVecWidth,
                     static_cast<float>(p * kVecWidth), iota, best);
  }
  for (int r = 0; r < R; ++r) {
    RowBest b = best[r].reduce();
    // Code blocks arrive in increasing order: strict < keeps the earlier (lower) index.
    if (b.score < out[r].score) out[r] = b;
  }
}

template <int R>
inline void scan_rows_dispatch(int rows, const float* z, int64_t ldz, int64_t D, const float* panels,
                               const float* norms, int64_t p0, int64_t p1, RowBest* out) {
  if constexpr (R > 0) {
    if (rows == R) return scan_rows<R>(z, ldz, D, panels, norms, p0, p1, out);
    return scan_rows_dispatch<R - 1>(rows, z, ldz, D, panels, norms, p0, p1, out);
  }
}

// Nearest code for rows [0, n) of z (fp32 row-major, stride ldz) -> index[0, n). For each
// code block of `panels_per_block` panels (sized to stay in L2) every group of kRows rows
// scans it; `best` is caller scratch of n entries.
inline void argmin_rows(const float* z, int64_t n, int64_t ldz, int64_t D, const float* panels,
                        const float* norms, int64_t num_panels, int64_t panels_per_block,
                        RowBest* best, int64_t* index) {
  for (int64_t i = 0; i < n; ++i) best[i] = {std::numeric_limits<float>::infinity(), 0};
  for (int64_t p0 = 0; p0 < num_panels; p0 += panels_per_block) {
    const int64_t p1 = std::min(num_panels, p0 + panels_per_block);
    for (int64_t i = 0; i < n; i += kRows) {
      const int rows = static_cast<int>(std::min<int64_t>(kRows, n - i));
      scan_rows_dispatch<kRows>(rows, z + i * ldz, ldz, D, panels, norms, p0, p1, best + i);
    }
  }
  for (int64_t i = 0; i < n; ++i) index[i] = best[i].index;
}

}  // namespace
