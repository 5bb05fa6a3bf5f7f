"""Fused nearest-code lookup: `vq_lookup(z, codebook) -> (indices, quantized, distances)`.

z [..., D], codebook [K, D] (same dtype: fp32, fp16, bf16 or fp64; accumulation in fp32).
indices int64 [...] is the nearest code by squared L2, ties to the lowest index;
quantized [..., D] = codebook[indices]; distances fp32 [...] = ||z - quantized||^2, computed
directly for the winning code. The N x K distance matrix is never formed.

One registered op, torch.ops.wmfast.vq_lookup. Implementations:
  CPU   the C++ kernel in csrc/vq_lookup_cpu.cpp (or, without the extension, a Python
        definition over the reference in wmfast/ops/reference.py);
  CUDA  the Triton kernel in wmfast.kernels.vq_lookup (loaded on first use);
  Meta  the fake implementation below, so torch.compile traces through it.
Autograd (torch.library.register_autograd): quantized is differentiable w.r.t. the codebook
(grad = index_add_ of the incoming rows), distances w.r.t. z and the codebook; indices are
integers. The straight-through estimator belongs to the module (wmfast.nn.VectorQuantizer).
"""
import torch

from wmfast.errors import WmfastError
from wmfast.ops._extension import HAS_EXTENSION
from wmfast.ops.reference import vq_lookup_reference

OP = "wmfast::vq_lookup"
# The same schema as csrc/ops.cpp; defined from Python only when the extension is absent.
SCHEMA = "(Tensor z, Tensor codebook) -> (Tensor, Tensor, Tensor)"
FLOAT_TYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
MAX_CODES = 1 << 24  # the CPU kernel carries code indices in fp32 lanes


def vq_lookup(z, codebook, *, check_finite: bool = True):
    """Nearest codebook row for every z row; see the module docstring.

    check_finite refuses NaN/Inf in z or the codebook. The C++ CPU kernel checks them for
    free while it scans (its error is reworded here); elsewhere this costs one extra pass
    (and one host sync on GPU). Skipped inside torch.compile, where the CPU kernel still
    refuses them."""
    check_vq_inputs(z, codebook)
    if not check_finite or torch.compiler.is_compiling():
        return torch.ops.wmfast.vq_lookup(z, codebook)
    if HAS_EXTENSION and z.device.type == "cpu":
        try:
            return torch.ops.wmfast.vq_lookup(z, codebook)
        except RuntimeError as e:
            first_line = str(e).splitlines()[0]
            if "NaN or Inf" in first_line:
                raise WmfastError(first_line.replace("wmfast.vq_lookup", "vq_lookup")) from None
            raise
    for name, x in (("z", z), ("codebook", codebook)):
        if not bool(torch.isfinite(x).all()):
            raise WmfastError(f"vq_lookup: {name} contains NaN or Inf")
    return torch.ops.wmfast.vq_lookup(z, codebook)


def check_vq_inputs(z, codebook):
    for name, x in (("z", z), ("codebook", codebook)):
        if not isinstance(x, torch.Tensor):
            raise WmfastError(f"vq_lookup: {name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dtype not in FLOAT_TYPES:
            raise WmfastError(f"vq_lookup: {name} must be a float tensor, got {x.dtype}")
    if codebook.dim() != 2:
        raise WmfastError(f"vq_lookup: codebook must be [K, D], got shape {tuple(codebook.shape)}")
    K, D = codebook.shape
    if K == 0:
        raise WmfastError("vq_lookup: the codebook is empty (K = 0)")
    if D == 0:
        raise WmfastError("vq_lookup: the code dimension D must be >= 1")
    if K >= MAX_CODES:
        raise WmfastError(f"vq_lookup: at most {MAX_CODES - 1} codes are supported, got K = {K}")
    if z.dim() < 1 or z.shape[-1] != D:
        raise WmfastError(f"vq_lookup: z must end in the code dimension D = {D}, got shape {tuple(z.shape)}")
    if z.dtype != codebook.dtype:
        raise WmfastError(f"vq_lookup: z and codebook must have the same dtype, got {z.dtype} and {codebook.dtype}")
    if z.device != codebook.device:
        raise WmfastError(f"vq_lookup: z and codebook must be on the same device, got {z.device} and {codebook.device}")


# -- registration ----------------------------------------------------------------------------------
if not HAS_EXTENSION:
    torch.library.define(OP, SCHEMA)

    @torch.library.impl(OP, "cpu")
    def _cpu_over_reference(z, codebook):
        with torch.no_grad():
            idx, quantized, dist = vq_lookup_reference(z, codebook)
        return idx, quantized.contiguous(), dist


@torch.library.register_kernel(OP, "cuda")
def _cuda(z, codebook):
    try:
        from wmfast.kernels.vq_lookup import vq_lookup_triton
    except ImportError:  # a CUDA build without triton: still correct, just unfused
        with torch.no_grad():
            idx, quantized, dist = vq_lookup_reference(z, codebook)
        return idx, quantized.contiguous(), dist
    return vq_lookup_triton(z, codebook)


@torch.library.register_fake(OP)
def _fake(z, codebook):
    lead, D = z.shape[:-1], codebook.shape[-1]
    return (z.new_empty(lead, dtype=torch.long), codebook.new_empty((*lead, D)),
            z.new_empty(lead, dtype=torch.float32))


def _setup_context(ctx, inputs, output):
    z, codebook = inputs
    idx, quantized, _ = output
    ctx.save_for_backward(z, idx, quantized)
    ctx.num_codes = codebook.shape[0]
    ctx.codebook_dtype = codebook.dtype


def _backward(ctx, grad_idx, grad_quantized, grad_dist):
    z, idx, quantized = ctx.saved_tensors
    D = quantized.shape[-1]
    acc = torch.float64 if quantized.dtype == torch.float64 else torch.float32
    rows = quantized.new_zeros(quantized.shape, dtype=acc)                 # [..., D]: d(loss)/d(code row)
    grad_z = None
    if grad_quantized is not None:
        rows = rows + grad_quantized.to(acc)
    if grad_dist is not None:
        # dist = ||z - c||^2: d/dz = 2 (z - c), d/dc = -2 (z - c)
        g = 2 * (z.to(acc) - quantized.to(acc)) * grad_dist.to(acc).unsqueeze(-1)
        grad_z = g.to(z.dtype) if ctx.needs_input_grad[0] else None
        rows = rows - g
    grad_codebook = None
    if ctx.needs_input_grad[1]:
        # index_add_ scatters each row to its code: never a one-hot [N, K] matrix.
        grad_codebook = rows.new_zeros((ctx.num_codes, D)).index_add_(0, idx.reshape(-1), rows.reshape(-1, D))
        grad_codebook = grad_codebook.to(ctx.codebook_dtype)
    return grad_z, grad_codebook


torch.library.register_autograd(OP, _backward, setup_context=_setup_context)
