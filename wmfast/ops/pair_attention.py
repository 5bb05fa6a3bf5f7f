"""Pair-window attention: `pair_attention(q, k, v, pool=False, scale=None)`.

q, k, v [B, T, P, H, D]. Window t (0..T-2) is the 2P tokens of frames t and t+1 with full
attention inside it. Returns [B, T-1, 2P, H, D], or with pool=True the mean over the window's
2P queries, [B, T-1, H, D]. This is the encoder of the windowed latent action model.

One registered op, torch.ops.wmfast.pair_attention -> (out, lse), with its backward op
torch.ops.wmfast.pair_attention_backward. Implementations:
  CPU   the C++ kernel in csrc/pair_attention_cpu.cpp (or, without the extension, a Python
        definition over the reference in wmfast/ops/reference.py);
  CUDA  the Triton kernels in wmfast.kernels.pair_attention (loaded on first use);
  Meta  the fake implementation below, so torch.compile traces through it with dynamic shapes.
Autograd is registered with torch.library.register_autograd (lse is not differentiable).
"""
import torch

from wmfast.errors import WmfastError
from wmfast.ops._extension import HAS_EXTENSION
from wmfast.ops.reference import pair_attention_reference

OP = "wmfast::pair_attention"
BACKWARD_OP = "wmfast::pair_attention_backward"
# The same schemas as csrc/ops.cpp; defined from Python only when the extension is absent.
SCHEMA = "(Tensor q, Tensor k, Tensor v, bool pool=False, float? scale=None) -> (Tensor, Tensor)"
BACKWARD_SCHEMA = ("(Tensor grad, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, bool pool, float scale)"
                   " -> (Tensor, Tensor, Tensor)")
FLOAT_TYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def pair_attention(q, k, v, pool: bool = False, scale=None):
    """Attention inside each window of two consecutive frames; see the module docstring."""
    check_pair_attention_inputs(q, k, v)
    out, _ = torch.ops.wmfast.pair_attention(q, k, v, pool, scale)
    return out


def check_pair_attention_inputs(q, k, v):
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor):
            raise WmfastError(f"pair_attention: {name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 5:
            raise WmfastError(f"pair_attention: {name} must be [B, T, P, H, D], got shape {tuple(x.shape)}")
        if x.dtype not in FLOAT_TYPES:
            raise WmfastError(f"pair_attention: {name} must be a float tensor, got {x.dtype}")
    if k.shape != q.shape or v.shape != q.shape:
        raise WmfastError(f"pair_attention: q, k, v must have one shape, got {tuple(q.shape)}, "
                          f"{tuple(k.shape)}, {tuple(v.shape)}")
    if k.dtype != q.dtype or v.dtype != q.dtype or k.device != q.device or v.device != q.device:
        raise WmfastError("pair_attention: q, k, v must share one dtype and device")
    if q.shape[1] < 2:
        raise WmfastError(f"pair_attention: needs at least 2 frames, got T={q.shape[1]}")


def resolve_scale(scale, head_dim: int) -> float:
    return head_dim ** -0.5 if scale is None else float(scale)


def lse_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


# -- registration ----------------------------------------------------------------------------------
if not HAS_EXTENSION:
    torch.library.define(OP, SCHEMA)
    torch.library.define(BACKWARD_OP, BACKWARD_SCHEMA)

    @torch.library.impl(OP, "cpu")
    def _forward_over_reference(q, k, v, pool=False, scale=None):
        with torch.no_grad():
            out, lse = pair_attention_reference(q, k, v, pool, scale, return_lse=True)
        return out.contiguous(), lse.to(lse_dtype(q.dtype)).contiguous()

    @torch.library.impl(BACKWARD_OP, "cpu")
    def _backward_over_reference(grad, q, k, v, out, lse, pool, scale):
        with torch.enable_grad():
            leaves = [x.detach().requires_grad_() for x in (q, k, v)]
            ref = pair_attention_reference(*leaves, pool=pool, scale=scale)
            return tuple(g.contiguous() for g in torch.autograd.grad(ref, leaves, grad))


@torch.library.impl(OP, "cuda")
def _forward_cuda(q, k, v, pool=False, scale=None):
    from wmfast.kernels.pair_attention import pair_attention_forward

    return pair_attention_forward(q, k, v, pool, resolve_scale(scale, q.shape[-1]))


@torch.library.impl(BACKWARD_OP, "cuda")
def _backward_cuda(grad, q, k, v, out, lse, pool, scale):
    from wmfast.kernels.pair_attention import pair_attention_backward

    return pair_attention_backward(grad, q, k, v, out, lse, pool, scale)


@torch.library.register_fake(OP)
def _forward_fake(q, k, v, pool=False, scale=None):
    B, T, P, H, D = q.shape
    out = q.new_empty(B, T - 1, H, D) if pool else q.new_empty(B, T - 1, 2 * P, H, D)
    return out, q.new_empty(B, H, T - 1, 2 * P, dtype=lse_dtype(q.dtype))


@torch.library.register_fake(BACKWARD_OP)
def _backward_fake(grad, q, k, v, out, lse, pool, scale):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup_context(ctx, inputs, output):
    q, k, v = inputs[:3]
    pool = inputs[3] if len(inputs) > 3 else False
    scale = inputs[4] if len(inputs) > 4 else None
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse)
    ctx.pool, ctx.scale = bool(pool), resolve_scale(scale, q.shape[-1])


def _backward(ctx, grad_out, grad_lse):
    q, k, v, out, lse = ctx.saved_tensors
    if grad_out is None:
        grad_out = torch.zeros_like(out)
    dq, dk, dv = torch.ops.wmfast.pair_attention_backward(grad_out.contiguous(), q, k, v, out, lse,
                                                          ctx.pool, ctx.scale)
    return dq, dk, dv, None, None


torch.library.register_autograd(OP, _backward, setup_context=_setup_context)
