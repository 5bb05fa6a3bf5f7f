"""THE evaluator (wmfast.evaluate): metrics against hand-computed values on constructed cases, the
action-map stage's map and World(actions="game") reading it, an evaluator that only reads the run,
and `wmfast train action-map` + `wmfast eval` end to end on a tiny run."""
import json
import math

import numpy as np
import pytest
import torch

from wmfast import World
from wmfast.checkpoint import load_action_map, save_action_map
from wmfast.models.action_map import ActionMap
from wmfast.checkpoint import save_model
from wmfast.cli import main
from wmfast.data import write_dataset
from wmfast.evaluate import action_metrics, code_statistics, confusion_counts, evaluate_run, pooled_mse_per_step, \
    psnr_from_mse
from wmfast.latent_actions import build_action_map, changed_transitions, held_out_episodes, infer_codes
from wmfast.rollout.shapes import random_world_model

SIZES = dict(frame_size=16, patch_size=4, embed_dim=16, num_heads=2, hidden_dim=32, num_blocks=1,
             latent_dim=2, num_bins=4, n_actions=4, context_length=2)
NAMES = ["NOOP", "UP", "LEFT"]


# -- numbers on constructed cases -------------------------------------------------------------------
def test_psnr_pools_the_mse_over_clips_before_the_log():
    truth = torch.zeros(2, 3, 3, 4, 4)
    pred = truth.clone()
    # clip 0 off by 0.1 everywhere at every step (MSE 0.01); clip 1 off by 0.3 at step 2 only (MSE 0.09)
    pred[0] += 0.1
    pred[1, 1] += 0.3
    mse = pooled_mse_per_step(pred, truth)
    assert torch.allclose(mse, torch.tensor([0.005, 0.05, 0.005], dtype=torch.float64))
    got = psnr_from_mse(mse.numpy())
    want = [10 * math.log10(4 / 0.005), 10 * math.log10(4 / 0.05), 10 * math.log10(4 / 0.005)]
    assert got == pytest.approx(want, abs=1e-5)          # float32 pixels
    # a mean of per-frame PSNRs is not the same thing (frames with no error would count as 100 dB)
    per_frame_mean = (10 * math.log10(4 / 0.09) + 10 * math.log10(4 / 0.01)) / 2
    assert abs(got[1] - per_frame_mean) > 1.0


def _nmi(table):
    """Hand NMI: I(T; L) / mean(H(T), H(L)) from a count table, in plain Python floats."""
    n = sum(map(sum, table))
    rows = [sum(r) / n for r in table]
    cols = [sum(c) / n for c in zip(*table)]
    h = lambda ps: -sum(p * math.log(p) for p in ps if p > 0)  # noqa: E731
    mi = sum(v / n * math.log((v / n) / (rows[i] * cols[j])) for i, r in enumerate(table) for j, v in enumerate(r)
             if v > 0)
    return mi / (0.5 * (h(rows) + h(cols)))


def test_action_metrics_nmi_purity_and_confusion_on_a_constructed_table():
    # true game actions 0..2 and codes 0..3, with -1 (unknown) entries that must be skipped
    true = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, -1])
    code = np.array([3, 3, 3, 1, 0, 0, 1, 2, 2, 2, 2, 0])
    changed = np.array([0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1], bool)
    m = action_metrics(true, code, changed, num_game_actions=3, num_codes=4)
    confusion = [[0, 1, 0, 3], [2, 1, 0, 0], [0, 0, 4, 0]]       # rows game actions, cols codes
    assert m["confusion"] == confusion
    assert m["transitions"] == 11
    assert m["action_nmi"] == pytest.approx(_nmi(confusion), abs=1e-12)
    # purity: each code votes for its most frequent action: code0->1 (2), code1->0 or 1 (1), code2->2 (4), code3->0 (3)
    assert m["action_purity"] == pytest.approx(10 / 11)
    changed_table = [[0, 1, 0, 1], [2, 1, 0, 0], [0, 0, 3, 0]]
    assert m["confusion_changed"] == changed_table
    assert m["changed_transitions"] == 8
    assert m["action_nmi_changed"] == pytest.approx(_nmi(changed_table), abs=1e-12)


