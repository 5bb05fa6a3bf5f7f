"""End to end at toy sizes: train (expert + a DAgger round) and evaluate from the CLI; discrete games."""
import json

import numpy as np
import pytest

from wmfast.cli import main
from wmfast.errors import WmfastError
from wmfast.policy import load_policy
from wmfast.policy.train import TEACHER_EPOCHS, PolicyTrainConfig, _split_epochs, auto_epochs, train_policy


def test_split_epochs_puts_half_on_expert_data():
    assert _split_epochs(20, 2) == [10, 5, 5]
    assert _split_epochs(20, 0) == [20]
    assert sum(_split_epochs(7, 3)) == 7


def test_epochs_zero_means_the_recipes_count():
    """--epochs 0 (the default): 20 for reach and datasets, TEACHER_EPOCHS when imitating a teacher."""
    assert PolicyTrainConfig().epochs == 0
    assert auto_epochs("") == 20 and auto_epochs("pong") == TEACHER_EPOCHS > 20
    with pytest.raises(WmfastError, match="epochs must be >= 1"):
        train_policy("unused", PolicyTrainConfig(epochs=-1), progress=False)


def test_shift_augmentation_is_on_by_default_for_reach_only():
    from wmfast.models.policy import PolicyConfig
    from wmfast.policy.train import _shift

    reach, pong = PolicyConfig(game="reach", frame_size=16), PolicyConfig(game="pong", frame_size=16)
    assert _shift(PolicyTrainConfig(), reach)[0] == 16        # auto: anywhere in the frame
    assert _shift(PolicyTrainConfig(shift=3), reach)[0] == 3
    assert _shift(PolicyTrainConfig(shift=0), reach)[0] == 0
    assert _shift(PolicyTrainConfig(), pong)[0] == 0          # not label-preserving there


def test_train_and_eval_reach_from_the_cli(tmp_path, capsys):
    run = tmp_path / "act"
    assert main(["policy", "train", "--kind", "act", "--data", "game:reach", "--run", str(run), "--size", "16",
                 "--samples", "120", "--epochs", "2", "--dagger-rounds", "1", "--chunk", "4"]) == 0
    for name in ("model.safetensors", "config.json", "train.json", "metrics.jsonl", "curves.png"):
        assert (run / name).is_file(), name
    summary = json.loads((run / "train.json").read_text())
    assert summary["samples"] >= 110 and summary["rounds"][0]["round"] == 1   # expert + DAgger samples
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {r["round"] for r in rows} == {0, 1} and all(np.isfinite(r["loss"]) for r in rows)
    out = tmp_path / "eval.json"
    assert main(["policy", "eval", "--run", str(run), "--episodes", "3", "--horizon", "4,2", "--seed", "5",
                 "--json", str(out), "--ensemble"]) == 0
    report = json.loads(out.read_text())
    assert report["policy"] == "act" and report["params"] == sum(p.numel() for p in load_policy(run).parameters())
    assert [r["horizon"] for r in report["results"]] == [4, 2, "ensemble"]
    for r in report["results"]:
        assert {"horizon", "success_rate", "steps_to_reach", "pauses"} <= set(r) and 0 <= r["success_rate"] <= 1
    assert report["baselines"]["expert"]["success_rate"] == 1.0    # the expert always reaches the ball
    assert (run / "eval" / "eval.png").is_file() and (run / "eval" / "reach_2.gif").is_file()
    assert "| horizon |" in capsys.readouterr().out


def test_discrete_policy_trains_on_pong_and_is_scored_by_playing(tmp_path, tiny_game_cache):
    run = tmp_path / "pong"
    cfg = PolicyTrainConfig(kind="act", data="game:pong:2", samples=100, epochs=1, chunk=4, frame_size=16)
    summary = train_policy(run, cfg, progress=False)
    model = load_policy(run)
    assert model.config.discrete and model.config.num_actions == 3 and model.config.game == "pong"
    assert summary["rounds"] == []          # no DAgger for discrete games
    from wmfast.policy.evaluate import evaluate_policy

    report = evaluate_policy(run, episodes=2, horizons="4,1", seed=0, steps=20, gifs=1, progress=False)
    assert [r["horizon"] for r in report["results"]] == [4, 1]
    for row in report["results"] + list(report["baselines"].values()):
        assert row["points_won_per_100"] >= 0 and row["points_lost_per_100"] >= 0
    assert set(report["baselines"]) == {"random", "scripted"}


def test_scores_count_points_and_coins():
    from wmfast.policy.evaluate import score_discrete

    r = np.zeros((2, 50), np.float32)
    r[0, 3], r[0, 9], r[1, 4] = 1, -1, 1
    s = score_discrete("pong", r)
    assert s["points_won_per_100"] == pytest.approx(2.0) and s["points_lost_per_100"] == pytest.approx(1.0)
    assert score_discrete("maze", r)["coins_per_100"] == pytest.approx(1.0)


def test_policy_cli_bad_input_is_one_line_exit_2(tmp_path, capsys):
    assert main(["policy", "eval", "--run", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("wmfast: error:") and "\n" not in err and "not found" in err
    assert main(["policy", "train", "--data", str(tmp_path / "nope.h5"), "--run", str(tmp_path / "r")]) == 2
    assert "not found" in capsys.readouterr().err
    with pytest.raises(WmfastError, match="samples"):
        train_policy(tmp_path / "r", PolicyTrainConfig(samples=0))
    with pytest.raises(WmfastError, match="shift"):
        train_policy(tmp_path / "r", PolicyTrainConfig(shift=-2))
