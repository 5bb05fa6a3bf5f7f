"""Training image -> action-chunk policies on expert data, then DAgger rounds.

The recipe (`wmfast policy train --kind act --data game:reach --run DIR`, no other flags):
    10k samples: 5k from expert episodes, then 2 DAgger rounds of 2.5k each; AdamW lr 1e-3
    (cosine to 1e-4 after a short warmup), batch 64, 20 epochs in all (half on the expert data,
    the rest split over the rounds, each on everything gathered so far); MSE on the chunk.
    reach frames are randomly translated (random_shift): without it the 128 x 128 policy overfitted its
    ~500 expert episodes (validation MSE 0.15 -> 0.31 over the expert epochs) and reached the ball in 47%
    of held-out episodes; with it, 100% (docs/policy-reach/README.md).
DAgger round: the current policy drives (receding horizon dagger_horizon), and every frame it
visits is labelled with the expert's chunk from that state; the samples join the training set.

A sample is (frame t, the K actions t .. t+K-1, valid [K]): action k of the chunk is the action taken
at step t + k, which leads from frame t + k to t + k + 1. Near an episode's end the chunk runs past
the last action; those entries are marked invalid and left out of the loss (ACT's is_pad).
Discrete games (pong, maze, datasets with action ids) train the same way with cross-entropy per
query, on the dataset's recorded actions (no DAgger: their scripted policies are not experts), or,
with a teacher (`--teacher tracker` for game:pong, wmfast.policy.teachers), on teacher episodes plus
DAgger rounds in which the teacher labels the states the learner drives to, exactly as for reach,
with TEACHER_EPOCHS epochs instead of 20 by default.
"""
import dataclasses
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from wmfast.config import Config, save_json
from wmfast.errors import WmfastError
from wmfast.models.policy import POLICY_KINDS, PolicyConfig, to_input
from wmfast.checkpoint import save_model
from wmfast.models.policy import build_policy, count_params
from wmfast.train import distributed
from wmfast.train.loop import Loop, Stage, cosine, optimizer

# A discrete teacher's decisions have sharp edges (pong's aiming tracker: a 2-pixel dead band around a
# target that jumps with the opponent's side), and ACT's 8 queries start equal (zeros): the pong ACT's
# first action agreed with its teacher on 60% of the frames it visited after 20 epochs (no better than
# the later, unpredictable actions of the chunk), 79% after 60, 84% after 120, and its points lost
# (seed 7) fell from 0.21-0.77 to 0.07-0.71 per 100 steps (docs/policy-pong/README.md).
TEACHER_EPOCHS = 120


@dataclasses.dataclass
class PolicyTrainConfig(Config):
    kind: str = "act"
    data: str = "game:reach"
    samples: int = 10000          # training samples in all (expert + DAgger)
    expert_fraction: float = 0.5  # of `samples` from expert episodes; the rest from DAgger rounds
    dagger_rounds: int = 2
    dagger_horizon: int = 2       # actions per inference while the learner drives
    epochs: int = 0               # in all: half on the expert data, the rest split over the DAgger rounds;
    # 0: auto = 20, or TEACHER_EPOCHS with a discrete teacher (see auto_epochs)
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    chunk: int = 8                # bc: always 1
    frame_size: int = dataclasses.field(default=0, metadata={"rule": lambda v: None if v >= 0 else ">= 0"})
    # frame_size 0: 128 for reach, 64 for discrete games
    val_fraction: float = 0.05    # held-out expert episodes for val_loss
    teacher: str = ""             # discrete embedded games: a scripted teacher (pong: tracker) instead of the data
    shift: int = -1               # random translation of each training frame by up to this many pixels per axis,
    # never moving content off the frame (reach: label-preserving, the expert's action depends only on ball -
    # effector); -1: auto = the whole frame for reach, 0 (off) for discrete games; 0: off
    episode_steps: int = 200      # teacher / DAgger episodes: steps per episode
    seed: int = 0
    device: str = "auto"          # auto: cuda when available


