"""Training metrics: windowed means written to metrics.jsonl, and PNG curves.

Per stage, beside loss / lr / it/s / samples/s: tokenizer PSNR and codebook usage %; LAM
encoder variance, codebook usage % and agreement of latent with true actions (NMI);
dynamics masked-token accuracy.
"""
import json
import math
import os

import numpy as np
import torch

HEADLINES = {
    "tokenizer": ["loss", "psnr", "codebook_usage"],
    "actions": ["loss", "encoder_variance", "codebook_usage", "action_nmi"],
    "dynamics": ["loss", "masked_accuracy"],
}


class StageMetrics:
    def __init__(self, stage: str, model, path: str):
        self.stage, self.path = stage, path
        self.num_codes = model.quantizer.codebook_size if stage != "dynamics" else model.config.codebook_size
        self.headline = HEADLINES[stage]
        self.last = {}
        self._reset()

    def _reset(self):
        self.sums, self.count, self.seconds, self.samples = {}, 0, 0.0, 0
        self.codes = np.zeros(max(self.num_codes, 1), np.int64)
        self.latent_ids, self.true_ids = [], []

    def _add(self, key, value):
        self.sums[key] = self.sums.get(key, 0.0) + float(value)

    def update(self, loss, m: dict, grad_norm, lr: float, batch_size: int, seconds: float):
        self.count += 1
        self.seconds += seconds
        self.samples += batch_size
        self._add("loss", loss.detach())
        self._add("grad_norm", grad_norm)
        self._add("lr", lr)
        for key, value in m.items():
            if key in ("indices", "action_indices", "true_actions"):
                continue
            self._add(key, value)
        codes = m.get("indices", m.get("action_indices"))
        if codes is not None and self.stage != "dynamics":
            self.codes += np.bincount(codes.flatten().cpu().numpy(), minlength=len(self.codes))[: len(self.codes)]
        if self.stage == "actions" and m.get("true_actions") is not None:
            self.latent_ids.append(m["action_indices"].cpu().numpy().ravel())
            self.true_ids.append(m["true_actions"].cpu().numpy().ravel())

    def flush(self, step: int) -> dict:
        """Average the window, append it to metrics.jsonl and start a new window."""
        row = {"step": step, **{k: v / max(self.count, 1) for k, v in self.sums.items()}}
        row["it_per_s"] = self.count / max(self.seconds, 1e-9)
        row["samples_per_s"] = self.samples / max(self.seconds, 1e-9)
        if "mse" in row:
            row["psnr"] = 10 * math.log10(4.0 / max(row["mse"], 1e-12))   # pixels span 2 ([-1, 1])
        if self.stage != "dynamics":
            row["codebook_usage"] = 100.0 * float((self.codes > 0).mean())
        if self.latent_ids:
            from wmfast.data import action_agreement

            agreement = action_agreement(np.concatenate(self.true_ids), np.concatenate(self.latent_ids))
            row["action_nmi"] = float(agreement["nmi"])
            row["action_purity"] = float(agreement["purity"])
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        self.last = row
        self._reset()
        return row

    def final(self) -> dict:
        return dict(self.last)


def read_metrics(path) -> list:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_curves(metrics_path, png_path, title: str = ""):
    """One small panel per logged metric against step."""
    rows = read_metrics(metrics_path)
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in rows[-1] if k != "step"]
    cols = 3
    nrows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 2.6 * nrows), squeeze=False)
    steps = [r["step"] for r in rows]
    for ax, key in zip(axes.flat, keys):
        values = [r.get(key, float("nan")) for r in rows]
        ax.plot(steps, values)
        ax.set_title(key, fontsize=9)
        ax.tick_params(labelsize=7)
        if key in ("loss", "lr", "grad_norm", "recon_loss") and min(values) > 0:   # (an actor-critic's loss is not)
            ax.set_yscale("log")
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.subplots_adjust(hspace=0.6, wspace=0.3)   # tight_layout costs seconds per figure
    tmp = png_path + ".tmp.png"
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, png_path)
    return png_path
