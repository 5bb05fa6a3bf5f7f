"""The actor-critic trained in imagination (wmfast.policy.imagine): it learns a known MDP rendered as
frames, its dreamed rollouts go through the world's action map, a resumed run matches an uninterrupted
one, and bad settings fail with one line."""
import json
import shutil

import numpy as np
import pytest
import torch

from wmfast.errors import WmfastError
from wmfast.models.policy import PolicyConfig
from wmfast.policy.imagine import ImagineConfig, fit_actor_critic, lambda_returns

MAZE = "wmfast/assets/pretrained/maze"


class LightMDP:
    """A square on the left or right of a 16 px frame; the action that names its side pays 1, the other 0.
    The side is drawn anew every `hold` steps, so the best return is 1 per step and a random policy's 0.5
    (a chunk of `hold` actions from one frame can be all right)."""
    action_names = ["LEFT", "RIGHT"]

    def __init__(self, hold: int = 1):
        self.hold = hold

    def _frames(self):
        f = np.zeros((len(self.side), 16, 16, 3), np.uint8)
        for i, s in enumerate(self.side):
            f[i, 4:12, 1 + 8 * s:7 + 8 * s] = 255
        return f

    def start(self, n, rng):
        self.rng = rng
        self.side, self.t = rng.integers(2, size=n), 0
        return self._frames()

    def step(self, actions):
        reward = (np.asarray(actions) == self.side).astype(np.float32)
        self.t += 1
        if self.t % self.hold == 0:
            self.side = self.rng.integers(2, size=len(self.side))
        return self._frames(), reward, np.ones(len(reward), np.float32)


def light_policy(kind="bc", chunk=1):
    return PolicyConfig(kind=kind, frame_size=16, chunk=chunk, action_space="discrete", num_actions=2,
                        action_names=("LEFT", "RIGHT"), hidden=64, channels=16, d_model=16)


def greedy_accuracy(run):
    from wmfast.checkpoint import load_policy
    from wmfast.models.policy import to_input

    env = LightMDP()
    frames = env.start(256, np.random.default_rng(123))
    with torch.no_grad():
        pick = load_policy(run)(to_input(torch.from_numpy(frames)))[:, 0].argmax(-1).numpy()
    return float((pick == env.side).mean())


def test_lambda_returns_match_the_recursion_written_out():
    r = torch.tensor([[1.0], [0.0], [2.0]])
    d = torch.tensor([[0.9], [0.9], [0.0]])
    v = torch.tensor([[5.0], [4.0], [3.0], [7.0]])
    lam = 0.5
    r2 = 2.0 + 0.0 * (0.5 * 7.0 + 0.5 * 7.0)
    r1 = 0.0 + 0.9 * (0.5 * 3.0 + 0.5 * r2)
    r0 = 1.0 + 0.9 * (0.5 * 4.0 + 0.5 * r1)
    assert torch.allclose(lambda_returns(r, d, v, lam)[:, 0], torch.tensor([r0, r1, r2]))


@pytest.mark.parametrize("kind,chunk", [("bc", 1), ("act", 2)])
def test_actor_critic_learns_a_known_mdp_rendered_as_frames(tmp_path, kind, chunk):
    cfg = ImagineConfig(kind=kind, chunk=chunk, iterations=80, batch_size=32, horizon=4, lr=3e-3, save_every=40)
    s = fit_actor_critic(tmp_path / kind, LightMDP(hold=chunk), light_policy(kind, chunk), cfg, progress=False)
    rows = [json.loads(line) for line in open(tmp_path / kind / "metrics.jsonl")]
    first = np.mean([r["reward_per_100"] for r in rows[:10]])
    last = np.mean([r["reward_per_100"] for r in rows[-10:]])
    assert 35 < first < 65                                      # starts near random (50 per 100 steps)
    assert last > 85, (first, last)
    if kind == "bc":
        assert greedy_accuracy(tmp_path / kind) > 0.95
    assert s["env_steps"] == 80 // cfg.updates_per_batch * 32 * 4 and (tmp_path / kind / "curves.png").is_file()


def test_a_resumed_run_matches_an_uninterrupted_one(tmp_path):
    from wmfast.checkpoint import read_safetensors

    cfg = ImagineConfig(iterations=6, batch_size=8, horizon=4, save_every=3, updates_per_batch=1, segments=1)
    fit_actor_critic(tmp_path / "whole", LightMDP(), light_policy(), cfg, progress=False)
    fit_actor_critic(tmp_path / "parts", LightMDP(), light_policy(), ImagineConfig(**{**cfg.to_dict(), "iterations": 3}),
                     progress=False)
    fit_actor_critic(tmp_path / "parts", LightMDP(), light_policy(), cfg, resume=True, progress=False)
    a, b = read_safetensors(tmp_path / "whole" / "model.safetensors"), read_safetensors(tmp_path / "parts" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(WmfastError, match="settings it was started with"):
        fit_actor_critic(tmp_path / "parts", LightMDP(), light_policy(), ImagineConfig(**{**cfg.to_dict(), "lr": 0.5}),
                         resume=True, progress=False)
    with pytest.raises(WmfastError, match="nothing to resume"):
        fit_actor_critic(tmp_path / "none", LightMDP(), light_policy(), cfg, resume=True, progress=False)


def test_dreamed_rollouts_go_through_the_worlds_action_map():
    """A stub map that swaps UP and DOWN makes the dream of UP the unswapped dream of DOWN."""
    from wmfast.policy.imagine import DreamEnv

    env = DreamEnv(MAZE)
    names = env.action_names
    up, down = names.index("UP"), names.index("DOWN")

    def dream(action):
        env.start(4, np.random.default_rng(5))
        return env.step(np.full(4, action))[0]

    plain_down, plain_up = dream(down), dream(up)
    assert not np.array_equal(plain_down, plain_up)
    swap = torch.arange(len(names))
    swap[up], swap[down] = down, up
    amap = env.world.action_map
    to_latent = amap.to_latent
    amap.to_latent = lambda actions, frame: to_latent(swap.to(actions.device)[actions], frame)   # the stub map
    assert np.array_equal(dream(up), plain_down) and np.array_equal(dream(down), plain_up)


def test_a_world_without_a_reward_head_is_refused(tmp_path):
    from wmfast.policy.imagine import imagine

    run = tmp_path / "maze"
    shutil.copytree(MAZE, run, ignore=shutil.ignore_patterns("reward"))
    with pytest.raises(WmfastError, match="no reward head"):
        imagine(tmp_path / "out", run, ImagineConfig(iterations=1))
    with pytest.raises(WmfastError, match="world run not found"):
        imagine(tmp_path / "out", tmp_path / "nope", ImagineConfig(iterations=1))


def test_cli_rejects_bad_settings_with_exit_2(capsys, tmp_path):
    from wmfast.cli import main

    assert main(["policy", "imagine", "--world", MAZE, "--run", str(tmp_path / "x"), "--iterations", "0"]) == 2
    assert "--iterations" in capsys.readouterr().err
    assert main(["policy", "imagine", "--world", str(tmp_path / "nope"), "--run", str(tmp_path / "x")]) == 2
    assert "world run not found" in capsys.readouterr().err
    assert main(["policy", "eval", "--run", str(tmp_path / "x"), "--baseline", "oops"]) == 2
    assert "NAME=RUN" in capsys.readouterr().err