# ---------------------------------------------------------------- samples

def chunk_targets(actions: np.ndarray, k: int, discrete: bool = False):
    """One episode's actions [T+1, ...] (the last frame's action is NaN / -1: nothing follows it)
    -> targets [T, k, ...] and valid [T, k] for the frames 0 .. T-1 that have an action.
    targets[t, j] = actions[t + j] where t + j < T (a known action of this episode), else 0 / invalid."""
    T = len(actions) - 1
    if T < 1:
        return actions[:0, None].repeat(k, 1), np.zeros((0, k), bool)
    idx = np.arange(T)[:, None] + np.arange(k)[None, :]                      # [T, k]
    inside = idx < T
    targets = actions[np.minimum(idx, T - 1)].copy()
    known = (targets >= 0) if discrete else np.isfinite(targets).all(-1)
    valid = inside & known
    targets[~valid] = 0
    return targets, valid


class Samples:
    """frames [N, S, S, 3] uint8, targets [N, K, D] float32 (or [N, K] int64), valid [N, K] bool."""

    def __init__(self, frames, targets, valid):
        self.frames, self.targets, self.valid = frames, targets, valid

    def __len__(self):
        return len(self.frames)

    @classmethod
    def from_episodes(cls, episodes, k: int, discrete: bool = False, limit: int = None) -> "Samples":
        fs, ts, vs = [], [], []
        for frames, actions in episodes:
            t, v = chunk_targets(actions, k, discrete)
            fs.append(frames[:len(t)])
            ts.append(t)
            vs.append(v)
        s = cls(np.concatenate(fs), np.concatenate(ts), np.concatenate(vs))
        return s.take(np.arange(min(len(s), limit))) if limit else s

    def take(self, idx) -> "Samples":
        return Samples(self.frames[idx], self.targets[idx], self.valid[idx])

    def __add__(self, other: "Samples") -> "Samples":
        return Samples(*(np.concatenate([a, b]) for a, b in
                         ((self.frames, other.frames), (self.targets, other.targets), (self.valid, other.valid))))


def chunk_loss(pred, target, valid, discrete: bool):
    """pred [B, K, D]; target [B, K, D] floats (MSE) or [B, K] ids (cross-entropy); valid [B, K]."""
    if discrete:
        per = F.cross_entropy(pred.flatten(0, 1), target.flatten(), reduction="none").view(valid.shape)
    else:
        per = (pred - target).square().mean(-1)                                  # [B, K]
    w = valid.float()
    return (per * w).sum() / w.sum().clamp_min(1.0)


# ---------------------------------------------------------------- data sources

def is_reach(spec) -> bool:
    from wmfast.data.reach import has_continuous_actions

    spec = os.fspath(spec)
    return spec.split(":")[:2] == ["game", "reach"] or (os.path.isfile(spec) and has_continuous_actions(spec))


def reach_expert_samples(spec, n: int, k: int, size: int, seed: int, progress: bool):
    """Expert episodes (generated for game:reach, or read from a reach dataset file) -> episodes list."""
    from wmfast.data.reach import expert_episodes, read_reach_dataset

    if os.path.isfile(os.fspath(spec)):
        eps = read_reach_dataset(spec)
        if eps[0][0].shape[1] != size:
            from wmfast.data.frames import resize_uint8

            eps = [(resize_uint8(f, size), a) for f, a in eps]
        return eps
    return expert_episodes(n, size, seed, progress)


