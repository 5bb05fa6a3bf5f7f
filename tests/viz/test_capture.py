"""wmfast.viz.capture_attention: probabilities against float64 references, outputs unchanged, every
attention module of every model recorded, nothing left behind."""
import dataclasses
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from wmfast.errors import WmfastError
from wmfast.models import (DynamicsConfig, DynamicsModel, LatentActionConfig, LatentActionModel, TokenizerConfig,
                           VideoTokenizer)
from wmfast.models.lam import WindowedActionHead
from wmfast.nn.transformer import Attention
from wmfast.ops.reference import pair_attention_reference, pair_windows
from wmfast.viz import capture_attention, flag

TINY = dict(frame_size=16, patch_size=4, embed_dim=16, num_heads=2, hidden_dim=32, num_blocks=2,
            latent_dim=3, num_bins=4, n_actions=4)
ATTENTION_CLASSES = (Attention, WindowedActionHead, nn.MultiheadAttention)


def config(cls, **kw):
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in {**TINY, **kw}.items() if k in names})


def frames(B=2, T=3, S=16):
    return torch.rand(B, T, 3, S, S) * 2 - 1


def heads(x, proj, H):
    """[N, L, E] through proj -> [N, H, L, Dh] in float64."""
    N, L, E = x.shape
    return proj(x).double().reshape(N, L, H, E // H).transpose(1, 2)


def entropy64(p):
    """float64 entropy per head, written out: -sum p log p (0 log 0 = 0), mean over batch and queries."""
    p = p.double()
    terms = torch.where(p > 0, -p * torch.log(p), torch.zeros_like(p))
    return terms.sum(-1).mean(dim=(0, 2))


def assert_clean(modules):
    assert flag.active is False and flag.recorder is None
    assert not torch.nn.modules.module._global_forward_hooks
    assert not torch.nn.modules.module._global_forward_pre_hooks
    for m in modules:
        assert "forward" not in m.__dict__, f"{type(m).__name__} keeps a wrapped forward"
        assert not m._forward_hooks and not m._forward_pre_hooks


# -- the probabilities ---------------------------------------------------------------------------
@pytest.mark.parametrize("axis", ["space", "time"])
def test_stt_attention_maps_match_float64_softmax(axis):
    attn = Attention(16, 2, axis).eval()
    x = torch.randn(2, 3, 5, 16)                                          # [B, T, P, E]
    with torch.no_grad(), capture_attention({"m": attn}) as rec:
        attn(x)
    p = rec.maps["m"]
    seq = x.reshape(6, 5, 16) if axis == "space" else x.transpose(1, 2).reshape(10, 3, 16)
    q, k = heads(seq, attn.q_proj, 2), heads(seq, attn.k_proj, 2)
    s = q @ k.transpose(-1, -2) / math.sqrt(8)
    if axis == "time":
        s = s.masked_fill(torch.ones(3, 3, dtype=torch.bool).triu(1), float("-inf"))
    want = torch.softmax(s, -1)
    assert p.shape == want.shape
    torch.testing.assert_close(p.sum(-1), torch.ones(p.shape[:-1]), atol=1e-6, rtol=0)
    torch.testing.assert_close(p.double(), want, atol=1e-6, rtol=0)
    torch.testing.assert_close(rec.entropy["m"], entropy64(want), atol=1e-5, rtol=0)
    if axis == "time":   # causal: no weight on later frames
        assert float(p.triu(1).abs().max()) == 0.0
    # the maps times v reproduce the model's attention output (what SDPA computed)
    v = heads(seq, attn.v_proj, 2)
    o = F.scaled_dot_product_attention(q, k, v, is_causal=axis == "time")
    torch.testing.assert_close(p.double() @ v, o, atol=1e-5, rtol=0)


def test_cached_rollout_attention_with_past_mask():
    """forward_cached (rollout engines): new frames over cached keys with invalid ring slots."""
    from wmfast.nn.transformer import past_and_causal_mask

    attn = Attention(16, 2, "time").eval()
    x_past, x_new = torch.randn(1, 3, 2, 16), torch.randn(1, 2, 2, 16)
    valid = torch.tensor([True, False, True])
    with torch.no_grad():
        _, past = attn.forward_cached(x_past)
        with capture_attention({"t": attn}) as rec:
            attn.forward_cached(x_new, past=past, past_valid=valid)
    seq_past, seq_new = (x.transpose(1, 2).reshape(2, -1, 16) for x in (x_past, x_new))
    q = heads(seq_new, attn.q_proj, 2)
    k = torch.cat([heads(seq_past, attn.k_proj, 2), heads(seq_new, attn.k_proj, 2)], dim=2)   # [2, H, 5, Dh]
    s = (q @ k.transpose(-1, -2) / math.sqrt(8)).masked_fill(~past_and_causal_mask(3, 2, valid, "cpu"),
                                                             float("-inf"))
    want = torch.softmax(s, -1)
    torch.testing.assert_close(rec.maps["t"].double(), want, atol=1e-6, rtol=0)
    assert float(rec.maps["t"][..., 1].abs().max()) == 0.0                 # the invalid slot
    assert rec.info["t"]["kind"] == "time" and rec.info["t"]["num_keys"] == 5
    assert rec.info["t"]["max_entropy"] == pytest.approx((math.log(3) + math.log(4)) / 2)


def test_constructed_attention_is_one_hot_with_near_zero_entropy():
    """Every query's key 3 is far more similar than the rest -> the map is one-hot on key 3."""
    E, P = 8, 6
    attn = Attention(E, 1, "space").eval()
    with torch.no_grad():
        for proj in (attn.q_proj, attn.k_proj):
            proj.weight.copy_(torch.eye(E) * 4)
            proj.bias.zero_()
    x = torch.zeros(1, 1, P, E)
    x[0, 0, :, 0] = 1.0                      # all tokens share direction 0 ...
    x[0, 0, 3, 0] = 20.0                     # ... key 3 is far longer along it
    x[0, 0, :, 1:P + 1] = torch.eye(P) * 0.5   # and each its own direction
    with torch.no_grad(), capture_attention({"m": attn}) as rec:
        attn(x)
    p = rec.maps["m"][0, 0]                                                # [P, P]
    assert torch.equal(p.argmax(-1), torch.full((P,), 3))
    torch.testing.assert_close(p[:, 3], torch.ones(P), atol=1e-4, rtol=0)
    assert float(rec.entropy["m"][0]) < 1e-3
    assert rec.info["m"]["max_entropy"] == pytest.approx(math.log(P))


def test_pair_window_maps_match_reference_and_fused_op():
    head = WindowedActionHead(16, 2, 3).eval()
    x = torch.randn(2, 4, 5, 16)                                           # [B, T, P, E]
    with torch.no_grad(), capture_attention({"lam": head}) as rec:
        head(x)
    p = rec.maps["lam"]                                                    # [B*(T-1), H, 2P, 2P]
    assert p.shape == (2 * 3, 2, 10, 10)
    B, T, P, E = x.shape
    h = head.norm(x)
    q, k, v = (proj(h).view(B, T, P, 2, 8) for proj in (head.q_proj, head.k_proj, head.v_proj))
    # reference path: float64 scores and the reference op's log-sum-exp
    _, lse = pair_attention_reference(q.double(), k.double(), v.double(), return_lse=True)   # [B, H, W, 2P]
    qw, kw, vw = (pair_windows(t.double()).permute(0, 1, 3, 2, 4) for t in (q, k, v))         # [B, W, H, 2P, D]
    s = qw @ kw.transpose(-1, -2) / math.sqrt(8)
    want = torch.exp(s - lse.permute(0, 2, 1, 3).unsqueeze(-1)).flatten(0, 1)               # [B*W, H, 2P, 2P]
    torch.testing.assert_close(p.double(), want, atol=1e-6, rtol=0)
    # fused path: the registered op's pooled output is the mean over queries of maps @ v
    out, fused_lse = torch.ops.wmfast.pair_attention(q, k, v, True, None)                    # [B, W, H, D]
    pooled = (p.double() @ vw.flatten(0, 1)).mean(dim=2).reshape(B, T - 1, 2, 8)
    torch.testing.assert_close(pooled, out.double(), atol=1e-5, rtol=0)
    torch.testing.assert_close(fused_lse.double(), lse, atol=1e-5, rtol=0)
    torch.testing.assert_close(rec.entropy["lam"], entropy64(want), atol=1e-5, rtol=0)


def test_fused_and_reference_pair_attention_give_the_same_maps(monkeypatch):
    import wmfast.models.lam as lam_module

    head = WindowedActionHead(16, 2, 3).eval()
    x = torch.randn(1, 3, 4, 16)
    with torch.no_grad(), capture_attention({"h": head}) as fused:
        out_fused = head(x)
    monkeypatch.setattr(lam_module, "pair_attention", pair_attention_reference)
    with torch.no_grad(), capture_attention({"h": head}) as ref:
        out_ref = head(x)
    assert torch.equal(fused.maps["h"], ref.maps["h"])
    torch.testing.assert_close(out_fused, out_ref, atol=1e-5, rtol=0)


def test_multihead_attention_weights_match_torch():
    mha = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    q, kv = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    mask = torch.zeros(2, 7, dtype=torch.bool)
    mask[1, 5:] = True                                                     # padding in the second item
    with torch.no_grad():
        _, want = mha(q, kv, kv, key_padding_mask=mask, need_weights=True, average_attn_weights=False)
        off, _ = mha(q, kv, kv, key_padding_mask=mask, need_weights=False)
        with capture_attention({"x": mha}) as rec:
            on, _ = mha(q, kv, kv, key_padding_mask=mask, need_weights=False)
    assert torch.equal(on, off)
    torch.testing.assert_close(rec.maps["x"], want, atol=1e-6, rtol=0)
    assert float(rec.maps["x"][1, :, :, 5:].abs().max()) == 0.0
    assert_clean([mha])


# -- outputs, coverage, cleanup ------------------------------------------------------------------
def shipped_kinds():
    """(model, run-it) for every model with attention: tokenizer, both LAM heads, dynamics, torch's
    transformer (the ACT / LAPA building blocks), and ACT / LAPA themselves."""
    tok = VideoTokenizer(config(TokenizerConfig)).eval()
    lam = LatentActionModel(config(LatentActionConfig)).eval()
    wlam = LatentActionModel(config(LatentActionConfig, use_windowed_attention=True)).eval()
    dyn = DynamicsModel(config(DynamicsConfig, conditioning_dim=lam.config.action_dim)).eval()
    x = frames()
    lat = torch.rand(2, 3, 16, 3)
    act = torch.rand(2, 2, lam.config.action_dim)
    kinds = [("tokenizer", tok, lambda: tok(x)[0]),
             ("lam", lam, lambda: lam(x)[0]),
             ("lam-windowed", wlam, lambda: wlam(x)[0]),
             ("dynamics", dyn, lambda: dyn(lat, act))]
    tr = nn.Transformer(16, 2, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=32,
                        batch_first=True).eval()
    src, tgt = torch.randn(2, 6, 16), torch.randn(2, 4, 16)
    causal = nn.Transformer.generate_square_subsequent_mask(4)
    kinds.append(("torch-transformer", tr, lambda: tr(src, tgt, tgt_mask=causal)))
    try:
        from wmfast.models.policy import ACTPolicy
        from wmfast.models.policy import PolicyConfig

        policy = ACTPolicy(PolicyConfig(kind="act", frame_size=16, chunk=3)).eval()
        img = torch.rand(2, 3, 16, 16) * 2 - 1
        kinds.append(("act", policy, lambda: policy(img)))
    except ImportError:
        pass
    try:
        from wmfast.models.lapa import LapaConfig, LapaModel

        lapa = LapaModel(LapaConfig(height=32, width=32, grayscale=True, channels=(4, 4, 8, 8, 8), code_dim=8,
                                    num_codes=4, conditioning="attention", attention_heads=2)).eval()
        f0, f1 = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
        kinds.append(("lapa", lapa, lambda: lapa(f0, f1)[0]))
    except ImportError:
        pass
    return kinds


@pytest.mark.parametrize("grad", [False, True])
def test_every_attention_call_recorded_outputs_identical_nothing_left(grad):
    for label, model, run in shipped_kinds():
        attention = [m for m in model.modules() if isinstance(m, ATTENTION_CLASSES)]
        assert attention, label
        with torch.set_grad_enabled(grad):
            torch.manual_seed(1)
            off = run()
            with capture_attention(model) as rec:
                torch.manual_seed(1)
                on = run()
            again = run()
        assert torch.equal(on, off), f"{label}: capture changed the outputs"
        assert torch.equal(again, off), label
        assert len(rec.maps) == len(attention), f"{label}: {sorted(rec.maps)}"
        assert rec.missing() == [] and len(rec.expected) == len(attention)
        for name, p in rec.maps.items():
            torch.testing.assert_close(p.sum(-1), torch.ones(p.shape[:-1]), atol=1e-5, rtol=0)
            assert rec.entropy[name].shape == (p.shape[1],)
            assert torch.all(rec.entropy[name] >= 0)
            assert torch.all(rec.entropy[name] <= rec.info[name]["max_entropy"] + 1e-5)
        assert_clean(list(model.modules()))


def test_readable_names():
    tok = VideoTokenizer(config(TokenizerConfig, num_blocks=3)).eval()
    lam = LatentActionModel(config(LatentActionConfig, use_windowed_attention=True)).eval()
    dyn = DynamicsModel(config(DynamicsConfig, conditioning_dim=lam.config.action_dim, num_blocks=3)).eval()
    x = frames()
    with torch.no_grad(), capture_attention([tok, lam, dyn]) as rec:
        dyn(torch.rand(2, 3, 16, 3), torch.rand(2, 2, lam.config.action_dim))
        lam.encoder(x)
        tok.encoder(x)
    assert {"dynamics.blocks.2.spatial", "dynamics.blocks.0.temporal", "lam.encoder.window_head",
            "lam.encoder.blocks.1.spatial", "tokenizer.encoder.blocks.0.temporal"} <= set(rec.maps)
    assert rec.info["dynamics.blocks.2.spatial"]["batch_layout"] == {"batch": 2, "frames": 3, "patches": 16}
    assert rec.maps["dynamics.blocks.2.spatial"].shape == (2 * 3, 2, 16, 16)
    assert rec.maps["dynamics.blocks.0.temporal"].shape == (2 * 16, 2, 3, 3)
    assert rec.maps["lam.encoder.window_head"].shape == (2 * 2, 2, 32, 32)
    assert sorted(rec.missing()) == sorted(n for n in rec.expected if n.startswith(("tokenizer.decoder", "lam.decoder")))


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
@pytest.mark.parametrize("padded", [False, True])
def test_encoder_layer_fast_path_recorded_and_unchanged(padded):
    """nn.TransformerEncoder in eval + no_grad runs torch's fused fast path (with padding: nested
    tensors), which never calls its MultiheadAttention module; capture records it anyway and
    leaves the output bit-identical."""
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, batch_first=True), 2,
                                enable_nested_tensor=padded).eval()
    src = torch.randn(3, 6, 16)
    mask = torch.zeros(3, 6, dtype=torch.bool)
    if padded:
        mask[1, 4:] = True
        mask[2, 2:] = True
    with torch.no_grad():
        off = enc(src, src_key_padding_mask=mask)
        with capture_attention(enc, name="enc") as rec:
            on = enc(src, src_key_padding_mask=mask)
        _, want = enc.layers[0].self_attn(src, src, src, key_padding_mask=mask, need_weights=True,
                                          average_attn_weights=False)
    assert torch.equal(on, off)
    assert sorted(rec.maps) == ["enc.layers.0.self_attn", "enc.layers.1.self_attn"]
    # queries at padding positions are never computed by the nested path (their rows are recomputed
    # from zeros); the real queries' rows match torch's own weights
    valid = ~mask[:, None, :, None]
    got = rec.maps["enc.layers.0.self_attn"]
    torch.testing.assert_close(got * valid, want * valid, atol=1e-6, rtol=0)
    assert float(got[mask[:, None, None, :].expand_as(got)].abs().max() if padded else 0.0) == 0.0
    assert_clean(list(enc.modules()))


