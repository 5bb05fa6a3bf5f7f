"""The long-play harness: object readers against the games' own state, stub Worlds with known
failures, and `wmfast eval --long-play` end to end on a small random run."""
import json

import numpy as np
import pytest
import torch

from wmfast.cli import main
from wmfast.data.frames import to_model_frames
from wmfast.data.games import Maze, Pong
from wmfast.errors import WmfastError
from wmfast.eval.long_play import MazeReader, PongReader, connected_blobs, long_play, parse_mode


def real_frames(game, size):
    return to_model_frames(game.render(64)[None], size)


@pytest.mark.parametrize("size", [32, 24, 64])
def test_maze_reader_reads_the_games_own_cells(size):
    reader, rng = MazeReader(size), np.random.default_rng(0)
    for seed in range(6):
        game = Maze(seed)
        for _ in range(20):
            game.step(int(rng.integers(5)))
            assert np.array_equal(reader.cells(real_frames(game, size))[0], MazeReader.truth(game))


@pytest.mark.parametrize("size", [32, 64])
def test_pong_reader_finds_paddle_and_ball_within_a_fraction_of_a_pixel(size):
    reader = PongReader(size)
    paddle_err, ball_err, balls = [], [], []
    for seed in range(6):
        game = Pong(seed)
        for _ in range(40):
            game.step(game.policy())
            o = reader.objects(real_frames(game, size))
            paddle_err.append(abs(o["paddle_y"][0] - game.player_y * size))
            balls.append(o["balls"][0])
            if balls[-1] == 1 and 0 < game.bx < 1 - Pong.BALL:   # the ball whole on the field
                centre = ((game.bx + Pong.BALL / 2) * size, (game.by + Pong.BALL / 2) * size)
                ball_err.append(np.hypot(*(o["ball_xy"][0] - centre)))
    assert max(paddle_err) < 0.5 * size / 32 and max(ball_err) < 0.75 * size / 32
    assert np.mean(np.array(balls) == 1) >= 0.99


def test_connected_blobs_are_eight_connected():
    mask = np.zeros((6, 6), bool)
    mask[0, 0] = mask[1, 1] = True          # diagonal neighbours: one blob
    mask[4, 4] = mask[4, 5] = True
    assert sorted(len(r) for r, _ in connected_blobs(mask)) == [2, 2]


