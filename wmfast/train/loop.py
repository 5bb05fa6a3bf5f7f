"""The one training loop. Every trainable thing is a Stage run by a Loop: the three world-model
stages (train/trainer.py), LAPA (lapa/train.py), its code classifier (lapa/classifier.py), the
frame-conditioned action map (action_map.py) and the policies (policy/train.py).

    loop = Loop(stage, optimizer(stage.model, lr), lr=cosine(lr, warmup, steps), grad_clip=1.0,
                state_path="run/stage/train_state.pt")
    start = loop.resume() if resume else 0
    loop.run(steps, start, save_every=250, desc="train stage")

A Stage says what one step computes: `batch(step)` -> the micro-batches of that optimizer step,
`loss(batch)` -> (loss, metrics, weight); `after_step(step, result)` logs and validates;
`state()` / `load_state()` carry its own RNG streams and bookkeeping through a checkpoint, and
`save(step)` writes the user-facing model files. The loop owns the rest: the learning rate, gradient
accumulation, clipping, autocast (+ a grad scaler for fp16) on GPU, DDP's global-batch gradient,
the finite-loss check, the progress bar (rate, ETA), Ctrl-C / SIGTERM (stop after the step in flight
and save it) and the atomic train_state.pt that makes a resumed run match an uninterrupted one.
"""
import contextlib
import json
import math
import os
import signal
import time
from dataclasses import dataclass

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from wmfast.checkpoint import load_state_dict_checked, load_torch_safe, save_torch_atomic
from wmfast.errors import WmfastError
from wmfast.train import distributed
from wmfast.train.schedule import lr_at

# Metrics that are code indices: gathered across processes, not averaged.
AMP = ("bf16", "fp16", "none")   # autocast dtypes on a GPU (the CPU always runs fp32)
INDEX_KEYS = ("indices", "action_indices", "true_actions")


class Stage:
    """What one training step computes. Subclasses set `name` and `model` (the trained module, the one
    checkpointed and clipped) and implement batch() and loss(); the rest is optional."""
    name = "stage"
    model: nn.Module

    def batch(self, step: int) -> list:
        """The micro-batches of optimizer step `step` (one per gradient-accumulation pass)."""
        raise NotImplementedError

    def loss(self, batch) -> tuple:
        """-> (loss tensor, metrics {name: scalar or index tensor}, weight: this process's share of the
        global batch the loss is a mean over -- its samples, or e.g. its masked tokens)."""
        raise NotImplementedError

    def after_step(self, step: int, result: "StepResult"):
        """Called on every process after each optimizer step; may return a progress-bar postfix dict."""
        return None

    def state(self) -> dict:
        """Extra train state saved in train_state.pt beside model, optimizer and step (plain data and tensors)."""
        return {}

    def load_state(self, state: dict):
        pass

    def save(self, step: int):
        """Write the user-facing model files (rank 0 only; called with every checkpoint)."""


@dataclass
class StepResult:
    loss: float                 # the global batch's loss
    metrics: dict               # global means (index metrics gathered)
    grad_norm: float
    lr: float
    seconds: float
    stop: bool = False          # some process was asked to stop


def optimizer(model: nn.Module, lr: float, weight_decay: float = 0.0, kind: str = "adamw", betas=(0.9, 0.999)):
    """AdamW with weight decay on matrices only (kind "adamw"), or plain Adam with L2 on all (kind "adam")."""
    params = [p for p in model.parameters() if p.requires_grad]
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, betas=betas)
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=betas)


def cosine(lr: float, warmup: int, total: int, final_ratio: float = 0.1):
    """step -> learning rate: linear warmup, then cosine decay to final_ratio * lr at `total`."""
    return lambda step: lr_at(step, lr, warmup, total, final_ratio)


