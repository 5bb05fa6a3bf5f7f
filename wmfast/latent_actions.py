"""A run's latent actions on a dataset: the trainer's held-out split, the LAM's code for every
transition of some episodes, and the game action <-> code table those codes give.

    held, settings = held_out_episodes(ds, run)           # the episodes no stage trained on
    codes = episode_codes(model, ds, held, lam_window(run, model))

The evaluator reads held-out episodes with these; the action-map stage (wmfast.train.action_map)
fits on the others.
"""
import os

import numpy as np
import torch
from tqdm.auto import tqdm

from wmfast.models.action_map import ActionMap
from wmfast.config import load_json
from wmfast.data import ClipSampler
from wmfast.errors import WmfastError

CHANGE_THRESHOLD = 0.05        # max abs pixel change (in [-1, 1] units) for a transition to count as "changed"
ENCODE_BATCH = 256             # LAM windows per encoder call


def changed_transitions(frames, threshold: float = CHANGE_THRESHOLD) -> torch.Tensor:
    """frames [..., T, 3, S, S] -> bool [..., T-1]: max |x_{t+1} - x_t| > threshold."""
    return (frames[..., 1:, :, :, :] - frames[..., :-1, :, :, :]).abs().amax(dim=(-3, -2, -1)) > threshold



# -- the held-out split -------------------------------------------------------------------------
def split_settings(run=None) -> dict:
    """How the trainer split the run's data: {val_fraction, seeds, source}. Read from each stage's
    train_config.json, else the run's recipe.json, else the trainer's defaults (0.1, seed 0)."""
    found = []
    for stage in ("tokenizer", "actions", "dynamics"):
        if run is None:
            break
        path = os.path.join(run, stage, "train_config.json")
        if os.path.isfile(path):
            cfg = load_json(path)
            found.append((stage, float(cfg.get("val_fraction", 0.1)), int(cfg.get("seed", 0))))
    if not found and run is not None and os.path.isfile(os.path.join(run, "recipe.json")):
        stages = load_json(os.path.join(run, "recipe.json")).get("stages", {})
        found = [(s, float(v["train"].get("val_fraction", 0.1)), int(v["train"].get("seed", 0)))
                 for s, v in stages.items() if isinstance(v, dict) and "train" in v]
        source = "recipe.json"
    else:
        source = "train_config.json" if found else "trainer defaults"
    if not found:
        found = [("all", 0.1, 0)]
    return {"source": source, "stages": {s: {"val_fraction": f, "seed": sd} for s, f, sd in found}}


def held_out_episodes(ds, run=None) -> tuple:
    """Episode ids no stage of the run trained on (the trainer's split) -> (ids, settings)."""
    settings = split_settings(run)
    held = None
    for s in settings["stages"].values():
        _, val = ds.split(s["val_fraction"], seed=s["seed"])
        held = set(val) if held is None else held & set(val)
    held = sorted(held or [])
    if not held:
        raise WmfastError(f"{ds.source}: no held-out episode (the run's stages hold out disjoint episodes, or the "
                          f"data has {ds.n_episodes} episode(s)); evaluate on data with more episodes")
    return held, settings


def lam_window(run=None, model=None) -> int:
    """Frames per LAM call: the clip length the LAM was trained on (its actions are causal in time)."""
    if run is not None:
        for path, get in ((os.path.join(run, "actions", "train_config.json"), lambda d: d),
                          (os.path.join(run, "recipe.json"), lambda d: d["stages"]["actions"]["train"])):
            if os.path.isfile(path):
                try:
                    return max(2, int(get(load_json(path))["clip_len"]))
                except (KeyError, TypeError, ValueError):
                    pass
    return max(2, model.dynamics.config.context_length) if model is not None and model.dynamics else 4



# -- latent actions -----------------------------------------------------------------------------
@torch.no_grad()
def infer_codes(lam, frames, window: int = 4):
    """frames [N, T, 3, S, S] -> (codes [N, T-1] int64, encoder outputs before quantization [N, T-1, A]).

    The LAM sees windows of `window` frames (as in training); consecutive windows share one frame,
    so every transition is coded once (the last window is moved back to end at frame T-1)."""
    N, T = frames.shape[:2]
    w = max(2, min(window, T))
    spans = []                                                       # (first frame, first new transition)
    s = 0
    while s < T - 1:
        b = min(s, T - w)
        spans.append((b, s))
        s = b + w - 1
    windows = torch.cat([frames[:, b:b + w] for b, _ in spans])        # [len(spans) * N, w, 3, S, S]
    q, z = zip(*(lam.encode(windows[i:i + ENCODE_BATCH].float(), check=False, return_z=True)
                 for i in range(0, windows.shape[0], ENCODE_BATCH)))
    q, z = (torch.cat(t).view(len(spans), N, w - 1, -1) for t in (q, z))   # [len(spans), N, w-1, A]
    q, z = (torch.cat([t[i, :, s - b:] for i, (b, s) in enumerate(spans)], dim=1) for t in (q, z))  # [N, T-1, A]
    return lam.indices(q), z


def episode_codes(model, ds, episodes, window: int, progress: bool = False, keep_frames: bool = False) -> dict:
    """Every transition of the given episodes: codes, true actions (or None), changed flags, encoder
    outputs, and with keep_frames the frame each transition starts from [N, 3, S, S]."""
    codes, truth, changed, zs, starts = [], [], [], [], []
    sampler = None
    for ep in tqdm(episodes, desc="latent actions", unit="episode", disable=not progress):
        s, e = ds.episodes[ep]
        if e - s < 2:
            continue
        sampler = sampler or ClipSampler(ds, clip_len=2, frame_size=model.frame_size, episodes=[ep])
        frames, acts = sampler.clips_at(np.array([s]), e - s)              # [1, L, 3, S, S], [1, L-1]
        c, z = infer_codes(model.lam, frames, window)
        codes.append(c[0])
        zs.append(z[0])
        truth.append(acts[0])
        changed.append(changed_transitions(frames)[0])
        if keep_frames:
            starts.append(frames[0, :-1])
    if not codes:
        raise WmfastError(f"{ds.source}: the episodes {list(episodes)[:8]} hold no transition (episodes of one frame)")
    return {"codes": torch.cat(codes).numpy(), "true": torch.cat(truth).numpy() if ds.actions is not None else None,
            "changed": torch.cat(changed).numpy(), "z": torch.cat(zs),
            "frames": torch.cat(starts) if keep_frames else None}


def build_action_map(true_actions, codes, changed, num_game_actions, num_codes, action_names=None, data=""):
    """The game action <-> latent code map, from changed transitions (what an action DOES); game
    actions that never change the frame (NOOP, pushing into a wall) keep their all-transition counts."""
    t, z, ch = np.asarray(true_actions).ravel(), np.asarray(codes).ravel(), np.asarray(changed).ravel()
    every = ActionMap.from_pairs(t, z, num_game_actions, num_codes).counts
    moved = ActionMap.from_pairs(t[ch], z[ch], num_game_actions, num_codes).counts
    counts = np.where(moved.sum(1, keepdims=True) > 0, moved, every)
    return ActionMap(counts, action_names, data=data, changed_only=True)
