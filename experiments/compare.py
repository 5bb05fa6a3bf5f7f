"""Controlled comparisons of model variants under the same data, seeds and step budget (an experiment,
not installed with wmfast; run from a clone):

    python experiments/compare.py lam --data game:maze --seeds 0,1,2 --steps 300
    python experiments/compare.py dynamics --run RUN --seeds 0,1 --variants film,recipe

`compare dynamics` `compare dynamics` trains dynamics variants on one run's tokenizer and LAM (see
compare_dynamics); the rest of this docstring is `compare lam`'s.

Variants: the legacy (tinyworlds) transformer LAM, the windowed-attention encoder
(use_windowed_attention=True) and the conv LAM (architecture="conv", the LAPO/LAPA family). Per
seed, one tokenizer is trained and shared by every variant, so only the LAM (and the dynamics
trained on its actions) differ. Each run is then scored by THE evaluator (wmfast.evaluate.evaluate_run)
on held-out episodes. Reported per variant, mean ± std over seeds: LAM loss, codebook usage,
encoder variance, it/s, dynamics loss, teacher-forced vs autoregressive MSE, action NMI (all and
changed transitions), ΔtPSNR. Writes report.md, report.json and PNG plots into the output folder.
"""
import dataclasses
import json
import os
import shutil
import time
import warnings

import numpy as np
import torch

from wmfast.errors import WmfastError
from wmfast.train.presets import CONV_LAM, DYNAMICS, DYNAMICS_TRAINING

# name -> LatentActionConfig overrides
# Explicit settings, whatever the preset's own LAM (the small/tiny presets train the conv LAM).
LEGACY = {"architecture": "transformer", "quantizer": "fsq", "onehot_actions": False}
VARIANTS = {"legacy": LEGACY, "windowed": {**LEGACY, "use_windowed_attention": True}, "conv": CONV_LAM}
# name -> DynamicsConfig overrides, every option explicit (the small/tiny presets set the recipe's).
FILM_ONLY = {"spatial_window": 0, "action_position_bias": False}
DYNAMICS_VARIANTS = {
    "film": FILM_ONLY,                                                       # tinyworlds: the action by FiLM only
    "film-future": FILM_ONLY,
    "action-bias-global": {**FILM_ONLY, "action_position_bias": True},
    "action-bias": {**FILM_ONLY, "spatial_window": 1, "action_position_bias": True},
    "recipe": {**FILM_ONLY, **DYNAMICS},                                     # the presets' (tiny, small)
}
# name -> how its training clips are drawn (DynamicsTrainConfig fields, every one explicit).
TINYWORLDS_CLIPS = {"future_mask_prob": 0.0, "pause_clip_prob": 0.0}
DYNAMICS_VARIANT_TRAINING = {
    "film": TINYWORLDS_CLIPS,
    "film-future": {**TINYWORLDS_CLIPS, "future_mask_prob": 1.0},
    "action-bias-global": {**TINYWORLDS_CLIPS, "future_mask_prob": 1.0},
    "action-bias": {**TINYWORLDS_CLIPS, "future_mask_prob": 1.0},
    "recipe": {**TINYWORLDS_CLIPS, **DYNAMICS_TRAINING},
}
# Variants that lost here, removed with the option each tried (docs/controllable-dynamics/): asked for
# (an older command line or script), they are skipped with a warning.
REMOVED_DYNAMICS_VARIANTS = {"window-bias": "a static offset bias in a 1-patch window (spatial_position_bias)",
                             "action-bias-weighted": "changed tokens weighted x2 (changed_token_weight)"}
EVAL_CLIPS = 16
ROLLOUT_STEPS = 4        # frames generated past the context in the evaluation
MASKGIT_STEPS = 8


def available_variants(names) -> dict:
    """The requested variants whose LatentActionConfig fields exist in this wmfast (one-line error otherwise)."""
    from wmfast.models.latent_actions import LatentActionConfig

    fields = {f.name for f in dataclasses.fields(LatentActionConfig)}
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        raise WmfastError(f"compare lam: unknown variant(s) {unknown} (choose from {list(VARIANTS)})")
    missing = {n: sorted(set(VARIANTS[n]) - fields) for n in names if set(VARIANTS[n]) - fields}
    if missing:
        raise WmfastError(f"compare lam: this wmfast's LatentActionConfig lacks {missing}")
    return {n: VARIANTS[n] for n in names}


