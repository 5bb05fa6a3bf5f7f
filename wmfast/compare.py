"""`wmfast compare lam`: the legacy (mean-pool + concat) latent action encoder against the windowed-
attention one, then a dynamics model on each, under the same data, seed and step budget.

One tokenizer is trained and shared by both runs, so only the LAM differs. Reported per variant:
LAM loss, codebook usage %, encoder variance, it/s, agreement of latent with true actions (NMI,
purity) on held-out clips, dynamics loss and masked accuracy, and next-frame MSE on held-out clips
teacher-forced (every step from true frames) vs autoregressive (from its own generated frames),
plus a rollout GIF per variant. Writes report.md, report.json and PNG plots into the output folder.
"""
import json
import os
import shutil
import time

import numpy as np
import torch

from wmfast.errors import WmfastError

VARIANTS = {"legacy": False, "windowed": True}
EVAL_CLIPS = 64
ROLLOUT_STEPS = 4        # frames generated past the context in the autoregressive evaluation
MASKGIT_STEPS = 8


def compare_lam(data=None, steps: int = 300, out: str = "compare-lam", preset: str = "tiny", batch_size: int = 8,
                seed: int = 0, device: str = "auto", progress: bool = True) -> dict:
    """Train and evaluate both variants; returns the report dict (also written to out/report.json)."""
    from wmfast.data import DEFAULT_GAME, load_dataset
    from wmfast.train import PRESETS, TrainConfig, train_stage

    if steps < 1:
        raise WmfastError(f"compare lam: --steps must be >= 1, got {steps}")
    if preset not in PRESETS:
        raise WmfastError(f"compare lam: unknown preset {preset!r} (choose from {sorted(PRESETS)})")
    data = data or f"game:{DEFAULT_GAME}"
    ds = load_dataset(data, progress=progress)
    os.makedirs(out, exist_ok=True)
    train = TrainConfig(steps=steps, batch_size=batch_size, seed=seed, device=device, preset=preset,
                        warmup_steps=min(100, max(1, steps // 10)), log_every=max(1, min(25, steps // 20)),
                        save_every=10 ** 9, progress=progress)
    results, timings = {}, {}
    shared_tokenizer = os.path.join(out, "legacy", "tokenizer")
    for name, windowed in VARIANTS.items():
        run = os.path.join(out, name)
        if os.path.exists(run):
            shutil.rmtree(run)          # a fresh, controlled run every time
        t0 = time.perf_counter()
        if name == "legacy":
            train_stage("tokenizer", run, ds, train=train)
        else:
            shutil.copytree(shared_tokenizer, os.path.join(run, "tokenizer"))
        torch.manual_seed(seed)
        lam = train_stage("actions", run, ds, train=train, model={"use_windowed_attention": windowed})
        dyn = train_stage("dynamics", run, ds, train=train)
        timings[name] = time.perf_counter() - t0
        results[name] = {"lam_train": lam, "dynamics_train": dyn,
                         **evaluate_variant(run, ds, train, seed, os.path.join(out, f"rollout_{name}.gif"))}
    report = {"data": str(data), "steps": steps, "preset": preset, "batch_size": batch_size, "seed": seed,
              "device": device, "variants": results, "wall_seconds": timings, "machine": _machine()}
    report["plots"] = plot_comparison(out, results)
    report["markdown"] = write_markdown(report, os.path.join(out, "report.md"))
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(report, f, indent=2, default=_jsonable)
    return report


def evaluate_variant(run: str, ds, train, seed: int, gif_path: str) -> dict:
    """Held-out metrics of one trained run (tokenizer, LAM, dynamics)."""
    import wmfast
    from wmfast.data import ClipSampler, action_agreement
    from wmfast.rollout.media import side_by_side, to_uint8, write_video
    from wmfast.rollout.reference import reference_rollout

    model = wmfast.load(run)
    lam, C = model.lam, model.dynamics.config.context_length
    _, val_eps = ds.split(train.val_fraction, seed=seed)
    clip_len = C + ROLLOUT_STEPS - 1   # context of C-1 true frames, then ROLLOUT_STEPS predicted ones
    try:
        sampler = ClipSampler(ds, clip_len=clip_len, frame_size=model.frame_size, episodes=val_eps, seed=seed + 1)
    except WmfastError:  # held-out episodes too short or too few: evaluate on all episodes
        sampler = ClipSampler(ds, clip_len=clip_len, frame_size=model.frame_size, seed=seed + 1)
    frames, true_actions = sampler.sample(EVAL_CLIPS)                      # [N, L, 3, S, S], [N, L-1]
    with torch.no_grad():
        z = lam.encoder(frames)                                             # [N, L-1, A] before quantization
        action_ids = lam.indices(lam.quantizer.quantize(z))                # [N, L-1]
        agreement = action_agreement(true_actions, action_ids) if ds.actions is not None else {}
        ctx = C - 1
        targets = frames[:, ctx:]                                           # [N, ROLLOUT_STEPS, ...]
        autoregressive = reference_rollout(model, frames[:, :ctx], action_ids[:, ctx - 1:], steps=MASKGIT_STEPS,
                                           context_length=C, seed=seed)
        teacher = torch.cat([reference_rollout(model, frames[:, k - ctx:k], action_ids[:, k - 1:k],
                                               steps=MASKGIT_STEPS, context_length=C, seed=seed)
                             for k in range(ctx, clip_len)], dim=1)
    ar_mse = ((autoregressive - targets) ** 2).mean(dim=(0, 2, 3, 4))      # per generated step
    tf_mse = ((teacher - targets) ** 2).mean(dim=(0, 2, 3, 4))
    video = side_by_side(*(to_uint8(x[0]) for x in (frames, torch.cat([frames[:, :ctx], autoregressive], 1))))
    write_video(video, gif_path)
    return {
        "eval_clips": int(frames.shape[0]),
        "action_nmi": float(agreement.get("nmi", float("nan"))),
        "action_purity": float(agreement.get("purity", float("nan"))),
        "codebook_usage": 100.0 * len(torch.unique(action_ids)) / lam.num_actions,
        "encoder_variance": float(z.reshape(-1, z.shape[-1]).var(dim=0).mean()),
        "teacher_forced_mse": float(tf_mse.mean()),
        "autoregressive_mse": float(ar_mse.mean()),
        "teacher_forced_mse_per_step": tf_mse.tolist(),
        "autoregressive_mse_per_step": ar_mse.tolist(),
        "rollout_gif": os.path.basename(gif_path),
    }


ROWS = [  # (label, how to read it from a variant's results, better)
    ("LAM loss (final window)", lambda r: r["lam_train"].get("loss"), "lower"),
    ("LAM it/s", lambda r: r["lam_train"].get("it_per_s"), "higher"),
    ("codebook usage % (train)", lambda r: r["lam_train"].get("codebook_usage"), "higher"),
    ("codebook usage % (held-out)", lambda r: r["codebook_usage"], "higher"),
    ("encoder variance (held-out)", lambda r: r["encoder_variance"], "higher"),
    ("action NMI (train window)", lambda r: r["lam_train"].get("action_nmi"), "higher"),
    ("action NMI (held-out)", lambda r: r["action_nmi"], "higher"),
    ("action purity (held-out)", lambda r: r["action_purity"], "higher"),
    ("dynamics loss (final window)", lambda r: r["dynamics_train"].get("loss"), "lower"),
    ("dynamics masked accuracy", lambda r: r["dynamics_train"].get("masked_accuracy"), "higher"),
    ("dynamics it/s", lambda r: r["dynamics_train"].get("it_per_s"), "higher"),
    ("next-frame MSE, teacher-forced", lambda r: r["teacher_forced_mse"], "lower"),
    ("next-frame MSE, autoregressive", lambda r: r["autoregressive_mse"], "lower"),
]


def write_markdown(report: dict, path: str) -> str:
    v = report["variants"]
    lines = [
        "# Latent action encoder: legacy vs windowed attention",
        "",
        f"Data `{report['data']}`, preset `{report['preset']}`, {report['steps']} steps per stage, batch "
        f"{report['batch_size']}, seed {report['seed']}; one tokenizer shared by both runs. Held-out metrics on "
        f"{v['legacy']['eval_clips']} clips; MSE over {ROLLOUT_STEPS} predicted frames in [-1, 1] pixels.",
        f"Machine: {report['machine'].get('cpu_model', report['machine'].get('processor'))}, "
        f"{report['machine'].get('torch_threads')} threads, torch {report['machine'].get('torch')}.",
        "",
        "| metric | legacy | windowed | better |",
        "|---|---|---|---|",
    ]
    for label, get, better in ROWS:
        a, b = _num(get(v["legacy"])), _num(get(v["windowed"]))
        lines.append(f"| {label} | {_fmt(a)} | {_fmt(b)} | {better} |")
    lines += ["", "Wall time per variant (LAM + dynamics, plus the shared tokenizer for legacy): "
              + ", ".join(f"{k} {s:.0f} s" for k, s in report["wall_seconds"].items()), ""]
    for png in report["plots"]:
        lines.append(f"![{png}]({png})")
    lines += ["", "Rollouts (true | generated): " + ", ".join(f"[{k}]({r['rollout_gif']})" for k, r in v.items()),
              "", "## Reading", "", verdict(v), ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


def verdict(v: dict) -> str:
    """A one-paragraph reading of the numbers; the default stays legacy unless the windowed encoder
    wins on action agreement and on autoregressive MSE together."""
    nmi = (_num(v["legacy"]["action_nmi"]), _num(v["windowed"]["action_nmi"]))
    ar = (_num(v["legacy"]["autoregressive_mse"]), _num(v["windowed"]["autoregressive_mse"]))
    speed = (_num(v["legacy"]["lam_train"].get("it_per_s")), _num(v["windowed"]["lam_train"].get("it_per_s")))
    parts = [f"Held-out action NMI: legacy {_fmt(nmi[0])}, windowed {_fmt(nmi[1])}.",
             f"Autoregressive next-frame MSE: legacy {_fmt(ar[0])}, windowed {_fmt(ar[1])}.",
             f"LAM training speed: legacy {_fmt(speed[0])} it/s, windowed {_fmt(speed[1])} it/s."]
    wins = nmi[1] > nmi[0] and ar[1] < ar[0]
    parts.append("The windowed encoder is ahead on both agreement and rollout error at this budget; one seed and "
                 "one budget are not enough to change the default." if wins else
                 "The windowed encoder does not win on both agreement and rollout error at this budget, so the "
                 "default stays legacy.")
    return " ".join(parts)


def plot_comparison(out: str, results: dict) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from wmfast.train.metrics import read_metrics

    written = []
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    for name in results:
        lam_rows = read_metrics(os.path.join(out, name, "actions", "metrics.jsonl"))
        dyn_rows = read_metrics(os.path.join(out, name, "dynamics", "metrics.jsonl"))
        axes[0].plot([r["step"] for r in lam_rows], [r["loss"] for r in lam_rows], label=name)
        axes[1].plot([r["step"] for r in lam_rows], [r.get("action_nmi", np.nan) for r in lam_rows], label=name)
        axes[2].plot([r["step"] for r in dyn_rows], [r["loss"] for r in dyn_rows], label=name)
    for ax, title in zip(axes, ("LAM loss", "action NMI (train windows)", "dynamics loss")):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "curves.png"), dpi=110)
    plt.close(fig)
    written.append("curves.png")

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    names = list(results)
    for i, name in enumerate(names):
        r = results[name]
        xs = np.arange(1, len(r["autoregressive_mse_per_step"]) + 1)
        axes[0].plot(xs, r["autoregressive_mse_per_step"], "o-", label=f"{name} autoregressive")
        axes[0].plot(xs, r["teacher_forced_mse_per_step"], "s--", label=f"{name} teacher-forced")
    axes[0].set_title("next-frame MSE per predicted step")
    axes[0].set_xlabel("step")
    axes[0].legend(fontsize=7)
    labels = ["codebook %", "NMI x100", "enc var x100"]
    width = 0.35
    for i, name in enumerate(names):
        r = results[name]
        vals = [r["codebook_usage"], 100 * _num(r["action_nmi"]), 100 * r["encoder_variance"]]
        axes[1].bar(np.arange(len(labels)) + i * width, vals, width, label=name)
    axes[1].set_xticks(np.arange(len(labels)) + width / 2)
    axes[1].set_xticklabels(labels)
    axes[1].set_title("held-out LAM metrics")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "heldout.png"), dpi=110)
    plt.close(fig)
    written.append("heldout.png")
    return written


def _machine() -> dict:
    from wmfast.bench.common import machine_info

    return machine_info("cpu")


def _num(x):
    return float("nan") if x is None else float(x)


def _fmt(x) -> str:
    return "n/a" if x is None or x != x else (f"{x:.4g}")


def _jsonable(x):
    if isinstance(x, torch.Tensor):
        return x.tolist()
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return str(x)
