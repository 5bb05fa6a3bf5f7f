"""The opt-in windowed-attention encoder of the latent action model: off by default, wired to
pair_attention (checked against the float64 reference), and its flag survives checkpoints while
configs without the key load as the legacy encoder."""
import json
import os

import pytest
import torch

from wmfast.checkpoint import load_model, save_model
from wmfast.errors import WmfastError
from wmfast.models import LatentActionConfig, LatentActionModel
from wmfast.ops.reference import pair_attention_reference

SMALL = dict(frame_size=16, patch_size=4, embed_dim=24, num_heads=4, hidden_dim=32, num_blocks=1, n_actions=8)


def frames(B=2, T=4, size=16, seed=0):
    return torch.rand(B, T, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_flag_is_off_by_default_and_legacy_keys_are_unchanged():
    assert LatentActionConfig().use_windowed_attention is False
    keys = set(LatentActionModel(LatentActionConfig(**SMALL)).state_dict())
    assert {"encoder.action_head.0.weight", "encoder.action_head.1.weight", "encoder.action_head.3.weight"} <= keys
    assert not any("window_head" in k for k in keys)
    windowed = set(LatentActionModel(LatentActionConfig(**SMALL, use_windowed_attention=True)).state_dict())
    assert not any("action_head" in k for k in windowed)
    assert {"encoder.window_head.q_proj.weight", "encoder.window_head.head.3.weight"} <= windowed


def test_windowed_head_matches_float64_reference():
    model = LatentActionModel(LatentActionConfig(**SMALL, use_windowed_attention=True)).double().eval()
    enc, head = model.encoder, model.encoder.window_head
    x = frames().double()
    with torch.no_grad():
        tokens = enc.transformer(enc.patch_embed(x))                       # [B, T, P, E]
        B, T, P, E = tokens.shape
        h = head.norm(tokens)
        q, k, v = (proj(h).view(B, T, P, 4, E // 4) for proj in (head.q_proj, head.k_proj, head.v_proj))
        # out_proj on every window token, then the mean: the order the head reverses
        attn = pair_attention_reference(q, k, v).reshape(B, T - 1, 2 * P, E)
        expected = head.head(head.out_proj(attn).mean(dim=2))              # [B, T-1, A]
        torch.testing.assert_close(enc(x), expected, atol=1e-12, rtol=0)


def test_windowed_model_trains_and_encodes():
    model = LatentActionModel(LatentActionConfig(**SMALL, use_windowed_attention=True))
    x = frames()
    pred, loss, metrics = model(x)
    assert pred.shape == (2, 3, 3, 16, 16) and torch.isfinite(loss)
    loss.backward()
    head_grads = [p.grad for n, p in model.named_parameters() if "window_head" in n]
    assert head_grads and all(g is not None and torch.isfinite(g).all() for g in head_grads)
    assert any(g.abs().sum() > 0 for g in head_grads[:4])                 # q/k projections receive gradient
    model.eval()
    act = model.encode(x)
    assert act.shape == (2, 3, model.config.action_dim)
    assert model.indices(act).shape == (2, 3)


def test_frame_size_follows_the_config():
    # 32 px frames, patch 4 -> P = 64 tokens per frame; PEs are built for that grid
    cfg = LatentActionConfig(**{**SMALL, "frame_size": 32}, use_windowed_attention=True)
    model = LatentActionModel(cfg).eval()
    assert model.encoder.patch_embed.pos.shape == (1, 64, 24)
    assert model.encode(frames(size=32)).shape == (2, 3, cfg.action_dim)
    with pytest.raises(WmfastError, match="32"):
        model.encode(frames(size=16))


def test_flag_round_trips_through_a_checkpoint(tmp_path):
    model = LatentActionModel(LatentActionConfig(**SMALL, use_windowed_attention=True)).eval()
    save_model(model, tmp_path / "actions")
    with open(tmp_path / "actions" / "config.json") as f:
        assert json.load(f)["use_windowed_attention"] is True
    loaded = load_model(tmp_path / "actions", "actions")
    assert loaded.config.use_windowed_attention is True
    x = frames()
    torch.testing.assert_close(loaded.encoder(x), model.encoder(x), atol=0, rtol=0)


def test_config_without_the_key_loads_as_legacy(tmp_path):
    model = LatentActionModel(LatentActionConfig(**SMALL)).eval()
    folder = tmp_path / "actions"
    save_model(model, folder)
    path = os.path.join(folder, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    del cfg["use_windowed_attention"]                                      # a checkpoint from before the flag
    with open(path, "w") as f:
        json.dump(cfg, f)
    loaded = load_model(folder, "actions")
    assert loaded.config.use_windowed_attention is False
    x = frames()
    torch.testing.assert_close(loaded.encoder(x), model.encoder(x), atol=0, rtol=0)
