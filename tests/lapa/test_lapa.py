"""LAPA latent-action VQ-VAE: shapes at 210 x 160, the no-skip property, the episode split,
dead-code reset, training resume, extraction round trip, the Python API and bad inputs."""
import json
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

import wmfast
from wmfast.checkpoint import load_classifier
from wmfast.data import load_dataset
from wmfast.errors import WmfastError
from wmfast.lapa import LapaTrainConfig, PairData, extract_codes, split_episodes, train_lapa
from wmfast.lapa.data import load_split
from wmfast.lapa.evaluate import evaluate_lapa
from wmfast.models.lapa import CONFIGS, LapaConfig, LapaModel, named_config

from lapa_synth import breakout_like, tiny_config

TINY = dict(width_mult=1 / 16, code_dim=8, num_codes=16)


def quick_train(**kw) -> LapaTrainConfig:
    base = dict(iterations=4, batch_size=4, val_every=2, val_pairs=4, recon_every=1000, usage_every=1000,
                save_every=2, progress=False, lr=1e-3)
    return LapaTrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, breakout_h5):
    run = str(tmp_path_factory.mktemp("lapa_run"))
    train_lapa(run, breakout_h5, config="lapa-breakout-small", train=quick_train(), model_overrides=TINY)
    return run


# -- the model ---------------------------------------------------------------------------------

def test_full_width_default_matches_the_specification():
    cfg = named_config("lapa-breakout")
    assert cfg == LapaConfig() and cfg.grayscale and not cfg.pooled and cfg.conditioning == "film"
    assert cfg.widths == [64, 128, 256, 512, 512] and cfg.grid == (7, 5)
    m = LapaModel(cfg)
    convs = [b[0] for b in m.encoder.convs]
    assert [(c.in_channels, c.out_channels, c.stride) for c in convs] == \
        [(2, 64, (2, 2)), (64, 128, (2, 2)), (128, 256, (2, 2)), (256, 512, (2, 2)), (512, 512, (2, 2))]
    assert (m.encoder.proj.in_channels, m.encoder.proj.out_channels, m.encoder.proj.kernel_size) == (512, 128, (1, 1))
    assert tuple(m.quantizer.codebook.shape) == (256, 128) and m.quantizer.beta == 0.25
    assert m.quantizer.dead_code_every == 10000 and m.quantizer.entropy_weight > 0
    ups = [b[0] if isinstance(b, torch.nn.Sequential) else b for b in m.decoder.ups]
    assert [(u.in_channels, u.out_channels) for u in ups] == [(512, 512), (512, 256), (256, 128), (128, 64), (64, 1)]
    assert LapaModel(LapaConfig(grayscale=False)).encoder.convs[0][0].in_channels == 6
    assert set(CONFIGS) == {"lapa-breakout", "lapa-breakout-small"}


@pytest.mark.parametrize("kw, code_shape, channels", [
    ({}, (7, 5), 3),
    ({"grayscale": True}, (7, 5), 1),
    ({"pooled": True}, (), 3),
    ({"conditioning": "attention"}, (7, 5), 3),
])
def test_shapes_at_210x160(kw, code_shape, channels):
    torch.manual_seed(0)
    m = LapaModel(tiny_config(**kw))
    x0, x1 = torch.rand(2, 3, 210, 160), torch.rand(2, 3, 210, 160)
    recon, loss, metrics = m(x0, x1)
    assert recon.shape == (2, channels, 210, 160) and loss.dim() == 0 and torch.isfinite(loss)
    assert metrics["indices"].shape == (2, *code_shape)
    m.eval()
    codes = m.encode(x0, x1)
    assert codes.shape == (2, *code_shape) and codes.dtype == torch.int64
    out = m.decode(x0, codes)
    assert out.shape == (2, channels, 210, 160) and out.min() >= 0 and out.max() <= 1
    loss.backward()   # gradients reach the encoder through the straight-through estimator
    assert m.encoder.proj.weight.grad.abs().sum() > 0


