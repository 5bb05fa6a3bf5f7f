"""Teachers for discrete games (pong: aiming and centre trackers), DAgger labels from them, pong hit counting, and the
ACT positional embedding's sine start."""
import math

import numpy as np
import pytest
import torch

from wmfast.data.games import Pong
from wmfast.errors import WmfastError
from wmfast.policy import PolicyConfig
from wmfast.models.policy import ACTPolicy, sincos_2d
from wmfast.policy.evaluate import play_discrete, random_chooser, score_discrete
from wmfast.policy.teachers import (PONG_AIM, get_teacher, pong_centre_tracker, pong_tracker, teacher_chunk,
                                    teacher_episodes)
from wmfast.policy.train import PolicyTrainConfig, train_policy


def test_pong_centre_tracker_moves_toward_the_ball_and_rests_near_it():
    g = Pong(0)
    g.player_y, g.by = 0.5, 0.2 - g.BALL / 2       # ball centre 0.3 above the paddle: UP
    assert pong_centre_tracker(g) == 1
    g.by = 0.8 - g.BALL / 2                         # below: DOWN
    assert pong_centre_tracker(g) == 2
    g.by = 0.5 + 0.02 - g.BALL / 2                  # within half a paddle step: NOOP
    assert pong_centre_tracker(g) == 0


def test_pong_tracker_aims_the_return_away_from_the_opponent():
    """Target = ball centre shifted 0.9 half-paddles toward the opponent's height: the ball meets the
    paddle's far end and bounces steeply away from the opponent."""
    g = Pong(0)
    half = g.PADDLE_H / 2
    g.by = 0.5 - g.BALL / 2                         # ball centre 0.5
    g.opponent_y = 0.2                              # opponent above the ball: target 0.5 - 0.9 * 0.11 = 0.401
    g.player_y = 0.5 - PONG_AIM * half
    assert pong_tracker(g) == 0
    g.player_y = 0.5                                # paddle at the ball's centre: UP toward the target
    assert pong_tracker(g) == 1 and pong_centre_tracker(g) == 0
    g.opponent_y = 0.8                              # opponent below: target 0.599, DOWN
    assert pong_tracker(g) == 2
    assert get_teacher("pong", "tracker") is pong_tracker and get_teacher("pong", "centre") is pong_centre_tracker
    for opponent, away in ((0.2, 1.0), (0.8, -1.0)):   # play a ball into the paddle: it leaves away from them
        g = Pong(1)
        g.bx, g.by, g.vx, g.vy, g.player_y, g.opponent_y = 0.3, 0.5 - g.BALL / 2, -0.03, 0.0, 0.5, opponent
        while g.vx < 0:
            g.opponent_y = opponent                 # hold the opponent still (it tracks the ball)
            assert g.step(pong_tracker(g)) == 0
        assert g.vy * away > 0.02                   # 0.035 x offset: 0.9 less at most the dead band, 0.32


def test_the_aiming_tracker_wins_more_points_than_random_and_the_centre_tracker():
    """The v2 game's slow opponent cannot reach steep returns: aiming wins points without losing any."""
    seeds, steps = [11, 12, 13], 1000
    score = {name: score_discrete("pong", play_discrete("pong", choose, seeds, steps, 8)["rewards"])
             for name, choose in (("aiming", lambda games, frames: [pong_tracker(g) for g in games]),
                                  ("centre", lambda games, frames: [pong_centre_tracker(g) for g in games]),
                                  ("random", random_chooser(3, 0)))}
    aiming = score["aiming"]
    assert aiming["points_won_per_100"] > score["random"]["points_won_per_100"]
    assert aiming["points_won_per_100"] > 2 * score["centre"]["points_won_per_100"]
    assert aiming["return_per_100"] > score["random"]["return_per_100"] + 1.0
    assert aiming["points_lost_per_100"] <= score["centre"]["points_lost_per_100"] + 0.1