def global_values(loss, metrics: dict, weight: float, stop: bool, device):
    """This process's loss and metrics -> the global batch's (means weighted by each process's
    weight; index metrics gathered), whether any process asked to stop, and the factor that makes
    DDP's gradient average the global mean's gradient."""
    keys = [k for k in metrics if k not in INDEX_KEYS]
    local = [float(loss.detach())] + [float(metrics[k]) for k in keys]
    gathered = {k: metrics[k] for k in INDEX_KEYS if metrics.get(k) is not None}
    if not distributed.is_distributed():
        return local[0], {**dict(zip(keys, local[1:])), **gathered}, stop, 1.0
    vec = torch.tensor([x * weight for x in local] + [weight, float(stop)], dtype=torch.float64, device=device)
    distributed.all_reduce_sum(vec)                                 # one collective for every scalar
    total = float(vec[-2])
    values = (vec[:-2] / max(total, 1.0)).tolist()
    gathered = {k: distributed.all_gather_cat(v) for k, v in gathered.items()}
    return values[0], {**dict(zip(keys, values[1:])), **gathered}, bool(vec[-1] > 0), \
        weight * distributed.world_size() / max(total, 1.0)


def autocast(device, amp: str = "bf16"):
    """bf16 / fp16 autocast on a GPU; fp32 on the CPU or with amp "none"."""
    if amp not in AMP:
        raise WmfastError(f"amp must be bf16, fp16 or none, got {amp!r}")
    if torch.device(device).type != "cuda" or amp == "none":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


class StopRequest:
    """Ctrl-C / SIGTERM (torchrun forwards both) ask the loop to stop after the step in flight:
    every process learns of it through the step's all-reduce, so all stop after the same step and
    rank 0 saves it. A second Ctrl-C interrupts at once (the last finished step is still saved)."""

    def __init__(self):
        self.requested = False

    @contextlib.contextmanager
    def installed(self):
        def handler(signum, frame):
            if self.requested and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.requested = True
        try:
            previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        except ValueError:  # not the main thread
            yield self
            return
        try:
            yield self
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)


@contextlib.contextmanager
def signals_ignored():
    """While a checkpoint is written: a late signal must not cut it short."""
    try:
        previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def rng_state(generator) -> dict:
    """The torch RNG and a numpy Generator's state, as plain data for train_state.pt."""
    return {"torch": torch.get_rng_state(), "sampler": json.dumps(generator.bit_generator.state)}


def set_rng_state(generator, state: dict):
    torch.set_rng_state(state["torch"])
    generator.bit_generator.state = json.loads(state["sampler"])