def compare_lam(data=None, steps: int = 300, out: str = "compare-lam", preset: str = "tiny", batch_size: int = 8,
                seeds=(0,), variants=("legacy", "windowed", "conv"), device: str = "auto", eval_clips: int = EVAL_CLIPS,
                horizon: int = ROLLOUT_STEPS, maskgit_steps: int = MASKGIT_STEPS, progress: bool = True,
                map_steps: int = None) -> dict:
    """Train and evaluate every variant for every seed; returns the report (also out/report.json).
    map_steps: optimizer steps of each run's action map fit (default wmfast.models.action_map.FRAME_MAP_STEPS)."""
    from wmfast.models.action_map import FRAME_MAP_STEPS
    from wmfast.train.action_map import train_action_map
    from wmfast.data import DEFAULT_GAME, load_dataset
    from wmfast.evaluate import evaluate_run
    from wmfast.train import PRESETS, TrainConfig, train_stage

    if steps < 1:
        raise WmfastError(f"compare lam: --steps must be >= 1, got {steps}")
    if preset not in PRESETS:
        raise WmfastError(f"compare lam: unknown preset {preset!r} (choose from {sorted(PRESETS)})")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise WmfastError("compare lam: --seeds needs at least one seed")
    chosen = available_variants(list(variants))
    data = data or f"game:{DEFAULT_GAME}"
    ds = load_dataset(data, progress=progress)
    os.makedirs(out, exist_ok=True)
    results = {name: {} for name in chosen}
    for seed in seeds:
        train = TrainConfig(steps=steps, batch_size=batch_size, seed=seed, device=device, preset=preset,
                            warmup_steps=min(100, max(1, steps // 10)), log_every=max(1, min(25, steps // 20)),
                            save_every=10 ** 9, progress=progress)
        shared_tokenizer = os.path.join(out, f"seed{seed}", "tokenizer")
        if os.path.exists(shared_tokenizer):
            shutil.rmtree(shared_tokenizer)
        t0 = time.perf_counter()
        train_stage("tokenizer", os.path.join(out, f"seed{seed}"), ds, train=train)
        tokenizer_seconds = time.perf_counter() - t0
        for name, overrides in chosen.items():
            run = os.path.join(out, f"seed{seed}", name)
            if os.path.exists(run):
                shutil.rmtree(run)          # a fresh, controlled run every time
            shutil.copytree(shared_tokenizer, os.path.join(run, "tokenizer"))
            t0 = time.perf_counter()
            torch.manual_seed(seed)
            lam = train_stage("actions", run, ds, train=train, model=dict(overrides))
            dyn = train_stage("dynamics", run, ds, train=train)
            seconds = time.perf_counter() - t0
            if ds.actions is not None:
                train_action_map(run, ds, steps=map_steps or FRAME_MAP_STEPS, seed=seed, progress=progress)
            report = evaluate_run(run, ds, episodes=eval_clips, horizon=horizon, steps=maskgit_steps, seed=seed,
                                  out=os.path.join(run, "eval"), json_path=os.path.join(run, "eval", "metrics.json"),
                                  progress=progress)
            results[name][seed] = {"lam_train": lam, "dynamics_train": dyn, "seconds": seconds,
                                   "tokenizer_seconds": tokenizer_seconds, "eval": _numbers(report)}
    report = {"data": str(data), "steps": steps, "preset": preset, "batch_size": batch_size, "seeds": seeds,
              "variants": list(chosen), "overrides": chosen, "device": device, "eval_clips": eval_clips,
              "horizon": horizon, "maskgit_steps": maskgit_steps, "machine": _machine(),
              "runs": results, "summary": summarize(results)}
    report["plots"] = plot_comparison(out, report)
    report["markdown"] = write_markdown(report, os.path.join(out, "report.md"))
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(report, f, indent=2, default=_jsonable)
    return report


def compare_dynamics(run: str, data=None, steps: int = 1000, out: str = "compare-dynamics", preset: str = "small",
                     batch_size: int = 16, seeds=(0,), variants=tuple(DYNAMICS_VARIANTS), eval_clips: int = EVAL_CLIPS,
                     horizon: int = 8, progress: bool = True, lr: float = None, device: str = "auto") -> dict:
    """Train every dynamics variant on `run`'s tokenizer and LAM (copied, never changed) for every
    seed and score each with the evaluator on held-out episodes; writes out/report.json and report.md.
    lr: default the demo recipe's dynamics learning rate; device: where to train (evaluation runs on the CPU).
    Reported per variant and seed: ΔtPSNR, PSNR teacher-forced / autoregressive (inferred and game
    actions) / copy-last-frame, and the smallest per-step margin of game-action rollouts over copying."""
    from wmfast.evaluate import evaluate_run
    from wmfast.train import train_stage
    from wmfast.train.recipes import DEMO_RECIPE
    from wmfast.train.trainer import DynamicsTrainConfig

    lr = lr or DEMO_RECIPE["dynamics"][0]["lr"]
    for name in [v for v in variants if v in REMOVED_DYNAMICS_VARIANTS]:
        warnings.warn(f"compare dynamics: skipping variant {name!r}: {REMOVED_DYNAMICS_VARIANTS[name]} lost "
                      f"(docs/controllable-dynamics/) and was removed", stacklevel=2)
    variants = [v for v in variants if v not in REMOVED_DYNAMICS_VARIANTS]
    unknown = [v for v in variants if v not in DYNAMICS_VARIANTS]
    if unknown or not variants:
        raise WmfastError(f"compare dynamics: unknown variant(s) {unknown} (choose from {list(DYNAMICS_VARIANTS)})")
    for stage in ("tokenizer", "actions"):
        if not os.path.isdir(os.path.join(run, stage)):
            raise WmfastError(f"compare dynamics: {run} has no trained {stage} stage")
    rows = []
    for seed in [int(s) for s in seeds]:
        for name in variants:
            work = os.path.join(out, f"seed{seed}", name)
            shutil.rmtree(work, ignore_errors=True)
            for stage in ("tokenizer", "actions"):
                shutil.copytree(os.path.join(run, stage), os.path.join(work, stage))
            train = DynamicsTrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed, preset=preset,
                                        progress=progress, warmup_steps=min(50, max(1, steps // 10)),
                                        save_every=10 ** 9, device=device, **DYNAMICS_VARIANT_TRAINING[name])
            t0 = time.perf_counter()
            train_stage("dynamics", work, data, train=train, model=dict(DYNAMICS_VARIANTS[name]))
            seconds = time.perf_counter() - t0
            r = evaluate_run(work, data, episodes=eval_clips, horizon=horizon, seed=seed, out=os.path.join(work, "eval"),
                             json_path=os.path.join(work, "eval", "metrics.json"), progress=progress)
            margin = np.array(r["psnr_game_actions_per_step"]) - np.array(r["psnr_copy_last_frame_per_step"])
            rows.append({"variant": name, "seed": seed, "train_seconds": round(seconds, 1),
                         "delta_t_psnr": r["controllability_gap"], "psnr_teacher_forced": r["psnr_teacher_forced"],
                         "psnr_autoregressive": r["psnr_autoregressive"], "psnr_game_actions": r["psnr_game_actions"],
                         "psnr_random_actions": r["psnr_random_actions"], "psnr_copy_last_frame": r["psnr_copy_last_frame"],
                         "min_margin_over_copy": float(margin.min()), "margin_per_step": margin.round(2).tolist()})
    report = {"run": str(run), "data": str(data), "steps": steps, "preset": preset, "batch_size": batch_size, "lr": lr,
              "seeds": [int(s) for s in seeds],
              "variants": {v: {**DYNAMICS_VARIANTS[v], **DYNAMICS_VARIANT_TRAINING[v]} for v in variants},
              "eval_clips": eval_clips, "horizon": horizon, "machine": _machine(), "rows": rows}
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(report, f, indent=2, default=_jsonable)
    cols = ["delta_t_psnr", "psnr_teacher_forced", "psnr_autoregressive", "psnr_game_actions", "psnr_copy_last_frame",
            "min_margin_over_copy"]
    lines = [f"# Dynamics variants on `{run}`'s tokenizer and LAM", "",
             f"Data `{data or 'the run data'}`, preset `{preset}`, {steps} steps, batch {batch_size}, held-out "
             f"{eval_clips} clips x {horizon} frames (PSNR from MSE pooled over clips). Settings: "
             + "; ".join(f"{k} {v}" for k, v in report["variants"].items()) + ".", "",
             "| variant | seed | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    lines += [f"| {r['variant']} | {r['seed']} | " + " | ".join(f"{r[c]:.2f}" for c in cols) + " |" for r in rows]
    report["markdown"] = os.path.join(out, "report.md")
    with open(report["markdown"], "w") as f:
        f.write("\n".join(lines) + "\n")
    return report


ROWS = [  # (key, label, part of one seed's results holding it, its name there, better)
    ("lam_loss", "LAM loss (final window)", "lam_train", "loss", "lower"),
    ("lam_it_per_s", "LAM it/s", "lam_train", "it_per_s", "higher"),
    ("codebook_usage", "codebook usage % (held-out)", "eval", "codebook_usage", "higher"),
    ("perplexity", "code perplexity (held-out)", "eval", "perplexity", "higher"),
    ("encoder_variance", "encoder variance (held-out)", "eval", "encoder_variance", "higher"),
    ("action_nmi", "action NMI, all transitions", "eval", "action_nmi", "higher"),
    ("action_nmi_changed", "action NMI, changed transitions", "eval", "action_nmi_changed", "higher"),
    ("dynamics_loss", "dynamics loss (final window)", "dynamics_train", "loss", "lower"),
    ("dynamics_it_per_s", "dynamics it/s", "dynamics_train", "it_per_s", "higher"),
    ("mse_teacher_forced", "next-frame MSE, teacher-forced", "eval", "mse_teacher_forced", "lower"),
    ("mse_autoregressive", "next-frame MSE, autoregressive", "eval", "mse_autoregressive", "lower"),
    ("mse_game_actions", "MSE, autoregressive with game actions", "eval", "mse_game_actions", "lower"),
    ("mse_copy_last_frame", "MSE, copy last frame", "eval", "mse_copy_last_frame", "lower"),
    ("controllability_gap", "ΔtPSNR dB (t = min(4, horizon))", "eval", "controllability_gap", "higher"),
]


def summarize(results: dict) -> dict:
    """variant -> key -> {mean, std, values} over seeds (population std; NaN where a value is missing)."""
    out = {}
    for name, by_seed in results.items():
        out[name] = {}
        for key, _, part, field, better in ROWS:
            values = [_num(r[part].get(field)) for r in by_seed.values()]
            arr = np.array(values, dtype=np.float64)
            ok = arr[np.isfinite(arr)]
            out[name][key] = {"mean": float(ok.mean()) if ok.size else float("nan"),
                              "std": float(ok.std()) if ok.size else float("nan"), "values": values,
                              "better": better}
    return out


def write_markdown(report: dict, path: str) -> str:
    s, names = report["summary"], report["variants"]
    lines = [
        "# Latent action model variants: " + ", ".join(names),
        "",
        f"Data `{report['data']}`, preset `{report['preset']}`, {report['steps']} steps per stage, batch "
        f"{report['batch_size']}, seeds {report['seeds']} (mean ± std over seeds); one tokenizer per seed shared "
        f"by every variant. Held-out metrics from `wmfast.evaluate.evaluate_run` ({report['eval_clips']} clips, "
        f"{report['horizon']} generated frames, MSE pooled over clips, pixels in [-1, 1]; NMI on every held-out "
        f"transition). Variant settings: " + "; ".join(f"{k} {v or '(defaults)'}" for k, v in
                                                      report["overrides"].items()) + ".",
        f"Machine: {report['machine'].get('cpu_model', report['machine'].get('processor'))}, "
        f"{report['machine'].get('torch_threads')} threads, torch {report['machine'].get('torch')}.",
        "",
        "| metric | " + " | ".join(names) + " | better |",
        "|---|" + "---|" * len(names) + "---|",
    ]
    for key, label, _, _, better in ROWS:
        cells = [_fmt_pm(s[n][key]) for n in names]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {better} |")
    lines += [""]
    for png in report["plots"]:
        lines.append(f"![{png}]({png})")
    lines += ["", "Per run: `seed*/VARIANT/eval/` holds the evaluator's confusion matrix, PSNR plot, controls sheet "
              "and rollout GIF.", "", "## Reading", "", verdict(report), ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


def verdict(report: dict) -> str:
    """One paragraph: which variant leads on changed-transition NMI and on autoregressive MSE."""
    s, names = report["summary"], report["variants"]
    nmi = {n: s[n]["action_nmi_changed"]["mean"] for n in names}
    ar = {n: s[n]["mse_autoregressive"]["mean"] for n in names}
    gap = {n: s[n]["controllability_gap"]["mean"] for n in names}
    best_nmi = max(names, key=lambda n: -np.inf if nmi[n] != nmi[n] else nmi[n])
    best_ar = min(names, key=lambda n: np.inf if ar[n] != ar[n] else ar[n])
    parts = ["Changed-transition NMI: " + ", ".join(f"{n} {_fmt(nmi[n])}" for n in names) + ".",
             "Autoregressive MSE: " + ", ".join(f"{n} {_fmt(ar[n])}" for n in names) + ".",
             "ΔtPSNR: " + ", ".join(f"{n} {_fmt(gap[n])} dB" for n in names) + "."]
    if len({nmi[n] for n in names}) == 1 and len({ar[n] for n in names}) == 1:
        parts.append("The variants tie at this budget.")
    elif best_nmi == best_ar:
        parts.append(f"{best_nmi} leads on both action agreement and rollout error at this budget "
                     f"({len(report['seeds'])} seed(s)).")
    else:
        parts.append(f"{best_nmi} leads on action agreement, {best_ar} on rollout error: no variant wins both "
                     f"at this budget.")
    return " ".join(parts)


def plot_comparison(out: str, report: dict) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from wmfast.train.metrics import read_metrics

    names, seeds, s = report["variants"], report["seeds"], report["summary"]
    written = []
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    for name in names:
        run = os.path.join(out, f"seed{seeds[0]}", name)
        lam_rows = read_metrics(os.path.join(run, "actions", "metrics.jsonl"))
        dyn_rows = read_metrics(os.path.join(run, "dynamics", "metrics.jsonl"))
        axes[0].plot([r["step"] for r in lam_rows], [r["loss"] for r in lam_rows], label=name)
        axes[1].plot([r["step"] for r in lam_rows], [r.get("action_nmi", np.nan) for r in lam_rows], label=name)
        axes[2].plot([r["step"] for r in dyn_rows], [r["loss"] for r in dyn_rows], label=name)
    for ax, title in zip(axes, ("LAM loss", "action NMI (training windows)", "dynamics loss")):
        ax.set_title(f"{title}, seed {seeds[0]}")
        ax.set_xlabel("step")
        ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "curves.png"), dpi=110)
    plt.close(fig)
    written.append("curves.png")

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for name in names:
        per_seed = [report["runs"][name][sd]["eval"] for sd in seeds]
        for key, style in (("autoregressive", "o-"), ("teacher_forced", "s--"), ("game_actions", "^:")):
            curves = [r.get(f"psnr_{key}_per_step") for r in per_seed]
            if all(curves):
                arr = np.array(curves)
                xs = np.arange(1, arr.shape[1] + 1)
                axes[0].errorbar(xs, arr.mean(0), yerr=arr.std(0), fmt=style, capsize=2, label=f"{name} {key}")
    copy = np.array([report["runs"][names[0]][sd]["eval"]["psnr_copy_last_frame_per_step"] for sd in seeds])
    axes[0].plot(np.arange(1, copy.shape[1] + 1), copy.mean(0), "k-", label="copy last frame")
    axes[0].set_title("held-out PSNR per generated frame (pooled MSE)")
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("dB")
    axes[0].legend(fontsize=6)
    keys = [("codebook_usage", "codebook %", 1), ("action_nmi", "NMI x100", 100),
            ("action_nmi_changed", "NMI changed x100", 100), ("controllability_gap", "ΔtPSNR dB x10", 10)]
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        means = [s[name][k]["mean"] * f for k, _, f in keys]
        stds = [s[name][k]["std"] * f for k, _, f in keys]
        axes[1].bar(np.arange(len(keys)) + i * width, means, width, yerr=stds, capsize=2, label=name)
    axes[1].set_xticks(np.arange(len(keys)) + width * (len(names) - 1) / 2)
    axes[1].set_xticklabels([label for _, label, _ in keys], fontsize=8)
    axes[1].set_title(f"held-out LAM metrics (mean ± std over {len(seeds)} seed(s))")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "heldout.png"), dpi=110)
    plt.close(fig)
    written.append("heldout.png")
    return written


def _numbers(report: dict) -> dict:
    from wmfast.evaluate import numbers_only

    return {k: v for k, v in numbers_only(report).items() if k not in ("confusion", "confusion_changed")}


def _machine() -> dict:
    from wmfast.bench.common import machine_info

    return machine_info("cpu")


def _num(x):
    try:
        return float("nan") if x is None else float(x)
    except (TypeError, ValueError):
        return float("nan")


def _fmt(x) -> str:
    return "n/a" if x is None or x != x else f"{x:.4g}"


def _fmt_pm(cell: dict) -> str:
    if cell["mean"] != cell["mean"]:
        return "n/a"
    return _fmt(cell["mean"]) if len(cell["values"]) == 1 else f"{_fmt(cell['mean'])} ± {_fmt(cell['std'])}"


def _jsonable(x):
    if isinstance(x, torch.Tensor):
        return x.tolist()
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return str(x)


# -- command line
def _names(text: str) -> list:
    return [v.strip() for v in text.split(",") if v.strip()]


def build_parser():
    import argparse

    # the CLI's typed options, so bad values get the same one-line errors
    from wmfast.cli.common import device_name, nonneg_int_list, positive_float, positive_int

    parser = argparse.ArgumentParser(prog="experiments/compare.py", description="controlled comparisons of model variants")
    compare_sub = parser.add_subparsers(dest="compare", required=True)
    p = compare_sub.add_parser(
        "lam", help="latent action model variants (legacy transformer, windowed-attention encoder, conv LAM; "
                    "then a dynamics model on each): same data, seeds and steps, scored by `wmfast eval`'s "
                    "evaluator; markdown + JSON report (mean ± std over seeds) with plots",
        epilog="examples:\n  python experiments/compare.py lam --data game:maze --steps 300 --seeds 0,1,2")
    p.add_argument("--data", default=None, help="game:NAME or a dataset path (default: the embedded default game)")
    p.add_argument("--steps", type=positive_int, default=300, help="training steps per stage")
    p.add_argument("--out", default="compare-lam", help="output folder")
    p.add_argument("--preset", default="tiny", choices=["tiny", "small", "tinyworlds"],
                   help="model size preset (wmfast.train.PRESETS)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="clips per optimizer step")
    p.add_argument("--seeds", type=nonneg_int_list, default="0", help="comma-separated seeds, e.g. 0,1,2")
    p.add_argument("--variants", default="legacy,windowed,conv", help="comma-separated, from legacy,windowed,conv")
    p.add_argument("--eval-clips", type=positive_int, default=16, help="held-out clips per evaluation")
    p.add_argument("--horizon", type=positive_int, default=4, help="frames generated per held-out clip")
    p.add_argument("--device", type=device_name, default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    p.set_defaults(func=_compare_lam)
    p = compare_sub.add_parser(
        "dynamics", help="dynamics variants (how the action enters: FiLM only, local window, relative-position "
                         "bias, the action-set bias) trained on one run's tokenizer and LAM, scored by the evaluator",
        epilog="examples:\n  python experiments/compare.py dynamics --run wmfast/assets/pretrained/maze --seeds 0,1")
    p.add_argument("--run", required=True, help="run folder with trained tokenizer/ and actions/ (left unchanged)")
    p.add_argument("--data", default=None, help="dataset spec (default: the data the run was trained on)")
    p.add_argument("--steps", type=positive_int, default=1000, help="dynamics training steps per variant")
    p.add_argument("--out", default="compare-dynamics", help="output folder")
    p.add_argument("--preset", default="small", choices=["tiny", "small", "tinyworlds"], help="model size preset")
    p.add_argument("--batch-size", type=positive_int, default=16, help="clips per optimizer step")
    p.add_argument("--lr", type=positive_float, default=None, help="learning rate (default: the demo recipe's)")
    p.add_argument("--device", type=device_name, default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    p.add_argument("--seeds", type=nonneg_int_list, default="0", help="comma-separated seeds, e.g. 0,1")
    p.add_argument("--variants", default="film,recipe,action-bias",
                   help="comma-separated, from film,film-future,action-bias-global,action-bias,recipe")
    p.add_argument("--eval-clips", type=positive_int, default=16, help="held-out clips per evaluation")
    p.set_defaults(func=_compare_dynamics)
    return parser


def _compare_lam(a):
    report = compare_lam(a.data, a.steps, a.out, preset=a.preset, batch_size=a.batch_size, seeds=a.seeds,
                         variants=_names(a.variants), device=a.device, eval_clips=a.eval_clips, horizon=a.horizon)
    print(f"{report['markdown']}: {', '.join(report['variants'])} LAM report")


def _compare_dynamics(a):
    report = compare_dynamics(a.run, a.data, a.steps, a.out, preset=a.preset, batch_size=a.batch_size, seeds=a.seeds,
                              variants=_names(a.variants), eval_clips=a.eval_clips, lr=a.lr, device=a.device)
    print(f"{report['markdown']}: dynamics variants report")


def main(argv=None) -> int:
    import sys

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:   # a bad option: argparse printed its one-line error
        if e.code in (0, None):
            raise
        return e.code
    try:
        args.func(args)
    except WmfastError as e:
        print(f"compare: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