def test_teacher_chunk_is_the_teachers_next_actions_and_leaves_the_game_alone():
    g = Pong(3)
    for _ in range(5):
        g.step(0)
    before = (g.player_y, g.bx, g.by, g.vx, g.vy)
    chunk = teacher_chunk(g, pong_tracker, 6)
    assert (g.player_y, g.bx, g.by, g.vx, g.vy) == before
    expected = []                                   # play the same 6 steps on the game itself
    for _ in range(6):
        expected.append(pong_tracker(g))
        g.step(expected[-1])
    assert chunk.tolist() == expected


def test_dagger_on_pong_labels_the_learners_states_with_the_teacher():
    """The learner always presses UP; every visited frame is labelled with the tracker's chunk from there."""
    k, steps = 3, 12
    out = play_discrete("pong", lambda games, frames: [1] * len(games), [5], steps, 16,
                        label=(pong_tracker, k))
    frames, labels, valid = out["dagger"]
    assert frames.shape == (steps, 16, 16, 3) and labels.shape == (steps, k) and valid.all()
    g = Pong(5)
    for t in range(steps):
        assert np.array_equal(frames[t], g.render(16))
        assert labels[t].tolist() == teacher_chunk(g, pong_tracker, k).tolist()
        g.step(1)


def test_hits_count_balls_returned_by_the_players_paddle():
    g = Pong(0)
    g.player_y, g.bx, g.by, g.vx, g.vy = 0.5, g.PLAYER_X + g.PADDLE_W + 0.01, 0.5 - g.BALL / 2, -0.03, 0.0
    out = play_discrete("pong", lambda games, frames: [0], [0], 1, 16)   # a fresh game: no hit on step 1
    assert not out["hits"].any()
    # A game whose ball is about to meet the paddle: play it through play_discrete's own loop.
    import wmfast.data.games as games_mod

    real = games_mod.make_game
    try:
        games_mod.make_game = lambda name, seed=0: g
        out = play_discrete("pong", lambda games, frames: [0], [0], 2, 16)
    finally:
        games_mod.make_game = real
    assert out["hits"][0].tolist() == [True, False] and g.vx > 0
    s = score_discrete("pong", out["rewards"], out["hits"])
    assert s["hits_per_100"] == pytest.approx(50.0) and s["points_won_per_100"] == 0


def test_teacher_episodes_and_bad_teachers():
    eps = teacher_episodes("pong", "tracker", 25, steps=10, size=16, progress=False)
    assert len(eps) == 3 and eps[0][0].shape == (11, 16, 16, 3)
    assert eps[0][1][-1] == -1 and set(eps[0][1][:-1]) <= {0, 1, 2}
    with pytest.raises(WmfastError, match="no teacher"):
        get_teacher("maze", "tracker")
    with pytest.raises(WmfastError, match="game:NAME"):
        train_policy("unused", PolicyTrainConfig(data="atari:Pong", teacher="tracker"), progress=False)


def test_act_positions_start_at_the_2d_sine_embedding():
    pe = sincos_2d(16, 32)
    assert pe.shape == (256, 32)
    r, c = 5, 11                                     # token (row 5, column 11) is row-major index 5*16 + 11
    v = pe[r * 16 + c]
    w1 = 10000.0 ** (-1 / 8)
    assert v[0].item() == pytest.approx(math.sin(r)) and v[8].item() == pytest.approx(math.cos(r))
    assert v[1].item() == pytest.approx(math.sin(r * w1), abs=1e-6)
    assert v[16].item() == pytest.approx(math.sin(c)) and v[24].item() == pytest.approx(math.cos(c))
    model = ACTPolicy(PolicyConfig(kind="act"))
    assert model.pos.requires_grad and torch.equal(model.pos.detach()[0], pe)
    with pytest.raises(WmfastError, match="divisible by 4"):
        PolicyConfig(kind="act", d_model=30, channels=30)
