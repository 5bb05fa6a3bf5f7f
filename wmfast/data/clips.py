"""Clips of T frames for training and evaluation; a clip never crosses an episode boundary."""
import numpy as np
import torch

from wmfast.data.footage import AUGMENTATIONS, check_variants, reencode
from wmfast.data.frames import check_size, to_model_frames
from wmfast.errors import WmfastError


class ClipSampler:
    """Random (or addressed) clips from a Dataset as model inputs.

    A clip takes `clip_len` frames `stride` apart (tinyworlds uses stride = 60 // fps), so it spans
    (clip_len - 1) * stride + 1 stored frames inside one episode.

    Returns frames float32 [B, T, 3, S, S] in [-1, 1] (area-resized when S differs from the stored
    size) and actions int64 [B, T-1]: actions[:, t] leads from clip frame t to t+1. With stride > 1
    it is the stored action when the same action was taken on every skipped step, else -1 (unknown).

    Training draws `batch_at(step, batch_size, rank, world_size)`: the global batch of a step
    comes from a stream keyed by (seed, step), and process `rank` of `world_size` takes the
    contiguous share [rank * b, (rank + 1) * b) of it, so the global batch at step s is the same
    clips whatever the number of processes, and resuming needs nothing but the step.
    Per-sample randomness uses `keyed_rng(seed, step, clip)`, clip = position in the global batch.

    `sample(batch_size)` draws from `rng` (a numpy Generator), a sequential stream for other
    callers: save `rng.bit_generator.state` to resume it.
    """

    def __init__(self, ds, clip_len: int, stride: int = 1, frame_size: int = 64, episodes=None, seed: int = 0,
                 labelled=None, augment=(), augment_prob: float = 0.0):
        """labelled: bool [N] over the stored frames, the transitions whose true action training may use
        (labelled_frames; None: none). augment: footage re-encodings (wmfast.data.footage) that
        batch_at applies to a share augment_prob of its clips, one drawn per clip, at the stored size."""
        if clip_len < 1 or stride < 1:
            raise WmfastError(f"clip_len and stride must be >= 1, got {clip_len} and {stride}")
        if frame_size is None:
            if ds.frame_size is None:
                raise WmfastError(f"{ds.source}: frames are {ds.height}x{ds.width}, not square; pass a frame_size")
            frame_size = ds.frame_size
        self.ds, self.clip_len, self.stride = ds, int(clip_len), int(stride)
        self.frame_size = check_size(frame_size, "frame_size")
        self.span = (self.clip_len - 1) * self.stride + 1  # stored frames covered by one clip
        ids = list(range(ds.n_episodes)) if episodes is None else [int(e) for e in episodes]
        bad = [e for e in ids if not 0 <= e < ds.n_episodes]
        if bad:
            raise WmfastError(f"episode ids {bad[:5]} out of range [0, {ds.n_episodes})")
        # Episodes long enough for one clip, and how many clip starts each offers.
        lengths = np.array([ds.episodes[e][1] - ds.episodes[e][0] for e in ids], np.int64)
        keep = lengths >= self.span
        if not keep.any():
            longest = int(lengths.max()) if len(lengths) else 0
            raise WmfastError(f"{ds.source}: no episode holds a clip of {self.clip_len} frames at stride "
                              f"{self.stride} ({self.span} frames needed, longest episode has {longest})")
        self.episode_ids = np.array(ids, np.int64)[keep]
        self.starts = np.array([ds.episodes[e][0] for e in self.episode_ids], np.int64)
        self.cum = np.cumsum(lengths[keep] - self.span + 1)
        self.seed = int(seed)
        self.rng = np.random.default_rng(seed)
        self.labelled = None if labelled is None else np.asarray(labelled, bool)
        self.labelled_starts = None if labelled is None else self._labelled_clip_starts()
        self.augment, self.augment_prob = check_variants(augment, AUGMENTATIONS), float(augment_prob)

    def __len__(self) -> int:
        """Number of distinct clips (clip starts) the sampler draws from."""
        return int(self.cum[-1])

    def sample(self, batch_size: int):
        """batch_size clips drawn uniformly over all clip starts -> (frames, actions)."""
        if batch_size < 1:
            raise WmfastError(f"batch_size must be >= 1, got {batch_size}")
        k = self.rng.integers(len(self), size=batch_size)
        return self.clips_at(self._clip_starts(k))

    def batch_at(self, step: int, batch_size: int, rank: int = 0, world_size: int = 1):
        """This process's share of the global batch of training step `step` -> (frames [b, T, 3, S, S],
        actions [b, T-1], clip ids [b] = positions in the global batch), b = batch_size // world_size."""
        if batch_size < 1 or world_size < 1 or batch_size % world_size:
            raise WmfastError(f"batch size {batch_size} is the global batch and must split evenly over "
                              f"{world_size} processes (use a multiple of {world_size})")
        if not 0 <= rank < world_size:
            raise WmfastError(f"rank {rank} out of range [0, {world_size})")
        starts, clip_ids = self._batch_starts(step, batch_size, rank, world_size)
        frames, actions = self.clips_at(starts, augment=(step, clip_ids) if self.augment else None)
        return frames, actions, torch.from_numpy(clip_ids)

    def labels_at(self, step: int, batch_size: int, rank: int = 0, world_size: int = 1) -> torch.Tensor:
        """The true actions of batch_at's clips where the transition is labelled, -1 elsewhere [b, T-1]."""
        return self._labels(self._batch_starts(step, batch_size, rank, world_size)[0])

    def labelled_batch_at(self, step: int, batch_size: int, rank: int = 0, world_size: int = 1):
        """This process's share of `batch_size` clips that each hold a labelled transition, drawn from
        a stream keyed by (seed, step) -> (frames, actions, labels [b, T-1]: -1 where not labelled).
        A clip starts one frame before its labelled transition where it can (an encoder that reads
        x_t-1 then sees the frame before), so the few labels come back in every step's batch."""
        if self.labelled_starts is None:
            raise WmfastError("this sampler has no labelled transitions")
        picked = _stream(_LABELS, self.seed, step).choice(self.labelled_starts, size=batch_size)
        b = batch_size // world_size
        starts = picked[rank * b:(rank + 1) * b]
        frames, actions = self.clips_at(starts)
        return frames, actions, self._labels(starts)

    def _labelled_clip_starts(self) -> np.ndarray:
        """A clip start for each labelled transition of this sampler's episodes."""
        starts = []
        for ep in self.episode_ids:
            s, e = self.ds.episodes[ep]
            for t in np.flatnonzero(self.labelled[s:e - 1]) + s:
                start = min(max(t - self.stride, s), e - self.span)
                if start <= t <= start + self.span - 1 - self.stride:
                    starts.append(start)
        if not starts:
            raise WmfastError(f"{self.ds.source}: no labelled transition fits a clip of {self.clip_len} frames")
        return np.array(starts, np.int64)

    def _labels(self, starts) -> torch.Tensor:
        idx = starts[:, None] + self.stride * np.arange(self.clip_len)[None, :]
        actions = self._actions(idx)
        if self.labelled is None:
            return torch.full(actions.shape, -1, dtype=torch.int64)
        return torch.from_numpy(np.where(self.labelled[idx[:, :-1]], actions, -1))

    def _batch_starts(self, step, batch_size, rank, world_size):
        """-> (absolute start frames of this process's clips [b], their positions in the global batch [b])."""
        k = _stream(_CLIPS, self.seed, step).integers(len(self), size=batch_size)   # [batch_size] clip numbers
        b = batch_size // world_size
        clip_ids = np.arange(rank * b, (rank + 1) * b)
        return self._clip_starts(k[clip_ids]), clip_ids

    def _clip_starts(self, k: np.ndarray) -> np.ndarray:
        """Clip numbers in [0, len(self)) -> absolute start frames."""
        ep = np.searchsorted(self.cum, k, side="right")
        offset = k - np.concatenate([[0], self.cum[:-1]])[ep]
        return self.starts[ep] + offset

    def episode_clip(self, episode_id: int, start: int, length: int = None):
        """The clip of `length` frames (default clip_len) starting `start` frames into an episode
        -> frames [1, length, 3, S, S], actions [1, length - 1]. Deterministic, for evaluation."""
        length = self.clip_len if length is None else int(length)
        if not 0 <= episode_id < self.ds.n_episodes:
            raise WmfastError(f"episode {episode_id} out of range [0, {self.ds.n_episodes})")
        s, e = self.ds.episodes[episode_id]
        span = (length - 1) * self.stride + 1
        if length < 1 or start < 0 or s + start + span > e:
            raise WmfastError(f"episode {episode_id} has {e - s} frames: no clip of {length} frames at stride "
                              f"{self.stride} starts at {start}")
        return self.clips_at(np.array([s + start]), length)

    def clips_at(self, starts: np.ndarray, length: int = None, augment=None):
        """Clips starting at absolute frame indices `starts` [B] -> (frames, actions). augment:
        (step, clip ids [B]) keys the re-encoding of training clips."""
        length = self.clip_len if length is None else length
        idx = starts[:, None] + self.stride * np.arange(length)[None, :]  # [B, T] stored frame indices
        stored = self._read_frames(idx)
        if augment is not None:
            stored = self._reencoded(stored, *augment)
        frames = to_model_frames(stored, self.frame_size)                 # [B, T, 3, S, S]
        return frames, torch.from_numpy(self._actions(idx))

    def _reencoded(self, clips: np.ndarray, step: int, clip_ids) -> np.ndarray:
        """Each clip, with probability augment_prob, as one of the augment variants (keyed by seed,
        step and the clip's place in the global batch: the same on any process and after resume)."""
        clips = np.array(clips)
        for j, c in enumerate(clip_ids):
            rng = _stream(_AUGMENT, self.seed, step, c)
            if rng.random() < self.augment_prob:
                clips[j:j + 1] = reencode(clips[j:j + 1], self.augment[rng.integers(len(self.augment))], rng)
        return clips

    def _read_frames(self, idx: np.ndarray) -> np.ndarray:
        frames = self.ds.frames
        if isinstance(frames, np.ndarray):
            return frames[idx]
        # h5py reads one slice per clip (fancy indexing across a batch is slow there).
        return np.stack([frames[int(r[0]):int(r[-1]) + 1:self.stride] for r in idx])

    def _actions(self, idx: np.ndarray) -> np.ndarray:
        b, t = idx.shape
        if self.ds.actions is None or t < 2:
            return np.full((b, max(t - 1, 0)), -1, np.int64)
        # Every stored action between consecutive clip frames: [B, T-1, stride].
        window = idx[:, :-1, None] + np.arange(self.stride)[None, None, :]
        acts = self.ds.actions[window]
        same = (acts == acts[..., :1]).all(-1)
        return np.where(same, acts[..., 0], -1).astype(np.int64)


