"""The dynamics stage's training config: how its clips are drawn (future masking, pauses), the
preset's values, older runs that kept them in the model's config.json, and the trainer using them."""
import json
import os
import shutil

import pytest
import torch

from wmfast.errors import WmfastError
from wmfast.models import DynamicsModel
from wmfast.train import TrainConfig, train_stage
from wmfast.train.recipes import pretrained_run
from wmfast.train.trainer import DynamicsTrainConfig, _maskgit_noise, pause_clips, resume_config, \
    saved_train_config, stage_train_config

DATA = "game:pong:6"


def tiny(cls=TrainConfig, steps=2, **kw):
    return cls(steps=steps, batch_size=2, preset="tiny", log_every=1, save_every=10 ** 6, warmup_steps=1,
               progress=False, **kw)


def test_pause_clips_repeat_the_frame_before_the_pause_then_go_on():
    frames = torch.arange(3 * 5, dtype=torch.float32).view(3, 5, 1, 1, 1).expand(3, 5, 3, 2, 2)
    # clip 0: still from frame 1 to the end; clip 1: as it is; clip 2: frame 0 held twice, then frames 1, 2
    paused = pause_clips(frames, torch.tensor([1, 5, 1]), torch.tensor([4, 0, 2]))
    assert paused[:, :, 0, 0, 0].tolist() == [[0, 0, 0, 0, 0], [5, 6, 7, 8, 9], [10, 10, 10, 11, 12]]
    to_end = pause_clips(frames, torch.tensor([2, 5, 3]))                  # no length: to the end
    assert to_end[:, :, 0, 0, 0].tolist() == [[0, 1, 1, 1, 1], [5, 6, 7, 8, 9], [10, 11, 12, 12, 12]]


def test_noise_pauses_the_share_of_clips_it_is_asked_to_and_leaves_the_masks_alone():
    T, P, n = 5, 4, 400
    train = DynamicsTrainConfig(future_mask_prob=0.0, pause_clip_prob=0.25)
    noise, pause, masked = _maskgit_noise(train, step=3, clip_ids=torch.arange(n), T=T, P=P, device="cpu")
    start, length = pause
    assert ((start >= 1) & (start <= T)).all()
    paused = start < T
    assert 0.18 < paused.float().mean() < 0.32
    assert ((length[paused] >= 1) & (start[paused] + length[paused] <= T)).all() and (length[~paused] == 0).all()
    resumed = paused & (start + length < T)          # pauses that end inside the clip: a move out of a stop
    assert 0.3 < resumed.sum() / paused.sum() < 0.7
    plain = DynamicsTrainConfig(future_mask_prob=0.0, pause_clip_prob=0.0)
    plain_noise, no_pause, masked_plain = _maskgit_noise(plain, step=3, clip_ids=torch.arange(n), T=T, P=P,
                                                         device="cpu")
    assert no_pause is None and masked == masked_plain and noise[3] is None and plain_noise[3] is None
    assert all(torch.equal(a, b) for a, b in zip(noise[:3], plain_noise[:3]))


def test_noise_masks_the_last_frame_only_in_the_share_of_clips_it_is_asked_to():
    T, P, n = 5, 4, 400
    draws = {p: _maskgit_noise(DynamicsTrainConfig(future_mask_prob=p, pause_clip_prob=0.0), step=1,
                               clip_ids=torch.arange(n), T=T, P=P, device="cpu") for p in (0.0, 0.5, 1.0)}
    assert draws[0.0][0][3] is None and draws[1.0][0][3].all()
    half = draws[0.5][0][3]
    assert 0.4 < half.float().mean() < 0.6
    mask = DynamicsModel.training_mask(*draws[0.5][0])
    assert not mask[half, :-1].any() and mask[~half, :-1].any()
    assert draws[1.0][2] < draws[0.0][2]                                   # fewer masked tokens, same draws


def test_the_preset_sets_the_clip_settings_unless_given():
    assert (DynamicsTrainConfig(preset="small").future_mask_prob, DynamicsTrainConfig(preset="small").pause_clip_prob) \
        == (1.0, 0.3)
    tw = DynamicsTrainConfig(preset="tinyworlds")
    assert (tw.future_mask_prob, tw.pause_clip_prob) == (0.0, 0.0)         # tinyworlds' training
    own = DynamicsTrainConfig(preset="tiny", future_mask_prob=0.5, pause_clip_prob=0)
    assert (own.future_mask_prob, own.pause_clip_prob) == (0.5, 0.0)
    with pytest.raises(WmfastError, match="DynamicsTrainConfig.pause_clip_prob"):
        DynamicsTrainConfig(pause_clip_prob=1.5)
    with pytest.raises(WmfastError, match="DynamicsTrainConfig.future_mask_prob"):
        DynamicsTrainConfig(future_mask_prob="half")
    dyn = stage_train_config("dynamics", tiny(steps=7))
    assert type(dyn) is DynamicsTrainConfig and dyn.steps == 7 and dyn.pause_clip_prob == 0.3
    assert type(stage_train_config("tokenizer", dyn)) is TrainConfig       # only the dynamics keeps them


def test_the_shipped_maze_run_reads_back_the_clip_settings_it_was_trained_with():
    saved = saved_train_config(pretrained_run("maze"), "dynamics")
    assert type(saved) is DynamicsTrainConfig and (saved.future_mask_prob, saved.pause_clip_prob) == (1.0, 0.3)


