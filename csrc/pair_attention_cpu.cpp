// wmfast::pair_attention and wmfast::pair_attention_backward on the CPU.
//
// Inputs q, k, v [B, T, P, H, D]; window t (0..T-2) is the 2P tokens of frames t and t+1 with
// full attention inside it. We work head-major ([B*H, T, P, D], q pre-scaled) and give each
// (row, query frame) to one task: its three score blocks (keys of frames t-1, t, t+1) are
// computed once and serve both windows the frame belongs to (merged by log-sum-exp). With
// pool=True the forward never forms the output rows: the mean over a window's queries is the
// column sums of its probabilities times V; and the backward uses that dO is the same for
// every query of a window (dP is rank one, dV an outer product). Frame-level partial results
// (pooled halves, dK/dV per key block, column sums) are combined afterwards in a fixed order,
// so the results are deterministic.
#include <cmath>
#include <cstdlib>
#include <optional>
#include <string>
#include <type_traits>
#include <tuple>
#include <vector>

#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/torch.h>

#include "pair_attention_cpu.h"

#define PAIR_ATTENTION_NS wmfast_pair_attention_default
#include "pair_attention_kernel.h"
#undef PAIR_ATTENTION_NS

namespace wmfast_pair_attention {
namespace {

using at::Tensor;

template <typename scalar_t>
Kernels<scalar_t> default_kernels() {
  Kernels<scalar_t> k;
  k.forward = &wmfast_pair_attention_default::forward_task<scalar_t>;
  k.backward = &wmfast_pair_attention_default::backward_task<scalar_t>;
  return k;
}

bool cpu_has_avx2() {
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

// ATEN_CPU_CAPABILITY=default asks for the portable build, as it does for ATen's own kernels.
bool portable_requested() {
  const char* cap = std::getenv("ATEN_CPU_CAPABILITY");
  return cap != nullptr && std::string(cap) == "default";
}

template <typename scalar_t>
Kernels<scalar_t> pick_kernels() {
  Kernels<scalar_t> fast;
  if constexpr (std::is_same_v<scalar_t, float>) fast = avx2_kernels_float();
  else fast = avx2_kernels_double();
  return (fast.forward && cpu_has_avx2() && !portable_requested()) ? fast : default_kernels<scalar_t>();
}

void check_inputs(const Tensor& q, const Tensor& k, const Tensor& v) {
  TORCH_CHECK(q.dim() == 5, "pair_attention: q must be [B, T, P, H, D], got ", q.sizes());
  TORCH_CHECK(k.sizes() == q.sizes() && v.sizes() == q.sizes(),
              "pair_attention: q, k, v must have the same shape, got ", q.sizes(), ", ", k.sizes(), ", ", v.sizes());
  TORCH_CHECK(q.size(1) >= 2, "pair_attention: needs at least 2 frames, got T=", q.size(1));
  TORCH_CHECK(q.is_floating_point() && k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(),
              "pair_attention: q, k, v must share one floating dtype");
}

at::ScalarType compute_type(const Tensor& q) {
  return q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// [B, T, P, H, D] -> contiguous [B, H, T, P, D] in the compute dtype
Tensor head_major(const Tensor& x, at::ScalarType ct) {
  return x.detach().to(ct).permute({0, 3, 1, 2, 4}).contiguous();
}

template <typename scalar_t>
std::tuple<Tensor, Tensor> forward_impl(const Tensor& q, const Tensor& k, const Tensor& v, bool pool, double scale) {
  const int64_t B = q.size(0), T = q.size(1), P = q.size(2), H = q.size(3), D = q.size(4), W = T - 1;
  const auto ct = compute_type(q);
  Tensor qh = head_major(q, ct).mul(scale);
  Tensor kt = head_major(k, ct).transpose(-1, -2).contiguous();  // [B, H, T, D, P]
  Tensor vh = head_major(v, ct);
  Tensor lse = at::empty({B, H, W, 2 * P}, qh.options());
  Tensor out = pool ? at::empty({B, H, T, 2, D}, qh.options()) : at::empty({B, H, W, 2 * P, D}, qh.options());
  const Shape sh{B * H, T, P, D};
  const auto kern = pick_kernels<scalar_t>();
  const scalar_t *qp = qh.data_ptr<scalar_t>(), *ktp = kt.data_ptr<scalar_t>(), *vp = vh.data_ptr<scalar_t>();
  scalar_t *op = out.data_ptr<scalar_t>(), *lp = lse.data_ptr<scalar_t>();
  at::parallel_for(0, sh.N * T, 1, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> scratch(forward_scratch(P, D));
    for (int64_t task = begin; task < end; ++task)
      kern.forward(sh, task / T, task % T, qp, ktp, vp, pool, pool ? nullptr : op, pool ? op : nullptr, lp,
                   scratch.data());
  });
  if (pool) {
    // window w = right half of query frame w + left half of query frame w + 1, mean over 2P
    Tensor pooled = (out.select(3, 0).narrow(2, 0, W) + out.select(3, 1).narrow(2, 1, W)) / double(2 * P);
    out = pooled.permute({0, 2, 1, 3});  // [B, W, H, D]
  } else {
    out = out.permute({0, 2, 3, 1, 4});  // [B, W, 2P, H, D]
  }
  const auto lse_type = ct == at::kDouble ? at::kDouble : at::kFloat;
  return {out.to(q.scalar_type()).contiguous(), lse.to(lse_type)};
}

// dK or dV per key frame from the per-query-frame key blocks [B, H, T, 3, P, D]: key frame f
// collects block 1 of query frame f, block 0 of frame f + 1 and block 2 of frame f - 1.
Tensor gather_key_blocks(const Tensor& blocks) {
  const int64_t T = blocks.size(2);
  Tensor g = blocks.select(3, 1).clone();
  g.narrow(2, 0, T - 1).add_(blocks.select(3, 0).narrow(2, 1, T - 1));
  g.narrow(2, 1, T - 1).add_(blocks.select(3, 2).narrow(2, 0, T - 1));
  return g;
}

template <typename scalar_t>
std::tuple<Tensor, Tensor, Tensor> backward_impl(const Tensor& grad, const Tensor& q, const Tensor& k, const Tensor& v,
                                                 const Tensor& out, const Tensor& lse, bool pool, double scale) {
  const int64_t B = q.size(0), T = q.size(1), P = q.size(2), H = q.size(3), D = q.size(4), W = T - 1;
  const auto ct = compute_type(q);
  Tensor qh = head_major(q, ct).mul(scale);
  Tensor kh = head_major(k, ct);
  Tensor kt = kh.transpose(-1, -2).contiguous();
  Tensor vh = head_major(v, ct);
  Tensor lse_c = lse.to(ct).contiguous();
  Tensor g, delta, vt, dv3, col;
  if (pool) {
    g = grad.detach().to(ct).permute({0, 2, 1, 3}).contiguous().div(double(2 * P));  // [B, H, W, D]
    col = at::empty({B, H, T, 4, P}, qh.options());
  } else {
    g = head_major(grad, ct);                                                   // [B, H, W, 2P, D]
    delta = (g * head_major(out, ct)).sum(-1).contiguous();                    // [B, H, W, 2P]
    vt = vh.transpose(-1, -2).contiguous();
    dv3 = at::empty({B, H, T, 3, P, D}, qh.options());
  }
  Tensor dq = at::empty({B, H, T, P, D}, qh.options());
  Tensor dk3 = at::zeros({B, H, T, 3, P, D}, qh.options());
  const Shape sh{B * H, T, P, D};
  const auto kern = pick_kernels<scalar_t>();
  auto ptr = [](const Tensor& x) { return x.defined() ? x.data_ptr<scalar_t>() : nullptr; };
  const scalar_t *qp = ptr(qh), *ktp = ptr(kt), *vp = ptr(vh), *vtp = ptr(vt), *gp = ptr(g), *dp = ptr(delta),
                 *lp = ptr(lse_c);
  scalar_t *dqp = ptr(dq), *dk3p = ptr(dk3), *dv3p = ptr(dv3), *colp = ptr(col);
  // [N, T*P, D] views: the keys of frames t-1..t+1 are one contiguous row range
  Tensor q_rows = qh.view({sh.N, T * P, D}), k_rows = kh.view({sh.N, T * P, D});
  Tensor dq_rows = dq.view({sh.N, T, P, D}), dk3_rows = dk3.view({sh.N, T, 3 * P, D});
  // dQ and dK: BLAS per frame for large P; for small P the kernel accumulates them row by row
  // (a BLAS call per frame costs more than it saves there).
  const bool blas = P >= 128;
  at::parallel_for(0, sh.N * T, 1, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> scratch(backward_scratch(P, D));
    Tensor ds = at::empty({P, 3 * P}, qh.options());
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / T, t = task % T;
      kern.backward(sh, n, t, qp, ktp, vp, vtp, gp, dp, lp, pool, ds.data_ptr<scalar_t>(), blas ? nullptr : dqp,
                    dk3p, dv3p, colp, scratch.data());
      if (!blas) continue;
      const int64_t b_lo = t > 0 ? 0 : 1, b_hi = t < T - 1 ? 3 : 2;
      Tensor ds_valid = ds.narrow(1, b_lo * P, (b_hi - b_lo) * P);
      Tensor dq_t = dq_rows[n][t];
      at::mm_out(dq_t, ds_valid, k_rows[n].narrow(0, (t - 1 + b_lo) * P, (b_hi - b_lo) * P));
      Tensor dk_valid = dk3_rows[n][t].narrow(0, b_lo * P, (b_hi - b_lo) * P);
      at::mm_out(dk_valid, ds_valid.t(), q_rows[n].narrow(0, t * P, P));
    }
  });
  dq.mul_(scale);
  Tensor dk = gather_key_blocks(dk3);
  Tensor dv;
  if (pool) {
    // keys of frame w in window w: right block 1 of query frame w + left block 0 of frame w + 1
    Tensor col_first = col.select(3, 2).narrow(2, 0, W) + col.select(3, 0).narrow(2, 1, W);   // [B, H, W, P]
    Tensor col_second = col.select(3, 3).narrow(2, 0, W) + col.select(3, 1).narrow(2, 1, W);
    dv = at::zeros_like(vh);
    dv.narrow(2, 0, W).add_(col_first.unsqueeze(-1) * g.unsqueeze(-2));
    dv.narrow(2, 1, W).add_(col_second.unsqueeze(-1) * g.unsqueeze(-2));
  } else {
    dv = gather_key_blocks(dv3);
  }
  auto back = [&](const Tensor& x) { return x.permute({0, 2, 3, 1, 4}).to(q.scalar_type()).contiguous(); };
  return {back(dq), back(dk), back(dv)};
}

std::tuple<Tensor, Tensor> pair_attention_cpu(const Tensor& q, const Tensor& k, const Tensor& v, bool pool,
                                              std::optional<double> scale) {
  at::NoGradGuard no_grad;  // the op's autograd is registered from Python; inner ops need none
  check_inputs(q, k, v);
  const double s = scale.has_value() ? *scale : 1.0 / std::sqrt(double(q.size(4)));
  if (compute_type(q) == at::kDouble) return forward_impl<double>(q, k, v, pool, s);
  return forward_impl<float>(q, k, v, pool, s);
}

std::tuple<Tensor, Tensor, Tensor> pair_attention_backward_cpu(const Tensor& grad, const Tensor& q, const Tensor& k,
                                                               const Tensor& v, const Tensor& out, const Tensor& lse,
                                                               bool pool, double scale) {
  at::NoGradGuard no_grad;
  check_inputs(q, k, v);
  if (compute_type(q) == at::kDouble) return backward_impl<double>(grad, q, k, v, out, lse, pool, scale);
  return backward_impl<float>(grad, q, k, v, out, lse, pool, scale);
}

}  // namespace
}  // namespace wmfast_pair_attention

TORCH_LIBRARY_IMPL(wmfast, CPU, m) {
  m.impl("pair_attention", &wmfast_pair_attention::pair_attention_cpu);
  m.impl("pair_attention_backward", &wmfast_pair_attention::pair_attention_backward_cpu);
}
