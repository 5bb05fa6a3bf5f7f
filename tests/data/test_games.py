"""Embedded games: deterministic by seed, actions change the next frame, any frame size."""
import copy

import numpy as np
import pytest

from wmfast.data import DEFAULT_GAME, GAMES, generate_game_dataset, load_dataset, make_game
from wmfast.data.games import play_episode
from wmfast.errors import WmfastError


def test_at_least_two_games_and_a_default():
    assert len(GAMES) >= 2
    assert DEFAULT_GAME in GAMES
    for cls in GAMES.values():
        assert 3 <= len(cls.action_names) <= 8 and cls.action_names[0] == "NOOP"


@pytest.mark.parametrize("name", sorted(GAMES))
def test_episode_deterministic_by_seed(name):
    f1, a1, r1 = play_episode(name, 60, 48, seed=7)
    f2, a2, r2 = play_episode(name, 60, 48, seed=7)
    f3, a3, _ = play_episode(name, 60, 48, seed=8)
    assert np.array_equal(f1, f2) and np.array_equal(a1, a2) and np.array_equal(r1, r2)
    assert not (np.array_equal(f1, f3) and np.array_equal(a1, a3))
    assert f1.shape == (61, 48, 48, 3) and f1.dtype == np.uint8
    assert a1[-1] == -1 and (a1[:-1] >= 0).all() and (a1[:-1] < len(GAMES[name].action_names)).all()


@pytest.mark.parametrize("name", sorted(GAMES))
def test_policy_uses_every_action(name):
    _, actions, _ = play_episode(name, 400, 16, seed=0)
    counts = np.bincount(actions[:-1], minlength=len(GAMES[name].action_names))
    assert (counts >= 0.04 * 400).all(), counts


@pytest.mark.parametrize("name", sorted(GAMES))
def test_each_action_changes_the_next_frame(name):
    """From the same states, two different actions give different next frames in most states."""
    game = make_game(name, seed=3)
    n = game.n_actions
    differs = np.zeros((n, n))
    states = 0
    for _ in range(60):
        game.step(game.policy())
        nxt = []
        for a in range(n):
            g = copy.deepcopy(game)
            g.step(a)
            nxt.append(g.render(64))
        states += 1
        for i in range(n):
            for j in range(n):
                differs[i, j] += not np.array_equal(nxt[i], nxt[j])
    off_diag = differs[~np.eye(n, dtype=bool)] / states
    # Walls and screen edges can block a move, but every pair of actions must usually differ.
    assert off_diag.min() > 0.5, differs / states


@pytest.mark.parametrize("name", sorted(GAMES))
def test_policy_rarely_presses_into_a_wall(name):
    """A blocked press looks like NOOP in the frames, so the data policy keeps them rare."""
    game = make_game(name, seed=1)
    blocked = moves = 0
    for _ in range(2000):
        a = game.policy()
        if a:
            moves += 1
            blocked += game.blocked(a) if name == "maze" else game.pushes_wall(a)
        game.step(a)
    assert blocked < 0.1 * moves, (blocked, moves)


def test_pong_pushes_wall_only_at_the_edges():
    game = make_game("pong", seed=0)
    half = game.PADDLE_H / 2
    for y, up, down in ((half, True, False), (1 - half, False, True), (0.5, False, False)):
        game.player_y = y
        assert (game.pushes_wall(1), game.pushes_wall(2), game.pushes_wall(0)) == (up, down, False)


def test_step_is_the_action_taken():
    """Pong: UP moves the player's paddle up the screen, DOWN moves it down (rows of green pixels)."""
    game = make_game("pong", seed=0)
    game.player_y = 0.5
    rows = {}
    for a in (1, 2):
        g = copy.deepcopy(game)
        g.step(a)
        img = g.render(64)
        green = (img == np.array(g.PLAYER, np.uint8)).all(-1)
        rows[a] = np.nonzero(green.any(1))[0].mean()
    assert rows[1] < 32 - 2 < 32 + 2 < rows[2]


@pytest.mark.parametrize("name", sorted(GAMES))
@pytest.mark.parametrize("size", [16, 64, 100])
def test_renders_at_any_size(name, size):
    game = make_game(name, seed=1)
    img = game.render(size)
    assert img.shape == (size, size, 3) and img.dtype == np.uint8
    assert len(np.unique(img.reshape(-1, 3), axis=0)) >= 3  # background plus objects, all visible


def test_dataset_episodes_extend_with_more_episodes(tmp_path):
    small = load_dataset(generate_game_dataset("maze", 2, 10, size=32, seed=5, out=tmp_path / "a.h5", progress=False))
    big = load_dataset(generate_game_dataset("maze", 3, 10, size=32, seed=5, out=tmp_path / "b.h5", progress=False))
    assert small.episodes == [(0, 11), (11, 22)]
    assert np.array_equal(small.frames, big.frames[:22]) and np.array_equal(small.actions, big.actions[:22])
    assert big.meta["game"] == "maze" and big.meta["seed"] == 5 and big.n_actions == 5
    assert big.rewards is not None and big.rewards.dtype == np.float32


def test_unknown_game_and_bad_arguments(tmp_path):
    with pytest.raises(WmfastError, match="unknown game 'tetris'.*maze.*pong"):
        make_game("tetris")
    with pytest.raises(WmfastError, match="size must be"):
        generate_game_dataset("pong", 1, 5, size=2, out=tmp_path / "x.h5")
    with pytest.raises(WmfastError, match="episodes >= 1"):
        generate_game_dataset("pong", 0, 5, out=tmp_path / "x.h5")
