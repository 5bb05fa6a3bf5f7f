"""The world model's three stages on the one training loop (wmfast.train.loop).

    train_stage("tokenizer", run_dir, "game:pong")   # then "actions", then "dynamics"

AdamW with warmup + cosine, gradient clipping, bf16 autocast on GPU, optional torch.compile,
metrics.jsonl + curves.png, and atomic checkpoints: model.safetensors + config.json for users,
train_state.pt (weights, optimizer, step, RNG states; tensors and plain data only) for --resume.
A run killed by Ctrl-C / SIGTERM saves its last finished step first, so resuming loses nothing
and matches an uninterrupted run. This file holds what is the world model's own: the stages'
configs, their data and MaskGIT draws, and the checks before anything is written.
"""
import dataclasses
import os
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
import torch.nn as nn

from wmfast.checkpoint import STAGES, load_config, load_model, save_model
from wmfast.config import Config, Range, load_json, save_json
from wmfast.device import resolve_device  # noqa: F401  (one definition; lapa and policy import it here)
from wmfast.errors import WmfastError
from wmfast.models.dynamics import DynamicsModel
from wmfast.train import distributed
from wmfast.train.loop import Loop, Stage, cosine, optimizer, rng_state, set_rng_state, truncate_metrics
from wmfast.train.metrics import StageMetrics, plot_curves
from wmfast.train.presets import PRESETS, preset_training, preset_values

TRAIN_STATE, TRAIN_CONFIG, METRICS = "train_state.pt", "train_config.json", "metrics.jsonl"


SHARE = Range(0, 1)


@dataclass
class TrainConfig(Config):
    steps: int = 2000
    batch_size: int = 16
    lr: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    # Frames per training clip. For the dynamics it is the context length, and its clips have one frame
    # more: a rollout predicts frame C+1 from C context frames, so training shows that same window
    # (with C-frame clips the rollout's window has a temporal position and a context length the
    # model never saw, and the moved agent vanishes from rollouts).
    clip_len: int = 4
    stride: int = 1             # frames between consecutive clip frames
    seed: int = 0
    device: str = "auto"        # "auto" | "cpu" | "cuda"
    compile: bool = False
    log_every: int = 25
    save_every: int = 250
    val_fraction: float = 0.1
    preset: str = "small"       # model size preset (wmfast.train.PRESETS)
    progress: bool = True
    # Footage re-encodings (wmfast.data.footage.AUGMENTATIONS, comma-separated) applied to a share
    # augment_prob of the training clips, so a model holds up on footage made other ways. "": none.
    augment: str = ""
    augment_prob: float = field(default=0.5, metadata={"rule": SHARE})

    def check(self):
        from wmfast.data.footage import AUGMENTATIONS, check_variants

        check_variants(self.augment, AUGMENTATIONS)


@dataclass
class DynamicsTrainConfig(TrainConfig):
    """The dynamics stage's TrainConfig: also how its training clips are drawn and masked. None (the
    default) takes the preset's value (wmfast.train.presets.STAGE_TRAINING; tinyworlds' 0 without one)."""
    # Share of training clips whose context frames stay unmasked while only the last frame is masked:
    # rollouts always predict a fully masked frame after a complete context, which tinyworlds' scheme
    # (every frame masked at the same ratio) rarely shows the model. 0 keeps tinyworlds' training.
    future_mask_prob: Optional[float] = field(default=None, metadata={"rule": SHARE})
    # Share of training clips with a pause: from a random frame on, the clip repeats that frame for a
    # random number of frames (possibly to the end), then goes on. Game footage rarely shows a still
    # context window, or a move out of one: without such clips a held NOOP makes the model drop the
    # agent once the context is still, and the first move after a stop loses it (1 in 10 moves after
    # a still window on maze). The LAM codes the pause from the frames (no true action is used).
    # 0: tinyworlds.
    pause_clip_prob: Optional[float] = field(default=None, metadata={"rule": SHARE})

    def __post_init__(self):
        preset = preset_training(self.preset, "dynamics") if isinstance(self.preset, str) else {}
        for name in DYNAMICS_TRAINING_FIELDS:
            if getattr(self, name) is None:
                setattr(self, name, float(preset.get(name, 0.0)))


