"""Which conv LAM learns the player's action on Atari from frames alone (issue 26): every variant
trains the actions stage on recorded episodes (wmfast's own trainer), then its codes and latents are
read on held-out episodes recorded with another seed.

    python experiments/atari_lam_study.py --game Pong --steps 1500 --variants recipe,gain8,window4-gain8 \
        --json experiments/results/atari-lam-pong.json

Reported per variant: final reconstruction loss, code usage and perplexity, it/s, NMI of the codes
with every ALE action and with the move class (stay / up / down; Breakout: stay / right / left) on
the held-out transitions where the frame changed, and a linear probe of the move class: logistic
regression on the encoder's latent before quantization, fitted on training episodes, scored on
held-out ones, beside the share of the commonest class (what a probe that learned nothing scores).
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from wmfast.data import action_agreement, load_dataset  # noqa: E402
from wmfast.data.frames import to_model_frames  # noqa: E402
from wmfast.eval.counterfactual import move_classes  # noqa: E402
from wmfast.evaluate import code_statistics  # noqa: E402
from wmfast.latent_actions import changed_transitions  # noqa: E402
from wmfast.train.presets import CONV_LAM  # noqa: E402

# name -> ConvLamConfig overrides on top of the presets' LAM (CONV_LAM); "label_fraction" is the
# actions stage's few-label mode (ActionsTrainConfig), reported apart from the frames-only rows.
VARIANTS = {
    "recipe": {},
    "gain8": {"diff_gain": 8.0},
    "window4": {"encoder_frames": 4},
    "window4-gain8": {"encoder_frames": 4, "diff_gain": 8.0},
    "changed20": {"changed_weight": 20.0},
    "window4-gain8-changed20": {"encoder_frames": 4, "diff_gain": 8.0, "changed_weight": 20.0},
    "window4-gain20-changed100": {"encoder_frames": 4, "diff_gain": 20.0, "changed_weight": 100.0},
    "window4-gain8-changed20-beta0.05": {"encoder_frames": 4, "diff_gain": 8.0, "changed_weight": 20.0,
                                         "vq_beta": 0.05},
    "labels2.5": {"label_fraction": 0.025},
    "window4-gain8-all-labels": {"encoder_frames": 4, "diff_gain": 8.0, "label_fraction": 1.0},
    "window4-gain8-labels10": {"encoder_frames": 4, "diff_gain": 8.0, "label_fraction": 0.1},
    "window4-gain8-labels2.5-weight5": {"encoder_frames": 4, "diff_gain": 8.0, "label_fraction": 0.025,
                                        "label_weight": 5.0},
    "window4-gain8-changed20-labels2.5": {"encoder_frames": 4, "diff_gain": 8.0, "changed_weight": 20.0,
                                          "label_fraction": 0.025},
    "window4-gain8-changed20-labels2.5-weight10": {"encoder_frames": 4, "diff_gain": 8.0, "changed_weight": 20.0,
                                                   "label_fraction": 0.025, "label_weight": 10.0},
    "window4-gain8-labels2.5": {"encoder_frames": 4, "diff_gain": 8.0, "label_fraction": 0.025},
}
PROBE_TRANSITIONS = 6000   # training transitions the probe is fitted on


@torch.no_grad()
def read_episodes(lam, ds, size: int, limit: int = None):
    """Per transition with a true action: (code, latent z, ALE action, frame changed) over whole episodes."""
    codes, zs, actions, changed = [], [], [], []
    for start, end in ds.episodes:
        x = to_model_frames(ds.frames[start:end], size)[None]            # [1, T, 3, H, W]
        q, z = lam.encode(x, return_z=True)
        a = ds.actions[start:end - 1]
        keep = a >= 0
        codes.append(lam.quantizer.indices(q)[0].numpy()[keep])
        zs.append(z[0].numpy()[keep])
        actions.append(a[keep])
        changed.append(changed_transitions(x)[0].numpy()[keep])
        if limit and sum(len(c) for c in codes) >= limit:
            break
    return tuple(np.concatenate(v) for v in (codes, zs, actions, changed))


def labelled_count(ds, train) -> int:
    """How many transitions the few-label mode labelled (0 on frames alone)."""
    from wmfast.data import labelled_frames

    train_eps, _ = ds.split(train.val_fraction, seed=train.seed)
    return int(labelled_frames(ds, train.label_fraction, train.seed, train_eps).sum())


def probe_accuracy(z_train, y_train, z_test, y_test) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scale = StandardScaler().fit(z_train)
    clf = LogisticRegression(max_iter=2000).fit(scale.transform(z_train), y_train)
    return float(clf.score(scale.transform(z_test), y_test))


def run_variant(name, overrides, train_ds, test_ds, a, out_dir) -> dict:
    from wmfast.checkpoint import load_model
    from wmfast.train.trainer import ActionsTrainConfig, train_stage

    run = os.path.join(out_dir, f"{name}-seed{a.seed}")
    model = {k: v for k, v in overrides.items() if k != "label_fraction"}
    cfg = ActionsTrainConfig(preset="small", steps=a.steps, batch_size=16, lr=1e-3, warmup_steps=50,
                             clip_len=a.clip_len, seed=a.seed, log_every=50, save_every=10 ** 9, progress=True,
                             label_fraction=overrides.get("label_fraction", 0.0))
    t0 = time.time()
    final = train_stage("actions", run, data=train_ds, train=cfg, model={**CONV_LAM, "frame_size": a.size, **model})
    seconds = time.time() - t0
    lam = load_model(os.path.join(run, "actions"), "actions")
    classes = move_classes(train_ds.action_names)
    _, z_tr, a_tr, _ = read_episodes(lam, train_ds, a.size, PROBE_TRANSITIONS)
    codes, z_te, a_te, ch = read_episodes(lam, test_ds, a.size)
    y_te = classes[a_te]
    stats = code_statistics(codes, lam.num_actions)
    row = {"variant": name, "overrides": overrides, "seed": a.seed, "steps": a.steps, "seconds": seconds,
           "it_per_s": a.steps / seconds, "recon_loss": float(final.get("recon_loss", float("nan"))),
           "codebook_usage": stats["codebook_usage"], "perplexity": stats["perplexity"],
           "nmi_actions_changed": action_agreement(a_te[ch], codes[ch])["nmi"],
           "nmi_move_changed": action_agreement(y_te[ch], codes[ch])["nmi"],
           "probe_move_accuracy": probe_accuracy(z_tr, classes[a_tr], z_te, y_te),
           "majority_share": float(np.bincount(y_te).max() / len(y_te)),
           "held_out_transitions": int(len(codes)), "changed_share": float(ch.mean()),
           "labelled_transitions": labelled_count(train_ds, cfg)}
    print(f"{name}: probe {row['probe_move_accuracy']:.3f} (majority {row['majority_share']:.3f}), NMI actions "
          f"{row['nmi_actions_changed']:.3f}, move {row['nmi_move_changed']:.3f}, perplexity {row['perplexity']:.2f}, "
          f"{row['it_per_s']:.1f} it/s", flush=True)
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--game", default="Pong")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0, help="training seed")
    ap.add_argument("--size", type=int, default=64, help="frame size the LAM reads")
    ap.add_argument("--clip-len", type=int, default=5)
    ap.add_argument("--episodes", type=int, default=24, help="training episodes (recording seed 0)")
    ap.add_argument("--test-episodes", type=int, default=6)
    ap.add_argument("--test-seed", type=int, default=7001, help="recording seed of the held-out episodes")
    ap.add_argument("--out", default="/tmp/atari-lam-study", help="folder for the runs")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    train_ds = load_dataset(f"atari:{a.game}:{a.episodes}", size=a.size, steps=500)
    test_ds = load_dataset(f"atari:{a.game}:{a.test_episodes}", size=a.size, steps=500, seed=a.test_seed)
    rows = [run_variant(n, VARIANTS[n], train_ds, test_ds, a, a.out) for n in a.variants.split(",")]
    if a.json:
        os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
        with open(a.json, "w") as f:
            json.dump({"what": __doc__.strip().splitlines()[0], "game": a.game, "args": vars(a),
                       "torch": torch.__version__, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
