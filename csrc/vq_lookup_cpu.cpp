// CPU kernel of wmfast::vq_lookup (schema in ops.cpp): nearest codebook row by squared L2.
//
//   z [..., D], codebook [K, D] -> (indices int64 [...], quantized [..., D], distances fp32 [...])
//
// The N x K distance matrix is never formed. The codebook is packed once into SIMD panels
// (vq_lookup_kernel.h); rows are split into blocks over threads (at::parallel_for); each
// block scans the codebook in L2-sized code blocks with the running minimum in registers.
// Extra memory: the packed codebook (K x D fp32) and, for non-fp32 z, one fp32 row block
// per thread. Distances are recomputed directly as sum((z - c)^2) for the winning code only,
// so they carry no cancellation error from the ||c||^2 - 2 z.c expansion used for the search.
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "vq_lookup_cpu.h"
#include "vq_lookup_kernel.h"

namespace wmfast::vq {
namespace {

void argmin_rows_default(const float* z, int64_t n, int64_t ldz, int64_t D, const float* panels, const float* norms,
                         int64_t num_panels, int64_t panels_per_block, int64_t* index) {
  std::vector<RowBest> best(n);
  argmin_rows(z, n, ldz, D, panels, norms, num_panels, panels_per_block, best.data(), index);
}

// AVX2+FMA when the CPU has it, unless ATEN_CPU_CAPABILITY=default asks for the portable
// build (PyTorch's own switch, so one variable pins both ATen's kernels and ours).
ArgminKernel choose_kernel() {
  const char* want = std::getenv("ATEN_CPU_CAPABILITY");
  const bool force_default = want != nullptr && std::string(want) == "default";
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
  ArgminKernel avx2 = avx2_kernel();
  if (!force_default && avx2.width > 0 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    return avx2;
  }
#endif
  return {"default", kVecWidth, &argmin_rows_default};
}

struct PackedCodebook {
  int64_t width = 0, num_panels = 0;
  std::vector<float> panels;  // [P, D, W]: -2 * c, transposed per panel
  std::vector<float> norms;   // [P * W]: ||c||^2, +inf on padding codes
  bool finite = true;
};

template <typename scalar_t>
PackedCodebook pack_codebook(const scalar_t* cb, int64_t K, int64_t D, int64_t width) {
  PackedCodebook pc;
  pc.width = width;
  pc.num_panels = (K + width - 1) / width;
  pc.panels.assign(pc.num_panels * D * width, 0.f);
  pc.norms.assign(pc.num_panels * width, std::numeric_limits<float>::infinity());
  std::atomic<bool> finite{true};
  at::parallel_for(0, K, 256, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t p = k / width, lane = k % width;
      float* dst = pc.panels.data() + p * D * width + lane;
      double norm = 0.0;  // a double sum keeps ||c||^2 exact to fp32 rounding for any D
      for (int64_t d = 0; d < D; ++d) {
        const float c = static_cast<float>(cb[k * D + d]);
        dst[d * width] = -2.f * c;
        norm += static_cast<double>(c) * c;
      }
      pc.norms[k] = static_cast<float>(norm);
      if (!std::isfinite(pc.norms[k])) finite = false;
    }
  });
  pc.finite = finite;
  return pc;
}

// Rows per parallel task: a multiple of the kernel's row group, small enough to give every
// thread many tasks to balance, large enough that each task amortises its code-block loads.
int64_t rows_per_task(int64_t N) {
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  int64_t rows = (N + 16 * threads - 1) / (16 * threads);
  rows = (rows + kRows - 1) / kRows * kRows;
  return std::clamp<int64_t>(rows, kRows, 40 * kRows);
}

// Code panels per block: about 128 KiB of packed codes, so a block stays in L2 while every
// row group of a task scans it. Even, so the two-panel micro-tile covers whole blocks.
int64_t panels_per_block(int64_t D, int64_t width) {
  int64_t p = (128 * 1024) / std::max<int64_t>(1, D * width * int64_t(sizeof(float)));
  p = std::max<int64_t>(2, p - p % 2);
  return p;
}