def test_cleanup_after_an_exception_and_no_nesting():
    tr = nn.TransformerDecoder(nn.TransformerDecoderLayer(16, 2, 32, batch_first=True), 1).eval()
    with pytest.raises(RuntimeError, match="boom"):
        with capture_attention(tr):
            assert "forward" in tr.layers[0].self_attn.__dict__ and flag.active
            with pytest.raises(WmfastError, match="already open"):
                with capture_attention(tr):
                    pass
            raise RuntimeError("boom")
    assert_clean(list(tr.modules()))


def test_query_subset_and_repeated_calls():
    attn = Attention(16, 2, "time").eval()
    x = torch.randn(1, 6, 2, 16)
    with torch.no_grad():
        with capture_attention({"m": attn}) as full:
            attn(x)
        with capture_attention({"m": attn}, queries=[1, 4]) as sub:
            attn(x)
            attn(x * 2)
        with capture_attention({"m": attn}, queries=3, keep="last") as last:
            attn(x)
            attn(x * 2)
    assert torch.equal(sub.maps["m"], full.maps["m"][:, :, [1, 4]])
    assert sub.info["m"]["queries"] == [1, 4]
    assert set(sub.maps) == {"m", "m#2"} and sub.calls == {"m": 2}
    # visible keys of causal queries 1 and 4: 2 and 5
    assert sub.info["m"]["max_entropy"] == pytest.approx((math.log(2) + math.log(5)) / 2)
    assert set(last.maps) == {"m"} and last.maps["m"].shape[2] == 3
    assert not torch.equal(last.maps["m"], sub.maps["m"])