def test_an_old_run_keeps_the_clip_settings_its_model_config_recorded(tmp_path):
    # Before DynamicsTrainConfig, `--set future_mask_prob=0.5` landed in config.json: a resume goes on with it.
    folder = tmp_path / "run" / "dynamics"
    shutil.copytree(os.path.join(pretrained_run("maze"), "dynamics"), folder,
                    ignore=shutil.ignore_patterns("*.safetensors", "*.png", "*.jsonl"))
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "future_mask_prob": 0.5, "pause_clip_prob": 0.0}))
    saved = saved_train_config(tmp_path / "run", "dynamics")
    assert (saved.future_mask_prob, saved.pause_clip_prob) == (0.5, 0.0)


def test_resume_refuses_other_clip_settings_unless_forced():
    saved = tiny(DynamicsTrainConfig, steps=5)
    assert resume_config("f", saved, tiny(steps=5), None, {}, force=False).pause_clip_prob == 0.3   # not asked
    other = tiny(DynamicsTrainConfig, steps=5, pause_clip_prob=0.0)
    with pytest.raises(WmfastError, match="pause_clip_prob=0.0 but the run was started with pause_clip_prob=0.3"):
        resume_config("f", saved, other, None, {}, force=False)
    assert resume_config("f", saved, other, None, {}, force=True).pause_clip_prob == 0.0


def test_the_trainer_draws_clips_as_its_training_config_says(tmp_path, monkeypatch, tiny_game_cache):
    import wmfast.train.trainer as trainer

    run = tmp_path / "run"
    for stage in ("tokenizer", "actions"):
        train_stage(stage, str(run), DATA, tiny(steps=1))
    seen = {"paused": 0, "last_frame_only": []}
    original_pause, original_loss = trainer.pause_clips, DynamicsModel.training_loss

    def pause(frames, *a):
        seen["paused"] += 1
        return original_pause(frames, *a)

    def loss(self, *a, noise=None, **k):
        seen["last_frame_only"].append(noise[3])
        return original_loss(self, *a, noise=noise, **k)

    monkeypatch.setattr(trainer, "pause_clips", pause)
    monkeypatch.setattr(DynamicsModel, "training_loss", loss)
    train_stage("dynamics", str(run), DATA, tiny(DynamicsTrainConfig, future_mask_prob=1.0, pause_clip_prob=1.0))
    assert seen["paused"] == 2 and all(bool(m.all()) for m in seen["last_frame_only"])
    written = json.loads((run / "dynamics" / "train_config.json").read_text())
    assert (written["future_mask_prob"], written["pause_clip_prob"]) == (1.0, 1.0)
    model_cfg = json.loads((run / "dynamics" / "config.json").read_text())
    assert "future_mask_prob" not in model_cfg and "pause_clip_prob" not in model_cfg
    assert "pause_clip_prob" not in json.loads((run / "tokenizer" / "train_config.json").read_text())

    shutil.rmtree(run / "dynamics")
    seen.update(paused=0, last_frame_only=[])
    train_stage("dynamics", str(run), DATA, TrainConfig(**{**tiny().to_dict(), "preset": "tinyworlds"}),
                model=dict(frame_size=32, patch_size=8, embed_dim=32, num_heads=4, hidden_dim=64, num_blocks=1))
    assert seen["paused"] == 0 and seen["last_frame_only"] == [None, None]   # tinyworlds' training


def test_cli_set_routes_training_keys_to_the_training_config(tmp_path, capsys, tiny_game_cache):
    from wmfast.cli import main

    run = tmp_path / "run"
    for stage in ("tokenizer", "actions"):
        train_stage(stage, str(run), DATA, tiny(steps=1))
    base = ["train", "dynamics", "--run", str(run), "--preset", "tiny", "--steps", "1", "--batch-size", "2",
            "--warmup-steps", "1"]
    assert main(base + ["--set", "pause_clip_prob=0.5", "--set", "future_mask_prob=0", "--set",
                        "weight_decay=0.05", "--set", "num_blocks=1"]) == 0
    written = json.loads((run / "dynamics" / "train_config.json").read_text())
    assert (written["pause_clip_prob"], written["future_mask_prob"], written["weight_decay"]) == (0.5, 0.0, 0.05)
    model_cfg = json.loads((run / "dynamics" / "config.json").read_text())
    assert model_cfg["num_blocks"] == 1 and "pause_clip_prob" not in model_cfg
    capsys.readouterr()
    # --resume compares a training key like any training option
    assert main(base + ["--resume", "--set", "pause_clip_prob=0.2"]) == 2
    assert "pause_clip_prob=0.2 but the run was started with pause_clip_prob=0.5" in capsys.readouterr().err
    # one-line errors: a bad value, a dynamics key for another stage, a key with its own option
    for argv, message in ((base + ["--set", "pause_clip_prob=2"], "--set pause_clip_prob must be a number >= 0 and <= 1"),
                          (["train", "actions", "--run", str(tmp_path / "r2"), "--set", "future_mask_prob=1"],
                           "applies to `wmfast train dynamics` only"),
                          (base + ["--set", "steps=3"], "use --steps")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
