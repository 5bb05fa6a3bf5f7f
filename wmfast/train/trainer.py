"""One training loop for all three stages.

    train_stage("tokenizer", run_dir, "game:pong")   # then "actions", then "dynamics"

AdamW with warmup + cosine, gradient clipping, bf16 autocast on GPU, optional torch.compile,
a tqdm bar with rate and ETA, metrics.jsonl + curves.png, and atomic checkpoints:
model.safetensors + config.json for users, train_state.pt (weights, optimizer, step, RNG
states; tensors and plain data only) for --resume. A run killed by Ctrl-C / SIGTERM saves
its last finished step first, so resuming loses nothing and matches an uninterrupted run.
"""
import contextlib
import dataclasses
import json
import os
import signal
import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from wmfast.checkpoint import STAGES, load_config, load_model, load_state_dict_checked, load_torch_safe, \
    save_model, save_torch_atomic
from wmfast.config import Config, load_json, save_json
from wmfast.errors import WmfastError
from wmfast.train.metrics import StageMetrics, plot_curves
from wmfast.train.presets import PRESETS
from wmfast.train.schedule import lr_at

TRAIN_STATE, TRAIN_CONFIG, METRICS = "train_state.pt", "train_config.json", "metrics.jsonl"


@dataclass
class TrainConfig(Config):
    steps: int = 2000
    batch_size: int = 16
    lr: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    clip_len: int = 4           # frames per training clip (the dynamics' context length)
    stride: int = 1             # frames between consecutive clip frames
    seed: int = 0
    device: str = "auto"        # "auto" | "cpu" | "cuda"
    compile: bool = False
    log_every: int = 25
    save_every: int = 250
    val_fraction: float = 0.1
    preset: str = "small"       # model size preset (wmfast.train.PRESETS)
    progress: bool = True


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise WmfastError(f"device {name!r} asked for, but CUDA is not available")
    return torch.device(name)


# -- configs -----------------------------------------------------------------------------------

def _fields(cls) -> set:
    return {f.name for f in dataclasses.fields(cls)}


def stage_config(stage: str, run_dir: str, train: TrainConfig, overrides: dict):
    """The stage's model config: preset, then the earlier stages' facts, then user overrides."""
    if train.preset not in PRESETS:
        raise WmfastError(f"unknown preset {train.preset!r} (choose from {sorted(PRESETS)})")
    cfg_cls = STAGES[stage][1]
    unknown = sorted(set(overrides) - _fields(cfg_cls))
    if unknown:
        raise WmfastError(f"unknown {stage} config keys {unknown}")
    values = {k: v for k, v in PRESETS[train.preset].items() if k in _fields(cfg_cls)}
    tok_dir = os.path.join(run_dir, "tokenizer")
    if stage in ("actions", "dynamics") and os.path.isdir(tok_dir):
        _, tok = load_config(tok_dir, "tokenizer")
        values.update(frame_size=tok.frame_size, patch_size=tok.patch_size)
    if stage == "dynamics":
        _, tok = load_config(tok_dir, "tokenizer")
        _, lam = load_config(os.path.join(run_dir, "actions"), "actions")
        derived = dict(frame_size=tok.frame_size, patch_size=tok.patch_size, latent_dim=tok.latent_dim,
                       num_bins=tok.num_bins, codebook_size=tok.num_codes, conditioning_dim=lam.action_dim,
                       context_length=train.clip_len)
        clash = {k: (overrides[k], v) for k, v in derived.items() if k in overrides and overrides[k] != v}
        if clash:
            raise WmfastError(f"config mismatch: dynamics overrides {clash} contradict the trained tokenizer/actions")
        values.update(derived)
    values.update(overrides)
    return cfg_cls(**values)


def require_earlier_stages(stage: str, run_dir: str):
    needed = {"tokenizer": [], "actions": [], "dynamics": ["tokenizer", "actions"]}[stage]
    missing = [s for s in needed if not os.path.isfile(os.path.join(run_dir, s, "model.safetensors"))]
    if missing:
        raise WmfastError(f"stage {stage} needs a trained {' and '.join(missing)} in {run_dir}; "
                          f"run `wmfast train {missing[0]} --run {run_dir}` first")


# -- one training step per stage -----------------------------------------------------------------

class StageStep:
    """Computes (loss, metrics) for one batch of one stage; frozen earlier stages live here."""

    def __init__(self, stage: str, run_dir: str, device):
        self.stage = stage
        if stage == "dynamics":
            self.tokenizer = load_model(os.path.join(run_dir, "tokenizer"), "tokenizer", device)
            self.lam = load_model(os.path.join(run_dir, "actions"), "actions", device)

    def __call__(self, model, frames, true_actions):
        if self.stage == "tokenizer":
            recon, loss, m = model(frames)
            m["mse"] = (recon.detach().float() - frames).pow(2).mean()
            return loss, m
        if self.stage == "actions":
            _, loss, m = model(frames)
            m["true_actions"] = true_actions
            return loss, m
        with torch.no_grad():
            idx = self.tokenizer.encode_indices(frames)                         # [B, T, P]
            lat = self.tokenizer.quantizer.latents(idx)                         # [B, T, P, L]
            act = self.lam.quantizer.quantize(self.lam.encoder(frames))         # [B, T-1, A]
        _, loss, m = model.training_loss(lat, idx, act)
        return loss, m


# -- the loop ----------------------------------------------------------------------------------

def _optimizer(model, train: TrainConfig):
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": train.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=train.lr, betas=(0.9, 0.95))


