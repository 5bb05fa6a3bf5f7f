// Every wmfast op schema, defined once. Kernels register implementations for these
// schemas with TORCH_LIBRARY_IMPL in their own files (CPU here, CUDA from Python/Triton).
#include <torch/library.h>

TORCH_LIBRARY(wmfast, m) {
  // vq_lookup: nearest codebook row by squared L2 (ties -> lowest index).
  //   z [..., D], codebook [K, D] -> (indices int64 [...], quantized [..., D], distances fp32 [...])
  m.def("vq_lookup(Tensor z, Tensor codebook) -> (Tensor, Tensor, Tensor)");
  // pair_attention: window t (0..T-2) = the 2P tokens of frames t and t+1, full attention inside it.
  //   q, k, v [B, T, P, H, D] -> (out [B, T-1, 2P, H, D], or with pool=True the mean over the
  //   window's queries [B, T-1, H, D]; lse [B, H, T-1, 2P], fp32 (fp64 for fp64 inputs)).
  //   scale defaults to D^-0.5. See wmfast/ops/pair_attention.py.
  m.def("pair_attention(Tensor q, Tensor k, Tensor v, bool pool=False, float? scale=None) -> (Tensor, Tensor)");
  //   grad is d(loss)/d(out); out and lse come from the forward -> (dq, dk, dv)
  m.def("pair_attention_backward(Tensor grad, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, "
        "bool pool, float scale) -> (Tensor, Tensor, Tensor)");
}