def test_other_frame_sizes_decode_back_exactly():
    m = LapaModel(tiny_config(height=100, width=64)).eval()
    x = torch.rand(1, 3, 100, 64)
    assert m.config.grid == (4, 2) and m.decode(x, m.encode(x, x)).shape == (1, 3, 100, 64)


def test_zeroing_the_code_changes_the_output():
    torch.manual_seed(0)
    m = LapaModel(tiny_config()).eval()
    x0 = torch.rand(2, 3, 210, 160)
    q = m.latents(m.encode(x0, torch.rand(2, 3, 210, 160)))                     # [2, 7, 5, 8]
    with torch.no_grad():
        a, b = m.decoder(x0, q), m.decoder(x0, torch.zeros_like(q))
    assert (a - b).abs().max() > 1e-3


def test_frame_t_reaches_the_output_only_through_the_bottleneck():
    """No skip connection: with the frame path's 7 x 5 output held fixed, frame t no longer matters,
    so two different frames t+1 after the same frame t can only be told apart by the code."""
    torch.manual_seed(0)
    m = LapaModel(tiny_config()).eval()
    q = m.latents(torch.randint(0, 16, (1, 7, 5)))
    fixed = m.decoder.frame_convs(torch.rand(1, 3, 210, 160)).detach()
    m.decoder.frame_convs.forward = lambda x: fixed.expand(x.shape[0], -1, -1, -1)
    with torch.no_grad():
        out_a = m.decoder(torch.zeros(1, 3, 210, 160), q)
        out_b = m.decoder(torch.rand(1, 3, 210, 160), q)
    assert torch.equal(out_a, out_b)
    # Constructed case: the same frame t, the ball moved up in one future and down in the other.
    x0 = torch.zeros(1, 3, 210, 160)
    x0[..., 120:124, 80:82] = 1
    up, down = torch.zeros_like(x0), torch.zeros_like(x0)
    up[..., 116:120, 80:82] = 1
    down[..., 124:128, 80:82] = 1
    m2 = LapaModel(tiny_config()).eval()
    same_code = m2.encode(x0, up)
    pred = m2.decode(x0, same_code)                         # the frame path alone (code held fixed)
    worst = max(float((pred - up).pow(2).sum()), float((pred - down).pow(2).sum()))
    assert worst >= float((up - down).pow(2).sum()) / 4 - 1e-6   # one of the two futures is always missed


def test_learned_background_starts_as_the_mean_frame_and_is_no_skip():
    torch.manual_seed(0)
    m = LapaModel(tiny_config(background=True)).eval()
    frames = torch.rand(4, 3, 210, 160)
    m.init_background(frames)
    x0, x1 = torch.rand(2, 3, 210, 160), torch.rand(2, 3, 210, 160)
    torch.testing.assert_close(m.decode(x0, m.encode(x0, x1)), frames.mean(0).expand(2, -1, -1, -1))
    torch.nn.init.normal_(m.decoder.ups[-1][0].weight, std=0.1)     # as after training: not just the background
    fixed = m.decoder.frame_convs(torch.rand(1, 3, 210, 160)).detach()
    m.decoder.frame_convs.forward = lambda x: fixed.expand(x.shape[0], -1, -1, -1)
    q = m.latents(torch.randint(0, 16, (1, 7, 5)))
    with torch.no_grad():
        out_a, out_b = m.decoder(torch.zeros(1, 3, 210, 160), q), m.decoder(torch.rand(1, 3, 210, 160), q)
        other = m.decoder(torch.zeros(1, 3, 210, 160), m.latents(torch.randint(0, 16, (1, 7, 5))))
    assert torch.equal(out_a, out_b) and not torch.equal(out_a, other)   # frame t only via the bottleneck


def test_clamped_loss_ignores_only_overshoot_of_saturated_pixels():
    torch.manual_seed(0)
    m = LapaModel(tiny_config(clamp_loss=True, background=True)).train()
    x0 = torch.zeros(1, 3, 210, 160)
    x1 = torch.zeros(1, 3, 210, 160)
    x1[..., :105, :] = 1.0                                             # white top half, black bottom half
    with torch.no_grad():
        m.decoder.background.fill_(-0.5)                               # undershoots: free on black, not on white
        m.decoder.background[:, :105] = 1.5                            # overshoots white: free
        m.decoder.background[:, :50] = 0.5                             # undershoots white: costs 0.25
    _, _, metrics = m(x0, x1)
    assert float(metrics["mse"]) == pytest.approx(0.25 * 50 / 210, rel=1e-5)