// Nearest code per row -> index, and, while the row and its code are in cache, the code
// copied to quantized and the direct squared distance.
template <typename scalar_t>
bool search_rows(const at::Tensor& z2, const at::Tensor& codebook, const PackedCodebook& pc,
                 const ArgminKernel& kernel, int64_t* index, scalar_t* quantized, float* dist) {
  const int64_t N = z2.size(0), D = z2.size(1);
  const scalar_t* z = z2.const_data_ptr<scalar_t>();
  const scalar_t* cb = codebook.const_data_ptr<scalar_t>();
  const int64_t task_rows = rows_per_task(N);
  const int64_t ppb = panels_per_block(D, pc.width);
  std::atomic<bool> finite{true};
  const int64_t tasks = (N + task_rows - 1) / task_rows;
  // Threads claim row tasks from a shared counter instead of a fixed split, so a thread that
  // the OS delays (busy or virtualised CPUs) leaves its share to the others.
  std::atomic<int64_t> next_task{0};
  const int64_t workers = std::min<int64_t>(tasks, std::max<int64_t>(1, at::get_num_threads()));
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    std::vector<float> rows_f32;  // only used when z is not fp32
    for (int64_t t = next_task++; t < tasks; t = next_task++) {
      const int64_t r0 = t * task_rows, n = std::min(task_rows, N - r0);
      const float* zf;
      if constexpr (std::is_same_v<scalar_t, float>) {
        zf = z + r0 * D;
      } else {
        rows_f32.resize(n * D);
        for (int64_t i = 0; i < n * D; ++i) rows_f32[i] = static_cast<float>(z[r0 * D + i]);
        zf = rows_f32.data();
      }
      kernel.argmin(zf, n, D, D, pc.panels.data(), pc.norms.data(), pc.num_panels, ppb, index + r0);
      for (int64_t i = 0; i < n; ++i) {
        const scalar_t* c = cb + index[r0 + i] * D;
        std::memcpy(quantized + (r0 + i) * D, c, D * sizeof(scalar_t));
        float s = 0.f;
        for (int64_t d = 0; d < D; ++d) {
          const float diff = zf[i * D + d] - static_cast<float>(c[d]);
          s += diff * diff;
        }
        dist[r0 + i] = s;
        if (!std::isfinite(s)) finite = false;
      }
    }
  });
  return finite;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> vq_lookup_cpu(const at::Tensor& z, const at::Tensor& codebook) {
  TORCH_CHECK(codebook.dim() == 2, "wmfast.vq_lookup: codebook must be [K, D], got shape ", codebook.sizes());
  const int64_t K = codebook.size(0), D = codebook.size(1);
  TORCH_CHECK(K >= 1, "wmfast.vq_lookup: the codebook is empty (K = 0)");
  TORCH_CHECK(D >= 1, "wmfast.vq_lookup: the code dimension D must be >= 1");
  TORCH_CHECK(K < (int64_t(1) << 24), "wmfast.vq_lookup: at most 2^24 codes are supported, got K = ", K);
  TORCH_CHECK(z.dim() >= 1 && z.size(-1) == D, "wmfast.vq_lookup: z must end in the code dimension D = ", D,
              ", got shape ", z.sizes());
  TORCH_CHECK(z.scalar_type() == codebook.scalar_type(), "wmfast.vq_lookup: z and codebook must have the same dtype, got ",
              z.scalar_type(), " and ", codebook.scalar_type());
  TORCH_CHECK(at::isFloatingType(z.scalar_type()) && !at::isComplexType(z.scalar_type()),
              "wmfast.vq_lookup: z must be floating point, got ", z.scalar_type());

  std::vector<int64_t> lead(z.sizes().begin(), z.sizes().end() - 1);
  std::vector<int64_t> out_shape = lead;
  out_shape.push_back(D);
  at::Tensor z2 = z.reshape({-1, D}).contiguous();
  at::Tensor cb = codebook.contiguous();
  const int64_t N = z2.size(0);
  at::Tensor index = at::empty({N}, z.options().dtype(at::kLong));
  at::Tensor dist = at::empty({N}, z.options().dtype(at::kFloat));
  at::Tensor quantized = at::empty({N, D}, codebook.options());
  if (N == 0) {
    return {index.view(lead), quantized.view(out_shape), dist.view(lead)};
  }
  const ArgminKernel kernel = choose_kernel();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "wmfast_vq_lookup_cpu", [&] {
    PackedCodebook pc = pack_codebook<scalar_t>(cb.const_data_ptr<scalar_t>(), K, D, kernel.width);
    TORCH_CHECK(pc.finite, "wmfast.vq_lookup: codebook contains NaN or Inf (or a code whose squared norm overflows)");
    const bool finite = search_rows<scalar_t>(z2, cb, pc, kernel, index.data_ptr<int64_t>(),
                                              quantized.data_ptr<scalar_t>(), dist.data_ptr<float>());
    TORCH_CHECK(finite, "wmfast.vq_lookup: z contains NaN or Inf (or a distance overflows float32)");
  });
  return {index.view(lead), quantized.view(out_shape), dist.view(lead)};
}

}  // namespace
}  // namespace wmfast::vq

TORCH_LIBRARY_IMPL(wmfast, CPU, m) { m.impl("vq_lookup", &wmfast::vq::vq_lookup_cpu); }