DYNAMICS_TRAINING_FIELDS = ("future_mask_prob", "pause_clip_prob")


@dataclass
class ActionsTrainConfig(TrainConfig):
    """The LAM stage's TrainConfig: also the opt-in few-label mode."""
    # Share of the training episodes' transitions whose true action supervises the LAM (a linear head on
    # its latent, ConvLamConfig.label_classes); the action map is then fitted on those transitions only.
    # 0 (the default): frames alone. Users often have a few minutes of play with key logs (LAOM: 2.5%).
    label_fraction: float = field(default=0.0, metadata={"rule": SHARE})
    # Few-label mode: clips holding a labelled transition added to every step's batch, so the few labels
    # train every step (at 2.5% a batch of 16 random 4-frame clips holds about one label).
    label_batch: int = field(default=8, metadata={"rule": Range(1)})


# stage -> its training config class (TrainConfig for the others)
STAGE_TRAIN_CONFIGS = {"dynamics": DynamicsTrainConfig, "actions": ActionsTrainConfig}


def stage_train_config(stage: str, train: TrainConfig) -> TrainConfig:
    """train as the stage's training config class: a plain TrainConfig given for the dynamics gains the
    preset's clip settings; a DynamicsTrainConfig given for another stage loses them (only the
    dynamics is trained on them)."""
    cls = STAGE_TRAIN_CONFIGS.get(stage, TrainConfig)
    if type(train) is cls:
        return train.validate()
    return cls(**{k: v for k, v in dataclasses.asdict(train).items() if k in _fields(cls)})


# -- configs -----------------------------------------------------------------------------------

def _fields(cls) -> set:
    return {f.name for f in dataclasses.fields(cls)}


def stage_config(stage: str, run_dir: str, train: TrainConfig, overrides: dict):
    """The stage's model config: preset, then the earlier stages' facts, then user overrides."""
    if train.preset not in PRESETS:
        raise WmfastError(f"unknown preset {train.preset!r} (choose from {sorted(PRESETS)})")
    cfg_cls = STAGES[stage][1]
    unknown = sorted(set(overrides) - set(cfg_cls.settable()))
    if unknown:
        raise WmfastError(f"unknown {stage} config keys {unknown}")
    values = preset_values(train.preset, stage, set(cfg_cls.settable()))
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

    def __call__(self, model, frames, true_actions, noise=None, pause=None, labels=None):
        """noise: the dynamics' MaskGIT draws (see DynamicsModel.training_loss); pause: (pause_from [B],
        pause_len [B]) for pause_clips, None for clips as sampled; labels: the few-label mode's true
        actions of the labelled transitions (-1 elsewhere), None without it."""
        if self.stage == "tokenizer":
            recon, loss, m = model(frames)
            m["mse"] = (recon.detach().float() - frames).pow(2).mean()
            return loss, m
        if self.stage == "actions":
            _, loss, m = model(frames) if labels is None else model(frames, labels)
            m["true_actions"] = true_actions
            return loss, m
        if pause is not None:
            frames = pause_clips(frames, *pause)
        with torch.no_grad():
            idx = self.tokenizer.encode(frames, check=False)                    # [B, T, P]
            lat = self.tokenizer.latents(idx, check=False)                      # [B, T, P, L]
            act = self.lam.encode(frames)                                       # [B, T-1, A]
        _, loss, m = model.training_loss(lat, idx, act, noise=noise)
        return loss, m