def test_changed_pixels_weigh_more_in_the_loss():
    """weighted_mse against a hand computation: one changed pixel (dilate 0) of a 1 x 1 x 2 x 2 frame."""
    from wmfast.models.lapa import weighted_mse
    from wmfast.nn.losses import changed_mask

    x0 = torch.zeros(1, 1, 2, 2)
    x1 = x0.clone()
    x1[0, 0, 0, 1] = 0.5                                              # the one pixel that moved
    err = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    cfg = tiny_config(changed_weight=5.0, changed_dilate=0)
    assert changed_mask(x0, x1).flatten().tolist() == [0, 1, 0, 0]
    assert float(weighted_mse(err, x0, x1, cfg)) == pytest.approx((1 + 5 * 2 + 3 + 4) / (1 + 5 + 1 + 1))
    grown = changed_mask(torch.zeros(1, 3, 9, 9), _dot(9, 4, 4), dilate=2)
    assert grown.sum() == 25 and grown[0, 0, 2:7, 2:7].min() == 1   # a 5 x 5 square around the change
    torch.manual_seed(0)
    x0, x1 = torch.rand(2, 3, 210, 160), torch.rand(2, 3, 210, 160)
    _, _, plain = LapaModel(tiny_config()).train()(x0, x1)
    assert plain["rec"] == plain["mse"]                                # weight 1: the plain MSE


def _dot(n, r, c):
    x = torch.zeros(1, 3, n, n)
    x[..., r, c] = 1
    return x


def test_dead_code_reset_revives_unused_codes():
    torch.manual_seed(0)
    m = LapaModel(tiny_config(dead_code_every=2)).train()
    with torch.no_grad():
        m.quantizer.codebook[1:] = 1e3                      # only code 0 is ever nearest: 15 dead codes
    x0, x1 = torch.rand(4, 3, 210, 160), torch.rand(4, 3, 210, 160)
    m(x0, x1)
    assert int((m.quantizer.counts > 0).sum()) == 1
    m(x0, x1)                                               # the 2nd step resets the dead codes
    assert float(m.quantizer.codebook.detach()[1:].abs().max()) < 1e3 / 2
    m.quantizer.reset_usage()
    m(x0, x1)
    assert int((m.quantizer.counts > 0).sum()) > 1          # revived codes are chosen again


# -- data ----------------------------------------------------------------------------------------

def test_split_by_episode_without_leakage(breakout_h5):
    split = split_episodes(20, seed=3)
    assert [len(split[s]) for s in ("train", "val", "test")] == [16, 2, 2]
    assert sorted(sum(split.values(), [])) == list(range(20))
    assert split == split_episodes(20, seed=3) and split != split_episodes(20, seed=4)
    ds = load_dataset(breakout_h5)
    split = split_episodes(ds.n_episodes, seed=0)
    pairs = PairData(ds, split, 210, 160)
    frames_of = {}
    for name in ("train", "val", "test"):
        t = pairs.indices(name)
        assert len(t) > 0
        assert (pairs.episode_of[t] == pairs.episode_of[t + 1]).all()           # no pair crosses episodes
        assert set(pairs.episode_of[t].tolist()) == set(split[name])
        frames_of[name] = set(t.tolist()) | set((t + 1).tolist())
    assert not (frames_of["train"] & frames_of["val"]) and not (frames_of["train"] & frames_of["test"])
    assert not (frames_of["val"] & frames_of["test"])
    assert sum(len(pairs.indices(s)) for s in split) == len(ds) - ds.n_episodes
    f0, f1 = pairs.batch(pairs.indices("train")[:3])
    assert f0.shape == (3, 3, 210, 160) and f0.dtype == torch.float32 and 0 <= f0.min() and f1.max() <= 1
    with pytest.raises(WmfastError, match="at least 3 episodes"):
        split_episodes(2)