def truncate_metrics(path, step):
    """On resume, drop log lines written after the checkpoint we resume from."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = [ln for ln in f if ln.strip() and json.loads(ln).get("step", 0) <= step]
    with open(path + ".tmp", "w") as f:
        f.writelines(lines)
    os.replace(path + ".tmp", path)


class Loop:
    """Runs a Stage: one optimizer step at a time, checkpoints, resume, stop on request."""

    def __init__(self, stage: Stage, opt, *, lr=None, grad_clip: float = None, amp: str = "none",
                 device="cpu", state_path: str = None):
        self.stage, self.opt, self.lr, self.grad_clip, self.amp = stage, opt, lr, grad_clip, amp
        self.device = torch.device(device)
        self.state_path = state_path
        self.scaler = torch.amp.GradScaler("cuda") if self.device.type == "cuda" and amp == "fp16" else None
        self.updating = False
        if amp not in AMP:
            raise WmfastError(f"amp must be bf16, fp16 or none, got {amp!r}")

    # -- checkpoints -------------------------------------------------------------------------

    def save(self, step: int):
        """train_state.pt (atomic), then the stage's model files. Rank 0 only."""
        if not distributed.is_main():
            return
        if self.state_path:
            state = {"model": {k: v.detach().cpu() for k, v in self.stage.model.state_dict().items()},
                     "optimizer": self.opt.state_dict(), "step": step, **self.stage.state()}
            if self.scaler is not None:
                state["scaler"] = self.scaler.state_dict()
            save_torch_atomic(state, self.state_path)
        self.stage.save(step)

    def resume(self) -> int:
        """Load train_state.pt into the model, optimizer, scaler and stage; -> the step it was saved at."""
        state = load_torch_safe(self.state_path, "train state")
        load_state_dict_checked(self.stage.model, state["model"], self.state_path)
        self.opt.load_state_dict(state["optimizer"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self.stage.load_state(state)
        return int(state["step"])

    # -- one optimizer step: the only backward pass in wmfast ---------------------------------

    def step(self, step: int, stop_requested: bool = False) -> StepResult:
        t0 = time.perf_counter()
        lr = self.lr(step) if self.lr is not None else self.opt.param_groups[0]["lr"]
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        batches = self.stage.batch(step)
        sums, gathered, loss_sum, stop = {}, {}, 0.0, False
        for batch in batches:
            with autocast(self.device, self.amp):
                loss, metrics, weight = self.stage.loss(batch)
            g_loss, g_metrics, stop_now, scale = global_values(loss, metrics, weight, stop_requested, self.device)
            stop = stop or stop_now
            if not math.isfinite(g_loss):
                raise WmfastError(f"{self.stage.name}: loss became {g_loss} at step {step}; lower --lr")
            scaled = loss * (scale / len(batches)) if scale != 1.0 or len(batches) > 1 else loss
            (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            loss_sum += g_loss / len(batches)
            for k, v in g_metrics.items():
                if k in INDEX_KEYS:
                    gathered.setdefault(k, []).append(v)
                else:
                    sums[k] = sums.get(k, 0.0) + v / len(batches)
        if self.scaler is not None:
            self.scaler.unscale_(self.opt)
        params = self.stage.model.parameters()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, self.grad_clip)) if self.grad_clip \
            else float("nan")
        self.updating = True   # from here to the end of the update the model is neither the old step nor the new
        if self.scaler is not None:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()
        gathered = {k: v[0] if len(v) == 1 else torch.cat(v) for k, v in gathered.items()}
        return StepResult(loss_sum, {**sums, **gathered}, grad_norm, lr, time.perf_counter() - t0, stop)

    # -- the loop ----------------------------------------------------------------------------

    def run(self, steps: int, start: int = 0, *, save_every: int = 0, progress: bool = True, desc: str = None,
            bar=None, callback=None, interrupted=None) -> int:
        """Optimizer steps start .. steps-1 -> the last finished step. Checkpoints every save_every steps
        (0: none) and at an interruption; the caller saves the final one. bar: a tqdm bar to advance
        (the loop makes one otherwise). callback(step, model) after each step (tests interrupt with it).
        interrupted(step) -> the message of the KeyboardInterrupt raised after a stop was saved."""
        main = distributed.is_main()
        own_bar = bar is None
        if own_bar:
            bar = tqdm(total=steps, initial=start, desc=desc or f"train {self.stage.name}", unit="it",
                       disable=not (progress and main), dynamic_ncols=True)
        self.stage.model.train()
        step, stop, stop_now = start, StopRequest(), False
        self.updating = False   # a failure before a step's optimizer update leaves the last step whole
        try:
            with stop.installed():
                while step < steps:
                    result = self.step(step, stop.requested)
                    step += 1
                    self.updating = False
                    stop_now = result.stop
                    postfix = self.stage.after_step(step, result)
                    if postfix:
                        bar.set_postfix(postfix)
                    if save_every and step % save_every == 0 and step < steps:
                        self.save(step)
                    bar.update(1)
                    if callback is not None:
                        callback(step, self.stage.model)
                    if stop_now:
                        raise KeyboardInterrupt
        except (KeyboardInterrupt, RuntimeError) as e:
            # Ctrl-C, SIGTERM, or a peer process that died (its collectives fail here): keep the last
            # finished step. Other errors in one process save nothing.
            finished = not self.updating
            if finished and (isinstance(e, KeyboardInterrupt) or distributed.is_distributed()):
                with signals_ignored():
                    self.save(step)
            if own_bar:
                bar.close()
            if stop_now:
                distributed.barrier()   # every process stopped after this step: wait for rank 0's save
            if isinstance(e, KeyboardInterrupt) and main and finished and interrupted is not None:
                raise KeyboardInterrupt(interrupted(step)) from None
            raise
        if own_bar:
            bar.close()
        return step