def pause_clips(frames, pause_from, pause_len=None):
    """frames [B, T, ...], pause_from [B] int, pause_len [B] int: a pause of pause_len[b] frames that repeat
    frame pause_from[b] - 1, after which the clip goes on from frame pause_from[b] (pause_len None: the pause
    lasts to the end; pause_from >= T leaves a clip as it is)."""
    T = frames.shape[1]
    t = torch.arange(T, device=frames.device)[None, :]
    start = pause_from[:, None]
    length = torch.full_like(start, T) if pause_len is None else pause_len[:, None]
    src = torch.where(t < start, t, torch.where(t < start + length, start - 1, t - length))   # [B, T]
    return frames[torch.arange(frames.shape[0], device=frames.device)[:, None], src]


# -- many processes: one module for DDP, keyed randomness, global step values ------------------

class _StageModule(nn.Module):
    """The trained model plus its stage's loss as one module, so DDP sees every forward."""

    def __init__(self, net, step_fn):
        super().__init__()
        self.net = net
        self.step_fn = step_fn   # a plain object: the frozen earlier stages are neither trained nor synced

    def forward(self, frames, actions, noise=None, pause=None, labels=None):
        return self.step_fn(self.net, frames, actions, noise, pause, labels)


def _maskgit_noise(train: DynamicsTrainConfig, step: int, clip_ids, T: int, P: int, device):
    """MaskGIT randomness for this process's clips: the batch's mask ratio from a stream keyed by
    (seed, step), each clip's uniforms [T, P], kept frames [1, P] and clip draws from one keyed by
    (seed, step, clip) -- the same masks for a clip whatever the number of processes.
    -> (noise: (ratio [], uniforms [b, T, P], keep_frame [b, 1, P], last_frame_only [b] bool or None),
    pause: (pause_from [b], pause_len [b]) or None, number of masked tokens). last_frame_only: the clips
    drawn under train.future_mask_prob (None when it is 0); pause (only when train.pause_clip_prob > 0):
    pause_from is the first repeated frame (T for none) and pause_len 1 .. T - pause_from."""
    from wmfast.data.clips import keyed_rng

    ratio = np.float32(0.5) + np.float32(0.5) * keyed_rng(train.seed, step).random(dtype=np.float32)
    uniforms, keep, clip_u, pause_from, pause_len = [], [], [], [], []
    for clip in clip_ids.tolist():
        g = keyed_rng(train.seed, step, clip)
        uniforms.append(g.random((T, P), dtype=np.float32))
        keep.append(g.integers(0, T, size=(1, P)))
        clip_u.append(g.random(dtype=np.float32))
        if train.pause_clip_prob > 0:   # drawn last: the draws above stay the same with or without pauses
            start = int(g.integers(1, T)) if g.random() < train.pause_clip_prob else T
            pause_from.append(start)
            pause_len.append(int(g.integers(1, T - start + 1)) if start < T else 0)
    last_frame_only = (torch.tensor(clip_u, device=device) < train.future_mask_prob
                       if train.future_mask_prob > 0 else None)
    noise = (torch.tensor(ratio, device=device), torch.from_numpy(np.stack(uniforms)).to(device),
             torch.from_numpy(np.stack(keep)).to(device), last_frame_only)
    masked = int(DynamicsModel.training_mask(*noise).sum())
    pause = ((torch.tensor(pause_from, device=device), torch.tensor(pause_len, device=device))
             if train.pause_clip_prob > 0 else None)
    return noise, pause, masked


# -- the stage the one loop runs -----------------------------------------------------------------