def labelled_frames(ds, fraction: float, seed: int, episodes=None) -> np.ndarray:
    """The few-label mode's labelled transitions -> bool [N] over the stored frames: round(fraction x the
    transitions with a known true action in `episodes` (default all)), at least one when fraction > 0,
    drawn uniformly from a stream keyed by seed. A transition is the step from its frame to the next."""
    mask = np.zeros(len(ds), bool)
    if ds.actions is None or fraction <= 0:
        return mask
    ids = range(ds.n_episodes) if episodes is None else episodes
    known = np.concatenate([np.arange(*ds.episodes[e]) for e in ids])
    known = known[ds.actions[known] >= 0]
    if len(known):
        count = min(len(known), max(1, int(round(fraction * len(known)))))
        mask[_stream(_LABELS, seed).choice(known, size=count, replace=False)] = True
    return mask


# Separate streams per purpose (numpy seed lists that differ by trailing zeros collide, so
# every stream starts with its own tag and has a fixed key length).
_CLIPS, _PER_CLIP, _PER_BATCH, _LABELS, _AUGMENT = 0, 1, 2, 3, 4


def _stream(tag: int, *key: int) -> np.random.Generator:
    return np.random.default_rng([tag] + [int(k) % 2 ** 64 for k in key])


def keyed_rng(seed: int, step: int, clip: int = None) -> np.random.Generator:
    """A random stream that depends only on (seed, step, clip) -- clip = position in the global
    batch -- or on (seed, step) for one draw per batch (clip None): the same numbers on any
    process, for any number of processes, after any resume."""
    if clip is None:
        return _stream(_PER_BATCH, seed, step)
    return _stream(_PER_CLIP, seed, step, clip)
