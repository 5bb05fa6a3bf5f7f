// Every wmfast op schema, defined once. Kernels register implementations for these
// schemas with TORCH_LIBRARY_IMPL in their own files (CPU here, CUDA from Python/Triton).
#include <torch/library.h>

TORCH_LIBRARY(wmfast, m) {
  // vq_lookup: nearest codebook row by squared L2 (ties -> lowest index).
  //   z [..., D], codebook [K, D] -> (indices int64 [...], quantized [..., D], distances fp32 [...])
  m.def("vq_lookup(Tensor z, Tensor codebook) -> (Tensor, Tensor, Tensor)");
  // pair_attention schemas are added by the pair-attention op (see wmfast/ops/pair_attention.py).
}