class WorldModelStage(Stage):
    """One world-model stage on the one loop: this process's share of each step's global batch of
    clips (the same clips, and for the dynamics the same MaskGIT masks, for any process count)."""

    def __init__(self, stage: str, net, module, sampler, train: TrainConfig, cfg, folder: str, meta: dict,
                 device, main: bool):
        self.name, self.model, self.module, self.sampler, self.train = stage, net, module, sampler, train
        self.cfg, self.folder, self.meta, self.device = cfg, folder, meta, device
        self.clip_frames = train.clip_len + (stage == "dynamics")
        # Every process keeps the (global) metrics; only rank 0 writes them.
        self.tracker = StageMetrics(stage, net, os.path.join(folder, METRICS) if main else os.devnull)

    def batch(self, step):
        where = (step, self.train.batch_size, distributed.rank(), distributed.world_size())
        frames, actions, clip_ids = self.sampler.batch_at(*where)
        labels = None
        if self.sampler.labelled is not None:
            more_frames, more_actions, more_labels = self.sampler.labelled_batch_at(step, self.train.label_batch,
                                                                                    *where[2:])
            frames, actions = torch.cat([frames, more_frames]), torch.cat([actions, more_actions])
            labels = torch.cat([self.sampler.labels_at(*where), more_labels]).to(self.device)
        return [(frames.to(self.device, non_blocking=True), actions.to(self.device), clip_ids, step, labels)]

    def loss(self, batch):
        frames, actions, clip_ids, step, labels = batch
        noise, pause, weight = None, None, float(frames.shape[0])
        if self.name == "dynamics":
            noise, pause, weight = _maskgit_noise(self.train, step, clip_ids, self.clip_frames,
                                                  self.cfg.num_patches, self.device)
        loss, m = self.module(frames, actions, noise, pause, labels)
        return loss, m, weight

    def after_step(self, step, result):
        self.tracker.update(torch.tensor(result.loss), result.metrics, result.grad_norm, result.lr,
                            self.train.batch_size, result.seconds)
        if step % self.train.log_every == 0 or step == self.train.steps:
            row = self.tracker.flush(step)
            return {k: f"{row[k]:.3g}" for k in self.tracker.headline if k in row}
        return None

    def state(self):
        return {"rng": rng_state(self.sampler.rng)}

    def load_state(self, state):
        set_rng_state(self.sampler.rng, state["rng"])

    def save(self, step):
        save_model(self.model, self.folder, metadata={"step": step, **self.meta})
        save_json(self.train.to_dict(), os.path.join(self.folder, TRAIN_CONFIG))


# -- checks before anything is written (issue 19): the run's data, --resume consistency ---------

# TrainConfig fields that shape a run's result: --resume refuses to change them without force.
RESUME_FIELDS = ("preset", "steps", "lr", "warmup_steps", "batch_size", "clip_len", "stride", "seed",
                 "weight_decay", "grad_clip", "val_fraction", "augment", "augment_prob")
EARLIER = {"tokenizer": (), "actions": ("tokenizer",), "dynamics": ("actions", "tokenizer")}


def saved_train_config(run_dir, stage: str):
    """The training config a stage was trained with, as its stage's class (None when it has none).
    A dynamics run from before DynamicsTrainConfig kept future_mask_prob / pause_clip_prob in its
    config.json: those values are the ones it was trained with, so they win over the preset's."""
    path = os.path.join(run_dir, stage, TRAIN_CONFIG)
    if not os.path.exists(path):
        return None
    values = load_json(path)
    cls = STAGE_TRAIN_CONFIGS.get(stage, TrainConfig)
    model_path = os.path.join(run_dir, stage, "config.json")
    if cls is DynamicsTrainConfig and isinstance(values, dict) and os.path.exists(model_path):
        model_values = load_json(model_path)
        if isinstance(model_values, dict):
            values = {**{k: model_values[k] for k in DYNAMICS_TRAINING_FIELDS if k in model_values}, **values}
    return cls.from_dict(values, source=path)


def stage_data(stage: str, run_dir, data, resume: bool, force: bool):
    """The dataset to train on and its record (saved as STAGE/data.json). data=None: on resume the
    stage's own data, else the earlier stages' (the default game when there are none); a
    recorded file that changed since is refused. On resume, other data is refused unless force."""
    from wmfast.run_data import check_unchanged, data_record, describe, load_data_record, resolve_run_data, \
        same_data

    folder = os.path.join(run_dir, stage)
    own = load_data_record(folder) if resume else None
    if own is not None and data is None:
        if not force:
            check_unchanged(own, folder)
        data = own["data"]
    elif data is None or not resume:
        data = resolve_run_data(run_dir, data, EARLIER[stage])
    if not isinstance(data, (str, os.PathLike)):
        return data, {"data": str(getattr(data, "meta", {}).get("source", type(data).__name__))}
    rec = data_record(data)
    if own is not None and not force and not same_data(rec, own):
        raise WmfastError(f"cannot resume {folder}: it was trained on {describe(own)}, not --data {describe(rec)}; "
                          f"drop --data, or pass --resume --force to continue on the new data")
    return data, rec


