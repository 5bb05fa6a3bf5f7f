"""Training loop of the LAPA latent-action VQ-VAE.

    train_lapa("runs/breakout", "breakout.h5", config="lapa-breakout-small")

Adam, lr 3e-4 decaying (cosine) to 1e-4, batch 32 with optional gradient accumulation (the
effective batch is batch_size * grad_accum), 100,000 iterations by default, bf16 (or fp16 with a
grad scaler) autocast on GPU. Logged to run/lapa/metrics.jsonl: every step the train loss; every
val_every the val reconstruction loss, PSNR and SSIM; every recon_every example reconstructions
(samples/*.png); every usage_every the code-usage histogram (usage/*.png); speed and peak memory.
Checkpoints every save_every and `best/` by val reconstruction loss, written atomically;
train_state.pt (tensors and plain data only) makes --resume continue where the run stopped.
"""
import dataclasses
import json
import os
import resource
from dataclasses import dataclass

import numpy as np
import torch

from wmfast.checkpoint import LAPA_FOLDER, load_config, save_model
from wmfast.config import Config, load_json, save_json
from wmfast.device import resolve_device
from wmfast.errors import WmfastError
from wmfast.lapa.data import PairData, PairSampler, load_split, save_split, split_episodes
from wmfast.lapa.evaluate import save_reconstructions, score_pairs
from wmfast.models.lapa import LapaModel, named_config
from wmfast.train import distributed
from wmfast.train.loop import Loop, Stage, cosine, optimizer, rng_state, set_rng_state, truncate_metrics

TRAIN_STATE, TRAIN_CONFIG, METRICS = "train_state.pt", "train_config.json", "metrics.jsonl"


@dataclass
class LapaTrainConfig(Config):
    iterations: int = 100_000
    batch_size: int = 32
    grad_accum: int = 1            # micro-batches of batch_size per optimizer step
    lr: float = 3e-4
    lr_final: float = 1e-4         # cosine decay from lr to lr_final over the iterations
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "auto"           # "auto" | "cpu" | "cuda"
    amp: str = "bf16"              # autocast dtype on GPU: "bf16" | "fp16" | "none" (CPU: always fp32)
    log_every: int = 1
    val_every: int = 1000
    val_pairs: int = 512           # val pairs scored at each validation (a fixed, evenly spaced subset)
    recon_every: int = 2500
    usage_every: int = 5000
    save_every: int = 10_000
    progress: bool = True
    wandb: bool = False            # also log to Weights & Biases (offline mode; needs `pip install wandb`)


# The CPU recipe goes with the small config: fewer, larger-lr steps and denser logging.
TRAIN_RECIPES = {
    "lapa-breakout": {},
    "lapa-breakout-small": {"iterations": 1000, "batch_size": 16, "lr": 1e-3, "lr_final": 2e-4,
                            "val_every": 250, "val_pairs": 128, "recon_every": 500, "usage_every": 500,
                            "save_every": 500},
}


def _vq_state(vq) -> dict:
    """The quantizer's training bookkeeping (not in its state dict), so a resumed run resets codes on time."""
    return {"steps": vq.steps, "recent_pos": vq.recent_pos, "recent": vq.recent.cpu(),
            "recent_counts": vq.recent_counts.cpu(), "counts": vq.counts.cpu()}


def _set_vq_state(vq, s: dict):
    vq.steps, vq.recent_pos = int(s["steps"]), int(s["recent_pos"])
    vq.recent = s["recent"].to(vq.codebook.device)
    vq.recent_counts.copy_(s["recent_counts"])
    vq.counts.copy_(s["counts"])


def peak_memory_mib(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # Linux: KiB -> MiB (process peak RSS)


class _Logger:
    """metrics.jsonl (+ wandb offline when asked)."""

    def __init__(self, path, wandb_run=None):
        self.path, self.wandb = path, wandb_run

    def log(self, row: dict):
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in row.items() if k != "step"}, step=row["step"])


def _wandb(folder, config: dict):
    try:
        import wandb
    except ImportError:
        raise WmfastError("--wandb needs the wandb package: pip install wandb") from None
    return wandb.init(project="wmfast-lapa", dir=folder, mode="offline", config=config)


# -- the stage the one loop runs -----------------------------------------------------------------

