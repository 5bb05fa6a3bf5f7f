"""ONNX translations of wmfast's custom ops (and of one aten op we run better), for the exporter's
`custom_translation_table`.

Each function receives the op's inputs as ONNX values and builds the same computation from
standard ONNX operators (opset 18 forms, valid for every export opset >= 18), so a plain
onnxruntime, on any execution provider, runs the exported graph without a custom-op library.
FSQ needs no entry: it is tanh / round / arithmetic, which the exporter translates itself.
"""
from typing import Optional

import torch
from onnxscript import ir
from onnxscript import opset18 as op


def _axes(*axes):
    return op.Constant(value_ints=list(axes))


def vq_lookup(z, codebook):
    """wmfast::vq_lookup(z [..., D], codebook [K, D]) -> (indices int64 [...], quantized [..., D],
    squared distance to the chosen code, float32 [...]).

    As the op: search on |c|^2 - 2 z.c (one MatMul; |z|^2 does not change the argmin, and leaving
    it out avoids its cancellation error), ArgMin keeps the first of equal scores (ties -> lowest
    index), then the distance is computed directly for the winning code."""
    c_sq = op.ReduceSum(op.Mul(codebook, codebook), _axes(-1), keepdims=0)         # [K]
    dot = op.MatMul(z, op.Transpose(codebook, perm=[1, 0]))                        # [..., K]
    scores = op.Sub(c_sq, op.Add(dot, dot))                                        # [..., K]
    idx = op.ArgMin(scores, axis=-1, keepdims=0, select_last_index=0)              # [...]
    quantized = op.Gather(codebook, idx, axis=0)                                   # [..., D]
    diff = op.Sub(z, quantized)
    dist = op.Cast(op.ReduceSum(op.Mul(diff, diff), _axes(-1), keepdims=0), to=1)  # float32 [...]
    return idx, quantized, dist


INT64_MAX = 2 ** 63 - 1


def _pair_windows(x):
    """[B, T, P, H, D] -> [B, T-1, 2P, H, D]: window t is frames t and t+1."""
    first = op.Slice(x, _axes(0), _axes(-1), _axes(1))                            # frames 0..T-2
    second = op.Slice(x, _axes(1), _axes(INT64_MAX), _axes(1))                   # frames 1..T-1
    return op.Concat(first, second, axis=2)


def pair_attention(q, k, v, pool: bool = False, scale: Optional[float] = None):
    """wmfast::pair_attention(q, k, v [B, T, P, H, D], pool, scale) -> (out [B, T-1, 2P, H, D] or,
    pooled, [B, T-1, H, D]; lse [B, H, T-1, 2P] float32): full attention inside each window of
    two consecutive frames, as 5-D MatMuls over the windows (a copy of K/V per window, which is
    what the reference does too; onnxruntime has no overlapping-window attention kernel)."""
    qw, kw, vw = (op.Transpose(_pair_windows(x), perm=[0, 1, 3, 2, 4]) for x in (q, k, v))   # [B, W, H, 2P, D]
    if scale is None:
        head_dim = op.Cast(op.Shape(q, start=4, end=5), to=1)                     # float32 [1]
        factor = op.CastLike(op.Reciprocal(op.Sqrt(head_dim)), q)
    else:
        factor = op.CastLike(op.Constant(value_float=float(scale)), q)
    s = op.Mul(op.MatMul(qw, op.Transpose(kw, perm=[0, 1, 2, 4, 3])), factor)     # [B, W, H, 2P, 2P]
    lse = op.ReduceLogSumExp(s, _axes(-1), keepdims=0)                             # [B, W, H, 2P]
    out = op.Transpose(op.MatMul(op.Softmax(s, axis=-1), vw), perm=[0, 1, 3, 2, 4])   # [B, W, 2P, H, D]
    if pool:
        out = op.ReduceMean(out, _axes(2), keepdims=0)                            # [B, W, H, D]
    return out, op.Cast(op.Transpose(lse, perm=[0, 2, 1, 3]), to=1)               # lse [B, H, W, 2P] float32


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p: float = 0.0, is_causal: bool = False,
                                 scale: Optional[float] = None, enable_gqa: bool = False):
    """aten::scaled_dot_product_attention. With one query row (query [N, H, 1, D]: a new frame
    attending over its cached frames in time, N = batch x patches) the scores are a broadcast
    product and a sum over D: as a MatMul they are N x H products of 1 x D by D x S matrices, which
    onnxruntime runs one by one (half as fast on the CPU at tinyworlds' shape, measured). The
    weighted sum of values stays a MatMul (faster there than a sum over S). Any other call gets
    the exporter's own translation (onnxscript's torch_lib)."""
    from onnxscript.function_libs.torch_lib.ops.nn import _attention_scale, aten_scaled_dot_product_attention

    shape = query.shape
    one_query = shape is not None and len(shape) == 4 and shape[2] == 1
    if not one_query or is_causal or dropout_p != 0.0 or enable_gqa:
        return aten_scaled_dot_product_attention(query, key, value, attn_mask, dropout_p, is_causal, scale,
                                                 enable_gqa)
    factor = op.CastLike(_attention_scale(query) if scale is None else op.Constant(value_float=float(scale)), query)
    scores = op.Mul(op.ReduceSum(op.Mul(query, key), _axes(-1), keepdims=0), factor)   # [N, H, S]
    bool_mask = attn_mask is not None and attn_mask.dtype == ir.DataType.BOOL
    if attn_mask is not None:
        if bool_mask:
            attn_mask = op.Where(attn_mask, op.CastLike(op.Constant(value_float=0.0), query),
                                 op.CastLike(op.Constant(value_float=float("-inf")), query))
        if attn_mask.shape is None or len(attn_mask.shape) >= 2:
            attn_mask = op.Squeeze(attn_mask, _axes(-2))                                   # [..., 1, S] -> [..., S]
        scores = op.Add(scores, attn_mask)
    weights = op.Softmax(scores, axis=-1)                                                  # [N, H, S]
    if bool_mask:   # a row with every key masked: 0, as torch gives, not 0/0
        weights = op.Where(op.IsNaN(weights), op.CastLike(op.Constant(value_float=0.0), query), weights)
    return op.MatMul(op.Unsqueeze(weights, _axes(-2)), value)                             # [N, H, 1, D]


def translation_table() -> dict:
    """{torch op overload: ONNX translation} for every wmfast custom op registered in this process."""
    import wmfast.ops  # noqa: F401  (loads wmfast._C and the Python op registrations)

    table = {torch.ops.aten.scaled_dot_product_attention.default: scaled_dot_product_attention}
    ops = torch.ops.wmfast
    if hasattr(ops, "vq_lookup"):
        table[ops.vq_lookup.default] = vq_lookup
    if hasattr(ops, "pair_attention"):
        table[ops.pair_attention.default] = pair_attention
    return table
