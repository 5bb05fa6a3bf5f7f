"""The reward stage: the head's prior correction, the event scores against hand-counted references,
and `wmfast train reward` end to end on maze, whose coins it must find on held-out episodes."""
import json
import os

import numpy as np
import pytest
import torch

from wmfast.checkpoint import load_model
from wmfast.cli import main
from wmfast.errors import WmfastError
from wmfast.eval.reward import detection, expected_calibration_error
from wmfast.models.reward import RewardConfig, RewardHead
from wmfast.train import TrainConfig, train_stage


def test_probs_add_the_log_prior_to_the_balanced_logits():
    torch.manual_seed(0)
    head = RewardHead(RewardConfig(frame_size=16, reward_values=[-1.0, 0.0, 1.0], terminal=True, width=8)).eval()
    x0, x1 = torch.rand(4, 3, 16, 16) * 2 - 1, torch.rand(4, 3, 16, 16) * 2 - 1
    head.log_prior.copy_(torch.tensor([1.0, 100.0, 2.0]).log())
    out = head.predict(x0, x1)
    logits, end = head(x0, x1)
    want = (logits.double() + torch.tensor([1.0, 100.0, 2.0]).double().log()).softmax(-1)
    torch.testing.assert_close(out["probs"].double(), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["reward"].double(), want @ torch.tensor([-1.0, 0.0, 1.0]).double(),
                               rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["terminal"], end.sigmoid())
    with pytest.raises(WmfastError, match=r"frame_t1 must be a float tensor \[B, 3, 16, 16\]"):
        head.predict(x0, x1[:, :, :8])
    with pytest.raises(WmfastError, match="distinct and ascending"):
        RewardConfig(reward_values=[1.0, 0.0])


def test_detection_and_calibration_match_hand_counts():
    pred = np.array([1, 1, 0, 0, 1, 0], bool)
    true = np.array([1, 0, 1, 0, 1, 0], bool)
    assert detection(pred, true) == {"events": 3, "predicted": 3, "precision": 2 / 3, "recall": 2 / 3}
    assert detection(np.zeros(3, bool), np.zeros(3, bool))["precision"] is None
    p = np.array([0.05, 0.05, 0.95, 0.95])
    hit = np.array([0, 1, 1, 1], bool)
    # bin 0: p 0.05, rate 0.5 -> 0.45 x half the samples; bin 9: p 0.95, rate 1 -> 0.05 x half
    assert expected_calibration_error(p, hit) == pytest.approx(0.5 * 0.45 + 0.5 * 0.05)


def test_train_reward_finds_maze_coins_on_held_out_episodes(tmp_path, capsys, tiny_game_cache):
    run = tmp_path / "run"
    train_stage("tokenizer", str(run), "game:maze:20", TrainConfig(steps=1, batch_size=2, preset="tiny",
                                                                   warmup_steps=1, progress=False))
    assert main(["train", "reward", "--run", str(run), "--steps", "200"]) == 0
    report = json.loads((run / "reward" / "report.json").read_text())
    held = report["held_out"]
    coins = held["events"]["1"]
    assert held["episodes"] == 2 and coins["events"] > 5
    assert coins["recall"] >= 0.8 and coins["precision"] >= 0.8, held
    assert held["ece"] < 0.05 and abs(held["mean_p_event"] - held["event_rate"]) < 0.05
    head = load_model(str(run / "reward"), "reward")
    assert head.config.frame_size == 32 and head.config.reward_values == [0.0, 1.0]
    assert "reward 1: precision" in capsys.readouterr().out
    # one-line errors, exit 2
    assert main(["train", "reward", "--run", str(tmp_path / "none")]) == 2
    assert "no trained tokenizer" in capsys.readouterr().err
    assert main(["train", "reward", "--run", str(run), "--set", "width=8"]) == 2
    assert "--set does not apply" in capsys.readouterr().err
    assert os.path.isfile(run / "reward" / "model.safetensors")


def square_to_the_edge(path, episodes: int = 40, seed: int = 0):
    """A square slides right until it reaches the edge: that step pays 1 and ends the episode."""
    rng = np.random.default_rng(seed)
    frames, rewards, ends, bounds = [], [], [], []
    for _ in range(episodes):
        x0, y = int(rng.integers(0, 16)), int(rng.integers(0, 28))
        start = len(frames)
        for x in range(x0, 29):
            f = np.zeros((32, 32, 3), np.uint8)
            f[y:y + 4, x:x + 4] = 255
            frames.append(f)
            rewards.append(1.0 if x == 27 else 0.0)     # paid on the step into the edge frame
            ends.append(x == 28)
        bounds.append((start, len(frames)))
    from wmfast.data import write_dataset

    return write_dataset(path, np.stack(frames), episodes=bounds, rewards=np.array(rewards, np.float32),
                         extra={"terminals": np.array(ends)})


def test_episode_ends_are_learned_where_the_data_records_terminals(tmp_path, tiny_game_cache):
    from wmfast.eval.reward import evaluate_reward
    from wmfast.train.reward import train_reward

    data = square_to_the_edge(tmp_path / "edge.h5")
    run = tmp_path / "run"
    train_stage("tokenizer", str(run), data, TrainConfig(steps=1, batch_size=2, preset="tiny", warmup_steps=1,
                                                         progress=False))
    info = train_reward(str(run), steps=150, progress=False)
    assert load_model(info["folder"], "reward").config.terminal
    held = evaluate_reward(str(run))
    assert held["terminal"]["events"] == held["episodes"] == 4
    assert held["terminal"]["recall"] == 1.0 and held["terminal"]["precision"] == 1.0, held
    assert held["events"]["1"]["recall"] == 1.0
