// Pair-window attention, CPU kernel body: plain loops over raw pointers, written so the
// compiler vectorises the inner loops. Included by pair_attention_cpu.cpp (default target)
// and pair_attention_cpu_avx2.cpp (AVX2 + FMA) inside a namespace each; see
// pair_attention_cpu.cpp for the layouts and the formulas.
//
// One task = one query frame t of one (batch, head) row n. It computes the frame's three score
// blocks (keys of frames t-1, t, t+1) once per query row and derives both windows it belongs
// to from them: window t-1 ("left": blocks 0, 1) and window t ("right": blocks 1, 2), merged by
// log-sum-exp. Every task writes only rows it owns, so results are deterministic.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "pair_attention_cpu.h"

namespace PAIR_ATTENTION_NS {

using wmfast_pair_attention::Shape;
using wmfast_pair_attention::forward_scratch;
using wmfast_pair_attention::backward_scratch;

// 32-byte vectors (GCC/Clang vector extensions): AVX registers where the file is compiled for
// AVX2, pairs of SSE registers otherwise.
template <typename scalar_t>
struct Vec {
  typedef scalar_t type __attribute__((vector_size(32)));
  static constexpr int64_t size = 32 / sizeof(scalar_t);
};

template <typename scalar_t>
inline typename Vec<scalar_t>::type vload(const scalar_t* p) {
  typename Vec<scalar_t>::type v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <typename scalar_t>
inline void vstore(scalar_t* p, typename Vec<scalar_t>::type v) {
  std::memcpy(p, &v, sizeof(v));
}

template <typename scalar_t>
inline scalar_t hsum(typename Vec<scalar_t>::type v) {
  scalar_t s = 0;
  for (int64_t i = 0; i < Vec<scalar_t>::size; ++i) s += v[i];
  return s;
}

// exp on 8 floats for arguments <= 0 (scores minus a max or a log-sum-exp): round-to-nearest
// range reduction by ln 2 with the 1.5 * 2^23 trick, degree-5 minimax polynomial (~2 ulp);
// arguments below -87 give ~0 (the true value underflows float anyway). NaN passes through.
inline Vec<float>::type vexp(Vec<float>::type x) {
  typedef Vec<float>::type vf;
  typedef int32_t vi __attribute__((vector_size(32)));
  const vf lo = vf{} - 87.0f;
  x = x < lo ? lo : x;
  const float magic = 12582912.0f;                    // 1.5 * 2^23: adding it rounds to an integer
  vf fx = x * 1.44269504088896341f + magic;
  vf n = fx - magic;
  vf r = x - n * 0.693359375f + n * 2.12194440e-4f;  // x - n ln 2, in two parts
  vf p = vf{} + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  vf y = p * r * r + r + 1.0f;
  vi bits;
  std::memcpy(&bits, &fx, sizeof(bits));
  vi e = (bits - 0x4B400000 + 127) << 23;             // n + 127 in the exponent field
  vf pow2n;
  std::memcpy(&pow2n, &e, sizeof(e));
  return y * pow2n;
}

// out[j] = exp(s[j] - shift); returns the sum. Vectorised for float, plain for double.
template <typename scalar_t>
inline scalar_t exp_shift(const scalar_t* s, scalar_t shift, scalar_t* out, int64_t P) {
  scalar_t sum = 0;
  for (int64_t j = 0; j < P; ++j) {
    out[j] = std::exp(s[j] - shift);
    sum += out[j];
  }
  return sum;
}

inline float exp_shift(const float* s, float shift, float* out, int64_t P) {
  typedef Vec<float>::type vf;
  vf acc = vf{};
  int64_t j = 0;
  for (; j + 8 <= P; j += 8) {
    vf e = vexp(vload(s + j) - shift);
    vstore(out + j, e);
    acc += e;
  }
  float sum = hsum<float>(acc);
  for (; j < P; ++j) {
    out[j] = std::exp(s[j] - shift);
    sum += out[j];
  }
  return sum;
}

// In place s[j] <- exp(s[j] - shift); returns the sum.
template <typename scalar_t>
inline scalar_t exp_shift_sum(scalar_t* s, int64_t P, scalar_t shift) {
  return exp_shift(s, shift, s, P);
}

template <typename scalar_t>
inline scalar_t row_max(const scalar_t* s, int64_t P) {
  typedef typename Vec<scalar_t>::type V;
  constexpr int64_t L = Vec<scalar_t>::size;
  scalar_t m = -std::numeric_limits<scalar_t>::infinity();
  int64_t j = 0;
  if (P >= L) {
    V acc = vload(s);
    for (j = L; j + L <= P; j += L) {
      V x = vload(s + j);
      acc = x > acc ? x : acc;
    }
    for (int64_t i = 0; i < L; ++i) m = std::max(m, acc[i]);
  }
  for (; j < P; ++j) m = std::max(m, s[j]);
  return m;
}

template <typename scalar_t>
inline scalar_t log_add_exp(scalar_t a, scalar_t b) {
  const scalar_t m = std::max(a, b);
  return m + std::log(std::exp(a - m) + std::exp(b - m));
}

template <typename scalar_t>
inline scalar_t dot(const scalar_t* a, const scalar_t* b, int64_t n) {
  typedef typename Vec<scalar_t>::type V;
  constexpr int64_t L = Vec<scalar_t>::size;
  V acc = V{};
  int64_t i = 0;
  for (; i + L <= n; i += L) acc += vload(a + i) * vload(b + i);
  scalar_t s = hsum<scalar_t>(acc);
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// s[j] = sum_d q[d] * kt[d * P + j] for j < P (kt is one frame's keys transposed, [D, P]).
template <typename scalar_t>
inline void scores(const scalar_t* q, const scalar_t* kt, int64_t P, int64_t D, scalar_t* s) {
  typedef typename Vec<scalar_t>::type V;
  constexpr int64_t L = Vec<scalar_t>::size;
  int64_t j = 0;
  for (; j + 2 * L <= P; j += 2 * L) {  // two accumulators stay in registers across d
    V a0 = V{}, a1 = V{};
    for (int64_t d = 0; d < D; ++d) {
      a0 += q[d] * vload(kt + d * P + j);
      a1 += q[d] * vload(kt + d * P + j + L);
    }
    vstore(s + j, a0);
    vstore(s + j + L, a1);
  }
  for (; j < P; ++j) {
    scalar_t acc = 0;
    for (int64_t d = 0; d < D; ++d) acc += q[d] * kt[d * P + j];
    s[j] = acc;
  }
}

// y[j] = a * x[j]
template <typename scalar_t>
inline void scale_into(const scalar_t* x, scalar_t a, scalar_t* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = a * x[i];
}

// y[d] += a * x[d]
template <typename scalar_t>
inline void axpy(scalar_t a, const scalar_t* x, scalar_t* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

// out[d] = sum_j w[j] * v[j * D + d]  (v one frame [P, D])
template <typename scalar_t>
inline void weighted_rows(const scalar_t* w, const scalar_t* v, int64_t P, int64_t D, scalar_t* out) {
  for (int64_t d = 0; d < D; ++d) out[d] = 0;
  for (int64_t j = 0; j < P; ++j) axpy(w[j], v + j * D, out, D);
}

// Forward of one query frame.
//   q (pre-scaled), k, v: [N, T, P, D]; kt: [N, T, D, P]
//   unpooled: out [N, W, 2P, D]; pooled: part [N, T, 2, D] (this frame's contribution to
//   window t and to window t-1; pooled = (part[w, 0] + part[w + 1, 1]) / 2P outside)
//   lse: [N, W, 2P]
template <typename scalar_t>
void forward_task(const Shape& sh, int64_t n, int64_t t, const scalar_t* q, const scalar_t* kt,
                  const scalar_t* v, bool pool, scalar_t* out, scalar_t* part, scalar_t* lse,
                  scalar_t* scratch) {
  const int64_t P = sh.P, D = sh.D, T = sh.T, W = sh.W();
  const bool has_prev = t > 0, has_next = t < T - 1;
  for (int64_t j = 0; j < forward_scratch(P, D); ++j) scratch[j] = 0;
  scalar_t* s = scratch;              // [3, P] scores -> exp(s - block max)
  scalar_t* zL0 = s + 3 * P;                 // column sums of the normalised probabilities
  scalar_t* zL1 = zL0 + P;
  scalar_t* zR1 = zL1 + P;
  scalar_t* zR2 = zR1 + P;
  scalar_t* o = zR2 + P;                     // [3, D] unnormalised block outputs
  const scalar_t inf = std::numeric_limits<scalar_t>::infinity();

  auto frame = [&](const scalar_t* x, int64_t f) { return x + ((n * T + f) * P) * D; };
  const int64_t b_lo = has_prev ? 0 : 1, b_hi = has_next ? 3 : 2;

  for (int64_t i = 0; i < P; ++i) {
    const scalar_t* qi = frame(q, t) + i * D;
    scalar_t m[3] = {-inf, -inf, -inf}, l[3] = {0, 0, 0}, lse_b[3] = {-inf, -inf, -inf};
    for (int64_t b = b_lo; b < b_hi; ++b) {
      scalar_t* sb = s + b * P;
      scores(qi, frame(kt, t - 1 + b), P, D, sb);
      m[b] = row_max(sb, P);
      l[b] = exp_shift_sum(sb, P, m[b]);
      lse_b[b] = m[b] + std::log(l[b]);
    }
    scalar_t cL0 = 0, cL1 = 0, cR1 = 0, cR2 = 0;
    if (has_prev) {
      const scalar_t lseL = log_add_exp(lse_b[0], lse_b[1]);
      cL0 = std::exp(m[0] - lseL);
      cL1 = std::exp(m[1] - lseL);
      lse[(n * W + t - 1) * 2 * P + P + i] = lseL;
    }
    if (has_next) {
      const scalar_t lseR = log_add_exp(lse_b[1], lse_b[2]);
      cR1 = std::exp(m[1] - lseR);
      cR2 = std::exp(m[2] - lseR);
      lse[(n * W + t) * 2 * P + i] = lseR;
    }
    if (pool) {
      if (has_prev) {
        axpy(cL0, s, zL0, P);
        axpy(cL1, s + P, zL1, P);
      }
      if (has_next) {
        axpy(cR1, s + P, zR1, P);
        axpy(cR2, s + 2 * P, zR2, P);
      }
      continue;
    }
    for (int64_t b = b_lo; b < b_hi; ++b) weighted_rows(s + b * P, frame(v, t - 1 + b), P, D, o + b * D);
    if (has_prev) {
      scalar_t* dst = out + ((n * W + t - 1) * 2 * P + P + i) * D;
      for (int64_t d = 0; d < D; ++d) dst[d] = cL0 * o[d] + cL1 * o[D + d];
    }
    if (has_next) {
      scalar_t* dst = out + ((n * W + t) * 2 * P + i) * D;
      for (int64_t d = 0; d < D; ++d) dst[d] = cR1 * o[D + d] + cR2 * o[2 * D + d];
    }
  }
  if (pool) {
    scalar_t* right = part + ((n * T + t) * 2 + 0) * D;
    scalar_t* left = part + ((n * T + t) * 2 + 1) * D;
    for (int64_t d = 0; d < 2 * D; ++d) right[d] = 0;  // right and left are adjacent
    scalar_t* tmp = o;
    if (has_next) {
      weighted_rows(zR1, frame(v, t), P, D, tmp);
      axpy(scalar_t(1), tmp, right, D);
      weighted_rows(zR2, frame(v, t + 1), P, D, tmp);
      axpy(scalar_t(1), tmp, right, D);
    }
    if (has_prev) {
      weighted_rows(zL0, frame(v, t - 1), P, D, tmp);
      axpy(scalar_t(1), tmp, left, D);
      weighted_rows(zL1, frame(v, t), P, D, tmp);
      axpy(scalar_t(1), tmp, left, D);
    }
  }
}

// Backward of one query frame.
//   pooled:   grad g [N, W, D] already divided by 2P; col [N, T, 4, P] (column sums of the
//             left-window blocks 0, 1 and right-window blocks 1, 2, for dV outside)
//   unpooled: grad g [N, W, 2P, D]; delta [N, W, 2P] = rowwise dO . O; vt [N, T, D, P];
//             dv3 [N, T, 3, P, D] (this frame's queries' contribution to the keys' dV)
//   ds_rows [P, 3P]: this frame's dS against the keys of frames t-1, t, t+1 (zero where a frame
//             does not exist). dQ = dS K3 and dK3 = dS^T Q are matrix products: done outside with
//             BLAS when dq is null (large P), else here row by row into dq [N, T, P, D] (times
//             scale outside) and dk3 [N, T, 3, P, D] (small P, where a BLAS call per frame costs more
//             than it saves)
template <typename scalar_t>
void backward_task(const Shape& sh, int64_t n, int64_t t, const scalar_t* q, const scalar_t* kt,
                   const scalar_t* v, const scalar_t* vt, const scalar_t* g, const scalar_t* delta,
                   const scalar_t* lse, bool pool, scalar_t* ds_rows, scalar_t* dq, scalar_t* dk3,
                   scalar_t* dv3, scalar_t* col, scalar_t* scratch) {
  const int64_t P = sh.P, D = sh.D, T = sh.T, W = sh.W();
  const bool has_prev = t > 0, has_next = t < T - 1;
  for (int64_t j = 0; j < backward_scratch(P, D); ++j) scratch[j] = 0;
  scalar_t* s = scratch;  // [3, P] scores, then dS
  scalar_t* aL0 = s + 3 * P;     // normalised probabilities of the four (window, block) pairs
  scalar_t* aL1 = aL0 + P;
  scalar_t* aR1 = aL1 + P;
  scalar_t* aR2 = aR1 + P;
  scalar_t* u = aR2 + P;         // pooled: g . v_j per (window, block); unpooled: dO_i . v_j
  scalar_t* uL0 = u, *uL1 = u + P, *uR1 = u + 2 * P, *uR2 = u + 3 * P;
  scalar_t* colsum = u + 4 * P;  // [4, P]

  auto frame = [&](const scalar_t* x, int64_t f) { return x + ((n * T + f) * P) * D; };
  scalar_t* dv3_t = pool ? nullptr : dv3 + (n * T + t) * 3 * P * D;
  if (!pool) std::fill(dv3_t, dv3_t + 3 * P * D, scalar_t(0));

  if (pool) {  // dO is the same for every query of a window: u_j = g_w . v_j once per frame
    for (int64_t j = 0; j < P; ++j) {
      if (has_prev) {
        uL0[j] = dot(g + (t - 1) * D + n * W * D, frame(v, t - 1) + j * D, D);
        uL1[j] = dot(g + (t - 1) * D + n * W * D, frame(v, t) + j * D, D);
      }
      if (has_next) {
        uR1[j] = dot(g + t * D + n * W * D, frame(v, t) + j * D, D);
        uR2[j] = dot(g + t * D + n * W * D, frame(v, t + 1) + j * D, D);
      }
    }
  }

  for (int64_t i = 0; i < P; ++i) {
    const scalar_t* qi = frame(q, t) + i * D;
    const scalar_t* dOL = nullptr;
    const scalar_t* dOR = nullptr;
    scalar_t rL = 0, rR = 0;
    // Self block: one exp against the smaller log-sum-exp, the other window by a factor <= 1.
    const scalar_t lseL = has_prev ? lse[(n * W + t - 1) * 2 * P + P + i] : scalar_t(0);
    const scalar_t lseR = has_next ? lse[(n * W + t) * 2 * P + i] : scalar_t(0);
    scores(qi, frame(kt, t), P, D, s + P);
    if (has_prev && has_next) {
      if (lseL <= lseR) {
        exp_shift(s + P, lseL, aL1, P);
        scale_into(aL1, std::exp(lseL - lseR), aR1, P);
      } else {
        exp_shift(s + P, lseR, aR1, P);
        scale_into(aR1, std::exp(lseR - lseL), aL1, P);
      }
    } else if (has_prev) {
      exp_shift(s + P, lseL, aL1, P);
    } else {
      exp_shift(s + P, lseR, aR1, P);
    }
    if (has_prev) {
      scores(qi, frame(kt, t - 1), P, D, s);
      exp_shift(s, lseL, aL0, P);
      if (!pool) {
        dOL = g + ((n * W + t - 1) * 2 * P + P + i) * D;
        scores(dOL, frame(vt, t - 1), P, D, uL0);
        scores(dOL, frame(vt, t), P, D, uL1);
        rL = delta[(n * W + t - 1) * 2 * P + P + i];
      } else {
        rL = dot(aL0, uL0, P) + dot(aL1, uL1, P);
      }
      axpy(scalar_t(1), aL0, colsum, P);
      axpy(scalar_t(1), aL1, colsum + P, P);
    }
    if (has_next) {
      scores(qi, frame(kt, t + 1), P, D, s + 2 * P);
      exp_shift(s + 2 * P, lseR, aR2, P);
      if (!pool) {
        dOR = g + ((n * W + t) * 2 * P + i) * D;
        scores(dOR, frame(vt, t), P, D, uR1);
        scores(dOR, frame(vt, t + 1), P, D, uR2);
        rR = delta[(n * W + t) * 2 * P + i];
      } else {
        rR = dot(aR1, uR1, P) + dot(aR2, uR2, P);
      }
      axpy(scalar_t(1), aR1, colsum + 2 * P, P);
      axpy(scalar_t(1), aR2, colsum + 3 * P, P);
    }
    // dS = A * (dP - r) per window; the self block collects both windows.
    scalar_t* ds0 = ds_rows + i * 3 * P;
    scalar_t* ds1 = ds0 + P;
    scalar_t* ds2 = ds0 + 2 * P;
    for (int64_t j = 0; j < 3 * P; ++j) ds0[j] = 0;
    if (has_prev) {
      for (int64_t j = 0; j < P; ++j) ds0[j] = aL0[j] * (uL0[j] - rL);
      for (int64_t j = 0; j < P; ++j) ds1[j] = aL1[j] * (uL1[j] - rL);
    }
    if (has_next) {
      for (int64_t j = 0; j < P; ++j) ds1[j] += aR1[j] * (uR1[j] - rR);
      for (int64_t j = 0; j < P; ++j) ds2[j] = aR2[j] * (uR2[j] - rR);
    }
    if (dq != nullptr) {
      scalar_t* dqi = dq + ((n * T + t) * P + i) * D;
      scalar_t* dk3_t = dk3 + (n * T + t) * 3 * P * D;
      for (int64_t d = 0; d < D; ++d) dqi[d] = 0;
      for (int64_t b = has_prev ? 0 : 1; b < (has_next ? 3 : 2); ++b) {
        const scalar_t* ktb = frame(kt, t - 1 + b);
        const scalar_t* dsb = ds0 + b * P;
        for (int64_t d = 0; d < D; ++d) dqi[d] += dot(dsb, ktb + d * P, P);
        for (int64_t j = 0; j < P; ++j) axpy(dsb[j], qi, dk3_t + (b * P + j) * D, D);
      }
    }
    if (!pool) {  // dV_j += A_ij dO_i per window
      for (int64_t j = 0; j < P; ++j) {
        if (has_prev) {
          axpy(aL0[j], dOL, dv3_t + j * D, D);
          axpy(aL1[j], dOL, dv3_t + (P + j) * D, D);
        }
        if (has_next) {
          axpy(aR1[j], dOR, dv3_t + (P + j) * D, D);
          axpy(aR2[j], dOR, dv3_t + (2 * P + j) * D, D);
        }
      }
    }
  }
  if (pool) std::copy(colsum, colsum + 4 * P, col + (n * T + t) * 4 * P);
}

}  // namespace PAIR_ATTENTION_NS
