"""The dynamics model's opt-in settings: config round trips, tinyworlds untouched, each option's
effect checked against a hand-computed reference, and cached rollouts still equal to the reference."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from wmfast import World
from wmfast.checkpoint import load_model, save_model
from wmfast.errors import WmfastError
from wmfast.models import DynamicsConfig, DynamicsModel
from wmfast.nn.transformer import Attention
from wmfast.rollout.reference import reference_rollout
from wmfast.rollout.shapes import random_world_model

BODY = dict(frame_size=16, patch_size=4, embed_dim=16, num_heads=2, hidden_dim=32, num_blocks=2,
            latent_dim=3, num_bins=4, conditioning_dim=5)
OPTIONS = [
    dict(future_mask_prob=0.5),
    dict(changed_token_weight=3.0),
    dict(spatial_window=1),
    dict(spatial_position_bias=True),
    dict(spatial_position_bias=True, spatial_window=1, future_mask_prob=1.0, changed_token_weight=2.0),
    dict(action_position_bias=True, spatial_window=1),
    dict(pause_clip_prob=0.25),
]


def randomize_biases(model):
    with torch.no_grad():
        for block in model.transformer.blocks:
            for p in block.spatial_attn.parameters():
                if p.shape and (p is block.spatial_attn.rel_bias or any(
                        p is q for q in getattr(block.spatial_attn, "action_bias", torch.nn.Identity()).parameters())):
                    p.normal_()


def latents_of(model, idx):
    return model.fsq.latents(idx)                                             # FSQ tokenizer ids -> latents


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_options_round_trip_train_and_load(tmp_path, options):
    torch.manual_seed(0)
    model = DynamicsModel(DynamicsConfig(**BODY, **options))
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, model.config.codebook_size, (2, 3, model.config.num_patches), generator=g)
    lat = latents_of(model, idx)
    act = torch.randn(2, 2, 5, generator=g)
    _, loss, _ = model.training_loss(lat, idx, act, generator=g)
    assert torch.isfinite(loss)
    loss.backward()
    attn = model.transformer.blocks[-1].spatial_attn
    if hasattr(attn, "rel_bias"):              # the biases learn (a gradient reaches them)
        assert attn.rel_bias.grad.abs().sum() > 0
        assert not hasattr(attn, "action_bias") or attn.action_bias.weight.grad.abs().sum() > 0
        randomize_biases(model)
    model.eval()
    save_model(model, tmp_path / "dynamics")
    saved = json.loads((tmp_path / "dynamics" / "config.json").read_text())
    for key, value in options.items():
        assert saved[key] == value
    loaded = load_model(tmp_path / "dynamics", "dynamics")
    assert loaded.config == model.config
    with torch.no_grad():
        assert torch.equal(loaded(lat, act), model(lat, act))


def test_pause_clips_repeat_the_frame_before_the_pause_then_go_on():
    frames = torch.arange(3 * 5, dtype=torch.float32).view(3, 5, 1, 1, 1).expand(3, 5, 3, 2, 2)
    # clip 0: still from frame 1 to the end; clip 1: as it is; clip 2: frame 0 held twice, then frames 1, 2
    paused = DynamicsModel.pause_clips(frames, torch.tensor([1, 5, 1]), torch.tensor([4, 0, 2]))
    assert paused[:, :, 0, 0, 0].tolist() == [[0, 0, 0, 0, 0], [5, 6, 7, 8, 9], [10, 10, 10, 11, 12]]
    to_end = DynamicsModel.pause_clips(frames, torch.tensor([2, 5, 3]))      # no length: to the end
    assert to_end[:, :, 0, 0, 0].tolist() == [[0, 1, 1, 1, 1], [5, 6, 7, 8, 9], [10, 11, 12, 12, 12]]


def test_trainer_pauses_the_share_of_clips_it_is_asked_to(tmp_path):
    from wmfast.train.trainer import _maskgit_noise

    T, P, n = 5, 4, 400
    model = DynamicsModel(DynamicsConfig(**BODY, pause_clip_prob=0.25))
    noise, masked = _maskgit_noise(model, seed=0, step=3, clip_ids=torch.arange(n), T=T, P=P, device="cpu")
    start, length = noise[4], noise[5]
    assert ((start >= 1) & (start <= T)).all()
    paused = start < T
    assert 0.18 < paused.float().mean() < 0.32
    assert ((length[paused] >= 1) & (start[paused] + length[paused] <= T)).all() and (length[~paused] == 0).all()
    resumed = paused & (start + length < T)          # pauses that end inside the clip: a move out of a stop
    assert 0.3 < resumed.sum() / paused.sum() < 0.7
    plain, masked_plain = _maskgit_noise(DynamicsModel(DynamicsConfig(**BODY)), seed=0, step=3, clip_ids=torch.arange(n),
                                         T=T, P=P, device="cpu")
    assert len(plain) == 4 and masked == masked_plain and all(torch.equal(a, b) for a, b in zip(noise[:4], plain))


def test_default_config_builds_the_tinyworlds_modules_only():
    keys = set(DynamicsModel(DynamicsConfig(**BODY)).state_dict())
    assert not any("rel_bias" in k for k in keys)
    attn = DynamicsModel(DynamicsConfig(**BODY)).transformer.blocks[0].spatial_attn
    assert not hasattr(attn, "window_mask") and not hasattr(attn, "rel_bias")


@pytest.mark.parametrize("bad, match", [
    (dict(future_mask_prob=1.5), "future_mask_prob"),
    (dict(spatial_window=-1), "spatial_window"),
    (dict(changed_token_weight=0.0), "changed_token_weight"),
    (dict(pause_clip_prob=-0.1), "pause_clip_prob"),
])
def test_bad_options_name_the_field(bad, match):
    with pytest.raises(WmfastError, match=match):
        DynamicsConfig(**BODY, **bad)


@pytest.mark.parametrize("window", [0, 1])
@pytest.mark.parametrize("by_action", [False, True])
def test_position_bias_and_window_match_a_float64_reference(window, by_action):
    grid, H, E, C = 4, 2, 8, 3
    torch.manual_seed(0)
    attn = Attention(E, H, "space", cond_dim=C if by_action else None)
    if window:
        attn.restrict_to_window(grid, window)
    attn.add_position_bias(grid, C if by_action else 0)
    attn = attn.double()
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_()
    x = torch.randn(2, 1, grid * grid, E, dtype=torch.float64)
    cond = torch.randn(2, 1, C, dtype=torch.float64)
    seq = x[:, 0]                                                             # [B, P, E]
    offset_bias = attn.rel_bias[None].expand(2, -1, -1)                       # [B, H, O]
    if by_action:
        offset_bias = offset_bias + (cond[:, 0] @ attn.action_bias.weight.T + attn.action_bias.bias).view(2, H, -1)
    q, k, v = (p(seq).reshape(2, -1, H, E // H).transpose(1, 2) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
    rows, cols = torch.arange(grid).repeat_interleave(grid), torch.arange(grid).repeat(grid)
    scores = q @ k.transpose(-1, -2) / math.sqrt(E // H)                        # [B, H, P, P]
    for i in range(grid * grid):                                              # bias by relative offset, by hand
        for j in range(grid * grid):
            dr, dc = int(rows[i] - rows[j]), int(cols[i] - cols[j])
            scores[:, :, i, j] += offset_bias[:, :, (dr + grid - 1) * (2 * grid - 1) + dc + grid - 1]
            if window and (abs(dr) > window or abs(dc) > window):
                scores[:, :, i, j] = float("-inf")
    o = (scores.softmax(-1) @ v).transpose(1, 2).reshape(2, -1, E)
    if by_action:   # FiLM norm of the conditioned attention (tested elsewhere), applied to both sides
        want = attn.norm(x + attn.out_proj(o)[:, None], cond)
        torch.testing.assert_close(attn(x, cond), want)
    else:
        torch.testing.assert_close(attn(x), attn.norm(x + attn.out_proj(o)[:, None]))


def test_zero_position_bias_changes_nothing_until_it_learns():
    torch.manual_seed(0)
    plain = DynamicsModel(DynamicsConfig(**BODY))
    biased = DynamicsModel(DynamicsConfig(**BODY, spatial_position_bias=True))
    biased.load_state_dict(plain.state_dict(), strict=False)
    lat = torch.rand(2, 3, plain.config.num_patches, 3) * 2 - 1
    act = torch.randn(2, 2, 5)
    with torch.no_grad():
        torch.testing.assert_close(biased(lat, act), plain(lat, act))
        biased.transformer.blocks[0].spatial_attn.rel_bias[0, 0] = 3.0
        assert not torch.allclose(biased(lat, act), plain(lat, act))


def test_future_mask_prob_one_masks_only_the_last_frame():
    model = DynamicsModel(DynamicsConfig(**BODY, future_mask_prob=1.0))
    B, T, P = 3, 4, model.config.num_patches
    uniforms = torch.rand(B, T, P)
    mask = model.training_mask(torch.tensor(0.7), uniforms, torch.zeros(B, 1, P, dtype=torch.long), torch.zeros(B))
    assert not mask[:, :-1].any()
    assert torch.equal(mask[:, -1], uniforms[:, -1] < 0.7)


def test_changed_token_weight_weighs_the_loss_as_computed_by_hand():
    model = DynamicsModel(DynamicsConfig(**BODY, changed_token_weight=4.0))
    B, T, P = 2, 3, model.config.num_patches
    g = torch.Generator().manual_seed(3)
    idx = torch.randint(0, model.config.codebook_size, (B, T, P), generator=g)
    idx[:, 1, : P // 2] = idx[:, 0, : P // 2]                                # half the tokens unchanged
    lat, act = latents_of(model, idx), torch.randn(B, T - 1, 5, generator=g)
    noise = (torch.tensor(0.99), torch.rand(B, T, P, generator=g), torch.full((B, 1, P), 0), torch.ones(B))
    logits, loss, _ = model.training_loss(lat, idx, act, noise=noise)
    mask = model.training_mask(*noise)
    ce = F.cross_entropy(logits.double().flatten(0, 2), idx.flatten(), reduction="none").view(B, T, P)
    changed = torch.zeros(B, T, P, dtype=torch.bool)
    changed[:, 1:] = idx[:, 1:] != idx[:, :-1]
    w = 1 + 3.0 * changed.double()
    want = (ce * w * mask).sum() / mask.sum()
    torch.testing.assert_close(loss.double(), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("extra", [dict(spatial_window=1, spatial_position_bias=True),
                                   dict(action_position_bias=True)], ids=["window+bias", "action-bias"])
def test_cached_world_equals_the_reference_with_window_and_bias(extra):
    model = random_world_model(frame_size=32, patch_size=4, embed_dim=32, num_heads=4, hidden_dim=64,
                               num_blocks=2, latent_dim=3, num_bins=4, n_actions=8, context_length=3)
    dyn = DynamicsModel(DynamicsConfig(**{**model.dynamics.config.__dict__, **extra}))
    dyn.load_state_dict(model.dynamics.state_dict(), strict=False)
    randomize_biases(dyn)
    model.dynamics = dyn.eval()
    g = torch.Generator().manual_seed(0)
    context = torch.rand(2, 3, 3, 32, 32, generator=g) * 2 - 1
    ids = torch.randint(0, 8, (2, 4), generator=g)
    want = reference_rollout(model, context, ids, steps=4)
    world = World(model, device="cpu", mode="compat", steps=4).reset(context)
    for i in range(ids.shape[1]):
        assert torch.equal(world.step(ids[:, i]), want[:, i]), f"frame {i} differs"
