"""The ONNX translations of wmfast's custom ops, run by plain onnxruntime against float64
references, with dynamic leading dims."""
import onnx
import onnxruntime as ort
import pytest
import torch
from torch.export import Dim

from wmfast.export.exporter import quiet_exporter
from wmfast.export.translations import translation_table


def export_and_session(module, args, dynamic_shapes, with_proto: bool = False):
    with quiet_exporter():
        program = torch.onnx.export(module.eval(), args, dynamo=True, opset_version=20, external_data=False,
                                    custom_translation_table=translation_table(), dynamic_shapes=dynamic_shapes,
                                    verbose=False)
    proto = program.model_proto
    onnx.checker.check_model(proto, full_check=True)
    assert {n.domain for n in proto.graph.node} <= {"", "ai.onnx"}          # standard ops only
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return (session, proto) if with_proto else session


def run(session, *tensors):
    feeds = {i.name: t.numpy() for i, t in zip(session.get_inputs(), tensors)}
    return [torch.from_numpy(o) for o in session.run(None, feeds)]


class PairAttentionBothWays(torch.nn.Module):
    """Both forms in one graph (one export): full output with an explicit scale, pooled with the default."""

    def forward(self, q, k, v):
        out, lse = torch.ops.wmfast.pair_attention(q, k, v, False, 0.3)
        pooled, pooled_lse = torch.ops.wmfast.pair_attention(q, k, v, True, None)
        return out, lse, pooled, pooled_lse


def test_pair_attention_translation_matches_float64_reference():
    from wmfast.ops import pair_attention  # noqa: F401  (registers the op)
    from wmfast.ops.reference import pair_attention_reference

    q, k, v = (torch.randn(2, 3, 4, 2, 8) for _ in range(3))
    dims = ({0: Dim("batch"), 1: Dim("frames", min=2, max=64)},) * 3
    session = export_and_session(PairAttentionBothWays(), (q, k, v), dims)
    q, k, v = (torch.randn(3, 5, 4, 2, 8) for _ in range(3))                  # other batch and frames
    got = run(session, q, k, v)
    q64, k64, v64 = q.double(), k.double(), v.double()
    want = [*pair_attention_reference(q64, k64, v64, False, 0.3, return_lse=True),
            *pair_attention_reference(q64, k64, v64, True, None, return_lse=True)]
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == torch.float32
        assert (g.double() - w).abs().max() < 1e-5


class VqLookup(torch.nn.Module):
    def __init__(self, codebook):
        super().__init__()
        self.codebook = torch.nn.Parameter(codebook)

    def forward(self, z):
        return torch.ops.wmfast.vq_lookup(z, self.codebook)


def test_vq_lookup_translation_matches_float64_search():
    vq = pytest.importorskip("wmfast.ops.vq_lookup")  # noqa: F841  (registers the op)
    g = torch.Generator().manual_seed(0)
    codebook = torch.randn(32, 4, generator=g)
    codebook[5] = codebook[3]                                                 # an exact tie: lowest index wins
    session = export_and_session(VqLookup(codebook), (torch.randn(2, 5, 4, generator=g),),
                                 ({0: Dim("batch"), 1: Dim("tokens")},))
    z = torch.randn(3, 7, 4, generator=g)
    z[0, 0] = codebook[5]
    idx, quantized, dist = run(session, z)
    d64 = ((z.double()[..., None, :] - codebook.double()) ** 2).sum(-1)      # [3, 7, K]
    best = d64.min(-1).values
    assert idx[0, 0] == 3
    # Distance optimality against float64 (an index may differ only between codes as near as round-off).
    assert (d64.gather(-1, idx[..., None])[..., 0] - best).abs().max() < 1e-5
    assert torch.equal(quantized, codebook[idx])
    assert (dist.double() - best).abs().max() < 1e-5


class OneQueryAttention(torch.nn.Module):
    """The cached temporal attention's calls (one new frame's query over its context in time): no
    mask, a bool mask with a slot that holds no frame, a float mask and an explicit scale; and one
    two-query call, which keeps the exporter's own translation."""

    def forward(self, q, k, v, valid, bias, q2):
        F = torch.nn.functional
        return (F.scaled_dot_product_attention(q, k, v),
                F.scaled_dot_product_attention(q, k, v, attn_mask=valid[None, :]),
                F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=0.7),
                F.scaled_dot_product_attention(q2, k, v, is_causal=True))


def test_one_query_attention_translation_matches_float64_reference():
    N, H, S, D = 6, 2, 4, 8
    args = (torch.randn(N, H, 1, D), torch.randn(N, H, S, D), torch.randn(N, H, S, D),
            torch.tensor([True, False, True, True]), torch.randn(N, 1, 1, S), torch.randn(N, H, 2, D))
    n, slots = Dim("n"), Dim("slots", min=2, max=64)
    dims = ({0: n}, {0: n, 2: slots}, {0: n, 2: slots}, {0: slots}, {0: n, 3: slots}, {0: n})
    session, proto = export_and_session(OneQueryAttention(), args, dims, with_proto=True)
    ops = [n.op_type for n in proto.graph.node]
    # the one-query form (q . k summed over D; the three calls share it after the exporter's CSE),
    # and the exporter's MatMul form (with its causal Trilu) for the two-query call
    assert ops.count("ReduceSum") == 1 and ops.count("Softmax") == 4 and ops.count("Trilu") == 1, ops
    S = 5                                                                      # other batch and slots
    q, k, v, q2 = torch.randn(3, H, 1, D), torch.randn(3, H, S, D), torch.randn(3, H, S, D), torch.randn(3, H, 2, D)
    valid, bias = torch.tensor([True, False, True, True, False]), torch.randn(3, 1, 1, S)
    got = run(session, q, k, v, valid, bias, q2)
    F = torch.nn.functional
    q64, k64, v64 = q.double(), k.double(), v.double()
    want = [F.scaled_dot_product_attention(q64, k64, v64),
            F.scaled_dot_product_attention(q64, k64, v64, attn_mask=valid[None, :]),
            F.scaled_dot_product_attention(q64, k64, v64, attn_mask=bias.double(), scale=0.7),
            F.scaled_dot_product_attention(q2.double(), k64, v64, is_causal=True)]
    for g, w in zip(got, want):
        assert g.shape == w.shape and (g.double() - w).abs().max() < 1e-5