def test_compiled_model_is_captured_eagerly():
    dyn = DynamicsModel(config(DynamicsConfig, conditioning_dim=2)).eval()
    compiled = torch.compile(dyn, backend="eager")
    lat, act = torch.rand(1, 3, 16, 3), torch.rand(1, 2, 2)
    with torch.no_grad():
        want = dyn(lat, act)
        with capture_attention(compiled) as rec:
            got = compiled(lat, act)
    assert torch.equal(got, want)
    assert len(rec.maps) == 4 and "dynamics.blocks.1.temporal" in rec.maps
    assert any("eager" in n for n in rec.notes)


def test_bad_input():
    with pytest.raises(WmfastError, match="expected a torch module"):
        with capture_attention(42):
            pass
    with pytest.raises(WmfastError, match="keep"):
        with capture_attention(nn.Linear(2, 2), keep="middle"):
            pass


@pytest.mark.gpu
def test_cuda_capture_matches_cpu_and_leaves_outputs_unchanged():
    """On CUDA the STT runs SDPA's fused kernels and the window head the Triton pair-attention kernel;
    capture gives the CPU maps and does not touch the outputs."""
    lam = LatentActionModel(config(LatentActionConfig, use_windowed_attention=True)).eval()
    x = frames()
    with torch.no_grad(), capture_attention(lam) as cpu:
        lam.encoder(x)
    lam_cuda, x_cuda = lam.cuda(), x.cuda()
    with torch.no_grad():
        off = lam_cuda.encoder(x_cuda)
        with capture_attention(lam_cuda) as gpu:
            on = lam_cuda.encoder(x_cuda)
    assert torch.equal(on, off)
    assert sorted(gpu.maps) == sorted(cpu.maps)
    for name in cpu.maps:
        assert gpu.maps[name].device.type == "cpu"
        torch.testing.assert_close(gpu.maps[name], cpu.maps[name], atol=1e-4, rtol=0)
