"""onnxruntime-specific forms of the exported graphs: `fuse_for_onnxruntime`.

The exporter writes standard ONNX (any runtime). For onnxruntime on the CPU, the same graphs run
faster after three rewrites, all exact up to float round-off (int counts stay exact):

1. onnxruntime's transformer fusions (onnxscript.rewriter.ort_fusions.optimize_for_ort): RMSNorm
   -> SimplifiedLayerNormalization, spatial attention with its projections -> com.microsoft
   Attention (one packed QKV matmul), LayerNorm and GELU forms;
2. except for attention over time: a fused MultiHeadAttention over a handful of frames (T = 4 at
   tinyworlds' shape, symbolic in the graph) is slower on the CPU than the plain
   MatMul / Softmax / MatMul (1.3 vs 0.95 ms for 256 patches x 8 heads, measured), so those are
   written back as plain ops (`_plain_attention`);
3. counts of booleans (MaskGIT's confidence ranks: bool -> int64 -> ReduceSum over [B, P, P])
   reduce in float32 instead: onnxruntime's int64 ReduceSum is 13x slower there (0.23 vs
   0.018 ms at P = 256, measured), and float32 counts are exact up to 2^24 (checked statically).

Measured at tinyworlds' shape, 1 thread, CPU time per compat frame in one process (the standard
graphs -> these; benchmarks/profile_export.py, benchmarks/results/cpu-export-profile.json): encode
38.5 -> 35.8 ms, LAM 38.2 -> 36.2, ten MaskGIT steps 128.6 -> 123.8, decode 48.1 -> 44.1; the
frame 291 -> 277 ms (5%; eager: 345), same tokens.
"""
import math
import os
from collections import Counter

from wmfast.export.manifest import sha256_file

FLOAT_EXACT_COUNT = 2 ** 24   # float32 holds every integer up to here


def fuse_for_onnxruntime(path, out_path):
    """The onnxruntime form of the standard graph at `path` (see the module docstring), saved to
    out_path. These ops exist only in onnxruntime, so the standard graph stays the export's
    portable file. Returns the manifest entry {"file", "sha256", "bytes", "fusions", "ops"}, or
    None when nothing applies."""
    import onnx_ir as ir
    from onnxscript.rewriter.ort_fusions import optimize_for_ort
    from onnxscript.rewriter.pattern import RewriteRuleSet

    from wmfast.export.exporter import quiet_exporter

    model = ir.load(path)
    with quiet_exporter():
        model, counts = optimize_for_ort(model)
        for name, rule in _rules().items():
            counts[name] = RewriteRuleSet([rule]).apply_to_model(model)
    fusions = {k: v for k, v in counts.items() if v}
    if not fusions:
        return None
    tmp = f"{out_path}.tmp"
    ir.save(model, tmp)
    os.replace(tmp, out_path)
    return {"file": os.path.basename(out_path), "sha256": sha256_file(out_path), "bytes": os.path.getsize(out_path),
            "fusions": fusions, "ops": dict(Counter(n.op_type for n in model.graph).most_common())}


# -- 2. attention over time: back to plain ops ----------------------------------------------------

def _mha_over_time(op, q, k, v, bias):
    return op.MultiHeadAttention(q, k, v, None, None, bias, _domain="com.microsoft", _outputs=["out"])


def _over_time(context, q, k, v, bias, out, **_) -> bool:
    """Attention over frames: the query's sequence axis (frames) is symbolic in the graph, and
    the node has no attribute but num_heads (and maybe scale) and one output."""
    node = out.producer()
    shape = q.shape
    return (shape is not None and len(shape) == 3 and not isinstance(shape[1], int) and isinstance(shape[2], int)
            and set(node.attributes) <= {"num_heads", "scale"} and len(node.outputs) == 1)


def _plain_attention(op, q, k, v, bias, out, **_):
    """softmax(Q K^T * scale + bias) V per head, from [N, T, E] inputs to an [N, T, E] output."""
    node = out.producer()
    heads = node.attributes["num_heads"].as_int()
    embed = q.shape[2]
    head_dim = embed // heads
    scale = node.attributes["scale"].as_float() if "scale" in node.attributes else 1.0 / math.sqrt(head_dim)
    split = op.Constant(value_ints=[0, 0, heads, head_dim])
    q4 = op.Transpose(op.Reshape(q, split), perm=[0, 2, 1, 3])                    # [N, H, T, Dh]
    kt = op.Transpose(op.Reshape(k, split), perm=[0, 2, 3, 1])                    # [N, H, Dh, T]
    v4 = op.Transpose(op.Reshape(v, split), perm=[0, 2, 1, 3])                    # [N, H, T, Dh]
    scores = op.Add(op.Mul(op.MatMul(q4, kt), op.Constant(value_float=scale)), bias)
    o = op.MatMul(op.Softmax(scores, axis=-1), v4)                                # [N, H, T, Dh]
    return op.Reshape(op.Transpose(o, perm=[0, 2, 1, 3]), op.Constant(value_ints=[0, 0, embed]))


# -- 3. counts of booleans in float32 --------------------------------------------------------------

def _bool_count(op, x, axes, keepdims):
    return op.ReduceSum(op.Cast(x, to=7), axes, keepdims=keepdims, _outputs=["count"])      # 7: INT64


def _exact_in_float(context, x, axes, keepdims, count, **_) -> bool:
    """x is bool, the axes are constants and the reduced extent is static and at most 2^24."""
    import onnx_ir as ir

    if x.dtype != ir.DataType.BOOL or x.shape is None or axes.const_value is None:
        return False
    extent = 1
    for a in axes.const_value.numpy().reshape(-1).tolist():
        dim = x.shape[int(a)]
        if not isinstance(dim, int):
            return False
        extent *= dim
    return extent <= FLOAT_EXACT_COUNT


def _count_in_float(op, x, axes, keepdims, count, **_):
    summed = op.ReduceSum(op.Cast(x, to=1), axes, keepdims=keepdims.as_int())                     # 1: FLOAT
    return op.Cast(summed, to=7)


def _rules() -> dict:
    from onnxscript.rewriter.pattern import RewriteRule

    return {"attention_over_time_unfused": RewriteRule(_mha_over_time, _plain_attention, _over_time),
            "bool_counts_in_float": RewriteRule(_bool_count, _count_in_float, _exact_in_float)}
