"""The reach game, its expert and dataset, and chunk alignment of the training samples."""
import h5py
import numpy as np
import pytest

from wmfast.data import load_dataset, make_game
from wmfast.data.reach import (CONTINUOUS, Reach, generate_reach_dataset, play_expert_episode,
                               read_reach_dataset)
from wmfast.errors import WmfastError
from wmfast.policy.train import Samples, chunk_targets


def test_reach_is_deterministic_by_seed_and_renders_both_objects():
    a, b, c = Reach(3), Reach(3), Reach(4)
    assert np.array_equal(a.render(128), b.render(128))
    assert not np.array_equal(a.render(128), c.render(128))
    img = a.render(128)
    assert img.shape == (128, 128, 3) and img.dtype == np.uint8
    colours = {tuple(p) for p in img.reshape(-1, 3)}
    assert Reach.BALL in colours and Reach.EFFECTOR in colours
    assert isinstance(make_game("reach", 3), Reach)


def test_actions_are_velocities_clipped_per_axis():
    g = Reach(0)
    g.effector, g.ball = np.array([0.5, 0.5]), np.array([0.9, 0.9])
    g.step([5.0, -0.5])     # x clipped to +1 -> moves MAX_SPEED; y moves half of it
    np.testing.assert_allclose(g.effector, [0.5 + Reach.MAX_SPEED, 0.5 - 0.5 * Reach.MAX_SPEED])
    with pytest.raises(WmfastError, match="2 finite numbers"):
        g.step([np.nan, 0.0])
    with pytest.raises(WmfastError, match="2 finite numbers"):
        g.step([1.0, 0.0, 0.0])


def test_expert_reaches_the_ball_and_slows_down_near_it():
    for seed in range(20):
        frames, actions = play_expert_episode(seed, size=32)
        g = Reach(seed)
        for a in actions[:-1]:
            g.step(a)
        assert g.reached and g.done and np.isnan(actions[-1]).all()
        assert len(frames) == len(actions) <= Reach.MAX_STEPS + 1
        speeds = np.linalg.norm(actions[:-1], axis=1)
        assert speeds[0] == pytest.approx(1.0, abs=1e-5)   # starts >= 0.3 away: full speed
        assert speeds[-1] < 1.0                            # arrives at reduced speed


def test_chunk_targets_align_with_the_expert_actions_at_t_plus_k():
    """targets[t, k] is the action taken at step t + k (frame t+k -> t+k+1), invalid past the end;
    replaying the chunk from the state at t reproduces frames t+1 .. t+k of the episode."""
    frames, actions = play_expert_episode(5, size=32)
    T, K = len(actions) - 1, 8
    targets, valid = chunk_targets(actions, K)
    assert targets.shape == (T, K, 2) and valid.shape == (T, K)
    for t in range(T):
        for k in range(K):
            if t + k < T:
                assert valid[t, k] and np.array_equal(targets[t, k], actions[t + k])
            else:
                assert not valid[t, k] and (targets[t, k] == 0).all()
    for t in (0, T // 2, T - 2, T - 1):   # episode ends included
        g = Reach(5)
        for a in actions[:t]:
            g.step(a)
        assert np.array_equal(g.render(32), frames[t])
        for k in range(K):
            if not valid[t, k]:
                break
            g.step(targets[t, k])
            assert np.array_equal(g.render(32), frames[t + k + 1])
    s = Samples.from_episodes([(frames, actions)], K)
    assert len(s) == T and np.array_equal(s.frames, frames[:T])


def test_discrete_chunk_targets_by_hand():
    actions = np.array([0, 1, 2, 1, -1])   # 4 actions, the last frame has none
    targets, valid = chunk_targets(actions, 3, discrete=True)
    assert targets.tolist() == [[0, 1, 2], [1, 2, 1], [2, 1, 0], [1, 0, 0]]
    assert valid.tolist() == [[1, 1, 1], [1, 1, 1], [1, 1, 0], [1, 0, 0]]


def test_reach_dataset_round_trip_keeps_discrete_readers_working(tmp_path):
    path = generate_reach_dataset(3, size=32, seed=0, out=tmp_path / "reach.h5", progress=False)
    eps = read_reach_dataset(path)
    for e, (frames, actions) in enumerate(eps):
        from wmfast.data.reach import episode_seed

        f2, a2 = play_expert_episode(episode_seed(0, e, 0), 32)
        assert np.array_equal(frames, f2) and np.array_equal(actions, a2, equal_nan=True)
    ds = load_dataset(path)          # the generic reader: frames and episodes, no discrete actions
    assert ds.actions is None and ds.n_episodes == 3 and ds.meta["game"] == "reach"
    with h5py.File(path, "r") as f:
        assert f[CONTINUOUS].shape == (len(ds), 2)


def test_data_game_cli_records_reach(tmp_path, capsys):
    from wmfast.cli import main

    out = tmp_path / "r.h5"
    assert main(["data", "game", "--game", "reach", "--episodes", "2", "--size", "32", "--out", str(out)]) == 0
    assert len(read_reach_dataset(out)) == 2
    plain = tmp_path / "plain.h5"
    assert main(["data", "game", "--game", "pong", "--episodes", "1", "--steps", "3", "--size", "16",
                 "--out", str(plain)]) == 0
    with pytest.raises(WmfastError, match="continuous_actions"):
        read_reach_dataset(plain)


def test_shift_augmentation_is_a_label_preserving_translation():
    from wmfast.policy.train import random_shift

    rng = np.random.default_rng(0)
    for seed in range(8):
        g = Reach(seed)
        frame = g.render(64)
        shifted = random_shift(np.repeat(frame[None], 4, 0), 64, rng, Reach.BG)
        for s in shifted:
            # Render the same state moved by the offset the augmentation picked (the ball's pixel offset):
            # identical image, so ball - effector (all the expert's action depends on) is unchanged.
            ys, xs = np.nonzero((frame == Reach.BALL).all(-1))
            ys2, xs2 = np.nonzero((s == Reach.BALL).all(-1))
            dy, dx = ys2.min() - ys.min(), xs2.min() - xs.min()
            moved = Reach(seed)
            moved.ball, moved.effector = g.ball + [dx / 64, dy / 64], g.effector + [dx / 64, dy / 64]
            assert np.array_equal(s, moved.render(64))
    small = random_shift(np.repeat(Reach(1).render(64)[None], 50, 0), 2, rng, Reach.BG)
    ys = [np.nonzero((s == Reach.BALL).all(-1))[0].min() for s in small]
    base = np.nonzero((Reach(1).render(64) == Reach.BALL).all(-1))[0].min()
    assert set(np.array(ys) - base) <= {-2, -1, 0, 1, 2} and len(set(ys)) > 1   # at most max_shift, random
