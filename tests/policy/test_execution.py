"""Executing chunks: receding horizon replans every N steps, temporal ensembling averages, and DAgger
labels the states the learner drives to with the expert's chunk."""
import numpy as np
import pytest

from wmfast.data.reach import Reach
from wmfast.errors import WmfastError
from wmfast.policy.evaluate import ChunkExecutor, rollout_reach


class CountingPolicy:
    """Chunk k of call c is the action (c, k): which plan and which of its actions ran is visible."""

    def __init__(self, k: int = 8):
        self.k, self.calls = k, 0
        self.batches = []

    def __call__(self, frames):
        self.batches.append(len(frames))
        c = self.calls
        self.calls += 1
        chunk = np.stack([np.full(self.k, c, np.float32), np.arange(self.k, dtype=np.float32)], -1)  # [K, 2]
        return np.repeat(chunk[None], len(frames), 0)


@pytest.mark.parametrize("horizon", [1, 2, 4, 8, 12])
def test_receding_horizon_replans_every_n_steps(horizon):
    K, steps = 8, 20
    policy = CountingPolicy(K)
    ex = ChunkExecutor(1, horizon)
    idx = np.arange(1)
    ran, planned_at = [], []
    for t in range(steps):
        if ex.needs_plan()[0]:
            planned_at.append(t)
            ex.plan(idx, policy(np.zeros((1, 4, 4, 3), np.uint8)))
        ran.append(tuple(ex.act(idx)[0]))
    n = min(horizon, K)   # a horizon past the chunk replans when the chunk is used up
    assert planned_at == list(range(0, steps, n))
    assert ran == [(t // n, t % n) for t in range(steps)]


def test_temporal_ensembling_averages_every_live_prediction_oldest_first():
    K, m = 4, 0.5
    ex = ChunkExecutor(1, horizon=1, ensemble=True, m=m)
    idx = np.arange(1)
    chunks = [np.arange(K, dtype=np.float32)[:, None] + 10 * c for c in range(6)]   # call c predicts 10c + k
    for t in range(6):
        assert ex.needs_plan()[0]
        ex.plan(idx, chunks[t][None])
        got = ex.act(idx)[0, 0]
        live = list(range(max(0, t - K + 1), t + 1))          # chunks made at steps t-K+1 .. t
        preds = np.array([10 * c + (t - c) for c in live])     # each one's entry for step t
        w = np.exp(-m * np.arange(len(live)))
        assert got == pytest.approx((w * preds).sum() / w.sum())


def test_rollout_reach_batches_plans_for_live_episodes_only():
    policy = CountingPolicy(8)
    out = rollout_reach(policy, seeds=[0, 1, 2], horizon=4, size=16, max_steps=10)
    assert (out["steps"] == 10).all() and not out["success"].any()   # the counting policy never aims
    assert policy.batches == [3, 3, 3]                               # steps 0, 4, 8


def test_dagger_labels_the_learners_states_with_the_expert():
    """The learner (always right, full speed) drives; every visited frame is recorded and labelled
    with the expert's chunk from that state, computed here independently by the controller's formula."""
    K, seed = 4, 3
    right = lambda frames: np.tile(np.array([[1.0, 0.0]], np.float32), (len(frames), K, 1))  # noqa: E731
    out = rollout_reach(right, [seed], horizon=2, size=16, label_chunk=K, max_steps=6)
    frames, labels, valid = out["dagger"]
    g = Reach(seed)
    assert len(frames) == 6 and labels.shape == (6, K, 2) and valid.shape == (6, K)
    for t in range(6):
        assert np.array_equal(frames[t], g.render(16))                # the learner's state, not the expert's
        eff = g.effector.copy()
        for k in range(K):                                            # the expert from there, by hand
            if t + k >= 6:                                            # the episode's cap ends the chunk
                assert not valid[t, k:].any()
                break
            d = (g.ball - eff) * Reach.GAIN / Reach.MAX_SPEED
            v = d / max(1.0, np.linalg.norm(d))
            np.testing.assert_allclose(labels[t, k], v, rtol=1e-5, atol=1e-6)
            assert valid[t, k]
            eff = np.clip(eff + v * Reach.MAX_SPEED, 0, 1)
            if np.linalg.norm(eff - g.ball) < Reach.SUCCESS_DIST:
                assert not valid[t, k + 1:].any()
                break
        g.step([1.0, 0.0])                                            # the learner's action


def test_bad_horizons_are_one_line_errors():
    from wmfast.policy.evaluate import parse_horizons

    with pytest.raises(WmfastError, match="horizon"):
        ChunkExecutor(2, 0)
    with pytest.raises(WmfastError, match="comma-separated"):
        parse_horizons("8,x", 8)
    with pytest.raises(WmfastError, match=">= 1"):
        parse_horizons("0", 8)