def test_png_episode_folders(tmp_path):
    import imageio.v3 as iio


    frames, _, bounds = breakout_like(episodes=3, length=3)
    for e, (s, t) in enumerate(bounds):
        os.makedirs(tmp_path / f"ep{e}")
        for i in range(s, t):
            iio.imwrite(tmp_path / f"ep{e}" / f"{i - s}.png", frames[i])
    pairs = PairData(load_dataset(str(tmp_path)), split_episodes(3), 210, 160)
    assert len(pairs.indices()) == 3 * 2 and all(len(pairs.indices(s)) == 2 for s in ("train", "val", "test"))
    np.testing.assert_array_equal(pairs.frames, frames)


# -- training, resume, evaluation, extraction, API --------------------------------------------------

def test_training_writes_a_run(trained_run):
    folder = os.path.join(trained_run, "lapa")
    for f in ("model.safetensors", "config.json", "train_state.pt", "split.json", "metrics.jsonl",
              "curves.png", "best/model.safetensors"):
        assert os.path.isfile(os.path.join(folder, f)), f
    rows = [json.loads(line) for line in open(os.path.join(folder, "metrics.jsonl"))]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4]
    assert any("val_psnr" in r and "val_ssim" in r and "val_moving_copy_psnr" in r for r in rows)
    assert json.load(open(os.path.join(folder, "config.json")))["kind"] == "lapa"