def _rng_state(sampler) -> dict:
    return {"torch": torch.get_rng_state(), "sampler": json.dumps(sampler.rng.bit_generator.state)}


def _set_rng_state(sampler, state: dict):
    torch.set_rng_state(state["torch"])
    sampler.rng.bit_generator.state = json.loads(state["sampler"])


def _save_checkpoint(folder, model, opt, step, sampler, train, meta):
    state = {"model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
             "optimizer": opt.state_dict(), "step": step, "rng": _rng_state(sampler)}
    save_torch_atomic(state, os.path.join(folder, TRAIN_STATE))
    save_model(model, folder, metadata={"step": step, **meta})
    save_json(train.to_dict(), os.path.join(folder, TRAIN_CONFIG))


def _truncate_metrics(path, step):
    """On resume, drop log lines written after the checkpoint we resume from."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = [ln for ln in f if ln.strip() and json.loads(ln).get("step", 0) <= step]
    with open(path, "w") as f:
        f.writelines(lines)


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """A killed run (SIGTERM) gets the same chance as Ctrl-C to save its last step."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _autocast(device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_stage(stage: str, run_dir: str, data, train: TrainConfig = None, model: dict = None,
                resume: bool = False, callback=None) -> dict:
    """Train one stage into run_dir/<stage>/ and return its final metrics.

    data: a dataset spec for wmfast.data.load_dataset, or a dataset object.
    model: overrides for the stage's config dataclass.
    callback(step, model): called after every optimizer step (tests use it to interrupt)."""
    from wmfast.data import ClipSampler, load_dataset

    if stage not in STAGES:
        raise WmfastError(f"unknown stage {stage!r} (choose from {list(STAGES)})")
    train = train or TrainConfig()
    folder = os.path.join(run_dir, stage)
    state_path = os.path.join(folder, TRAIN_STATE)
    require_earlier_stages(stage, run_dir)
    if resume:
        if not os.path.exists(state_path):
            raise WmfastError(f"nothing to resume: {state_path} does not exist")
        saved = TrainConfig.from_dict(load_json(os.path.join(folder, TRAIN_CONFIG)))
        train = dataclasses.replace(saved, steps=train.steps, progress=train.progress)
        _, cfg = load_config(folder, stage)
    else:
        if os.path.exists(state_path):
            raise WmfastError(f"{folder} already holds a trained {stage}; pass --resume to continue it "
                              f"or choose another --run directory")
        cfg = stage_config(stage, run_dir, train, model or {})
    device = resolve_device(train.device)
    torch.manual_seed(train.seed)

    ds = load_dataset(data) if isinstance(data, (str, os.PathLike)) else data
    if stage == "actions" and ds.n_actions and ds.n_actions > cfg.n_actions:
        print(f"wmfast: note: the data has {ds.n_actions} true actions, the LAM {cfg.n_actions} codes")
    train_eps, _ = ds.split(train.val_fraction, seed=train.seed)
    sampler = ClipSampler(ds, clip_len=train.clip_len, stride=train.stride, frame_size=cfg.frame_size,
                          episodes=train_eps, seed=train.seed)

    net = STAGES[stage][0](cfg).to(device)
    opt = _optimizer(net, train)
    start = 0
    if resume:
        saved_state = load_torch_safe(state_path)
        load_state_dict_checked(net, saved_state["model"], state_path)
        opt.load_state_dict(saved_state["optimizer"])
        start = int(saved_state["step"])
        _set_rng_state(sampler, saved_state["rng"])
        _truncate_metrics(os.path.join(folder, METRICS), start)
    os.makedirs(folder, exist_ok=True)
    step_fn = StageStep(stage, run_dir, device)
    forward = torch.compile(step_fn) if train.compile else step_fn
    tracker = StageMetrics(stage, net, os.path.join(folder, METRICS))
    meta = {"stage": stage, "data": str(data) if isinstance(data, (str, os.PathLike)) else ds.meta.get("source", "")}

    net.train()
    step = start
    bar = tqdm(total=train.steps, initial=start, desc=f"train {stage}", unit="it", disable=not train.progress,
               dynamic_ncols=True)
    try:
        with _sigterm_as_interrupt():
            while step < train.steps:
                t0 = time.perf_counter()
                for group in opt.param_groups:
                    group["lr"] = lr_at(step, train.lr, train.warmup_steps, train.steps)
                frames, actions = sampler.sample(train.batch_size)
                frames, actions = frames.to(device, non_blocking=True), actions.to(device)
                with _autocast(device):
                    loss, m = forward(net, frames, actions)
                if not torch.isfinite(loss):
                    raise WmfastError(f"{stage}: loss became {float(loss)} at step {step}; lower --lr")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(net.parameters(), train.grad_clip)
                opt.step()
                step += 1
                tracker.update(loss, m, grad_norm, opt.param_groups[0]["lr"], train.batch_size,
                               time.perf_counter() - t0)
                if step % train.log_every == 0 or step == train.steps:
                    row = tracker.flush(step)
                    bar.set_postfix({k: f"{row[k]:.3g}" for k in tracker.headline if k in row})
                if step % train.save_every == 0 and step < train.steps:
                    _save_checkpoint(folder, net, opt, step, sampler, train, meta)
                bar.update(1)
                if callback is not None:
                    callback(step, net)
    except KeyboardInterrupt:
        _save_checkpoint(folder, net, opt, step, sampler, train, meta)
        bar.close()
        raise
    bar.close()
    _save_checkpoint(folder, net, opt, step, sampler, train, meta)
    plot_curves(os.path.join(folder, METRICS), os.path.join(folder, "curves.png"), stage)
    return tracker.final()
