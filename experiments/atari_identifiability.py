"""How much of the player's next move its action explains beyond what the past already predicts, per
data policy: the measurement behind wmfast.data.atari's default policy (i.i.d. actions).

    python experiments/atari_identifiability.py [--seeds 101,202] [--steps 3000] [--json FILE]

For each game and policy, ALE is played for `steps` steps (frameskip 4) and the paddle position is
read from the console RAM (Pong: byte 51, the player's paddle row; Breakout: byte 72, the paddle's
column). The target is the paddle's displacement over the next step, d_t = pos_t+1 - pos_t; least
squares on (a) the action a_t one-hot, (b) the past (d_t-1, d_t-2, pos_t), (c) both. The action's
gain is R^2(c) - R^2(b): what a latent action must carry that the frames before it do not.
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from wmfast.data.atari import ale_step, make_ale, make_policy  # noqa: E402

PADDLE_RAM = {"pong": 51, "breakout": 72}
POLICIES = {"pong": [("random", 0.5), ("random", 0.25), ("random", 0.0), ("tracker", 0.5)],
            "breakout": [("random", 0.5), ("random", 0.25), ("random", 0.0)]}
MAX_MOVE = 60   # |d| above this is a reset of the position (a new point), not a move


def paddle_track(game: str, policy: str, repeat: float, seed: int, steps: int):
    """-> paddle position per step (nan after a game over) [steps], action per step [steps] (-1: reset)."""
    ale = make_ale(game, seed)
    acts = ale.getMinimalActionSet()
    pol = make_policy(policy, game, len(acts), np.random.default_rng(seed), repeat)
    pos, actions = [], []
    ale.reset_game()
    frame = ale.getScreenRGB()
    while len(actions) < steps:
        if ale.game_over():
            ale.reset_game()
            frame = ale.getScreenRGB()
            pos.append(np.nan)
            actions.append(-1)
            continue
        pos.append(float(ale.getRAM()[PADDLE_RAM[game]]))
        a = pol(frame)
        actions.append(a)
        _, frame = ale_step(ale, acts[a], 4)
    return np.array(pos), np.array(actions), len(acts)


def r_squared(X, y) -> float:
    X = np.c_[X, np.ones(len(X))]
    w = np.linalg.lstsq(X, y, rcond=None)[0]
    return float(1 - np.var(y - X @ w) / np.var(y))


def action_gain(pos, actions, n_actions: int) -> dict:
    d = np.diff(pos)
    rows = np.array([t for t in range(2, len(d)) if actions[t] >= 0 and np.isfinite(d[t - 2:t + 1]).all()
                     and (np.abs(d[t - 2:t + 1]) < MAX_MOVE).all()])
    y = d[rows]
    onehot = np.eye(n_actions)[actions[rows]]
    past = np.stack([d[rows - 1], d[rows - 2], pos[rows]], 1)
    a, p, both = r_squared(onehot, y), r_squared(past, y), r_squared(np.c_[onehot, past], y)
    return {"r2_action": a, "r2_past": p, "r2_both": both, "action_gain": both - p, "transitions": int(len(rows))}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="101,202")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--json", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                   "atari-identifiability.json"))
    a = ap.parse_args(argv)
    seeds = [int(s) for s in a.seeds.split(",")]
    rows = []
    for game, policies in POLICIES.items():
        for policy, repeat in policies:
            runs = [action_gain(*paddle_track(game, policy, repeat, s, a.steps)) for s in seeds]
            row = {"game": game, "policy": policy, "repeat": repeat, "seeds": seeds, "steps": a.steps,
                   **{k: float(np.mean([r[k] for r in runs])) for k in ("r2_action", "r2_past", "r2_both",
                                                                       "action_gain")}}
            rows.append(row)
            print(f"{game:8s} {policy:7s} repeat {repeat:.2f}: R^2 action {row['r2_action']:.2f}, past "
                  f"{row['r2_past']:.2f}, both {row['r2_both']:.2f}; the action's gain {row['action_gain']:.2f}")
    import ale_py

    os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
    with open(a.json, "w") as f:
        json.dump({"what": __doc__.strip().splitlines()[0], "frameskip": 4, "paddle_ram": PADDLE_RAM,
                   "ale_py": ale_py.__version__, "rows": rows}, f, indent=1)
    print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