def test_code_usage_and_perplexity():
    s = code_statistics([0, 0, 1, 1], num_codes=4)
    assert s["codebook_usage"] == 50.0 and s["perplexity"] == pytest.approx(2.0)
    assert s["code_counts"] == [2, 2, 0, 0]
    assert code_statistics(np.arange(8) % 4, 4)["perplexity"] == pytest.approx(4.0)
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert code_statistics([5, 5, 5, 2], 8)["perplexity"] == pytest.approx(math.exp(h))
    assert code_statistics([1, 1, 1], 8)["perplexity"] == pytest.approx(1.0)      # collapsed: one code


def test_changed_transitions_threshold():
    frames = torch.zeros(1, 4, 3, 2, 2)
    frames[0, 1, 0, 0, 0] = 0.04          # below the threshold: unchanged
    frames[0, 2, 1, 1, 1] = 0.5           # one pixel moved a lot: changed
    frames[0, 3] = frames[0, 2]
    assert changed_transitions(frames)[0].tolist() == [False, True, False]


class PairLAM:
    """A stand-in LAM with the LAM interface whose code of pair (t, t+1) is a known function of the two
    frames (the sign of the mean change, 3 codes) and that records the window lengths it was given."""

    num_actions = 3

    def __init__(self):
        self.windows = []
        self.quantizer = self

    def encoder(self, frames):
        self.windows.append(frames.shape[1])
        return (frames[:, 1:] - frames[:, :-1]).mean(dim=(2, 3, 4))[..., None]     # [B, T-1, 1]

    def quantize(self, z):
        return z

    def encode(self, frames, check=True, return_z=False):
        """The LAM's inference entry point: quantized latents [B, T-1, A] (and the encoder output)."""
        z = self.encoder(frames)
        return (self.quantize(z), z) if return_z else self.quantize(z)

    def indices(self, z):
        return (torch.sign(z[..., 0]) + 1).long()


def test_infer_codes_codes_every_transition_once_in_training_windows():
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(3, 11, 3, 4, 4, generator=g) * 2 - 1
    lam = PairLAM()
    codes, z = infer_codes(lam, frames, window=4)
    want = (torch.sign((frames[:, 1:] - frames[:, :-1]).mean(dim=(2, 3, 4))) + 1).long()
    assert codes.shape == (3, 10) and torch.equal(codes, want)
    assert set(lam.windows) == {4}                 # every call saw the training clip length
    short, _ = infer_codes(PairLAM(), frames[:, :3], window=4)                 # clip shorter than the window
    assert torch.equal(short, want[:, :2])


