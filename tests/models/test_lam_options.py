"""Every LAM option does what its comment claims (an option that did nothing fails here), old
config.json files load to the right model, and a conv LAM really learns a toy game's two actions
from frames alone. The windowed-attention encoder has its own file (test_windowed_lam.py)."""
import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wmfast.checkpoint import load_model, save_model
from wmfast.data import action_agreement
from wmfast.errors import WmfastError
from wmfast.models import ConvLam, ConvLamConfig, LatentActionConfig, LatentActionModel, TransformerLam, \
    TransformerLamConfig, VQConfig
from wmfast.models.latent_actions import REMOVED

BODY = dict(frame_size=16, patch_size=4, embed_dim=16, num_heads=2, hidden_dim=32, num_blocks=1)
MAZE_ACTIONS = "wmfast/assets/pretrained/maze/actions"


def frames_(batch=2, t=3, seed=0):
    return torch.rand(batch, t, 3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def conv(**options):
    torch.manual_seed(0)
    return ConvLam(ConvLamConfig(**{"frame_size": 16, "n_actions": 4, "conv_channels": 8, **options}))


def transformer(**options):
    torch.manual_seed(0)
    return TransformerLam(TransformerLamConfig(**{**BODY, "n_actions": 4, **options}))


# -- tinyworlds LAM ------------------------------------------------------------------------------
def test_fsq_latents_are_bits_and_vq_latents_are_codebook_rows():
    fsq = transformer().eval()
    a = fsq.encode(frames_())
    assert fsq.config.action_dim == 2 and a.shape == (2, 2, 2) and set(a.unique().tolist()) <= {-1.0, 1.0}
    vq = transformer(quantizer="vq", n_actions=6, action_dim=5).eval()
    a = vq.encode(frames_())
    assert a.shape == (2, 2, 5) and vq.num_actions == 6
    torch.testing.assert_close(a, vq.quantizer.codebook[vq.indices(a)], atol=1e-6, rtol=0)


def test_variance_hinge_adds_weight_times_the_shortfall():
    """One frame pair repeated: the encoder's batch variance is 0, so the hinge adds weight * target."""
    clip = frames_(1, t=2).expand(4, -1, -1, -1, -1)
    loss = {}
    for weight, target in ((0.0, 0.01), (100.0, 0.01), (100.0, 0.0)):
        _, loss[weight, target], m = transformer(variance_weight=weight, variance_target=target)(clip)
        assert float(m["encoder_variance"]) < 1e-12
    torch.testing.assert_close(loss[100.0, 0.01] - loss[0.0, 0.01], torch.tensor(1.0), atol=1e-5, rtol=0)
    torch.testing.assert_close(loss[100.0, 0.0], loss[0.0, 0.01], atol=1e-6, rtol=0)


def test_transformer_vq_takes_its_vq_settings():
    model = transformer(quantizer="vq", vq=VQConfig(beta=0.5, dead_code_every=7))
    assert (model.quantizer.beta, model.quantizer.dead_code_every) == (0.5, 7)


# -- conv LAM ------------------------------------------------------------------------------------
def test_code_dim_and_conv_channels_set_the_widths():
    model = conv(code_dim=5, conv_channels=16)
    z = model.encoder(frames_())
    assert z.shape == (2, 2, 5) and model.vq.codebook.shape == (4, 5)
    assert model.encoder.convs[0][0].out_channels == 16 and model.decoder.film.proj.weight.shape == (32, 5)
    assert model.config.action_dim == 5


def test_onehot_actions_hand_the_world_model_code_ids_and_the_decoder_code_vectors():
    model = conv(onehot_actions=True, code_dim=6, n_actions=5).eval()
    x = frames_()
    a = model.encode(x)
    assert model.config.action_dim == 5 and a.shape == (2, 2, 5)
    assert torch.equal(a.sum(-1), torch.ones(2, 2)) and set(a.unique().tolist()) <= {0.0, 1.0}
    ids = model.indices(a)
    assert torch.equal(ids, model.vq.indices(model.encoder(x)))
    want = model.decoder(x, model.vq.codebook[ids])
    assert torch.equal(model.decode(x, a), want)
    plain = conv(code_dim=6, n_actions=5).eval()
    assert plain.config.action_dim == 6 and plain.encode(x).shape == (2, 2, 6)


@pytest.mark.parametrize("norm, independent", [("group", True), ("none", True), ("batch", False)])
def test_conv_norm_decides_whether_clips_of_a_batch_see_each_other(norm, independent):
    model = conv(conv_norm=norm).train()
    x = frames_(4)
    alone, together = model.encoder(x[:1]), model.encoder(x)[:1]
    assert torch.allclose(alone, together, atol=1e-6) is independent
    kinds = {type(m).__name__ for m in model.encoder.modules()}
    assert ("BatchNorm2d" in kinds) is (norm == "batch") and ("GroupNorm" in kinds) is (norm == "group")


@pytest.mark.parametrize("context", [1, 2])
def test_conv_context_2_lets_the_decoder_read_the_frame_before(context):
    """Pair 1 (frame 1 -> 2) under fixed codes: frame 0 changes the prediction only with context 2."""
    model = conv(conv_context=context).eval()
    x = frames_(t=3)
    codes = torch.randn(2, 2, 16)
    other = x.clone()
    other[:, 0] = -x[:, 0]
    moved = not torch.equal(model.decoder(x, codes)[:, 1], model.decoder(other, codes)[:, 1])
    assert moved is (context == 2)


def test_first_pair_weight_adds_the_motionless_pair_to_the_loss():
    """conv_context 2: the first pair (no x_t-1) is left out of the loss unless first_pair_weight > 0;
    then it adds w * its MSE, computed here from the prediction by hand."""
    x = frames_(t=4)
    losses = {}
    for w in (0.0, 0.7):
        pred, losses[w], _ = conv(conv_context=2, first_pair_weight=w).eval()(x)
    first = ((pred[:, 0].double() - x[:, 1].double()) ** 2).mean()
    torch.testing.assert_close(losses[0.7].double(), losses[0.0].double() + 0.7 * first, rtol=1e-5, atol=1e-7)
    # and without the weight the first pair does not count: the loss is the rest's MSE + the VQ's loss
    model = conv(conv_context=2).eval()
    pred, loss, _ = model(x)
    rest = F.mse_loss(pred[:, 1:], x[:, 2:])
    torch.testing.assert_close(loss, rest + sum(model.vq.last_losses.values()), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("frames", [2, 4])
def test_encoder_frames_set_which_frames_code_a_pair(frames):
    """Pair 1 (frame 1 -> 2) of a 4-frame clip: frames 0 and 3 change its code only with encoder_frames 4;
    frames 1 and 2 always do. Past the clip's ends the first / last frame stands in."""
    model = conv(encoder_frames=frames).eval()
    x = frames_(t=4)
    z = model.encoder(x)
    for t in range(4):
        other = x.clone()
        other[:, t] = -x[:, t]
        moved = not torch.allclose(model.encoder(other)[:, 1], z[:, 1])
        assert moved is (frames == 4 or t in (1, 2)), t
    if frames == 4:
        window = model.encoder.window(x)                    # [B (T-1), 4, 3, H, W]
        assert torch.equal(window[0], x[0, [0, 0, 1, 2]]) and torch.equal(window[2], x[0, [1, 2, 3, 3]])


def test_diff_gain_scales_only_the_difference_channels():
    """The encoder's first conv sees the frames as they are and their differences times diff_gain: the
    same weights with the difference inputs multiplied by the gain give the same code."""
    plain, gained = conv(), conv(diff_gain=8.0)
    gained.load_state_dict(plain.state_dict())
    with torch.no_grad():
        plain.encoder.convs[0][0].weight[:, 6:] *= 8.0
    x = frames_()
    torch.testing.assert_close(gained.encoder(x), plain.encoder(x))


def test_changed_weight_weights_the_changed_pixels_in_the_loss():
    """changed_weight w: the reconstruction loss is sum(err * weight) / sum(weight) with weight w on
    pixels that changed from x_t to x_t+1 (grown by one pixel) and 1 elsewhere, computed here by hand."""
    x = torch.zeros(1, 2, 3, 16, 16) - 1
    x[0, 1, :, 5, 7] = 1.0                                  # one pixel lights up
    model = conv(changed_weight=5.0).eval()
    pred = model.decoder(x, model.quantizer(model.encoder(x))[0])
    err = ((pred[0, 0].double() - x[0, 1].double()) ** 2)   # [3, H, W]
    weight = torch.ones(16, 16, dtype=torch.float64)
    weight[4:7, 6:9] = 5.0
    expected = (err * weight).mean() / weight.mean()
    torch.testing.assert_close(model.reconstruction_loss(pred, x).double(), expected, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(conv().eval().reconstruction_loss(pred, x).double(), err.mean(), rtol=1e-5, atol=1e-8)


def vq_losses(**vq):
    model = conv(vq=VQConfig(**vq))
    x = frames_()
    _, loss, _ = model(x)
    return model, x, loss


def test_vq_beta_scales_the_commitment_loss():
    m, x, low = vq_losses(beta=0.25)
    _, _, high = vq_losses(beta=1.25)
    z = m.encoder(x)
    commitment = F.mse_loss(z, m.vq.quantize(z).detach())
    torch.testing.assert_close(high - low, commitment, rtol=1e-4, atol=1e-6)


def test_vq_entropy_weight_adds_the_weighted_entropy_loss():
    _, _, base = vq_losses()
    m, _, loss = vq_losses(entropy_weight=0.3)
    entropy = m.vq.last_losses["entropy"]
    assert float(entropy) != 0.0
    torch.testing.assert_close(loss - base, entropy, rtol=1e-5, atol=1e-6)


def test_vq_ema_moves_the_codebook_in_forward_not_by_gradient():
    plain, ema = conv(), conv(vq=VQConfig(ema=True))
    assert isinstance(plain.vq.codebook, torch.nn.Parameter) and not isinstance(ema.vq.codebook, torch.nn.Parameter)
    before = plain.vq.codebook.detach().clone(), ema.vq.codebook.clone()
    plain(frames_()), ema(frames_())
    assert torch.equal(plain.vq.codebook, before[0]) and not torch.equal(ema.vq.codebook, before[1])
    assert "codebook" in plain.vq.last_losses and "codebook" not in ema.vq.last_losses


@pytest.mark.parametrize("every", [0, 1])
def test_vq_dead_code_every_replaces_unused_codes_by_encoder_outputs(every):
    model = conv(n_actions=16, vq=VQConfig(dead_code_every=every))
    x = frames_(1)
    before = model.vq.codebook.detach().clone()
    used = model.vq.indices(model.encoder(x)).flatten().unique()
    z = model.encoder(x).detach().flatten(0, 1)                     # [2, code dim]
    model(x)
    unused = torch.ones(16, dtype=torch.bool)
    unused[used] = False
    after = model.vq.codebook.detach()
    if every == 0:
        assert torch.equal(after, before)
    else:
        assert torch.equal(after[used], before[used])
        assert all(any(torch.equal(row, zi) for zi in z) for row in after[unused])


@pytest.mark.parametrize("bad, match", [
    (dict(architecture="mlp"), "architecture"),
    (dict(n_actions=6), "power of 2"),
    (dict(architecture="conv", quantizer="vq", conv_context=3), "conv_context"),
    (dict(architecture="conv", quantizer="vq", first_pair_weight=-1.0), "first_pair_weight"),
    (dict(architecture="conv", quantizer="vq", conv_norm="layer"), "norm"),
    (dict(architecture="conv", quantizer="vq", conv_channels=12), "conv_channels"),
    (dict(architecture="conv", quantizer="vq", vq_beta=-1.0), "beta"),
    (dict(architecture="conv", quantizer="vq", encoder_frames=3), "encoder_frames"),
    (dict(architecture="conv", quantizer="vq", diff_gain=0.0), "diff_gain"),
    (dict(architecture="conv", quantizer="vq", changed_weight=-2.0), "changed_weight"),
])
def test_bad_options_name_the_field(bad, match):
    with pytest.raises(WmfastError, match=match):
        LatentActionConfig(**BODY, **bad)


# -- saved configs -------------------------------------------------------------------------------
def old_config(**fields) -> dict:
    """A config.json as the one-class LatentActionConfig saved it: every old field."""
    old = {f.name: f.default for f in dataclasses.fields(LatentActionConfig)}
    return {"kind": "actions", **old, **BODY, **fields}


def write_run(tmp_path, config: dict, model):
    folder = tmp_path / "actions"
    save_model(model, folder)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_old_config_json_loads_to_the_model_its_architecture_names(tmp_path):
    old = json.loads(open(f"{MAZE_ACTIONS}/config.json").read())
    assert old["architecture"] == "conv" and "vq_dead_code_every" in old   # the shipped model is an old config
    maze = load_model(MAZE_ACTIONS, "actions")
    assert isinstance(maze, ConvLam)
    assert maze.config == ConvLamConfig(frame_size=32, n_actions=8, code_dim=16, onehot_actions=True, conv_context=2,
                                        first_pair_weight=0.1, vq=VQConfig(dead_code_every=100))
    tw = transformer(n_actions=8)
    for arch in ("transformer", None):
        cfg = old_config(n_actions=8, action_dim=3)
        if arch is None:   # configs from before the conv LAM have no architecture key
            del cfg["architecture"]
        loaded = load_model(write_run(tmp_path / str(arch), cfg, tw), "actions")
        assert type(loaded) is TransformerLam and loaded.config == tw.config
    # an old conv LAM without one-hot latents: its code width was action_dim
    c = conv(code_dim=12)
    cfg = old_config(architecture="conv", quantizer="vq", n_actions=4, action_dim=12, conv_channels=8,
                     vq_beta=0.25, vq_dead_code_every=0)
    loaded = load_model(write_run(tmp_path / "conv", cfg, c), "actions")
    assert type(loaded) is ConvLam and loaded.config == c.config


@pytest.mark.parametrize("key, value", [*((k, {bool: True, int: 3, float: 0.5, str: "add"}[type(v)])
                                          for k, v in REMOVED.items()),
                                        ("onehot_actions", True)])
def test_a_removed_option_with_a_non_default_value_is_named(tmp_path, key, value):
    cfg = old_config(**{key: value, "quantizer": "vq" if key == "onehot_actions" else "fsq", "n_actions": 4})
    with pytest.raises(WmfastError, match=rf"{key}={value!r} was removed") as e:
        load_model(write_run(tmp_path, cfg, transformer()), "actions")
    assert "\n" not in str(e.value) and str(e.value).startswith(str(tmp_path))


def test_a_conv_lam_with_the_old_default_fsq_quantizer_is_named(tmp_path):
    cfg = old_config(architecture="conv", quantizer="fsq", n_actions=4, conv_channels=8)
    with pytest.raises(WmfastError, match="quantizer='fsq' was removed from the conv LAM"):
        load_model(write_run(tmp_path, cfg, conv()), "actions")


def test_new_config_json_names_its_class_and_round_trips(tmp_path):
    for model in (conv(onehot_actions=True, vq=VQConfig(ema=True, entropy_weight=0.1)),
                  transformer(quantizer="vq", vq=VQConfig(beta=0.5))):
        folder = tmp_path / type(model).__name__
        save_model(model.eval(), folder)
        saved = json.loads((folder / "config.json").read_text())
        assert saved["architecture"] == model.config.ARCHITECTURE and isinstance(saved["vq"], dict)
        loaded = load_model(folder, "actions")
        assert type(loaded) is type(model) and loaded.config == model.config
        x = frames_()
        assert torch.equal(loaded.encode(x), model.encode(x))


def test_latent_action_model_builds_the_lam_of_any_lam_config():
    assert type(LatentActionModel(ConvLamConfig(frame_size=16))) is ConvLam
    assert type(LatentActionModel(LatentActionConfig(**BODY))) is TransformerLam
    with pytest.raises(WmfastError, match="no latent action model"):
        LatentActionModel(VQConfig())


# -- a conv LAM learns ---------------------------------------------------------------------------
def toy_game(n: int, rng):
    """A 3x3 block on a dark 16x16 field moves 2 px left (action 0) or right (action 1)."""
    frames = np.full((n, 2, 3, 16, 16), -1.0, np.float32)
    actions = rng.integers(0, 2, n)
    x = rng.integers(3, 11, n)
    y = rng.integers(0, 13, n)
    for i in range(n):
        frames[i, 0, :, y[i]:y[i] + 3, x[i]:x[i] + 3] = 1.0
        x1 = x[i] + (2 if actions[i] else -2)
        frames[i, 1, :, y[i]:y[i] + 3, x1:x1 + 3] = 1.0
    return torch.from_numpy(frames), actions


def test_conv_lam_learns_a_toy_games_actions_from_frames():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = ConvLam(ConvLamConfig(frame_size=16, n_actions=2, code_dim=8, vq=VQConfig(dead_code_every=20),
                                  conv_channels=16))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(250):
        frames, _ = toy_game(32, rng)          # the true actions are never seen in training
        _, loss, _ = model(frames)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    frames, actions = toy_game(400, np.random.default_rng(1))
    ids = model.indices(model.encode(frames)).flatten().numpy()
    assert action_agreement(actions, ids)["nmi"] > 0.9


def test_every_lam_configs_fields_are_settable_from_the_command_line():
    # `wmfast train actions --set KEY=VALUE` checks keys against the flat LatentActionConfig: a field
    # added to one LAM's config must be settable there without also being added to the flat one.
    from wmfast.config import check_overrides

    keys = set(LatentActionConfig.settable())
    for cfg_cls in (ConvLamConfig, TransformerLamConfig):
        assert {f.name for f in dataclasses.fields(cfg_cls)} - {"vq"} <= keys, cfg_cls
    assert {"vq_beta", "vq_ema", "vq_dead_code_every", "vq_entropy_weight"} <= keys and "vq" not in keys
    with pytest.raises(WmfastError, match="--set conv_context must be"):
        check_overrides(LatentActionConfig, {"conv_context": 3})
