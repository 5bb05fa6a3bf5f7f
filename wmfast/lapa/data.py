"""Frame pairs (t, t+1) for the LAPA model, split 80/10/10 by episode.

    ds = load_dataset("breakout.h5")                # or DIR/<episode>/0.png, 1.png, ... (wmfast.data)
    split = split_episodes(ds.n_episodes, seed=0)    # {"train": [...], "val": [...], "test": [...]}
    pairs = PairData(ds, split)
    t = pairs.indices("train")                       # [N] frame ids t whose t+1 is in the same episode
    frame_t, frame_t1 = pairs.batch(t[:32])          # float [32, 3, H, W] in [0, 1]

A pair never crosses an episode boundary, and every pair of an episode lands in that episode's
split, so no frame of a test episode is ever trained on. The split is saved with the run
(split.json) and reused by eval and extract on the same data.
"""
import os

import numpy as np
import torch

from wmfast.config import load_json, save_json
from wmfast.errors import WmfastError

SPLITS = ("train", "val", "test")
FRACTIONS = (0.8, 0.1, 0.1)
SPLIT_FILE = "split.json"


def split_episodes(n_episodes: int, seed: int = 0, fractions=FRACTIONS) -> dict:
    """Episode ids -> {"train", "val", "test"} lists (seeded permutation; val and test get at least one)."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise WmfastError(f"split fractions must be 3 non-negative numbers summing to 1, got {list(fractions)}")
    if n_episodes < 3:
        raise WmfastError(f"a train/val/test split by episode needs at least 3 episodes, got {n_episodes}")
    ids = np.random.default_rng(seed).permutation(n_episodes)
    n_val = max(1, round(fractions[1] * n_episodes))
    n_test = max(1, round(fractions[2] * n_episodes))
    n_train = n_episodes - n_val - n_test
    if n_train < 1:
        raise WmfastError(f"{n_episodes} episodes leave none to train on after the val/test split")
    parts = np.split(ids, [n_train, n_train + n_val])
    return {name: sorted(int(i) for i in part) for name, part in zip(SPLITS, parts)}


def save_split(folder, split: dict, ds, seed: int):
    save_json({"seed": seed, "n_episodes": ds.n_episodes, "n_frames": len(ds), "source": str(ds.source),
               "episodes": split}, os.path.join(folder, SPLIT_FILE))


def load_split(folder, ds=None) -> dict:
    """The run's saved split; with ds, checks that it was made for a dataset of this shape."""
    d = load_json(os.path.join(folder, SPLIT_FILE))
    if ds is not None and (d["n_episodes"] != ds.n_episodes or d["n_frames"] != len(ds)):
        raise WmfastError(f"{folder}/{SPLIT_FILE} was made for {d['n_episodes']} episodes / {d['n_frames']} frames "
                          f"({d['source']}), but this dataset has {ds.n_episodes} / {len(ds)}")
    return d["episodes"]


def split_matches(folder, ds) -> bool:
    try:
        load_split(folder, ds)
        return True
    except WmfastError:
        return False


class PairData:
    """Pairs of consecutive frames of one dataset, by split."""

    def __init__(self, ds, split: dict = None, height: int = None, width: int = None):
        if height is not None and (ds.height, ds.width) != (height, width):
            raise WmfastError(f"{ds.source}: frames are {ds.height}x{ds.width}, the model expects {height}x{width} "
                              f"(record Atari data with --size 0 for the native 210x160)")
        self.ds = ds
        self.split = split or {"all": list(range(ds.n_episodes))}
        ds.load_into_memory()
        self.frames = ds.frames                                             # [N, H, W, 3] uint8
        self.episode_of = np.empty(len(ds), np.int64)
        for e, (s, t) in enumerate(ds.episodes):
            self.episode_of[s:t] = e

    def indices(self, split: str = None) -> np.ndarray:
        """Frame ids t (int64) of the pairs (t, t+1) in the split's episodes (all episodes if None)."""
        if split is not None and split not in self.split:
            raise WmfastError(f"unknown split {split!r} (this data has {sorted(self.split)})")
        episodes = range(self.ds.n_episodes) if split is None else self.split[split]
        out = [np.arange(s, t - 1) for s, t in (self.ds.episodes[e] for e in episodes)]
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    def actions(self, idx) -> np.ndarray:
        """True action taken at t for each pair (-1 where unknown or the data has none)."""
        if self.ds.actions is None:
            return np.full(len(idx), -1, np.int64)
        return self.ds.actions[np.asarray(idx)]

    def batch(self, idx, device="cpu"):
        """Frame ids [B] -> (frame_t, frame_t1) float [B, 3, H, W] in [0, 1]."""
        idx = np.asarray(idx, np.int64)
        if idx.size and (idx.min() < 0 or idx.max() + 1 >= len(self.ds)
                         or (self.episode_of[idx] != self.episode_of[idx + 1]).any()):
            raise WmfastError("a pair crosses an episode boundary or the data's end")   # indices() never does
        return to_float(self.frames[idx], device), to_float(self.frames[idx + 1], device)

    def frames_at(self, idx, device="cpu"):
        return to_float(self.frames[np.asarray(idx, np.int64)], device)


def to_float(frames_u8: np.ndarray, device="cpu") -> torch.Tensor:
    """uint8 [B, H, W, 3] -> float [B, 3, H, W] in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(frames_u8)).to(device)
    return x.permute(0, 3, 1, 2).float().div_(255.0)


class PairSampler:
    """Random training batches of pairs from one split; its RNG state is saved for --resume."""

    def __init__(self, pairs: PairData, split: str, seed: int = 0):
        self.pairs, self.idx = pairs, pairs.indices(split)
        if len(self.idx) == 0:
            raise WmfastError(f"split {split!r} has no frame pairs (episodes need at least 2 frames)")
        self.rng = np.random.default_rng(seed)

    def sample(self, batch_size: int, device="cpu"):
        return self.pairs.batch(self.idx[self.rng.integers(0, len(self.idx), batch_size)], device)
