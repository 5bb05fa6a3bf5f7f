"""The three policies: the ACT configuration (parameter count, every decoder layer used), shapes,
and that a tiny policy can fit a toy dataset."""
import copy

import numpy as np
import pytest
import torch

from wmfast.errors import WmfastError
from wmfast.checkpoint import save_model
from wmfast.policy import PolicyConfig, build_policy, count_params, load_policy, to_input
from wmfast.models.policy import ACTPolicy
from wmfast.policy.train import PolicyTrainConfig, Samples, eval_loss, fit


def test_act_has_exactly_69282_parameters():
    model = ACTPolicy(PolicyConfig(kind="act"))
    assert count_params(model) == 69_282
    # the pieces, hand-counted (see wmfast/models/policy.py)
    assert count_params(model.cnn) == (3 * 32 * 9 + 32) + (32 * 32 * 9 + 32)
    assert model.pos.shape == (1, 256, 32) and model.queries.shape == (1, 8, 32)
    assert torch.equal(model.queries, torch.zeros(1, 8, 32))
    assert len(model.decoder.layers) == 2 and model.decoder.norm is None
    assert (model.head.in_features, model.head.out_features) == (32, 2)


def test_cnn_turns_128_pixels_into_16x16_tokens():
    model = ACTPolicy(PolicyConfig(kind="act"))
    f = model.cnn(torch.zeros(1, 3, 128, 128))
    assert f.shape == (1, 32, 16, 16)
    assert model(torch.zeros(3, 3, 128, 128)).shape == (3, 8, 2)


def test_act_chains_every_decoder_layer():
    """The output equals head(layer2(layer1(queries, tokens), tokens)), computed layer by layer, and
    perturbing either layer changes it (ACT's reference code only used one layer)."""
    cfg = PolicyConfig(kind="act", frame_size=32, dropout=0.0)
    model = ACTPolicy(cfg).eval()
    with torch.no_grad():
        model.queries.normal_()  # trained queries differ; zeros would hide nothing here but be less general
        x = torch.rand(2, 3, 32, 32) * 2 - 1
        y = model(x)
        tokens = model.cnn(x).flatten(2).transpose(1, 2) + model.pos
        h = model.queries.expand(2, -1, -1)
        for layer in model.decoder.layers:
            h = layer(h, tokens)
        torch.testing.assert_close(y, model.head(h))
        for i in range(len(model.decoder.layers)):
            other = copy.deepcopy(model)
            for p in other.decoder.layers[i].parameters():
                p.add_(0.1 * torch.randn_like(p))
            assert (other(x) - y).abs().max() > 1e-3, f"decoder layer {i} does not change the output"
            h = model.queries.expand(2, -1, -1)
            for j, layer in enumerate(model.decoder.layers):
                h = h if j == i else layer(h, tokens)
            assert (model.head(h) - y).abs().max() > 1e-3, f"skipping decoder layer {i} does not change the output"


@pytest.mark.parametrize("kind,chunk", [("bc", 1), ("chunk", 8), ("act", 8)])
def test_policies_output_chunks_and_round_trip(tmp_path, kind, chunk):
    cfg = PolicyConfig(kind=kind, frame_size=32, chunk=chunk)
    model = build_policy(cfg).eval()
    frames = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    y = model(to_input(frames))
    assert y.shape == (2, chunk, 2)
    save_model(model, tmp_path / "run")
    again = load_policy(tmp_path / "run")
    torch.testing.assert_close(again(to_input(frames)), y)


def test_discrete_policy_outputs_logits_per_query():
    cfg = PolicyConfig(kind="act", frame_size=16, action_space="discrete", num_actions=3)
    assert build_policy(cfg)(torch.zeros(1, 3, 16, 16)).shape == (1, 8, 3)


def _toy_frames(n: int, size: int = 32):
    """n images, each a coloured square in its own cell of a 4x4 grid (distinct after max-pooling)."""
    rng = np.random.default_rng(0)
    frames = np.zeros((n, size, size, 3), np.uint8)
    cell = size // 4
    for i in range(n):
        r, c = divmod(i, 4)
        frames[i, cell * r:cell * (r + 1), cell * c:cell * (c + 1)] = rng.integers(80, 256, 3)
    return frames


@pytest.mark.parametrize("discrete", [False, True])
def test_tiny_act_overfits_a_toy_dataset(discrete):
    """A real learned property: 8 images, each with its own chunk (a direction that slows down along
    the chunk, like a reach; for classes, a per-image action that changes half way), are memorized."""
    rng = np.random.default_rng(1)
    n, k = 8, 4
    frames = _toy_frames(n)
    if discrete:
        first = rng.integers(0, 3, (n, 1))
        targets = np.where(np.arange(k)[None, :] < k // 2, first, (first + 1) % 3)        # [n, k]
        cfg = PolicyConfig(kind="act", frame_size=32, chunk=k, dropout=0.0, action_space="discrete", num_actions=3)
    else:
        targets = (rng.uniform(-1, 1, (n, 1, 2)) * np.linspace(1, 0.25, k)[None, :, None]).astype(np.float32)
        cfg = PolicyConfig(kind="act", frame_size=32, chunk=k, dropout=0.0)
    data = Samples(frames, targets, np.ones((n, k), bool))
    model = build_policy(cfg)
    before = eval_loss(model, data, discrete)
    fit(model, data, epochs=100, cfg=PolicyTrainConfig(batch_size=4, lr=3e-3, warmup_steps=10, weight_decay=0.0))
    after = eval_loss(model, data, discrete)
    assert after < 0.25 * before, (before, after)
    if discrete:
        pred = model.eval()(to_input(frames)).argmax(-1).numpy()
        assert (pred == targets).mean() == 1.0


def test_bad_policy_inputs_are_one_line_errors(tmp_path):
    with pytest.raises(WmfastError, match="kind"):
        PolicyConfig(kind="gpt")
    with pytest.raises(WmfastError, match="multiple of 8"):
        PolicyConfig(frame_size=20)
    with pytest.raises(WmfastError, match="chunk=1"):
        PolicyConfig(kind="bc", chunk=8)
    with pytest.raises(WmfastError, match="num_actions"):
        PolicyConfig(action_space="discrete", num_actions=0)
    model = build_policy(PolicyConfig(frame_size=16))
    with pytest.raises(WmfastError, match=r"\[B, 3, 16, 16\]"):
        model(torch.zeros(1, 3, 32, 32))
    with pytest.raises(WmfastError, match="uint8"):
        to_input(np.zeros((1, 16, 16, 3), np.float32))
    with pytest.raises(WmfastError, match="not found"):
        load_policy(tmp_path / "nope")
    save_model(model, tmp_path / "run")
    (tmp_path / "run" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(WmfastError, match="corrupt"):
        load_policy(tmp_path / "run")
