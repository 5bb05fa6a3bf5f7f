"""Which scripted player wins points in the embedded pong (v2: opponent paddle speed 0.02, serve toward
the side that conceded)? Plays each player for EPISODES x STEPS and writes points won / lost per 100
steps to points_study.json (beside this file); it picked the aim of the pong teacher.

    python docs/policy-pong/points_study.py

Players: random; the game's scripted data policy (60% tracking, sticky random buttons); the centre
tracker (wmfast.policy.teachers.pong_centre_tracker: paddle centre toward the ball's centre); and the
aiming tracker (wmfast.policy.teachers.pong_tracker) at several aims: paddle centre = ball centre -
aim x half a paddle, on the opponent's side of the ball, so the ball leaves the paddle's edge with
vertical speed 0.035 x offset (clipped to 0.04) heading away from the opponent. Offsets past 1 are off
the paddle's end (the ball still overlaps it up to 1.32). The teacher uses aim PONG_AIM = 0.9: the most
points with none lost. One more player picks the side by the opponent's half of the field instead of
its height relative to the ball (sends the ball down when the opponent is in the top half).
"""
import json
import os

import numpy as np

from wmfast.data.games import Pong
from wmfast.policy.teachers import PONG_AIM, pong_centre_tracker, pong_toward, pong_tracker

EPISODES, STEPS, FIRST_SEED = 48, 1000, 1000
AIMS = (0.5, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2)


def play(choose):
    won = lost = 0
    for e in range(EPISODES):
        g, rng = Pong(FIRST_SEED + e), np.random.default_rng(e)
        for _ in range(STEPS):
            r = g.step(int(choose(g, rng)))
            won, lost = won + (r > 0), lost + (r < 0)
    per = 100.0 / (EPISODES * STEPS)
    return {"points_won_per_100": won * per, "points_lost_per_100": lost * per}


def aimed(aim: float):
    return lambda g, rng: pong_tracker(g, aim)


def aimed_by_half(aim: float):
    def choose(g, rng):
        away = 1.0 if g.opponent_y < 0.5 else -1.0
        return pong_toward(g, g.by + g.BALL / 2 - away * aim * g.PADDLE_H / 2)
    return choose


if __name__ == "__main__":
    players = {"random": lambda g, rng: rng.integers(3), "scripted (data policy)": lambda g, rng: g.policy(),
               "centre tracker": lambda g, rng: pong_centre_tracker(g)}
    players.update({f"aiming tracker, aim {a}" + (" (the teacher)" if a == PONG_AIM else ""): aimed(a)
                    for a in AIMS})
    players[f"aiming tracker, aim {PONG_AIM}, side by the opponent's half"] = aimed_by_half(PONG_AIM)
    out = {"game_version": Pong.version, "episodes": EPISODES, "steps": STEPS, "players": {}}
    for name, choose in players.items():
        out["players"][name] = play(choose)
        print(f"{name:36s} {out['players'][name]}")
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "points_study.json"), "w") as f:
        json.dump(out, f, indent=1)
