"""How closely does a pong policy imitate its teacher? The policy plays (replanning every step) and the
teacher labels every frame it visits with its own next 8 actions; writes the agreement per chunk
query, and of the first action by how close the opponent's paddle is to the ball's height (where the
aiming teacher switches sides), to agreement.json beside this file.

    python docs/policy-pong/agreement.py RUN [RUN ...] [--seed 99]
"""
import argparse
import json
import os

import numpy as np
import torch

from wmfast.config import load_json
from wmfast.policy.evaluate import play_discrete, policy_chooser, predictor
from wmfast.checkpoint import load_policy
from wmfast.policy.teachers import get_teacher, teacher_chunk

EPISODES, STEPS = 8, 400


def agreement(run: str, seed: int) -> dict:
    model = load_policy(run)
    cfg = model.config
    teacher, predict = get_teacher(cfg.game, cfg.teacher), predictor(model)
    seeds = [int(s) for s in np.random.SeedSequence([seed, 7]).generate_state(EPISODES)]
    gaps = []                                              # |opponent - ball centre| at every visited frame

    def label(g):
        gaps.append(abs(g.opponent_y - g.by - g.BALL / 2))
        return teacher(g)

    out = play_discrete(cfg.game, policy_chooser(predict, EPISODES, 1), seeds, STEPS, cfg.frame_size,
                        label=(label, cfg.chunk))
    frames, labels, _ = out["dagger"]
    gaps = np.array(gaps[::cfg.chunk])                     # teacher_chunk calls label chunk times per frame
    chosen = np.concatenate([predict(frames[i:i + 256]) for i in range(0, len(frames), 256)]).argmax(-1)
    same = chosen == labels                                # [N, K]
    first = same[:, 0]
    by_gap = {f"{lo}-{hi}": round(float(first[(gaps >= lo) & (gaps < hi)].mean()), 3)
              for lo, hi in [(0.0, 0.05), (0.05, 0.1), (0.1, 0.2), (0.2, 1.0)]}
    share = lambda ids: [round(float(v), 3) for v in np.bincount(ids, minlength=3) / len(ids)]  # noqa: E731
    return {"run": os.path.basename(os.path.normpath(run)), "seed": seed, "teacher": cfg.teacher, "frames": len(frames),
            "epochs": load_json(os.path.join(run, "train.json"))["train"]["epochs"],
            "agreement_per_query": [round(float(v), 3) for v in same.mean(0)],
            "first_action_by_opponent_ball_gap": by_gap,
            "first_action_share_noop_up_down": {"teacher": share(labels[:, 0]), "policy": share(chosen[:, 0])}}

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--seed", type=int, default=99)
    a = ap.parse_args()
    torch.set_num_threads(1)
    rows = [agreement(run, a.seed) for run in a.runs]
    for r in rows:
        print(json.dumps(r))
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "agreement.json"), "w") as f:
        json.dump(rows, f, indent=1)