def resume_config(folder, saved: TrainConfig, requested, cfg, overrides: dict, force: bool) -> TrainConfig:
    """The TrainConfig a resumed run continues with: the saved one; a requested one must agree on
    RESUME_FIELDS, and a requested stage config (DynamicsTrainConfig, ActionsTrainConfig) also on its
    stage's own fields (force: the requested values win); --set must agree with the saved model."""
    clash = {k: (v, cfg.setting(k)) for k, v in (overrides or {}).items() if cfg.setting(k) != v}
    if clash:
        k, (want, have) = next(iter(clash.items()))
        raise WmfastError(f"cannot resume {folder}: --set {k}={want} but the saved model has {k}={have} "
                          f"(a trained model's config cannot change); drop --set")
    if requested is None:
        return saved
    stage_fields = sorted(_fields(type(saved)) - _fields(TrainConfig)) if type(requested) is type(saved) else []
    fields = RESUME_FIELDS + tuple(stage_fields)
    diff = [k for k in fields if getattr(requested, k) != getattr(saved, k)]
    if diff and not force:
        k = diff[0]
        raise WmfastError(f"cannot resume {folder}: {k}={getattr(requested, k)!r} but the run was started with "
                          f"{k}={getattr(saved, k)!r}{' (and ' + ', '.join(diff[1:]) + ')' if diff[1:] else ''}; "
                          f"drop the option, or pass --resume --force to continue with the new value")
    return dataclasses.replace(saved, **{k: getattr(requested, k) for k in diff}, progress=requested.progress)


def few_label_config(cfg, ds):
    """The LAM config with a label head over the data's game actions (few-label mode)."""
    if ds.actions is None or not ds.n_actions:
        raise WmfastError(f"label_fraction needs true actions, and {ds.source} has none")
    if not hasattr(cfg, "label_classes"):
        raise WmfastError(f"label_fraction needs the conv LAM (architecture conv), not {cfg.ARCHITECTURE!r}")
    if cfg.label_classes not in (0, ds.n_actions):
        raise WmfastError(f"the LAM's label head has {cfg.label_classes} classes but {ds.source} has "
                          f"{ds.n_actions} game actions")
    return dataclasses.replace(cfg, label_classes=ds.n_actions)


def interrupted_message(stage: str, run_dir, step: int, total: int) -> str:
    import shlex

    return (f"saved {stage} at step {step} of {total} in {os.path.join(run_dir, stage)}; resume with: "
            f"wmfast train {stage} --run {shlex.quote(os.fspath(run_dir))} --resume")


