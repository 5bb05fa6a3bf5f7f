"""`wmfast rollout`, `wmfast play` and `wmfast bench rollout` end to end on a tiny random run."""
import io
import json

import imageio.v2 as imageio
import numpy as np
import pytest

from wmfast.checkpoint import save_model
from wmfast.cli import main
from wmfast.data import write_dataset
from wmfast.rollout.play import play
from wmfast.rollout.shapes import random_world_model

SIZES = dict(frame_size=16, patch_size=4, embed_dim=16, num_heads=2, hidden_dim=32, num_blocks=1,
             latent_dim=2, num_bins=4, n_actions=4, context_length=2)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("rollout-cli")
    model = random_world_model(**SIZES)
    for stage, m in (("tokenizer", model.tokenizer), ("actions", model.lam), ("dynamics", model.dynamics)):
        save_model(m, root / "run" / stage)
    frames = np.random.default_rng(0).integers(0, 256, (12, 16, 16, 3), dtype=np.uint8)
    data = write_dataset(root / "data.h5", frames, episodes=[(0, 6), (6, 12)])
    return root, str(root / "run"), data


def test_rollout_cli_writes_true_and_generated_side_by_side(tiny, capsys):
    root, run, data = tiny
    out = root / "rollout.gif"
    assert main(["rollout", "--run", run, "--actions", "0,1,3", "--steps", "2", "--data", data,
                 "--episode", "1", "--out", str(out)]) == 0
    video = np.asarray(imageio.mimread(out))
    # context 2 + 3 generated frames; two 16 px panels side by side with a 2 px gap, upscaled 4x
    assert video.shape[:3] == (5, 64, (16 + 2 + 16) * 4)
    assert "true | generated" in capsys.readouterr().out
    assert main(["rollout", "--run", run, "--actions", "infer", "--mode", "fast", "--steps", "1", "--data", data,
                 "--out", str(root / "inferred.gif")]) == 0


def test_rollout_cli_bad_actions_exit_2(tiny, capsys):
    root, run, data = tiny
    assert main(["rollout", "--run", run, "--actions", "0,9", "--data", data, "--out", str(root / "x.gif")]) == 2
    assert "--actions must be ids in [0, 4)" in capsys.readouterr().err
    assert main(["rollout", "--run", run, "--actions", "up", "--data", data, "--out", str(root / "x.gif")]) == 2


def test_rollout_cli_game_action_names_go_through_the_action_map(tiny, tmp_path, capsys):
    import shutil

    import torch

    from wmfast import World
    from wmfast.checkpoint import save_action_map
    from wmfast.models.action_map import ActionMap
    from wmfast.rollout.play import render_rollout

    root, run, data = tiny
    run2 = tmp_path / "run"
    shutil.copytree(run, run2)
    out = str(tmp_path / "x.gif")
    # no action map yet: names are game actions, so the error says how to make one
    assert main(["rollout", "--run", str(run2), "--actions", "UP,LEFT", "--data", data, "--out", out]) == 2
    assert "action_map.json" in capsys.readouterr().err
    # NOOP -> latent 2, UP -> 0, LEFT -> 3 (the most frequent code per game action)
    save_action_map(ActionMap([[0, 1, 5, 0], [4, 0, 0, 1], [0, 0, 1, 3]], ["NOOP", "UP", "LEFT"]), run2)
    r = render_rollout(str(run2), "UP,up,LEFT", out, steps=2, data=data)
    assert r["action_space"] == "game" and r["actions"] == [1, 1, 2] and r["action_names"] == ["UP", "UP", "LEFT"]
    # the frames are those of the mapped latent ids
    from wmfast.rollout.play import episode_frames

    world = World.load(str(run2), mode="compat", steps=2)
    context = episode_frames(data, 0, world.C, world.frame_size)
    want = world.reset(context).rollout(torch.tensor([[0, 0, 3]]))
    got = World.load(str(run2), mode="compat", steps=2, actions="game").reset(context).rollout(torch.tensor([[1, 1, 2]]))
    assert torch.equal(want, got)
    # numbers alone stay latent ids; --action-space game reads them as game ids
    assert render_rollout(str(run2), "1,2", out, steps=1, data=data)["action_space"] == "latent"
    assert main(["rollout", "--run", str(run2), "--actions", "1,2", "--action-space", "game", "--steps", "1",
                 "--data", data, "--out", out]) == 0
    capsys.readouterr()
    assert main(["rollout", "--run", str(run2), "--actions", "UP,JUMP", "--data", data, "--out", out]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown game action 'JUMP'" in err and "NOOP" in err and len(err.splitlines()) == 1
    assert main(["rollout", "--run", str(run2), "--actions", "3", "--action-space", "game", "--data", data,
                 "--out", out]) == 2
    # play with game actions: digit keys are game ids, shown by name
    text = io.StringIO()
    assert play(str(run2), data=data, steps=1, stdin=io.StringIO("12q"), stdout=text,
                action_space="game")["frames"] == 2
    assert "1=UP" in text.getvalue() and "action 2 LEFT" in text.getvalue()


def test_play_reads_keys_until_q_and_writes_frames(tiny):
    root, run, data = tiny
    out = io.StringIO()
    result = play(run, out=str(root / "live.png"), ansi=True, data=data, steps=2,
                  stdin=io.StringIO("1 2\nx3r0q111"), stdout=out)
    assert result["frames"] == 4                     # 1, 2, 3, 0; 'x' ignored, 'r' resets, stops at 'q'
    assert imageio.imread(root / "live.png").shape == (64, 64, 3)
    text = out.getvalue()
    assert "\u2580" in text and "fps" in text and "ignored 'x'" in text


def test_play_exits_cleanly_on_end_of_input_and_writes_a_gif(tiny):
    root, run, data = tiny
    result = play(run, out=str(root / "session.gif"), data=data, steps=1, stdin=io.StringIO("0123"),
                  stdout=io.StringIO())
    assert result["frames"] == 4
    assert len(imageio.mimread(root / "session.gif")) == 5    # first frame + 4 played


def test_play_cli_with_piped_stdin(tiny, monkeypatch, capsys):
    root, run, data = tiny
    monkeypatch.setattr("sys.stdin", io.StringIO("12q"))
    assert main(["play", "--run", run, "--data", data, "--steps", "1"]) == 0
    assert "played 2 frames" in capsys.readouterr().out


def test_bench_rollout_speed_rows_report_the_compat_check(monkeypatch, tmp_path):
    import wmfast.bench.rollout as bench

    monkeypatch.setitem(bench.SHAPES, "small", SIZES)
    rows = bench.speed_rows("small", batch=2, frames=2, reps=1)
    assert [r["setting"] for r in rows] == ["reference", *bench.SETTINGS]
    compat = rows[1]
    assert compat["identical_to_reference"] is True and compat["ms_per_frame"] > 0
    path = tmp_path / "r.json"
    bench.write_json({"speed": rows}, str(path))
    assert json.loads(path.read_text())["speed"][0]["setting"] == "reference"
