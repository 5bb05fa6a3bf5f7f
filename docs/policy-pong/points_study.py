"""Can any tracker win points in the embedded pong? Plays scripted players for EPISODES x STEPS and
writes points won / lost per 100 steps to points_study.json (beside this file).

    python docs/policy-pong/points_study.py

Players: random; the game's scripted data policy (60% tracking, sticky random buttons); the noise-free
tracker (wmfast.policy.teachers.pong_tracker); and trackers that aim the ball off the paddle's edge
(paddle centre = ball centre - aim * half a paddle, toward the side away from the opponent's paddle),
which sends it back with the steepest angle the game allows (0.035 * offset, clipped to 0.04).
"""
import json
import os

import numpy as np

from wmfast.data.games import Pong
from wmfast.policy.teachers import pong_tracker

EPISODES, STEPS = 16, 1000


def aimed(aim: float):
    def choose(g, rng):
        away = 1.0 if g.opponent_y < 0.5 else -1.0          # send the ball toward the far side
        gap = g.by + g.BALL / 2 - away * aim * g.PADDLE_H / 2 - g.player_y
        return 0 if abs(gap) < g.PLAYER_SPEED / 2 else (1 if gap < 0 else 2)
    return choose


def play(choose):
    won = lost = 0
    for e in range(EPISODES):
        g, rng = Pong(1000 + e), np.random.default_rng(e)
        for _ in range(STEPS):
            r = g.step(int(choose(g, rng)))
            won, lost = won + (r > 0), lost + (r < 0)
    per = 100.0 / (EPISODES * STEPS)
    return {"points_won_per_100": won * per, "points_lost_per_100": lost * per}


if __name__ == "__main__":
    players = {"random": lambda g, rng: rng.integers(3), "scripted (data policy)": lambda g, rng: g.policy(),
               "tracker": lambda g, rng: pong_tracker(g)}
    players.update({f"edge-aiming tracker, aim {a}": aimed(a) for a in (0.9, 1.1, 1.2, 1.3)})
    out = {"episodes": EPISODES, "steps": STEPS, "players": {}}
    for name, choose in players.items():
        out["players"][name] = play(choose)
        print(f"{name:32s} {out['players'][name]}")
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "points_study.json"), "w") as f:
        json.dump(out, f, indent=1)
