"""The opt-in few-label mode (ActionsTrainConfig.label_fraction): it labels no more transitions than
asked, only in the training episodes, the LAM's label loss reads only those, and the action map of
such a run is fitted on exactly those transitions."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import wmfast
from wmfast.cli import main
from wmfast.data import ClipSampler, labelled_frames, load_dataset
from wmfast.models import ConvLam, ConvLamConfig
from wmfast.train import train_stage
from wmfast.train.action_map import train_action_map
from wmfast.train.trainer import ActionsTrainConfig

DATA = "game:pong:6"


def tiny(steps=3, **kw):
    return ActionsTrainConfig(steps=steps, batch_size=4, preset="tiny", log_every=1, save_every=100,
                              warmup_steps=1, progress=False, **kw)


def test_labelled_frames_take_the_asked_share_of_known_transitions_in_the_given_episodes(tiny_game_cache):
    ds = load_dataset(DATA)
    episodes = [0, 2, 3]
    known = sum(int((ds.actions[s:e] >= 0).sum()) for s, e in (ds.episodes[i] for i in episodes))
    mask = labelled_frames(ds, 0.05, seed=1, episodes=episodes)
    assert mask.sum() == round(0.05 * known)
    inside = np.zeros(len(ds), bool)
    for i in episodes:
        inside[slice(*ds.episodes[i])] = True
    assert not mask[~inside].any() and (ds.actions[mask] >= 0).all()
    assert np.array_equal(mask, labelled_frames(ds, 0.05, seed=1, episodes=episodes))
    assert not np.array_equal(mask, labelled_frames(ds, 0.05, seed=2, episodes=episodes))
    assert labelled_frames(ds, 1e-9, seed=1).sum() == 1 and labelled_frames(ds, 0.0, seed=1).sum() == 0


def test_labels_at_gives_the_true_action_of_labelled_transitions_only(tiny_game_cache):
    ds = load_dataset(DATA)
    mask = labelled_frames(ds, 0.3, seed=0)
    sampler = ClipSampler(ds, clip_len=4, frame_size=32, seed=5, labelled=mask)
    _, actions, _ = sampler.batch_at(7, 64)
    labels = sampler.labels_at(7, 64)
    have = labels >= 0
    assert 0 < have.float().mean() < 0.6
    assert torch.equal(labels[have], actions[have])
    # the clips behind the labels are batch_at's: their start frames' labels agree with the mask
    starts, _ = sampler._batch_starts(7, 64, 0, 1)
    assert np.array_equal(have[:, 0].numpy(), mask[starts])


def test_labelled_batches_hold_a_labelled_transition_in_every_clip(tiny_game_cache):
    ds = load_dataset(DATA)
    mask = labelled_frames(ds, 0.02, seed=0)
    sampler = ClipSampler(ds, clip_len=4, frame_size=32, seed=5, labelled=mask)
    frames, actions, labels = sampler.labelled_batch_at(3, 32)
    have = labels >= 0
    assert frames.shape[:2] == (32, 4) and have.any(1).all()
    assert torch.equal(labels[have], actions[have])
    assert have[:, 1].float().mean() > 0.9          # mostly one frame after the clip's start
    again = sampler.labelled_batch_at(3, 32)
    assert torch.equal(again[0], frames) and torch.equal(again[2], labels)
    half = sampler.labelled_batch_at(3, 32, rank=1, world_size=2)
    assert torch.equal(half[2], labels[16:])


def test_label_loss_is_the_heads_cross_entropy_on_labelled_transitions_only():
    torch.manual_seed(0)
    model = ConvLam(ConvLamConfig(frame_size=16, n_actions=4, conv_channels=8, label_classes=3, label_weight=0.5))
    x = torch.rand(2, 4, 3, 16, 16) * 2 - 1
    labels = torch.tensor([[2, -1, -1], [-1, 0, -1]])
    _, with_labels, m = model(x, labels)
    _, without, _ = model(x)
    z = model.encoder(x)
    expected = F.cross_entropy(model.label_head(torch.stack([z[0, 0], z[1, 1]])), torch.tensor([2, 0]))
    torch.testing.assert_close(m["label_loss"], expected.detach())
    torch.testing.assert_close(with_labels, without + 0.5 * expected, rtol=1e-5, atol=1e-6)
    _, none, _ = model(x, torch.full((2, 3), -1))
    torch.testing.assert_close(none, without)


def test_a_few_label_run_fits_its_action_map_on_its_labelled_transitions(tmp_path, tiny_game_cache):
    run = str(tmp_path / "run")
    train_stage("tokenizer", run, DATA, tiny())
    train_stage("actions", run, DATA, tiny(label_fraction=0.05))
    lam = wmfast.load(run).lam
    ds = load_dataset(DATA)
    assert lam.config.label_classes == ds.n_actions and lam.label_head is not None
    info = train_action_map(run, DATA, steps=2, progress=False)
    train_eps, _ = ds.split(0.1, seed=0)
    assert info["few_label"] and info["fit_transitions"] == labelled_frames(ds, 0.05, 0, train_eps).sum() > 0


def test_few_label_options_are_checked(tmp_path, capsys, tiny_game_cache):
    args = ["train", "actions", "--run", str(tmp_path / "r"), "--data", DATA, "--preset", "tiny", "--steps", "2",
            "--batch-size", "2"]
    assert main(args + ["--set", "label_fraction=1.5"]) == 2
    assert "label_fraction" in capsys.readouterr().err
    assert main(args + ["--set", "label_fraction=0.1"]) == 0
    capsys.readouterr()
    assert main(args + ["--resume", "--set", "label_fraction=0.2"]) == 2
    assert "label_fraction=0.2" in capsys.readouterr().err
    with pytest.raises(wmfast.WmfastError, match="conv LAM"):
        train_stage("actions", str(tmp_path / "t"), DATA, tiny(label_fraction=0.1),
                    model={"architecture": "transformer", "quantizer": "fsq", "onehot_actions": False})