class LapaStage(Stage):
    """LAPA on the one loop: grad_accum micro-batches of frame pairs per step (the global batch is
    drawn the same on every process, each takes its share), validation, samples and code usage."""
    name = "lapa"

    def __init__(self, model, module, pairs, sampler, val_idx, train: LapaTrainConfig, folder, meta, logger,
                 device, best_val: float = float("inf")):
        self.model, self.module, self.pairs, self.sampler, self.val_idx = model, module, pairs, sampler, val_idx
        self.train, self.folder, self.meta, self.logger, self.device = train, folder, meta, logger, device
        self.best_val, self.last = best_val, {}
        self.local_batch = distributed.check_divisible(train.batch_size)

    def batch(self, step):
        rank, n = distributed.rank(), self.local_batch
        picks = [self.sampler.idx[self.sampler.rng.integers(0, len(self.sampler.idx), self.train.batch_size)]
                 for _ in range(self.train.grad_accum)]
        return [self.pairs.batch(pick[rank * n:(rank + 1) * n], self.device) for pick in picks]

    def loss(self, batch):
        _, loss, m = self.module(*batch)
        return loss, {k: v for k, v in m.items() if k != "indices"}, float(batch[0].shape[0])

    def after_step(self, step, result):
        train, main = self.train, distributed.is_main()
        row = {"step": step, "loss": result.loss, **result.metrics,
               "psnr": 10 * np.log10(1.0 / max(result.metrics["mse"], 1e-12)), "lr": result.lr,
               "grad_norm": result.grad_norm, "it_per_s": 1.0 / result.seconds,
               "samples_per_s": train.batch_size * train.grad_accum / result.seconds,
               "peak_mem_mib": peak_memory_mib(self.device)}
        last_step = step == train.iterations
        if step % train.log_every == 0 or last_step:
            self.logger.log(row)
        self.last.update(row)
        if main and len(self.val_idx) and (step % train.val_every == 0 or last_step):
            self.validate(step)
        if main and (step % train.recon_every == 0 or last_step):
            idx = self.val_idx if len(self.val_idx) else self.sampler.idx
            save_reconstructions(self.model, self.pairs, idx[np.linspace(0, len(idx) - 1, 4).astype(int)],
                                 os.path.join(self.folder, "samples", f"recon_{step:07d}.png"), self.device)
            self.model.train()
        if step % train.usage_every == 0 or last_step:
            if main:
                _log_usage(self.model, self.folder, step, self.logger, self.last)
            else:   # usage counts are global (summed over processes): reset them everywhere
                self.model.quantizer.reset_usage()
        return {"loss": f"{row['loss']:.4g}", "psnr": f"{row['psnr']:.1f}"}

    def validate(self, step):
        val = {f"val_{k}": v for k, v in score_pairs(self.model, self.pairs, self.val_idx, self.device).items()}
        self.model.train()
        self.logger.log({"step": step, **val})
        self.last.update(val)
        if val["val_mse"] < self.best_val:
            self.best_val = val["val_mse"]
            save_model(self.model, os.path.join(self.folder, "best"), metadata={"step": step, **self.meta})

    def state(self):
        return {"best_val": self.best_val, "vq": _vq_state(self.model.quantizer), "rng": rng_state(self.sampler.rng)}

    def load_state(self, state):
        self.best_val = float(state["best_val"])
        _set_vq_state(self.model.quantizer, state["vq"])
        set_rng_state(self.sampler.rng, state["rng"])

    def save(self, step):
        save_model(self.model, self.folder, metadata={"step": step, **self.meta})
        save_json(self.train.to_dict(), os.path.join(self.folder, TRAIN_CONFIG))


