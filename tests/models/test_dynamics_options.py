"""The dynamics model's opt-in settings: config round trips, tinyworlds untouched, each option's
effect checked against a hand-computed reference, cached rollouts still equal to the reference, and
older config.json files (training keys, removed variants) loading or refused in one line.
How the training clips are drawn (future masking, pauses) is tested in tests/train/."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from wmfast import World
from wmfast.checkpoint import load_config, load_model, save_model
from wmfast.errors import WmfastError
from wmfast.models import DynamicsConfig, DynamicsModel
from wmfast.nn.transformer import Attention
from wmfast.rollout.reference import reference_rollout
from wmfast.rollout.shapes import random_world_model

BODY = dict(frame_size=16, patch_size=4, embed_dim=16, num_heads=2, hidden_dim=32, num_blocks=2,
            latent_dim=3, num_bins=4, conditioning_dim=5)
OPTIONS = [
    dict(spatial_window=1),
    dict(action_position_bias=True),
    dict(action_position_bias=True, spatial_window=1),
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


def test_default_config_builds_the_tinyworlds_modules_only():
    keys = set(DynamicsModel(DynamicsConfig(**BODY)).state_dict())
    assert not any("rel_bias" in k for k in keys)
    attn = DynamicsModel(DynamicsConfig(**BODY)).transformer.blocks[0].spatial_attn
    assert not hasattr(attn, "window_mask") and not hasattr(attn, "rel_bias")


def test_bad_spatial_window_names_the_field():
    with pytest.raises(WmfastError, match="spatial_window"):
        DynamicsConfig(**BODY, spatial_window=-1)


def test_spatial_window_keeps_far_patches_out_of_reach():
    # grid 4x4, window 1, 2 blocks: a patch sees at most 2 rows/columns away, so patch (0, 0) cannot
    # see a change at (3, 3); with global attention it does.
    lat = torch.rand(1, 1, 16, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1
    act = torch.randn(1, 1, 5, generator=torch.Generator().manual_seed(1))
    far = lat.clone()
    far[0, 0, 15] = -far[0, 0, 15]
    for window, reaches in ((1, False), (0, True)):
        torch.manual_seed(0)
        model = DynamicsModel(DynamicsConfig(**BODY, spatial_window=window)).eval()
        with torch.no_grad():
            corner = model(lat, act)[0, 0, 0], model(far, act)[0, 0, 0]
        assert (not torch.equal(*corner)) == reaches, window


def test_future_masking_masks_only_the_last_frame_and_the_loss_counts_only_it():
    model = DynamicsModel(DynamicsConfig(**BODY))
    B, T, P = 3, 4, model.config.num_patches
    uniforms = torch.rand(B, T, P)
    keep = torch.zeros(B, 1, P, dtype=torch.long)
    mask = model.training_mask(torch.tensor(0.7), uniforms, keep, torch.tensor([True, False, True]))
    assert not mask[[0, 2], :-1].any() and torch.equal(mask[[0, 2], -1], uniforms[[0, 2], -1] < 0.7)
    assert torch.equal(mask[1], model.training_mask(torch.tensor(0.7), uniforms, keep)[1])   # tinyworlds' mask
    g = torch.Generator().manual_seed(3)
    idx = torch.randint(0, model.config.codebook_size, (B, T, P), generator=g)
    lat, act = latents_of(model, idx), torch.randn(B, T - 1, 5, generator=g)
    # Drawn by the model itself: with probability 1 every clip masks its last frame only.
    logits, loss, _ = model.training_loss(lat, idx, act, generator=torch.Generator().manual_seed(4),
                                          future_mask_prob=1.0)
    g = torch.Generator().manual_seed(4)                                     # the draws it made, in order
    ratio = 0.5 + 0.5 * torch.rand((), generator=g)
    last = torch.rand(B, T, P, generator=g)[:, -1] < ratio                    # [B, P]
    ce = F.cross_entropy(logits[:, -1].double().flatten(0, 1), idx[:, -1].flatten(), reduction="none").view(B, P)
    torch.testing.assert_close(loss.double(), (ce * last).sum() / last.sum(), rtol=1e-5, atol=1e-6)
    _, plain, _ = model.training_loss(lat, idx, act, generator=torch.Generator().manual_seed(4))
    assert not torch.isclose(plain, loss)


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


def test_zero_position_bias_changes_nothing_until_it_learns_and_then_the_action_steers_it():
    torch.manual_seed(0)
    plain = DynamicsModel(DynamicsConfig(**BODY))
    biased = DynamicsModel(DynamicsConfig(**BODY, action_position_bias=True))
    biased.load_state_dict(plain.state_dict(), strict=False)
    lat = torch.rand(2, 3, plain.config.num_patches, 3) * 2 - 1
    act = torch.randn(2, 2, 5)
    other = torch.randn(2, 2, 5)
    with torch.no_grad():
        torch.testing.assert_close(biased(lat, act), plain(lat, act))
        attn = biased.transformer.blocks[0].spatial_attn
        attn.rel_bias[0, 0] = 3.0                                              # the offset bias alone
        assert not torch.allclose(biased(lat, act), plain(lat, act))
        static = biased(lat, act) - biased(lat, other)
        attn.action_bias.weight.normal_()                                       # the action sets the bias
        assert not torch.allclose(biased(lat, act) - biased(lat, other), static)


@pytest.mark.parametrize("extra", [dict(spatial_window=1, action_position_bias=True),
                                   dict(action_position_bias=True)], ids=["window+action-bias", "action-bias"])
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


# -- older config.json files ----------------------------------------------------------------------

def saved_config(tmp_path, **keys):
    model = DynamicsModel(DynamicsConfig(**BODY, spatial_window=1))
    save_model(model, tmp_path / "dynamics")
    path = tmp_path / "dynamics" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **keys}))
    return model


def test_an_old_config_with_training_keys_and_removed_options_at_their_defaults_loads(tmp_path):
    # future_mask_prob / pause_clip_prob only shaped the training clips; the removed variants at the
    # values every kept model was built with change nothing either.
    model = saved_config(tmp_path, future_mask_prob=1.0, pause_clip_prob=0.3, changed_token_weight=1.0,
                         spatial_position_bias=False)
    _, cfg = load_config(tmp_path / "dynamics", "dynamics")
    assert cfg == model.config
    loaded = load_model(tmp_path / "dynamics", "dynamics")
    lat, act = torch.rand(1, 2, model.config.num_patches, 3) * 2 - 1, torch.randn(1, 1, 5)
    with torch.no_grad():
        assert torch.equal(loaded(lat, act), model.eval()(lat, act))


def test_the_shipped_maze_config_loads_without_its_training_keys():
    from wmfast.train.recipes import pretrained_run

    folder = f"{pretrained_run('maze')}/dynamics"
    raw = json.loads(open(f"{folder}/config.json").read())
    assert raw["future_mask_prob"] == 1.0 and raw["pause_clip_prob"] == 0.3      # written before the move
    _, cfg = load_config(folder, "dynamics")
    assert cfg.action_position_bias and cfg.spatial_window == 1
    assert not hasattr(cfg, "future_mask_prob") and not hasattr(cfg, "pause_clip_prob")


@pytest.mark.parametrize("key, value", [("changed_token_weight", 2.0), ("spatial_position_bias", True)])
def test_a_removed_option_with_another_value_is_one_line_naming_it(tmp_path, key, value):
    saved_config(tmp_path, **{key: value})
    with pytest.raises(WmfastError, match=f"DynamicsConfig.{key}={value!r} was removed") as e:
        load_model(tmp_path / "dynamics", "dynamics")
    assert "\n" not in str(e.value)
