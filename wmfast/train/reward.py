"""The reward stage: fit a run's reward / episode-end head on its training episodes.

    info = train_reward("runs/maze")         # writes RUN/reward/ (model + config); -> what was fitted

Transitions (x_t, x_t+1) with the reward recorded on that step come from the episodes no world-model
stage held out; wmfast.eval.reward scores the head on the held-out ones, which it never saw
(`wmfast train reward` runs both and writes RUN/reward/report.json).
"""
import os

import numpy as np
import torch
import torch.nn.functional as F

from wmfast.checkpoint import save_model
from wmfast.data.dataset import read_array
from wmfast.data.frames import to_model_frames
from wmfast.errors import WmfastError
from wmfast.models.reward import RewardConfig, RewardHead
from wmfast.train.loop import Loop, Stage, optimizer

REWARD_FOLDER = "reward"
REWARD_STEPS = 1500


class RewardStage(Stage):
    """Cross-entropy over the reward values on batches where each value is equally likely, plus the
    episode-end BCE when the data records terminals."""
    name = "reward"

    def __init__(self, head, frames, pairs, classes, terminals, batch_size: int, generator):
        self.model, self.frames, self.pairs, self.classes = head, frames, pairs, classes
        self.terminals, self.batch_size, self.generator = terminals, batch_size, generator
        self.weights = 1.0 / torch.bincount(classes).float()[classes]            # every value equally likely

    def batch(self, step):
        return [torch.multinomial(self.weights, self.batch_size, replacement=True, generator=self.generator)]

    def loss(self, i):
        t = self.pairs[i]
        S = self.model.config.frame_size
        frame_t, frame_t1 = (to_model_frames(self.frames[t + k], S) for k in (0, 1))
        logits, end = self.model(frame_t, frame_t1)
        loss = F.cross_entropy(logits, self.classes[i])
        metrics = {"reward_loss": loss.detach()}
        if end is not None:
            # batches are balanced over rewards, not ends: weight the end loss back to the data's rate
            natural = 1.0 / self.weights[i]
            end_loss = F.binary_cross_entropy_with_logits(end, self.terminals[i].float(), weight=natural / natural.mean())
            loss, metrics["terminal_loss"] = loss + end_loss, end_loss.detach()
        return loss, metrics, float(len(i))


def world_frame_size(run: str) -> int:
    """The frames the head will score: the run's World's (its tokenizer's)."""
    from wmfast.checkpoint import load_config

    if not os.path.isfile(os.path.join(run, "tokenizer", "config.json")):
        raise WmfastError(f"{run}: no trained tokenizer; the reward stage scores a World's frames and holds out "
                          f"the run's validation episodes, so train the world model first (wmfast train tokenizer ...)")
    return load_config(os.path.join(run, "tokenizer"), "tokenizer")[1].frame_size


def load_reward_data(run: str, data, progress: bool = False) -> tuple:
    """The run's data (or `data`: a spec or Dataset), in memory, with rewards -> (dataset, its spec,
    terminals [N] bool or None when the file records none)."""
    from wmfast.data import load_dataset
    from wmfast.run_data import resolve_run_data

    if data is None or isinstance(data, (str, os.PathLike)):
        data = resolve_run_data(run, data)
    ds = load_dataset(data, progress=progress) if isinstance(data, (str, os.PathLike)) else data
    spec = os.fspath(data) if isinstance(data, (str, os.PathLike)) else ds.source
    if ds.rewards is None:
        raise WmfastError(f"{ds.source}: the data records no rewards (the reward head learns and is scored on them)")
    terminals = read_array(ds.source, "terminals") if os.path.isfile(ds.source) else None
    return ds.load_into_memory(), spec, terminals


def train_reward(run, data=None, steps: int = REWARD_STEPS, batch_size: int = 64, lr: float = 3e-3, seed: int = 0,
                 progress: bool = True) -> dict:
    """Fit RUN/reward/ on the run's training episodes; -> what was fitted."""
    from wmfast.latent_actions import held_out_episodes

    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise WmfastError(f"reward: --steps must be an integer >= 1, got {steps!r}")
    run = os.fspath(run)
    size = world_frame_size(run)
    ds, spec, terminals = load_reward_data(run, data, progress)
    held, _ = held_out_episodes(ds, run)
    train_eps = sorted(set(range(ds.n_episodes)) - set(held))
    t = ds.transitions(train_eps)
    values = sorted(float(v) for v in np.unique(ds.rewards[t]))
    if len(values) < 2:
        raise WmfastError(f"{ds.source}: every training transition has reward {values[0] if values else 0}; "
                          f"nothing to predict")
    cfg = RewardConfig(frame_size=size, reward_values=values, terminal=terminals is not None)
    pairs = torch.from_numpy(t)
    classes = torch.from_numpy(np.searchsorted(values, ds.rewards[t]))
    ends = torch.from_numpy(np.asarray(terminals)[t + 1]) if terminals is not None else None
    with torch.random.fork_rng(devices=[]):   # a seeded init that leaves the caller's RNG alone
        torch.manual_seed(seed)
        head = RewardHead(cfg)
    stage = RewardStage(head, ds.frames, pairs, classes, ends, batch_size, torch.Generator().manual_seed(seed))
    Loop(stage, optimizer(head, lr, kind="adam")).run(steps, progress=progress, desc="train reward")
    head.log_prior.copy_(torch.bincount(classes, minlength=len(values)).clamp(min=1).float().log())
    head.eval()
    folder = save_model(head, os.path.join(run, REWARD_FOLDER))
    return {"folder": folder, "data": spec, "fit_episodes": len(train_eps), "fit_transitions": len(pairs),
            "steps": steps, "seed": seed}