def train_lapa(run_dir, data, config: str = "lapa-breakout", train: LapaTrainConfig = None,
               model_overrides: dict = None, resume: bool = False, split_seed: int = 0, callback=None) -> dict:
    """Train (or resume) the LAPA model into run_dir/lapa/ and return the last logged metrics.

    data: a dataset spec for wmfast.data.load_dataset (.h5, folder of episode folders, atari:...) or a Dataset.
    config: a named LapaConfig ("lapa-breakout" full width, "lapa-breakout-small" CPU recipe);
    model_overrides: LapaConfig fields; callback(step, model) after each step (tests interrupt with it)."""
    from wmfast.data import load_dataset

    folder = os.path.join(os.fspath(run_dir), LAPA_FOLDER)
    state_path = os.path.join(folder, TRAIN_STATE)
    if resume:
        if not os.path.exists(state_path):
            raise WmfastError(f"nothing to resume: {state_path} does not exist")
        saved = LapaTrainConfig.from_dict(load_json(os.path.join(folder, TRAIN_CONFIG)))
        overrides = {} if train is None else {"iterations": train.iterations, "progress": train.progress}
        train = dataclasses.replace(saved, **overrides)
        _, cfg = load_config(folder, "lapa")
    else:
        if os.path.exists(state_path):
            raise WmfastError(f"{folder} already holds a trained LAPA model; pass --resume to continue it "
                              f"or choose another --run directory")
        train = train or LapaTrainConfig(**TRAIN_RECIPES.get(config, {}))
        cfg = named_config(config, **(model_overrides or {}))
    if train.batch_size < 1 or train.grad_accum < 1 or train.iterations < 0:
        raise WmfastError(f"need batch_size >= 1, grad_accum >= 1, iterations >= 0; got {train.batch_size}, "
                          f"{train.grad_accum}, {train.iterations}")
    # Under torchrun: one process per device, DDP (gloo on CPU, NCCL on GPU); batch_size stays the global batch.
    created_group = distributed.env_world_size() > 1 and not distributed.is_distributed()
    device = distributed.setup(train.device) if distributed.env_world_size() > 1 else resolve_device(train.device)
    main = distributed.is_main()
    distributed.check_divisible(train.batch_size)
    torch.manual_seed(train.seed)

    with distributed.main_first():
        ds = load_dataset(data) if isinstance(data, (str, os.PathLike)) else data
    os.makedirs(folder, exist_ok=True)
    if resume:
        split = load_split(folder, ds)
    else:
        split = split_episodes(ds.n_episodes, seed=split_seed)
        if main:
            save_split(folder, split, ds, split_seed)
    pairs = PairData(ds, split, cfg.height, cfg.width)
    sampler = PairSampler(pairs, "train", seed=train.seed)
    val_idx = pairs.indices("val")
    val_idx = val_idx[np.linspace(0, len(val_idx) - 1, min(train.val_pairs, len(val_idx))).astype(int)] \
        if len(val_idx) else val_idx

    model = LapaModel(cfg).to(device)
    if not resume:   # the learned background (when the config has one) starts at the mean training frame
        model.init_background(pairs.frames_at(sampler.idx[np.linspace(0, len(sampler.idx) - 1, 256).astype(int)] + 1))
    meta = {"data": str(data) if isinstance(data, (str, os.PathLike)) else str(ds.source), "config": config}
    logger = _Logger(os.path.join(folder, METRICS) if main else os.devnull,
                     _wandb(folder, {**cfg.to_dict(), **train.to_dict()}) if train.wandb and main else None)
    stage = LapaStage(model, distributed.wrap(model, device), pairs, sampler, val_idx, train, folder, meta, logger,
                      device)
    loop = Loop(stage, optimizer(model, train.lr, kind="adam"),
                lr=cosine(train.lr, 0, train.iterations, train.lr_final / train.lr), grad_clip=train.grad_clip,
                amp=train.amp, device=device, state_path=state_path)
    start = 0
    if resume:
        start = loop.resume()
        if main:
            truncate_metrics(os.path.join(folder, METRICS), start)
    try:   # curves also for a run that was stopped
        step = loop.run(train.iterations, start, save_every=train.save_every, progress=train.progress,
                        desc="train lapa", callback=callback)
    finally:
        if main:
            plot_lapa_curves(os.path.join(folder, METRICS), os.path.join(folder, "curves.png"))
    loop.save(step)
    distributed.barrier()
    if created_group:
        distributed.teardown()
    return stage.last


def _log_usage(model, folder, step, logger, last):
    from wmfast.nn.vq import plot_code_usage

    usage = model.quantizer.code_usage()
    os.makedirs(os.path.join(folder, "usage"), exist_ok=True)
    plot_code_usage(usage["counts"], os.path.join(folder, "usage", f"codes_{step:07d}.png"),
                    title=f"train code usage, window ending at step {step}")
    row = {"step": step, "code_usage_pct": usage["usage_pct"], "code_perplexity": usage["perplexity"]}
    logger.log(row)
    last.update(row)
    model.quantizer.reset_usage()


def plot_lapa_curves(metrics_path, png_path):
    """One panel per logged metric (train rows and val rows share the file)."""
    if not os.path.exists(metrics_path):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from wmfast.lapa.evaluate import save_figure

    with open(metrics_path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    keys = [k for k in ("loss", "mse", "psnr", "commitment", "codebook", "entropy", "lr", "grad_norm",
                        "samples_per_s", "peak_mem_mib", "val_mse", "val_psnr", "val_moving_psnr", "val_moving_copy_psnr",
                        "val_ssim", "code_usage_pct",
                        "code_perplexity") if any(k in r for r in rows)]
    cols = 3
    nrows = max(1, -(-len(keys) // cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 2.6 * nrows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        pts = [(r["step"], r[key]) for r in rows if key in r]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 30 else None)
        ax.set_title(key, fontsize=9)
        ax.tick_params(labelsize=7)
        if key in ("loss", "mse", "val_mse", "lr", "grad_norm"):
            ax.set_yscale("log")
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.suptitle("LAPA training")
    fig.subplots_adjust(hspace=0.6, wspace=0.3)
    return save_figure(fig, png_path, dpi=80)