def train_stage(stage: str, run_dir: str, data=None, train: TrainConfig = None, model: dict = None,
                resume: bool = False, callback=None, force: bool = False) -> dict:
    """Train one stage into run_dir/<stage>/ and return its final metrics.

    data: a dataset spec for wmfast.data.load_dataset, or a dataset object; None: the data the
    run's earlier stages were trained on (saved in STAGE/data.json), else the default game.
    train: a TrainConfig (the dynamics' is made a DynamicsTrainConfig: the preset's clip settings
    unless it is one already). model: overrides for the stage's config dataclass.
    resume: continue STAGE/train_state.pt; preset, schedule, --set and data must match the saved
    run unless force=True.
    callback(step, model): called after every optimizer step (tests use it to interrupt)."""
    from wmfast.data import ClipSampler, labelled_frames, load_dataset

    if stage not in STAGES:
        raise WmfastError(f"unknown stage {stage!r} (choose from {list(STAGES)})")
    requested = train
    train = stage_train_config(stage, train or TrainConfig())
    folder = os.path.join(run_dir, stage)
    state_path = os.path.join(folder, TRAIN_STATE)
    require_earlier_stages(stage, run_dir)
    data, data_rec = stage_data(stage, run_dir, data, resume and os.path.exists(state_path), force)
    if resume:
        if not os.path.exists(state_path):
            raise WmfastError(f"nothing to resume: {state_path} does not exist")
        saved = saved_train_config(run_dir, stage)
        if saved is None:
            raise WmfastError(f"cannot resume {folder}: missing file {os.path.join(folder, TRAIN_CONFIG)}")
        _, cfg = load_config(folder, stage)
        train = resume_config(folder, saved, requested, cfg, model, force)
    else:
        if os.path.exists(state_path):
            raise WmfastError(f"{folder} already holds a trained {stage}; pass --resume to continue it "
                              f"or choose another --run directory")
        cfg = stage_config(stage, run_dir, train, model or {})
    # Under torchrun (WORLD_SIZE > 1): join the process group; cuda:LOCAL_RANK + NCCL, or CPU + gloo.
    created_group = distributed.env_world_size() > 1 and not distributed.is_distributed()
    device = distributed.setup(train.device) if distributed.env_world_size() > 1 else resolve_device(train.device)
    main = distributed.is_main()
    distributed.check_divisible(train.batch_size)
    if stage == "actions" and train.label_fraction > 0:
        distributed.check_divisible(train.label_batch, "label_batch")
    torch.manual_seed(train.seed)

    with distributed.main_first():   # rank 0 generates and caches a game dataset, the others read it
        ds = load_dataset(data) if isinstance(data, (str, os.PathLike)) else data
    if main and stage == "actions" and ds.n_actions and ds.n_actions > cfg.n_actions:
        print(f"wmfast: note: the data has {ds.n_actions} true actions, the LAM {cfg.n_actions} codes")
    train_eps, _ = ds.split(train.val_fraction, seed=train.seed)
    labelled = None
    if stage == "actions" and train.label_fraction > 0:
        cfg = few_label_config(cfg, ds)
        labelled = labelled_frames(ds, train.label_fraction, train.seed, train_eps)
    clip_frames = train.clip_len + (stage == "dynamics")
    sampler = ClipSampler(ds, clip_len=clip_frames, stride=train.stride, frame_size=cfg.frame_size,
                          episodes=train_eps, seed=train.seed, labelled=labelled, augment=train.augment,
                          augment_prob=train.augment_prob)

    net = STAGES[stage][0](cfg).to(device)
    module = distributed.wrap(_StageModule(net, StageStep(stage, run_dir, device)), device)   # DDP when distributed
    meta = {"stage": stage, "data": str(data) if isinstance(data, (str, os.PathLike)) else ds.meta.get("source", "")}
    runner = WorldModelStage(stage, net, torch.compile(module) if train.compile else module, sampler, train, cfg,
                             folder, meta, device, main)
    loop = Loop(runner, optimizer(net, train.lr, train.weight_decay, betas=(0.9, 0.95)),
                lr=cosine(train.lr, train.warmup_steps, train.steps), grad_clip=train.grad_clip,
                amp="bf16", device=device, state_path=state_path)
    start = 0
    if resume:
        start = loop.resume()
        if start >= train.steps:
            raise WmfastError(f"nothing to resume: {folder} finished its {train.steps} steps "
                              f"(pass --steps N --resume --force to train further)")
        if main:
            truncate_metrics(os.path.join(folder, METRICS), start)
    os.makedirs(folder, exist_ok=True)
    if main:
        from wmfast.run_data import save_data_record

        save_data_record(folder, data_rec)
    step = loop.run(train.steps, start, save_every=train.save_every, progress=train.progress,
                    desc=f"train {stage}", callback=callback,
                    interrupted=lambda at: interrupted_message(stage, run_dir, at, train.steps))
    loop.save(step)
    if main:
        plot_curves(os.path.join(folder, METRICS), os.path.join(folder, "curves.png"), stage)
    distributed.barrier()
    if created_group:
        distributed.teardown()
    return runner.tracker.final()
