"""Why pong's ball does not hold (issue 29): where the error starts, and what model capacity buys.

For each run, on pong games from a seed no test uses:
  tokenizer   real frames encoded and decoded alone: is the paddle within 1 px, is there one ball?
  one step    the World restarted on the real last C frames before every step (teacher forcing):
              the same checks on the one generated frame, and the ball's error in pixels
  long play   the harness of `wmfast eval --long-play` (fast mode, 4 MaskGIT steps), both action streams

Without --runs it trains the four variants itself (about 45 minutes on 2 cores):
  base          `wmfast demo --train --data game:pong` (the recipe)
  tok3x         base with the tokenizer trained 3x as long (2400 steps) and the dynamics retrained on it
  tok3x-4       tok3x's tokenizer with a 4-block dynamics model (the recipe's has 2)
  tok3x-4-long  tok3x-4 with the dynamics trained 3x as long (4500 steps)

    python experiments/pong_capacity_study.py --out benchmarks/results/pong-capacity
    python experiments/pong_capacity_study.py --runs base=RUN_A,tok3x-4=RUN_B --seed 57
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import torch

from wmfast.eval.long_play import READERS, HeldRandomActions, long_play, start_games, to_model_frames
from wmfast.measure import machine_info, write_json
from wmfast.rollout.world import World

ONE_STEP_FRAMES = 60   # teacher-forced frames per game for the tokenizer and one-step checks
# Where the real ball is when the one generated frame has no ball (or two), as x / frame width: in the
# serve column (|x - 1/2| <= SERVE_BAND; Pong.serve puts the ball there at a random height) or behind
# the player's paddle (x < EDGE, a point being lost): the game's random moments.
SERVE_BAND, EDGE = 0.06, 0.14
DYNAMICS = ["--lr", "2e-3", "--warmup-steps", "50", "--seed", "0"]


def wmfast(*args):
    subprocess.run([sys.executable, "-m", "wmfast", *args], check=True, stdout=subprocess.DEVNULL)


def train_variants(out) -> dict:
    base = os.path.join(out, "base")
    if not os.path.isdir(os.path.join(base, "run", "dynamics")):
        wmfast("demo", "--train", "--data", "game:pong", "--out", base)
    runs = {"base": os.path.join(base, "run")}
    for name, blocks, dynamics_steps in (("tok3x", 2, 1500), ("tok3x-4", 4, 1500), ("tok3x-4-long", 4, 4500)):
        run = os.path.join(out, name)
        if not os.path.isdir(os.path.join(run, "dynamics")):
            shutil.rmtree(run, ignore_errors=True)
            shutil.copytree(runs["base"], run, ignore=shutil.ignore_patterns("tokenizer", "dynamics"))
            if name == "tok3x":
                wmfast("train", "tokenizer", "--run", run, "--data", "game:pong", "--steps", "2400",
                       "--lr", "2e-3", "--warmup-steps", "50", "--seed", "0")
            else:   # the same tokenizer as tok3x
                shutil.copytree(os.path.join(runs["tok3x"], "tokenizer"), os.path.join(run, "tokenizer"))
            wmfast("train", "dynamics", "--run", run, "--data", "game:pong", "--steps", str(dynamics_steps),
                   *DYNAMICS, "--set", f"num_blocks={blocks}")
        runs[name] = run
    return runs


def held_out_steps(world, seed: int, steps: int, games: int):
    """Yield (context window [G, C, 3, S, S], game actions [G], real next frames [G, 3, S, S])."""
    played, context = start_games("pong", games, world.C, seed, 64, world.frame_size)
    choose = HeldRandomActions(played[0].n_actions, games, seed)
    window = list(context.unbind(1))
    for _ in range(steps):
        ids = choose(played)
        for game, action in zip(played, ids):
            game.step(int(action))
        real = to_model_frames(np.stack([g.render(64) for g in played]), world.frame_size)
        yield torch.stack(window[-world.C:], 1), ids, real
        window.append(real)


def tokenizer_and_one_step(world, seed: int, steps: int, games: int) -> dict:
    reader, be = READERS["pong"](world.frame_size, 64), world.backend
    checks = {k: [] for k in ("tokenizer_paddle_ok", "tokenizer_one_ball", "one_step_paddle_ok", "one_step_one_ball",
                              "one_step_ball_error_px", "miss_x")}
    with torch.no_grad():
        for window, ids, real in held_out_steps(world, seed, steps, games):
            recon = be.decode(be.latents(be.encode(real[:, None])))[:, 0]
            r = reader.score(recon, real)
            checks["tokenizer_paddle_ok"] += list(r["paddle_ok"])
            checks["tokenizer_one_ball"] += list(r["one_ball"])
            world.reset(window)
            r = reader.score(world.step(torch.as_tensor(ids)).float(), real)
            checks["one_step_paddle_ok"] += list(r["paddle_ok"])
            checks["one_step_one_ball"] += list(r["one_ball"])
            checks["one_step_ball_error_px"] += list(r["ball_error_px"])
            real_x = reader.objects(real)["ball_xy"][:, 0] / world.frame_size
            checks["miss_x"] += list(real_x[~r["one_ball"]])
    miss_x = np.array(checks.pop("miss_x"))
    out = {k: float(np.mean(v)) for k, v in checks.items() if not k.endswith("_px")}
    out["one_step_misses"] = len(miss_x)
    out["one_step_misses_at_serve_or_edge"] = float(np.mean((np.abs(miss_x - 0.5) <= SERVE_BAND) | (miss_x < EDGE))) \
        if len(miss_x) else None
    err = np.array(checks["one_step_ball_error_px"])
    out["one_step_ball_error_px_median"] = float(np.nanmedian(err))
    out["one_step_ball_error_px_p90"] = float(np.nanpercentile(err, 90))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="pong-capacity")
    ap.add_argument("--runs", default=None, help="NAME=RUN,... to measure (default: train the four variants)")
    ap.add_argument("--seed", type=int, default=41, help="seed of the held-out games")
    ap.add_argument("--steps", type=int, default=300, help="long-play frames")
    ap.add_argument("--games", type=int, default=8)
    a = ap.parse_args()
    torch.manual_seed(0)
    os.makedirs(a.out, exist_ok=True)
    runs = dict(kv.split("=", 1) for kv in a.runs.split(",")) if a.runs else train_variants(a.out)
    report = {"seed": a.seed, "games": a.games, "long_play_steps": a.steps, "mode": "fast:4",
              "machine": machine_info("cpu"), "runs": {}}
    for name, run in runs.items():
        world = World.load(run, mode="fast", steps=4, actions="game")
        row = tokenizer_and_one_step(world, a.seed, ONE_STEP_FRAMES, a.games)
        for stream in ("random", "policy"):
            r = long_play(world, "pong", a.games, a.steps, stream, a.seed)
            row[f"long_play_{stream}"] = {**{k: round(v, 4) for k, v in r["share"].items()},
                                          "first_wrong": r["first_wrong"]}
        report["runs"][name] = row
        print(name, json.dumps(row))
    write_json(report, os.path.join(a.out, "pong_capacity.json"))


if __name__ == "__main__":
    main()