# -- the action map ------------------------------------------------------------------------------
def test_action_map_prefers_changed_transitions_and_falls_back_for_noop():
    # NOOP never changes the frame; UP changes it as code 2 but bumps into walls (code 0, unchanged) more often
    true = np.array([0, 0, 0, 1, 1, 1, 1, 1, 2, 2])
    code = np.array([0, 0, 1, 0, 0, 0, 2, 2, 3, 3])
    changed = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1], bool)
    amap = build_action_map(true, code, changed, 3, 4, NAMES, data="x")
    assert amap.game_to_latent == [0, 2, 3]        # all-transition vote would have given UP -> 0
    assert amap.counts.tolist() == [[2, 1, 0, 0], [0, 0, 2, 0], [0, 0, 0, 2]]
    assert amap.latent_to_game == [0, 0, 1, 2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random tiny world model saved as a run, and a dataset with true actions (3 episodes of 9 frames)."""
    root = tmp_path_factory.mktemp("eval")
    model = random_world_model(**SIZES)
    for stage, m in (("tokenizer", model.tokenizer), ("actions", model.lam), ("dynamics", model.dynamics)):
        save_model(m, root / "run" / stage)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (27, 16, 16, 3), dtype=np.uint8)
    frames[10] = frames[9]                          # one unchanged transition
    episodes = [(0, 9), (9, 18), (18, 27)]
    actions = rng.integers(0, 3, 27)
    actions[[8, 17, 26]] = -1
    data = write_dataset(root / "data.h5", frames, actions, episodes, n_actions=3, action_names=NAMES)
    plain = write_dataset(root / "plain.h5", frames, episodes=episodes)
    return root, str(root / "run"), str(data), str(plain)


def test_saved_action_map_drives_world_in_game_actions(tiny, tmp_path):
    import shutil

    _, run, data, _ = tiny
    run2 = tmp_path / "run"
    shutil.copytree(run, run2)
    amap = build_action_map([0, 1, 1, 2], [3, 1, 1, 0], [1, 1, 1, 1], 3, 4, NAMES)
    save_action_map(amap, run2)
    assert load_action_map(run2).game_to_latent == [3, 1, 0]
    context = torch.rand(2, 2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    game = World.load(str(run2), mode="compat", steps=2, actions="game").reset(context)
    latent = World.load(str(run2), mode="compat", steps=2).reset(context)
    for g, k in ((0, 3), (2, 0), (1, 1)):
        assert torch.equal(game.step(torch.tensor([g, g])), latent.step(torch.tensor([k, k])))


def run_files(run) -> dict:
    """{path: (size, mtime_ns)} of every file under run."""
    import os

    return {os.path.join(d, f): (os.stat(os.path.join(d, f)).st_size, os.stat(os.path.join(d, f)).st_mtime_ns)
            for d, _, files in os.walk(run) for f in files}


def test_action_map_stage_fits_training_episodes_and_the_evaluator_only_reads(tiny, tmp_path):
    import shutil

    import wmfast
    from wmfast.data import load_dataset
    from wmfast.train.action_map import train_action_map

    _, run, data, _ = tiny
    run2 = str(tmp_path / "run")
    shutil.copytree(run, run2)
    ds = load_dataset(data)
    held, _ = held_out_episodes(ds, run2)
    info = train_action_map(run2, data, steps=20, progress=False)
    saved = load_action_map(run2)
    # fitted on the episodes no stage held out: their known-action transitions, none of the held-out ones
    train_eps = [e for e in range(len(ds.episodes)) if e not in held]
    known = sum(int((ds.actions[s:e - 1] >= 0).sum()) for s, e in (ds.episodes[i] for i in train_eps))
    assert info["fit_episodes"] == len(train_eps) and info["fit_transitions"] == known
    assert 0 < saved.counts.sum() <= known      # changed transitions (all of them for an action that never changes)
    assert saved.frame_map is not None and saved.frame_map_info["fit_steps"] == 20
    before = run_files(run2)
    r = evaluate_run(run2, data, episodes=3, horizon=3, steps=2, out=str(tmp_path / "out"),
                     json_path=str(tmp_path / "m.json"), progress=False)
    assert run_files(run2) == before                                               # nothing written into the run
    assert held == ds.split(0.1, seed=0)[1] == r["held_out_episodes"]            # the trainer's split
    s, e = ds.episodes[held[0]]
    assert r["transitions"] == e - s - 1
    # the report measures the saved map on the held-out transitions
    assert r["action_map"]["saved"]["fit_steps"] == 20
    assert r["action_map"]["saved"]["game_to_latent"] == saved.game_to_latent
    assert 0.0 <= r["action_map"]["saved"]["held_out_agreement"] <= 1.0
    assert sum(map(sum, r["confusion"])) == r["transitions"]
    true_hist = np.bincount(ds.actions[s:e - 1], minlength=3)
    assert np.asarray(r["confusion"]).sum(1).tolist() == true_hist.tolist()
    # the game-action rollout is the latent rollout of the mapped codes (World(actions="game") on disk)
    model = wmfast.load(run2)
    ctx, truth = r["_context"], r["_truth"]
    from wmfast.evaluate import held_out_clips

    frames, acts = held_out_clips(ds, 2 + 3, 3, 16, seed=0, episodes=held)
    assert torch.equal(frames[:, :2], ctx)
    mapped = saved.to_latent(acts[:, 1:4])
    again = World(model, mode="compat", steps=2).reset(ctx).rollout(mapped)
    assert torch.equal(again, r["_game_rollout"])
    want = pooled_mse_per_step(again, truth)
    assert r["psnr_game_actions_per_step"] == pytest.approx(psnr_from_mse(want.numpy()))
    copy = pooled_mse_per_step(ctx[:, -1:].expand_as(truth), truth)
    assert r["mse_copy_last_frame_per_step"] == pytest.approx(copy.tolist())
    assert r["controllability_gap"] == pytest.approx(r["psnr_autoregressive_per_step"][2]
                                                     - r["psnr_random_actions_per_step"][2])
    assert r["_controls"].shape == (4, 3, 3, 16, 16)
    for name in ("psnr.png", "rollout.gif", "controls.png", "controls.gif", "confusion.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    saved_json = json.loads((tmp_path / "m.json").read_text())
    assert saved_json["action_nmi"] == pytest.approx(r["action_nmi"])
    assert not any(k.startswith("_") for k in saved_json)


def test_eval_cli_writes_files_and_handles_data_without_actions(tiny, tmp_path, capsys):
    import shutil

    _, run, data, plain = tiny
    run2 = tmp_path / "run"
    shutil.copytree(run, run2)
    out = tmp_path / "ev"
    assert main(["train", "action-map", "--run", str(run2), "--data", data, "--steps", "10"]) == 0
    assert (run2 / "action_map.json").is_file()
    assert "action map:" in capsys.readouterr().out
    # --map-steps (the fit moved to `train action-map`) still parses for one release, warns, changes nothing
    assert main(["eval", "--run", str(run2), "--data", data, "--episodes", "2", "--horizon", "2", "--steps", "1",
                 "--map-steps", "10", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "action NMI" in captured.out and "copy last frame" in captured.out
    assert "--map-steps is deprecated and does nothing" in captured.err
    for name in ("metrics.json", "psnr.png", "rollout.gif", "controls.png", "controls.gif", "confusion.png"):
        assert (out / name).is_file()
    assert json.loads((out / "metrics.json").read_text())["action_map"]["saved"]["fit_steps"] == 10
    # data without true actions: the rest is measured, the action metrics are skipped with a note
    (run2 / "action_map.json").unlink()
    assert main(["eval", "--run", str(run2), "--data", plain, "--episodes", "2", "--horizon", "2", "--steps", "1",
                 "--out", str(tmp_path / "ev2")]) == 0
    text = capsys.readouterr().out
    assert "no true actions" in text and "action NMI     all" not in text
    saved = json.loads((tmp_path / "ev2" / "metrics.json").read_text())
    assert "action_nmi" not in saved and saved["perplexity"] >= 1.0
    assert not (run2 / "action_map.json").exists() and not (tmp_path / "ev2" / "confusion.png").exists()


def test_eval_cli_one_line_errors(tiny, tmp_path, capsys):
    import shutil

    _, run, data, _ = tiny
    partial = tmp_path / "partial"
    shutil.copytree(f"{run}/tokenizer", partial / "tokenizer")
    assert main(["eval", "--run", str(partial), "--data", data]) == 2
    err = capsys.readouterr().err.strip()
    assert "missing stage" in err and len(err.splitlines()) == 1
    assert main(["eval", "--run", run, "--data", str(tmp_path / "nope.h5")]) == 2
    assert "dataset not found" in capsys.readouterr().err
    assert main(["eval", "--run", run, "--data", data, "--episodes", "0"]) == 2
    assert ">= 1" in capsys.readouterr().err


def test_confusion_counts_skip_unknown():
    assert confusion_counts([0, 1, -1, 1], [1, 1, 0, 0], 2, 2).tolist() == [[0, 1], [1, 1]]


@pytest.mark.gpu
def test_world_model_scores_on_cuda_match_the_cpu_ones():
    from wmfast.evaluate import evaluate_world_model

    model = random_world_model(**SIZES)
    frames = torch.rand(3, 5, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    cpu = evaluate_world_model(model, frames, horizon=3, steps=2)
    gpu = evaluate_world_model(model.to("cuda"), frames.cuda(), horizon=3, steps=2)
    assert np.allclose(gpu["psnr_copy_last_frame_per_step"], cpu["psnr_copy_last_frame_per_step"], atol=1e-3)
    # a random model's argmax tokens may flip between devices: same scale, not the same digits
    for key in ("psnr_autoregressive_per_step", "psnr_teacher_forced_per_step"):
        assert np.allclose(gpu[key], cpu[key], atol=3.0), key