def discrete_episodes(spec, size: int, progress: bool):
    """A dataset with action ids -> (episodes [(frames, actions)] at `size`, action names, game name, the
    size the data's frames were made at: an embedded game's policy sees its renders resized the same way)."""
    from wmfast.data import load_dataset
    from wmfast.data.frames import resize_uint8

    ds = load_dataset(spec, size=size, progress=progress)
    if ds.actions is None or (ds.actions >= 0).sum() == 0:
        raise WmfastError(f"{spec}: the dataset has no actions to imitate")
    frames = np.asarray(ds.frames[:])
    made_at = frames.shape[1]
    if frames.shape[1] != size or frames.shape[2] != size:
        frames = resize_uint8(frames, size)
    eps = [(frames[s:e], ds.actions[s:e]) for s, e in ds.episodes]
    return eps, ds.action_names, ds.meta.get("game", ""), made_at


# ---------------------------------------------------------------- training

def _split_epochs(total: int, rounds: int):
    """Epochs per phase: half on the expert data, the rest evenly over the DAgger rounds."""
    if rounds == 0:
        return [total]
    first = max(1, total // 2)
    rest = max(rounds, total - first)
    return [first] + [rest // rounds + (1 if r < rest % rounds else 0) for r in range(rounds)]


def random_shift(frames: np.ndarray, max_shift: int, rng, background=None) -> np.ndarray:
    """Translate each frame [B, S, S, 3] uint8 by a random integer offset of at most max_shift pixels per
    axis, chosen so that nothing but background leaves the frame: the content's bounding box (pixels that
    differ from `background`, default each frame's top-left pixel) stays inside. The uncovered border
    is background, so a roll (whose wrapped-around part is pure background) is the exact translation."""
    B, S = frames.shape[:2]
    bg = np.asarray(background, np.uint8)[None] if background is not None else frames[:, 0, 0]   # [B or 1, 3]
    content = (frames != bg[:, None, None]).any(-1)                                   # [B, S, S]
    out = np.empty_like(frames)
    for b in range(B):
        rows, cols = np.flatnonzero(content[b].any(1)), np.flatnonzero(content[b].any(0))
        if len(rows) == 0:   # all background: nothing to move
            out[b] = frames[b]
            continue
        dy = rng.integers(max(-max_shift, -rows[0]), min(max_shift, S - 1 - rows[-1]) + 1)
        dx = rng.integers(max(-max_shift, -cols[0]), min(max_shift, S - 1 - cols[-1]) + 1)
        out[b] = np.roll(frames[b], (dy, dx), axis=(0, 1))
    return out


def _batch(model, data: Samples, idx, discrete: bool, shift: int = 0, rng=None, background=None):
    dev = next(model.parameters()).device
    frames = data.frames[idx]
    if shift > 0:
        frames = random_shift(frames, shift, rng, background)
    x = to_input(torch.from_numpy(frames).to(dev)).contiguous(memory_format=torch.channels_last)
    t = torch.from_numpy(data.targets[idx]).to(dev)
    return chunk_loss(model(x), t, torch.from_numpy(data.valid[idx]).to(dev), discrete)


@torch.no_grad()
def eval_loss(model, data: Samples, discrete: bool, batch: int = 256) -> float:
    if data is None or len(data) == 0:
        return float("nan")
    model.eval()
    total, n = 0.0, 0
    for i in range(0, len(data), batch):
        idx = np.arange(i, min(i + batch, len(data)))
        total += float(_batch(model, data, idx, discrete)) * len(idx)
        n += len(idx)
    model.train()
    return total / n


class PolicyStage(Stage):
    """Behaviour cloning on the one loop: shuffled epochs over `data` (a last batch too small to give
    every process a sample is skipped), one validation row in metrics.jsonl per epoch."""
    name = "policy"

    def __init__(self, model, data: Samples, cfg: PolicyTrainConfig, rng, log=None, val: Samples = None):
        self.model, self.module = model, distributed.wrap(model, next(model.parameters()).device)
        self.data, self.cfg, self.rng, self.log, self.val = data, cfg, rng, log, val
        self.discrete = model.config.discrete
        self.shift, self.background = _shift(cfg, model.config)
        self.queue, self.epoch_loss, self.epoch_steps, self.epoch_start = [], 0.0, 0, time.time()

    def steps_per_epoch(self) -> int:
        n, bs, world = len(self.data), self.cfg.batch_size, distributed.world_size()
        return sum(1 for i in range(0, n, bs) if min(bs, n - i) >= world)

    def batch(self, step):
        if not self.queue:   # a new epoch
            perm = self.rng.permutation(len(self.data))
            batches = [np.sort(perm[i:i + self.cfg.batch_size]) for i in range(0, len(perm), self.cfg.batch_size)]
            self.queue = [idx for idx in batches if len(idx) >= distributed.world_size()]
            self.epoch_start = time.time()
        idx = self.queue.pop(0)
        return [np.array_split(idx, distributed.world_size())[distributed.rank()]]   # this process's share

    def loss(self, local):
        loss = _batch(self.module, self.data, local, self.discrete, self.shift, self.rng, self.background)
        return loss, {}, float(self.data.valid[local].sum())   # a mean over valid targets

    def after_step(self, step, result):
        self.epoch_loss += result.loss
        self.epoch_steps += 1
        if not self.queue and self.log is not None and distributed.is_main():   # the epoch is done
            self.log({"step": step, "loss": self.epoch_loss / self.epoch_steps,
                      "val_loss": eval_loss(self.model, self.val, self.discrete), "lr": result.lr,
                      "samples": len(self.data), "epoch_s": time.time() - self.epoch_start})
        if not self.queue:
            self.epoch_loss, self.epoch_steps = 0.0, 0
        return {"loss": f"{result.loss:.4f}"}


def fit(model, data: Samples, epochs: int, cfg: PolicyTrainConfig, opt=None, step: int = 0, total_steps: int = None,
        rng=None, bar=None, log=None, val: Samples = None):
    """Train `model` on `data` for `epochs` epochs (shuffled, last batch partial). Returns (opt, step)."""
    stage = PolicyStage(model, data, cfg, rng or np.random.default_rng(cfg.seed), log, val)
    opt = opt or optimizer(model, cfg.lr, cfg.weight_decay)
    total_steps = total_steps or epochs * math.ceil(len(data) / cfg.batch_size)
    loop = Loop(stage, opt, lr=cosine(cfg.lr, cfg.warmup_steps, total_steps),
                device=next(model.parameters()).device)
    step = loop.run(step + epochs * stage.steps_per_epoch(), step, bar=bar)
    return opt, step


def train_policy(run_dir, cfg: PolicyTrainConfig = None, progress: bool = True) -> dict:
    """Train a policy into run_dir (model.safetensors, config.json, train.json, metrics.jsonl, curves.png).
    Returns the summary (also in train.json)."""
    cfg = cfg or PolicyTrainConfig()
    if cfg.kind not in POLICY_KINDS:
        raise WmfastError(f"--kind must be one of {POLICY_KINDS}, got {cfg.kind!r}")
    for name in ("samples", "batch_size"):
        if getattr(cfg, name) < 1:
            raise WmfastError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.epochs < 0:
        raise WmfastError(f"epochs must be >= 1 (or 0: auto), got {cfg.epochs}")
    if cfg.dagger_rounds < 0 or not 0 < cfg.expert_fraction <= 1 or cfg.lr <= 0:
        raise WmfastError("need dagger_rounds >= 0, 0 < expert_fraction <= 1 and lr > 0")
    if cfg.shift < -1:
        raise WmfastError(f"shift must be -1 (auto), 0 (off) or a number of pixels, got {cfg.shift}")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    k = 1 if cfg.kind == "bc" else cfg.chunk
    reach = is_reach(cfg.data)
    teacher_game = _teacher_game(cfg) if cfg.teacher and not reach else ""
    cfg = dataclasses.replace(cfg, epochs=cfg.epochs or auto_epochs(teacher_game))
    size = cfg.frame_size or (128 if reach else 64)
    rounds = cfg.dagger_rounds if reach or teacher_game else 0
    n_expert = int(round(cfg.samples * cfg.expert_fraction)) if rounds else cfg.samples

    if reach:
        episodes = reach_expert_samples(cfg.data, n_expert, k, size, cfg.seed, progress)
        pcfg = PolicyConfig(kind=cfg.kind, frame_size=size, chunk=k, game="reach")
    elif teacher_game:
        from wmfast.data.games import GAMES
        from wmfast.policy.teachers import teacher_episodes

        episodes = teacher_episodes(teacher_game, cfg.teacher, n_expert, cfg.episode_steps, size, cfg.seed, progress)
        names = GAMES[teacher_game].action_names
        pcfg = PolicyConfig(kind=cfg.kind, frame_size=size, chunk=k, action_space="discrete", num_actions=len(names),
                            action_names=tuple(names), game=teacher_game, teacher=cfg.teacher)
    else:
        episodes, names, game, made_at = discrete_episodes(cfg.data, size, progress)
        pcfg = PolicyConfig(kind=cfg.kind, frame_size=size, chunk=k, action_space="discrete",
                            num_actions=len(names), action_names=tuple(names), game=game,
                            render_size=made_at if made_at != size else 0)
    # Hold out whole expert episodes for the validation loss.
    order = rng.permutation(len(episodes))
    n_val = min(len(episodes) - 1, math.ceil(cfg.val_fraction * len(episodes))) if cfg.val_fraction > 0 else 0
    val = Samples.from_episodes([episodes[i] for i in order[:n_val]], k, pcfg.discrete) if n_val else None
    data = Samples.from_episodes([episodes[i] for i in sorted(order[n_val:])], k, pcfg.discrete, limit=n_expert)

    from wmfast.train.trainer import resolve_device

    # Under torchrun: one process per device, DDP (gloo on CPU, NCCL on GPU); only rank 0 writes.
    created_group = distributed.env_world_size() > 1 and not distributed.is_distributed()
    device = distributed.setup(cfg.device) if distributed.env_world_size() > 1 else resolve_device(cfg.device)
    main = distributed.is_main()
    model = build_policy(pcfg).to(device, memory_format=torch.channels_last)
    os.makedirs(run_dir, exist_ok=True)
    metrics_path = os.path.join(run_dir, "metrics.jsonl")
    if main:
        open(metrics_path, "w").close()
    phase = {"round": 0}

    def log(row):
        row = {**row, "round": phase["round"]}
        with open(metrics_path, "a") as f:
            import json

            f.write(json.dumps(row) + "\n")

    epochs = _split_epochs(cfg.epochs, rounds)
    per_round = (cfg.samples - n_expert) // max(rounds, 1)
    sizes = [len(data) + r * per_round for r in range(rounds + 1)]
    total_steps = sum(e * math.ceil(s / cfg.batch_size) for e, s in zip(epochs, sizes))
    t0 = time.time()
    summary = {"kind": cfg.kind, "params": count_params(model), "train": cfg.to_dict(), "rounds": []}
    bar = tqdm(total=total_steps, desc=f"policy {cfg.kind}", unit="step", disable=not (progress and main))
    opt, step = fit(model, data, epochs[0], cfg, None, 0, total_steps, rng, bar, log, val)
    if main:
        save_model(model, run_dir, {"step": step})
    for r in range(1, rounds + 1):
        phase["round"] = r
        got, stats = [], []
        e = 0
        while sum(len(g[0]) for g in got) < per_round:  # learner drives, expert labels, until enough samples
            seeds = [_dagger_seed(cfg.seed, r, e + i) for i in range(32)]
            e += 32
            need = per_round - sum(len(g[0]) for g in got)
            labelled, stat = _dagger_batch(model, cfg, seeds, k, size, teacher_game, need)
            got.append(labelled)
            stats.append(stat)
        f, a, v = (np.concatenate(x)[:per_round] for x in zip(*got))
        data = data + Samples(f, a, v)
        name = "learner_return_per_100" if teacher_game else "learner_success"
        score = float(np.concatenate(stats).mean())
        summary["rounds"].append({"round": r, name: score, "samples": len(data)})
        bar.write(f"DAgger round {r}: {name} {score:.2f} while collecting; {len(data)} samples")
        opt, step = fit(model, data, epochs[r], cfg, opt, step, total_steps, rng, bar, log, val)
        if main:
            save_model(model, run_dir, {"step": step})
    bar.close()
    summary.update(steps=step, samples=len(data), seconds=time.time() - t0, threads=torch.get_num_threads(), device=str(device),
                   val_loss=eval_loss(model, val, pcfg.discrete))
    if main:
        save_model(model.to("cpu", memory_format=torch.contiguous_format), run_dir, {"step": step})
        save_json(summary, os.path.join(run_dir, "train.json"))
        from wmfast.train.metrics import plot_curves

        plot_curves(metrics_path, os.path.join(run_dir, "curves.png"), title=f"policy {cfg.kind} on {cfg.data}")
    distributed.barrier()
    if created_group:
        distributed.teardown()
    return summary


def _shift(cfg: PolicyTrainConfig, pcfg) -> tuple:
    """(max shift in pixels, background colour) of the training augmentation; (0, None) when off."""
    if cfg.shift == 0 or (cfg.shift < 0 and pcfg.game != "reach"):
        return 0, None
    from wmfast.data.reach import Reach

    return (pcfg.frame_size if cfg.shift < 0 else cfg.shift), (Reach.BG if pcfg.game == "reach" else None)


def auto_epochs(teacher_game: str) -> int:
    """The recipe's epochs: 20 (reach, datasets), TEACHER_EPOCHS when imitating a discrete teacher."""
    return TEACHER_EPOCHS if teacher_game else 20


def _teacher_game(cfg: PolicyTrainConfig) -> str:
    """The embedded game a teacher plays: --teacher needs game:NAME data (the teacher makes the episodes)."""
    from wmfast.policy.teachers import get_teacher

    kind, _, rest = os.fspath(cfg.data).partition(":")
    name = rest.partition(":")[0]
    if kind != "game" or not name:
        raise WmfastError(f"--teacher {cfg.teacher} plays an embedded game: use --data game:NAME, got {cfg.data!r}")
    get_teacher(name, cfg.teacher)
    if cfg.episode_steps < 1:
        raise WmfastError(f"episode_steps must be >= 1, got {cfg.episode_steps}")
    return name


def _dagger_batch(model, cfg: PolicyTrainConfig, seeds, k: int, size: int, teacher_game: str, need: int):
    """The learner plays one episode per seed (receding horizon cfg.dagger_horizon); the expert / teacher
    labels every visited frame with its chunk -> ((frames, targets, valid), per-episode score)."""
    from wmfast.policy.evaluate import play_discrete, policy_chooser, predictor, rollout_reach

    h = min(cfg.dagger_horizon, k)
    if not teacher_game:
        out = rollout_reach(predictor(model), seeds, h, size=size, label_chunk=k)
        return out["dagger"], out["success"]
    from wmfast.policy.teachers import get_teacher

    seeds = seeds[:math.ceil(need / cfg.episode_steps)]   # fixed-length episodes: no more than needed
    out = play_discrete(teacher_game, policy_chooser(predictor(model), len(seeds), h), seeds, cfg.episode_steps,
                        size, label=(get_teacher(teacher_game, cfg.teacher), k))
    return out["dagger"], out["rewards"].sum(1) * 100.0 / cfg.episode_steps


def _dagger_seed(seed: int, round_: int, episode: int) -> int:
    from wmfast.data.reach import episode_seed

    return episode_seed(seed * 1000 + round_, episode, 1)
