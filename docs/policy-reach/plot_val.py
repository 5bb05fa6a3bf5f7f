"""Validation MSE of the default ACT recipe with and without the translation augmentation -> val_shift.png."""
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

here = os.path.dirname(os.path.abspath(__file__))
fig, ax = plt.subplots(figsize=(6, 3.2))
for name, path in (("random shift (default)", "act_metrics.jsonl"), ("no shift (--shift 0)", "no_shift/act_metrics.jsonl")):
    rows = [json.loads(line) for line in open(os.path.join(here, path))]
    ax.plot([r["step"] for r in rows], [r["val_loss"] for r in rows], marker="o", ms=3, label=f"val, {name}")
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], ls="--", lw=1, label=f"train, {name}")
for step in (750, 1320):
    ax.axvline(step, color="grey", lw=0.5)
ax.set_yscale("log")
ax.set_xlabel("step (grey: DAgger rounds start)")
ax.set_ylabel("chunk MSE")
ax.set_title("ACT on reach 128 x 128: held-out expert episodes", fontsize=9)
ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig(os.path.join(here, "val_shift.png"), dpi=90)
