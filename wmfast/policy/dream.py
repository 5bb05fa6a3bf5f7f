"""A policy acting inside a world model, beside the real game.

    world = World.load(world_run, actions="game")   # game action ids through RUN/action_map.json
    real game: C context frames from the game's scripted policy, then the dream starts from them.
    each step: the policy sees the world's last generated frame and picks a game action (receding
    horizon N); the world generates the next frame for it, and the real game takes the same action.

Outputs: a GIF (real | dreamed), PSNR per step between the dreamed and the real frame, and how often
the policy would have chosen the same action on the real frame as on the dreamed one. When the world run
has a reward head (`wmfast train reward`), also the rewards the dream pays (the head on each dreamed
transition) beside those the real game paid for the same actions, and where they disagree: reward events
dreamed but not real are what an agent trained in the dream would learn to chase. Per game action
(`per_action`): the World's one-step guess from the real game's own last frames (so no drift) beside
what the game did: how often it differs (PSNR < DIFFERS_DB) and the reward events only one of them had.
"""
import os

import numpy as np
import torch

from wmfast.config import save_json
from wmfast.errors import WmfastError


def psnr_uint8(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def dream(policy_run, world_run, steps: int = 32, horizon: int = 2, seed: int = 0, out=None, mode: str = "fast",
          maskgit_steps: int = 4, world=None, sample: bool = False) -> dict:
    """Run the policy in the world model and in the real game with the same actions (its most likely ones,
    or with sample=True draws from its probabilities, seeded by `seed`). Returns the report
    (psnr [steps], mean_psnr, actions, action_agreement, gif) and writes it beside the GIF as JSON."""
    from wmfast.data.frames import resize_uint8
    from wmfast.data.games import GAMES, make_game
    from wmfast.policy.evaluate import ChunkExecutor, predictor
    from wmfast.checkpoint import load_policy
    from wmfast.rollout.media import side_by_side, write_video

    policy = load_policy(policy_run)
    cfg = policy.config
    if not cfg.discrete or cfg.game not in GAMES:
        raise WmfastError(f"{policy_run}: dreaming needs a policy trained on an embedded discrete game "
                          f"({', '.join(sorted(GAMES))}); this one was trained on {cfg.game or 'unknown data'!r}")
    if steps < 1 or horizon < 1:
        raise WmfastError(f"steps and horizon must be >= 1, got {steps} and {horizon}")
    if world is None:
        from wmfast.rollout.world import World

        world = World.load(world_run, device="cpu", mode=mode, steps=maskgit_steps, actions="game", seed=seed)
    if world.action_map is None:
        raise WmfastError("the world must take game actions (World(..., actions='game') with an action_map.json)")
    names = world.action_map.action_names
    if list(names) != list(cfg.action_names):
        raise WmfastError(f"the world's action map has actions {names} but the policy acts with "
                          f"{list(cfg.action_names)}")
    S, C = world.frame_size, world.C

    game = make_game(cfg.game, seed)
    # Real frames made as the policy's (and its world's) data were: rendered at render_size, area-resized.
    render = lambda: resize_uint8(game.render(cfg.render_size or S)[None], S)[0]   # noqa: E731
    context = [render()]
    for _ in range(C - 1):                      # the real game's first frames are the shared start
        game.step(game.policy())
        context.append(render())
    world.reset(np.stack(context)[None])
    predict = predictor(policy)
    ex = ChunkExecutor(1, horizon)
    idx = np.arange(1)
    rng = np.random.default_rng(seed)
    reward_head = load_reward_head(world_run, S)
    real, dreamed, actions, psnr, agree = [context[-1]], [context[-1]], [], [], []
    real_rewards, dreamed_rewards = [], []
    window = list(context)                      # the real game's last C frames
    one_step = []                               # (one-step PSNR, one-step reward) per step
    with torch.no_grad():
        for t in range(steps):
            probs = predict(dreamed[-1][None])
            if ex.needs_plan()[0]:
                ex.plan(idx, probs)
            p = ex.act(idx)[0]
            a = int(rng.choice(len(p), p=p / p.sum())) if sample else int(p.argmax())
            agree.append(int(predict(real[-1][None])[0, 0].argmax()) == int(probs[0, 0].argmax()))
            guess = one_step_guess(world, np.stack(window[-C:]), a)
            frame = world.step(torch.tensor([a]), as_uint8=True)[0].cpu().numpy()      # [S, S, 3] uint8
            real_rewards.append(float(game.step(a)))
            real.append(render())
            window.append(real[-1])
            one_step.append((psnr_uint8(guess, real[-1]),
                             dreamed_reward(reward_head, real[-2], guess) if reward_head is not None else None))
            dreamed.append(frame)
            if reward_head is not None:
                dreamed_rewards.append(dreamed_reward(reward_head, dreamed[-2], frame))
            actions.append(a)
            psnr.append(psnr_uint8(frame, real[-1]))
    out = out or os.path.join(policy_run, "dream.gif")
    gif = write_video(side_by_side(np.stack(real), np.stack(dreamed)), out, fps=6, scale=max(1, 128 // S))
    report = {"policy": os.fspath(policy_run), "world": os.fspath(world_run), "game": cfg.game, "steps": steps,
              "horizon": horizon, "seed": seed, "sampled": bool(sample), "frame_size": S, "context": C,
              "actions": [names[a] for a in actions], "psnr": psnr,
              "mean_psnr": float(np.mean([p for p in psnr if np.isfinite(p)] or [float("inf")])),
              "action_agreement": float(np.mean(agree)), "gif": gif,
              "per_action": per_action_report(names, actions, one_step, real_rewards),
              "rewards": reward_report(real_rewards, dreamed_rewards) if reward_head is not None else None}
    save_json(report, os.path.splitext(out)[0] + ".json")
    return report


# A one-step guess this far (PSNR) from the real frame did something else than the game did.
DIFFERS_DB = 30.0


def one_step_guess(world, window: np.ndarray, action: int) -> np.ndarray:
    """What the World makes of `action` from the real game's last frames uint8 [C, S, S, 3] (no drift:
    the dream's own state is set aside and put back)."""
    rows = world.take_rows()
    world.reset(window[None])
    guess = world.step(torch.tensor([action]), as_uint8=True)[0].cpu().numpy()
    world.put_rows(rows)
    return guess


def per_action_report(names, actions, one_step, real_rewards) -> dict:
    """Per game action: how often the World, one step from the real frames, makes something other than
    what the real game did (PSNR < DIFFERS_DB), its mean one-step PSNR, and the reward events the
    one-step guess pays that the game did not (and the reverse): the errors an agent could exploit."""
    out = {}
    for i, name in enumerate(names):
        steps = [t for t, a in enumerate(actions) if a == i]
        if not steps:
            continue
        p = np.array([one_step[t][0] for t in steps])
        row = {"steps": len(steps), "differs": float((p < DIFFERS_DB).mean()),
               "mean_psnr": float(np.mean(np.minimum(p, 99.0)))}
        if one_step[0][1] is not None:
            d, r = np.array([one_step[t][1] for t in steps]), np.array([real_rewards[t] for t in steps])
            row.update(reward_not_real=int(((d != 0) & (d != r)).sum()), real_reward_missed=int(((r != 0) & (d != r)).sum()))
        out[name] = row
    return out


def load_reward_head(world_run, frame_size: int):
    """The world run's reward head, or None when it has none."""
    from wmfast.checkpoint import load_model
    from wmfast.train.reward import REWARD_FOLDER

    folder = os.path.join(os.fspath(world_run), REWARD_FOLDER)
    if not os.path.isfile(os.path.join(folder, "config.json")):
        return None
    head = load_model(folder, "reward")
    if head.config.frame_size != frame_size:
        raise WmfastError(f"{folder}: the reward head reads {head.config.frame_size} px frames, the world makes "
                          f"{frame_size} px; retrain it with `wmfast train reward --run {world_run}`")
    return head


def dreamed_reward(head, before: np.ndarray, after: np.ndarray) -> float:
    """The head's most likely reward on one dreamed transition of uint8 [S, S, 3] frames."""
    from wmfast.data.frames import to_model_frames

    return float(head.predict(to_model_frames(before[None], head.config.frame_size),
                              to_model_frames(after[None], head.config.frame_size))["value"][0])


def reward_report(real: list, dreamed: list) -> dict:
    """Per step the rewards paid in the real game and in the dream; events that only one of them had."""
    r, d = np.asarray(real), np.asarray(dreamed)
    return {"real": real, "dreamed": dreamed, "real_events": int((r != 0).sum()), "dreamed_events": int((d != 0).sum()),
            "dreamed_not_real": int(((d != 0) & (d != r)).sum()), "real_not_dreamed": int(((r != 0) & (d != r)).sum()),
            "real_return": float(r.sum()), "dreamed_return": float(d.sum())}
