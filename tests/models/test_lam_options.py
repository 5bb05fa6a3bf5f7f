"""The LAM's opt-in settings and the conv architecture: config round trips, legacy untouched,
and a conv LAM that really learns a toy game's two actions from frames alone."""
import json

import numpy as np
import pytest
import torch

from wmfast.checkpoint import load_model, save_model
from wmfast.data import action_agreement
from wmfast.errors import WmfastError
from wmfast.models import LatentActionConfig, LatentActionModel

BODY = dict(frame_size=16, patch_size=4, embed_dim=16, num_heads=2, hidden_dim=32, num_blocks=1)
OPTIONS = [
    dict(architecture="conv", quantizer="vq", n_actions=4, vq_dead_code_every=10, conv_channels=8),
    dict(architecture="conv", quantizer="vq", n_actions=5, onehot_actions=True, code_dim=6, conv_channels=8),
    dict(architecture="conv", quantizer="vq", n_actions=4, conv_context=2, conv_norm="batch", conv_channels=8),
    dict(architecture="conv", quantizer="vq", n_actions=4, conv_context=2, first_pair_weight=0.5, conv_channels=8),
    dict(architecture="conv", quantizer="vq", n_actions=4, action_free_prior=True, changed_pixel_weight=3.0, conv_channels=8),
    dict(quantizer="vq", n_actions=6, action_dim=8, vq_beta=0.5, vq_ema=True, vq_entropy_weight=0.1),
    dict(n_actions=9, fsq_levels=3),
    dict(encoder_frame_diff=True, action_injection="add", decoder_sees_past=True, changed_pixel_weight=5.0),
    dict(film_init_scale=0.5),
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_options_round_trip_and_train(tmp_path, options):
    torch.manual_seed(0)
    model = LatentActionModel(LatentActionConfig(**BODY, **options))
    frames = torch.rand(2, 3, 3, 16, 16) * 2 - 1
    pred, loss, _ = model(frames)
    assert pred.shape == (2, 2, 3, 16, 16) and torch.isfinite(loss)
    loss.backward()
    model.eval()
    save_model(model, tmp_path / "actions")
    saved = json.loads((tmp_path / "actions" / "config.json").read_text())
    for key, value in options.items():
        assert saved[key] == value
    loaded = load_model(tmp_path / "actions", "actions")
    assert loaded.config == model.config
    ids = loaded.indices(loaded.encode(frames))
    assert torch.equal(ids, model.indices(model.encode(frames)))
    assert ids.shape == (2, 2) and int(ids.max()) < loaded.num_actions


def test_first_pair_weight_adds_the_motionless_pair_to_the_loss():
    """conv_context 2: the first pair (no x_t-1) is left out of the loss unless first_pair_weight > 0;
    then it adds w * its MSE, computed here from the prediction by hand."""
    cfg = dict(architecture="conv", quantizer="vq", n_actions=4, conv_context=2, conv_channels=8)
    frames = torch.rand(2, 4, 3, 16, 16) * 2 - 1
    losses = {}
    for w in (0.0, 0.7):
        torch.manual_seed(0)
        model = LatentActionModel(LatentActionConfig(**BODY, **cfg, first_pair_weight=w)).eval()
        pred, loss, _ = model(frames)
        losses[w] = loss
    first = ((pred[:, 0].double() - frames[:, 1].double()) ** 2).mean()
    torch.testing.assert_close(losses[0.7].double(), losses[0.0].double() + 0.7 * first, rtol=1e-5, atol=1e-7)


def test_legacy_config_has_no_new_modules():
    # A tinyworlds-format config (no new keys) builds exactly the legacy state dict.
    model = LatentActionModel(LatentActionConfig(**BODY))
    keys = set(model.state_dict())
    assert not any(k.startswith(("encoder.diff_embed", "decoder.action_embed", "encoder.convs")) for k in keys)
    assert "decoder.transformer.blocks.0.spatial_norm.to_gamma_beta.1.weight" in keys or \
        any("to_gamma_beta" in k for k in keys)


@pytest.mark.parametrize("bad, match", [
    (dict(architecture="mlp"), "architecture"),
    (dict(n_actions=8, fsq_levels=3), "power of 3"),
    (dict(action_injection="concat"), "action_injection"),
    (dict(conv_context=3), "conv_context"),
    (dict(changed_pixel_weight=0.0), "changed_pixel_weight"),
    (dict(first_pair_weight=-1.0), "first_pair_weight"),
    (dict(conv_norm="layer"), "norm"),
])
def test_bad_options_name_the_field(bad, match):
    with pytest.raises(WmfastError, match=match):
        LatentActionConfig(**BODY, **bad)


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
    model = LatentActionModel(LatentActionConfig(frame_size=16, architecture="conv", quantizer="vq", n_actions=2,
                                                 action_dim=8, vq_dead_code_every=20, conv_channels=16))
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