def test_resume_matches_an_uninterrupted_run(tmp_path, breakout_h5):
    train_lapa(tmp_path / "a", breakout_h5, "lapa-breakout-small", quick_train(), TINY)

    def stop(step, model):
        if step == 2:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train_lapa(tmp_path / "b", breakout_h5, "lapa-breakout-small", quick_train(), TINY, callback=stop)
    with pytest.raises(WmfastError, match="--resume"):
        train_lapa(tmp_path / "b", breakout_h5, "lapa-breakout-small", quick_train(), TINY)
    train_lapa(tmp_path / "b", breakout_h5, "lapa-breakout-small", quick_train(), resume=True)
    from safetensors.torch import load_file

    a = load_file(tmp_path / "a" / "lapa" / "model.safetensors")
    b = load_file(tmp_path / "b" / "lapa" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


def test_python_api_and_classifier(trained_run, breakout_h5, tmp_path):
    from wmfast.lapa.classifier import train_classifier

    report = train_classifier(trained_run, breakout_h5, epochs=3)
    assert 0 <= report["test_accuracy"] <= 1 and 0 <= report["majority_baseline_accuracy"] <= 1
    assert report["train_pairs"] > 0 and report["test_pairs"] > 0
    m = wmfast.load(trained_run)
    ds = load_dataset(breakout_h5)
    x0, x1 = PairData(ds).batch(np.array([0, 1, 2]))
    codes = m.lapa.encode(x0, x1)
    assert codes.shape == (3, 7, 5)
    assert m.lapa.decode(x0, codes).shape == (3, 3, 210, 160)
    actions = m.lapa.to_game_actions(codes)
    assert actions.shape == (3,) and int(actions.max()) < 4
    # classifier.json is the registry's config (+ the report); files from before it (no "kind") still load
    path = os.path.join(trained_run, "lapa", "classifier.json")
    saved = json.load(open(path))
    assert saved["kind"] == "lapa_classifier" and saved["report"]["test_pairs"] == report["test_pairs"]
    folder = tmp_path / "old"
    shutil.copytree(os.path.join(trained_run, "lapa"), folder)
    (folder / "classifier.json").write_text(json.dumps({k: v for k, v in saved.items() if k != "kind"}))
    torch.testing.assert_close(load_classifier(str(folder)).predict(codes), actions)
    (folder / "classifier.json").write_text(json.dumps({**saved, "n_actions": 3}))
    with pytest.raises(WmfastError, match="4 action_names for 3 actions"):
        load_classifier(str(folder))


def test_extraction_round_trip(trained_run, breakout_h5, tmp_path):
    out = tmp_path / "codes.h5"
    summary = extract_codes(trained_run, breakout_h5, str(out), frames=True, progress=False)
    ds = load_dataset(breakout_h5)
    pairs = PairData(ds)
    model = wmfast.load(trained_run).lapa
    with h5py.File(out, "r") as f:
        codes, t = torch.from_numpy(f["codes"][:].astype(np.int64)), f["frame_index"][:]
        assert len(t) == summary["pairs"] == len(ds) - ds.n_episodes and codes.shape == (len(t), 7, 5)
        np.testing.assert_array_equal(f["frames_t"][:], ds.frames[t])
        np.testing.assert_array_equal(f["frames_t1"][:], ds.frames[t + 1])
        np.testing.assert_array_equal(f["actions"][:], ds.actions[t])
        split = load_split(os.path.join(trained_run, "lapa"), ds)
        for i, name in enumerate(("train", "val", "test")):
            assert set(f["episode"][:][f["split"][:] == i].tolist()) == set(split[name])
        assert f["events"].shape == (len(t), 5)
        info = json.loads(f.attrs["wmfast_lapa"])
        assert info["grid"] == [7, 5]
    torch.testing.assert_close(codes, model.encode(*pairs.batch(t)))        # codes of the right pairs
    table = json.load(open(summary["event_table"]["json"]))
    assert table["event_totals"]["paddle_left"] + table["event_totals"]["paddle_right"] > 0   # the paddle moves


def test_evaluation_report(trained_run, tmp_path):
    report = evaluate_lapa(trained_run, split="test", out=str(tmp_path), progress=False)
    for key in ("model", "copy_last", "shuffled_codes"):
        assert set(report["all"][key]) == {"psnr", "ssim", "l1", "l2"}
    assert report["moving_pairs"] == report["pairs"] > 0            # the synthetic ball always moves
    assert report["all"]["copy_last"]["l2"] > 0
    assert {"paddle_psnr", "brick_state_acc", "ball_pos_err_px"} <= set(report["elements"]["copy_last"])
    assert report["elements"]["copy_last"]["brick_state_acc"] == 1.0   # the synthetic bricks never break
    assert os.path.isfile(tmp_path / "eval.json") and os.path.isfile(tmp_path / "examples.png")


# -- bad inputs ----------------------------------------------------------------------------------

def test_bad_inputs_give_one_line_errors(tmp_path, trained_run):
    m = LapaModel(tiny_config()).eval()
    good = torch.rand(1, 3, 210, 160)
    cases = [
        (lambda: m.encode(torch.rand(1, 3, 64, 64), good), "shape"),
        (lambda: m.encode((good * 255).to(torch.uint8), good), "float"),
        (lambda: m.encode(good, torch.rand(2, 3, 210, 160)), "batch"),
        (lambda: m.decode(good, torch.zeros(1, 5, 7, dtype=torch.long)), "shape"),
        (lambda: m.decode(good, torch.full((1, 7, 5), 99)), r"\[0, 16\)"),
        (lambda: m.decode(good, torch.zeros(1, 7, 5)), "integer"),
        (lambda: m.to_game_actions(torch.zeros(1, 7, 5, dtype=torch.long)), "classifier"),
        (lambda: LapaConfig(conditioning="lstm"), "conditioning"),
        (lambda: named_config("lapa-huge"), "unknown LAPA config"),
    ]
    for fn, pattern in cases:
        with pytest.raises(WmfastError, match=pattern) as e:
            fn()
        assert "\n" not in str(e.value)
    from wmfast.data import Dataset

    small = Dataset(np.zeros((6, 64, 64, 3), np.uint8), episodes=[(0, 2), (2, 4), (4, 6)])
    with pytest.raises(WmfastError, match="210x160"):
        PairData(small, None, 210, 160)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    r = subprocess.run([sys.executable, "-m", "wmfast", "lapa", "train", "--data", str(tmp_path / "nope.h5"),
                        "--run", str(tmp_path / "r")], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "dataset not found" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run([sys.executable, "-m", "wmfast", "lapa", "eval", "--run", str(tmp_path)],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "no LAPA model" in r.stderr