class ReplayWorld:
    """A stub World that shows the real game (its own copies of it, given the same actions), and can
    break one game from frame `break_at` on: drop the maze agent, or move the pong paddle 3 px."""

    def __init__(self, game, seeds, frame_size=32, break_at=None, broken=0):
        from wmfast.data.games import make_game

        self.games = [make_game(game, s) for s in seeds]
        self.C, self.frame_size, self.break_at, self.broken, self.t = 4, frame_size, break_at, broken, 0

    def reset(self, frames):
        for g in self.games:            # the harness plays C-1 policy steps before handing the frames over
            for _ in range(self.C - 1):
                g.step(g.policy())
        self.t = 0
        return self

    def step(self, ids):
        self.t += 1
        for g, a in zip(self.games, ids.tolist()):
            g.step(a)
        frames = to_model_frames(np.stack([g.render(64) for g in self.games]), self.frame_size)
        if self.break_at is not None and self.t >= self.break_at:
            self.break_frame(frames)
        return frames

    def break_frame(self, frames):
        g = self.games[self.broken]
        if isinstance(g, Maze):
            r, c = g.agent
            cell = self.frame_size // Maze.GRID
            frames[self.broken, :, r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = \
                to_model_frames(np.array(Maze.FLOOR, np.uint8)[None, None], 1)[:, 0, 0][:, None, None]
        else:
            frames[self.broken] = torch.roll(frames[self.broken], 3, dims=1)


def harness_seeds(games, seed):
    from wmfast.eval.long_play import game_seed

    return [game_seed(seed, g) for g in range(games)]


@pytest.mark.parametrize("game", ["maze", "pong"])
@pytest.mark.parametrize("actions", ["random", "policy"])
def test_a_world_that_replays_the_game_scores_everything(game, actions):
    world = ReplayWorld(game, harness_seeds(3, 5))
    r = long_play(world, game, games=3, steps=40, actions=actions, seed=5)
    assert r["share"]["correct"] == 1.0 and r["first_wrong"] == [None] * 3 and r["held_frames"] == [40] * 3
    assert all(v == 1.0 for v in r["share"].values())


@pytest.mark.parametrize("game, k", [("maze", 7), ("maze", 1), ("pong", 12)])
def test_a_world_that_loses_the_agent_at_frame_k_reports_k(game, k):
    world = ReplayWorld(game, harness_seeds(3, 2), break_at=k, broken=1)
    r = long_play(world, game, games=3, steps=30, actions="random", seed=2)
    assert r["first_wrong"] == [None, k, None] and r["held_frames"][1] == k - 1
    assert r["per_step"]["correct"][k - 2 if k > 1 else 0] == (1.0 if k > 1 else 2 / 3)
    assert r["per_step"]["correct"][-1] == pytest.approx(2 / 3)
    main_check = "one_agent" if game == "maze" else "paddle_ok"
    assert r["share"][main_check] == pytest.approx(1 - (30 - k + 1) / 90)


def test_long_play_games_are_not_the_datasets_episodes():
    from wmfast.data.games import _episode_seed

    assert not set(harness_seeds(50, 0)) & {_episode_seed(0, e) for e in range(1000)}


@pytest.mark.parametrize("spec, want", [("compat", dict(mode="compat", steps=10)), ("fast:4", dict(mode="fast", steps=4)),
                                        ("fast:2:stream", dict(mode="fast", steps=2, stream=True)),
                                        ("fast:1:window", dict(mode="fast", steps=1, stream=False))])
def test_mode_specs(spec, want):
    assert parse_mode(spec) == want


@pytest.mark.parametrize("spec", ["compat:4:stream", "fast:0", "fast:x", "slow:4", "fast:4:ring", "fast:4:window:1"])
def test_bad_mode_specs_are_refused(spec):
    with pytest.raises(WmfastError, match="bad mode"):
        parse_mode(spec)


@pytest.fixture(scope="module")
def maze_run(tmp_path_factory):
    """A small random world model saved as a maze run with a game action map."""
    from wmfast.checkpoint import save_action_map, save_model
    from wmfast.models.action_map import ActionMap
    from wmfast.config import save_json
    from wmfast.rollout.shapes import random_world_model
    from wmfast.run_data import data_record

    run = tmp_path_factory.mktemp("lp") / "run"
    model = random_world_model(frame_size=32, patch_size=8, embed_dim=32, num_heads=4, hidden_dim=64, num_blocks=1,
                               n_actions=8, temporal_tokenizer=False)
    for stage, m in (("tokenizer", model.tokenizer), ("actions", model.lam), ("dynamics", model.dynamics)):
        save_model(m, run / stage)
        save_json(data_record("game:maze"), run / stage / "data.json")
    save_action_map(ActionMap(np.eye(5, 8, dtype=np.int64), Maze.action_names, data="game:maze"), run)
    return run


def test_eval_long_play_cli_writes_report_plot_and_gif(maze_run, tmp_path, capsys):
    out = tmp_path / "lp"
    assert main(["eval", "--run", str(maze_run), "--long-play", "3", "--modes", "compat:1,fast:1", "--games", "2",
                 "--actions", "random", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "compat:1" in text and "fast:1" in text and "first wrong" in text
    report = json.loads((out / "long_play.json").read_text())
    assert report["game"] == "maze" and len(report["rows"]) == 2
    for row in report["rows"]:
        assert len(row["per_step"]["correct"]) == 3 and len(row["first_wrong"]) == 2
        assert 0.0 <= row["share"]["correct"] <= 1.0
    assert (out / "long_play.png").is_file() and (out / "long_play.gif").is_file()


@pytest.mark.parametrize("argv, message", [(["--modes", "fast:0"], "bad mode"), (["--backends", "tpu"], "backends"),
                                           (["--actions", "lazy"], "actions"), (["--games", "0"], "games")])
def test_eval_long_play_cli_one_line_errors(maze_run, argv, message, capsys):
    # argparse: the option's own one-line error, exit code 2
    assert main(["eval", "--run", str(maze_run), "--long-play", "2", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


class AtariReplayWorld(ReplayWorld):
    """ReplayWorld on the emulator itself (its own copies of the harness's games); a broken game's
    frame is shifted 3 px along its paddle's axis."""

    def __init__(self, game, games, seed, frame_size=32, break_at=None, broken=0):
        from wmfast.eval.long_play import make_games

        self.games = make_games(game, games, seed, 32, 4)
        self.axis = -2 if game == "atari:pong" else -1
        self.C, self.frame_size, self.break_at, self.broken, self.t = 4, frame_size, break_at, broken, 0

    def break_frame(self, frames):
        frames[self.broken] = torch.roll(frames[self.broken], 3, dims=self.axis)


@pytest.mark.parametrize("game", ["atari:pong", "atari:breakout"])
def test_a_world_that_replays_the_emulator_scores_everything_and_beats_copy_last(game):
    pytest.importorskip("ale_py")
    world = AtariReplayWorld(game, 2, seed=3)
    r = long_play(world, game, games=2, steps=40, actions="random", seed=3, render_size=32)
    assert r["share"]["correct"] == 1.0 and r["first_wrong"] == [None, None] and r["held_frames"] == [40, 40]
    # The paddle moves under random actions; a held frame loses it.
    assert r["copy_last_share"]["paddle_ok"] < 0.9


def test_a_world_that_moves_the_atari_paddle_at_frame_k_reports_k():
    pytest.importorskip("ale_py")
    world = AtariReplayWorld("atari:pong", 3, seed=4, break_at=9, broken=2)
    r = long_play(world, "atari:pong", games=3, steps=20, actions="policy", seed=4, render_size=32)
    assert r["first_wrong"] == [None, None, 9] and r["held_frames"] == [20, 20, 8]
    assert r["share"]["paddle_ok"] == pytest.approx(1 - 12 / 60)


def test_atari_long_play_games_differ_and_start_in_play():
    pytest.importorskip("ale_py")
    from wmfast.eval.long_play import make_games

    games = make_games("atari:pong", 3, 0, 32, 4)
    frames = np.stack([g.render() for g in games])
    assert frames.shape == (3, 32, 32, 3) and not np.array_equal(frames[0], frames[1])


def test_shares_per_step_count_only_games_still_playing():
    from wmfast.eval.long_play import shares_per_step

    right = np.array([[True, False], [True, True], [False, True]])
    playing = np.array([[True, True], [True, False], [False, False]])
    assert shares_per_step(right, playing) == [0.5, 1.0, None]


def test_eval_long_play_cli_plays_an_atari_run_against_the_emulator(tmp_path, capsys):
    pytest.importorskip("ale_py")
    from wmfast.checkpoint import save_action_map, save_model
    from wmfast.config import save_json
    from wmfast.data.atari import generate_atari_dataset
    from wmfast.models.action_map import ActionMap
    from wmfast.rollout.shapes import random_world_model
    from wmfast.run_data import data_record

    data = generate_atari_dataset("Pong", 1, size=32, seed=5, max_steps=20, out=tmp_path / "pong.h5", progress=False)
    run = tmp_path / "run"
    model = random_world_model(frame_size=32, patch_size=8, embed_dim=32, num_heads=4, hidden_dim=64, num_blocks=1,
                               n_actions=8, temporal_tokenizer=False)
    for stage, m in (("tokenizer", model.tokenizer), ("actions", model.lam), ("dynamics", model.dynamics)):
        save_model(m, run / stage)
        save_json(data_record(data), run / stage / "data.json")
    names = ["NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE"]
    save_action_map(ActionMap(np.eye(6, 8, dtype=np.int64), names, data=data), run)
    out = tmp_path / "lp"
    assert main(["eval", "--run", str(run), "--long-play", "4", "--modes", "fast:1", "--games", "2",
                 "--actions", "policy", "--out", str(out)]) == 0
    assert "copy-last correct" in capsys.readouterr().out
    report = json.loads((out / "long_play.json").read_text())
    assert report["game"] == "atari:pong" and report["render_size"] == 32
    row = report["rows"][0]
    assert len(row["per_step"]["paddle_ok"]) == 4 and row["played_frames"] == [4, 4]
    assert 0.0 <= row["copy_last_share"]["correct"] <= 1.0
