"""`wmfast policy dream`: a policy acting in a (tiny, random) world model beside the real game."""
import json
import os

import numpy as np
import pytest

from wmfast.checkpoint import save_model
from wmfast.cli import main
from wmfast.errors import WmfastError
from wmfast.policy import PolicyConfig, build_policy
from wmfast.policy.dream import dream, psnr_uint8
from wmfast.rollout.shapes import random_world_model


@pytest.fixture(scope="module")
def world_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("world")
    model = random_world_model(frame_size=16, patch_size=4, embed_dim=16, num_heads=2, hidden_dim=32, num_blocks=1,
                               latent_dim=3, num_bins=4, n_actions=4, context_length=2)
    for stage, m in (("tokenizer", model.tokenizer), ("actions", model.lam), ("dynamics", model.dynamics)):
        save_model(m, os.path.join(path, stage))
    # hand-written action map: pong's NOOP/UP/DOWN -> latent codes 2, 0, 3
    counts = [[0, 0, 9, 0], [9, 0, 0, 0], [0, 0, 0, 9]]
    with open(os.path.join(path, "action_map.json"), "w") as f:
        json.dump({"action_names": ["NOOP", "UP", "DOWN"], "num_latents": 4, "counts": counts}, f)
    return os.fspath(path)


def _pong_policy(path):
    cfg = PolicyConfig(kind="act", frame_size=16, chunk=4, action_space="discrete", num_actions=3,
                       action_names=("NOOP", "UP", "DOWN"), game="pong")
    return save_model(build_policy(cfg), path)


def test_dream_runs_the_policy_in_the_world_beside_the_real_game(world_run, tmp_path, capsys):
    policy = _pong_policy(tmp_path / "pol")
    out = tmp_path / "d.gif"
    assert main(["policy", "dream", "--policy", str(policy), "--world", world_run, "--steps", "4",
                 "--horizon", "2", "--out", str(out), "--maskgit-steps", "1"]) == 0
    report = json.loads((tmp_path / "d.json").read_text())
    assert out.is_file() and len(report["psnr"]) == 4 and len(report["actions"]) == 4
    assert set(report["actions"]) <= {"NOOP", "UP", "DOWN"} and 0 <= report["action_agreement"] <= 1
    # PSNR by hand: one of 12 values off by 255 -> MSE 255^2 / 12
    a = np.zeros((2, 2, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 255
    assert psnr_uint8(a, b) == pytest.approx(10 * np.log10(255.0 ** 2 / (255.0 ** 2 / 12)))


def test_dream_refuses_mismatched_actions_and_continuous_policies(world_run, tmp_path):
    cfg = PolicyConfig(kind="act", frame_size=16, chunk=4, action_space="discrete", num_actions=5,
                       action_names=("NOOP", "UP", "DOWN", "LEFT", "RIGHT"), game="maze")
    save_model(build_policy(cfg), tmp_path / "maze")
    with pytest.raises(WmfastError, match="action map"):
        dream(tmp_path / "maze", world_run, steps=1)
    save_model(build_policy(PolicyConfig(kind="act", frame_size=16, game="reach")), tmp_path / "reach")
    with pytest.raises(WmfastError, match="discrete game"):
        dream(tmp_path / "reach", world_run, steps=1)


def test_dream_reports_reward_events_the_dream_pays_but_the_game_does_not(world_run, tmp_path):
    import shutil

    import torch

    from wmfast.models.reward import RewardConfig, RewardHead

    world = tmp_path / "world"
    shutil.copytree(world_run, world)
    head = RewardHead(RewardConfig(frame_size=16, reward_values=[0.0, 1.0], width=4))
    with torch.no_grad():             # a head that sees a point won in every dreamed step
        head.head.weight.zero_()
        head.head.bias.zero_()
        head.log_prior.copy_(torch.tensor([0.0, 5.0]))
    save_model(head, world / "reward")
    report = dream(_pong_policy(tmp_path / "pol"), world, steps=6, maskgit_steps=1, out=str(tmp_path / "d.gif"))
    rewards = report["rewards"]
    assert rewards["dreamed"] == [1.0] * 6 and rewards["dreamed_events"] == 6 and rewards["dreamed_return"] == 6
    real = np.array(rewards["real"])
    assert len(real) == 6 and rewards["real_events"] == int((real != 0).sum())
    assert rewards["dreamed_not_real"] == int((real != 1).sum()) and rewards["real_not_dreamed"] == int((real == -1).sum())
    save_model(RewardHead(RewardConfig(frame_size=32)), world / "reward")
    with pytest.raises(WmfastError, match="reads 32 px frames, the world makes 16 px"):
        dream(_pong_policy(tmp_path / "pol"), world, steps=1)
    assert dream(_pong_policy(tmp_path / "pol"), world_run, steps=1, out=str(tmp_path / "e.gif"))["rewards"] is None
    per = report["per_action"]
    assert sum(r["steps"] for r in per.values()) == 6 and all(0 <= r["differs"] <= 1 for r in per.values())
    # the head pays a point on every one-step guess too, so only the game's won points are not lies
    assert sum(r["reward_not_real"] for r in per.values()) == int((real != 1).sum())


def test_one_step_guesses_leave_the_dream_where_it_was():
    """per_action's one-step guesses reset the same World on the real frames: the dream must go on
    exactly as if they had not been made."""
    import torch

    from wmfast.data.frames import resize_uint8
    from wmfast.data.games import make_game
    from wmfast.policy.dream import one_step_guess
    from wmfast.rollout.world import World

    game = make_game("maze", 3)
    frames = [game.render(64)]
    for _ in range(7):
        game.step(game.policy())
        frames.append(game.render(64))
    frames = resize_uint8(np.stack(frames), 32)
    runs = []
    for guess in (False, True):
        world = World.load("wmfast/assets/pretrained/maze", mode="fast", steps=1, actions="game", seed=0)
        world.reset(frames[None, :4])
        out = [world.step(torch.tensor([1]), as_uint8=True)]
        if guess:
            other = one_step_guess(world, frames[4:8], 2)
            assert other.shape == (32, 32, 3)
        out += [world.step(torch.tensor([a]), as_uint8=True) for a in (4, 2, 3)]
        runs.append(torch.stack(out))
    assert torch.equal(runs[0], runs[1])
