"""The wmfast dataset: frames with the true action per step, episode boundaries and metadata.

On disk (HDF5, read with h5py, never unpickled):
    frames          [N, H, W, 3] uint8   (the tinyworlds layout, so a tinyworlds reader accepts it)
    actions         [N] int64            action[t] leads from frame t to frame t+1 of the same episode;
                                         -1 on each episode's last frame and where unknown
    episode_starts  [E] int64            first frame of each episode (episode e ends where e+1 starts)
    rewards         [N] float32          optional; reward received on the step t -> t+1
    attrs["wmfast"] JSON metadata: format, version, n_actions, action_names, game, seed, frameskip, ...
"""
import json
import math
import os

import h5py
import numpy as np

from wmfast.data.frames import check_frames_u8
from wmfast.errors import WmfastError

FORMAT, VERSION = "wmfast-dataset", 1
# Files up to this size are read into memory; bigger ones stay lazily readable through h5py.
IN_MEMORY_BYTES = 2 << 30
# Sources with no episode boundaries are cut into pseudo-episodes of this many frames so that
# split() can hold some out; only clips across a cut are lost.
SEGMENT_FRAMES = 1000


class Dataset:
    """Frames [N, H, W, 3] uint8, actions [N] int64 (or None), episodes [(start, end)], metadata."""

    def __init__(self, frames, actions=None, episodes=None, n_actions: int = 0, action_names=None,
                 meta: dict = None, rewards=None, source: str = "<memory>"):
        check_frames_u8(frames, source)
        n = frames.shape[0]
        self.source = source
        self.frames = frames
        self.episodes = _check_episodes(episodes if episodes is not None else [(0, n)], n, source)
        self.n_actions = int(n_actions)
        self.action_names = list(action_names) if action_names is not None else [str(i) for i in range(self.n_actions)]
        if len(self.action_names) != self.n_actions:
            raise WmfastError(f"{source}: {len(self.action_names)} action names for {self.n_actions} actions")
        self.actions = None if actions is None else _check_actions(actions, n, self.n_actions, self.episodes, source)
        self.rewards = None if rewards is None else _check_rewards(rewards, n, source)
        self.meta = dict(meta or {})

    # ---- shape facts ----
    def __len__(self) -> int:
        return self.frames.shape[0]

    @property
    def height(self) -> int:
        return self.frames.shape[1]

    @property
    def width(self) -> int:
        return self.frames.shape[2]

    @property
    def frame_size(self):
        """H when frames are square, else None (the ClipSampler resizes to a square frame_size)."""
        return self.height if self.height == self.width else None

    @property
    def n_episodes(self) -> int:
        return len(self.episodes)

    def __repr__(self):
        acts = f"{self.n_actions} actions" if self.actions is not None else "no actions"
        return (f"Dataset({self.source}: {len(self)} frames {self.height}x{self.width}, "
                f"{self.n_episodes} episodes, {acts})")

    def transitions(self, episodes) -> np.ndarray:
        """Indices t of the transitions x_t -> x_t+1 inside the given episode ids (rewards[t] is paid on it)."""
        return np.concatenate([np.arange(s, e - 1, dtype=np.int64) for s, e in (self.episodes[i] for i in episodes)]
                              or [np.zeros(0, np.int64)])

    def split(self, val_fraction: float = 0.1, seed: int = 0):
        """Disjoint (train, val) lists of episode ids; val holds whole held-out episodes."""
        if not 0.0 <= val_fraction < 1.0:
            raise WmfastError(f"val_fraction must be in [0, 1), got {val_fraction}")
        ids = np.random.default_rng(seed).permutation(self.n_episodes)
        n_val = math.ceil(val_fraction * self.n_episodes) if val_fraction > 0 else 0
        n_val = min(n_val, self.n_episodes - 1)  # always keep one episode to train on
        return sorted(int(i) for i in ids[n_val:]), sorted(int(i) for i in ids[:n_val])

    def load_into_memory(self) -> "Dataset":
        """Replace a lazily read h5py frames dataset by a numpy array (returns self)."""
        if not isinstance(self.frames, np.ndarray):
            self.frames = self.frames[:]
        return self


def _check_episodes(episodes, n: int, source: str):
    eps = [(int(s), int(e)) for s, e in episodes]
    if not eps:
        raise WmfastError(f"{source}: no episodes")
    prev_end = 0
    for s, e in eps:
        if s != prev_end or e <= s:
            raise WmfastError(f"{source}: episodes must be contiguous non-empty ranges covering the frames, "
                              f"got ({s}, {e}) after frame {prev_end}")
        prev_end = e
    if prev_end != n:
        raise WmfastError(f"{source}: episodes cover {prev_end} frames but there are {n}")
    return eps


def _check_actions(actions, n: int, n_actions: int, episodes, source: str) -> np.ndarray:
    a = np.asarray(actions)
    if a.dtype.kind not in "iu":
        raise WmfastError(f"{source}: actions must be integers, got {a.dtype}")
    if a.shape != (n,):
        raise WmfastError(f"{source}: actions must have shape [{n}] (one per frame), got {list(a.shape)}")
    a = a.astype(np.int64)
    if n_actions < 1:
        raise WmfastError(f"{source}: a dataset with actions needs n_actions >= 1")
    if a.size and (a.min() < -1 or a.max() >= n_actions):
        raise WmfastError(f"{source}: actions must be in [-1, {n_actions}), got values in [{a.min()}, {a.max()}]")
    last = np.array([e - 1 for _, e in episodes])
    if (a[last] != -1).any():
        raise WmfastError(f"{source}: the action on each episode's last frame must be -1 (nothing follows it)")
    return a


def _check_rewards(rewards, n: int, source: str) -> np.ndarray:
    r = np.asarray(rewards)
    if r.shape != (n,) or r.dtype.kind not in "fiu":
        raise WmfastError(f"{source}: rewards must be numbers of shape [{n}], got {r.dtype} {list(r.shape)}")
    return r.astype(np.float32)


def episodes_from_starts(starts, n: int):
    starts = [int(s) for s in starts]
    return list(zip(starts, starts[1:] + [n]))


def segment_episodes(n: int, segment: int = SEGMENT_FRAMES):
    """Pseudo-episodes of `segment` frames for sources without boundaries (the last one takes the rest)."""
    cuts = list(range(0, n, segment))
    if len(cuts) > 1 and n - cuts[-1] < segment // 2:
        cuts.pop()  # fold a short tail into the previous segment
    return list(zip(cuts, cuts[1:] + [n]))


# ---------------------------------------------------------------- writing

def write_dataset(path, frames, actions=None, episodes=None, n_actions: int = 0, action_names=None,
                  meta: dict = None, rewards=None, extra: dict = None) -> str:
    """Write a wmfast dataset atomically (temp file + os.replace). Returns the path.
    extra: more per-file arrays by name (e.g. reach's continuous_actions), stored as they are."""
    path = os.fspath(path)
    ds = Dataset(np.asarray(frames), actions, episodes, n_actions, action_names, meta, rewards, source=path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    n, h, w, _ = ds.frames.shape
    try:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("frames", data=ds.frames, chunks=(min(n, 16), h, w, 3),
                             compression="gzip", compression_opts=4, shuffle=True)
            actions = ds.actions if ds.actions is not None else np.full(n, -1, np.int64)
            f.create_dataset("actions", data=actions)
            f.create_dataset("episode_starts", data=np.array([s for s, _ in ds.episodes], np.int64))
            if ds.rewards is not None:
                f.create_dataset("rewards", data=ds.rewards)
            for name, value in (extra or {}).items():
                f.create_dataset(name, data=value)
            info = {**ds.meta, "format": FORMAT, "version": VERSION, "n_actions": ds.n_actions,
                    "action_names": ds.action_names, "has_actions": ds.actions is not None}
            f.attrs["wmfast"] = json.dumps(info, default=_json_value)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _json_value(v):
    """numpy scalars and arrays in metadata become plain JSON numbers and lists."""
    if isinstance(v, (np.generic, np.ndarray)):
        return v.tolist()
    raise WmfastError(f"dataset metadata must be JSON values, got {type(v).__name__}")


# ---------------------------------------------------------------- reading

def read_array(path, name: str):
    """One of a dataset file's extra arrays (write_dataset's `extra`, e.g. an Atari recording's `ram`
    [N, 128] uint8 and `terminals` [N] bool), or None when the file has none of that name."""
    try:
        with h5py.File(os.fspath(path), "r") as f:
            return f[name][:] if name in f and isinstance(f[name], h5py.Dataset) else None
    except OSError as e:
        raise WmfastError(f"{path}: not a readable HDF5 file ({str(e).splitlines()[0]})") from None


def read_h5(path) -> Dataset:
    """A wmfast dataset, or a tinyworlds HDF5 (`frames` only: one pseudo-episode per 1000 frames)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise WmfastError(f"dataset not found: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise WmfastError(f"{path}: not a readable HDF5 file ({str(e).splitlines()[0]})") from None
    try:
        ds = _read_open_file(f, path)
    except WmfastError:
        f.close()
        raise
    except (OSError, KeyError, ValueError, TypeError) as e:
        f.close()
        raise WmfastError(f"{path}: corrupt dataset ({str(e).splitlines()[0]})") from None
    if isinstance(ds.frames, np.ndarray):
        f.close()
    else:
        ds._file = f  # a lazily read dataset keeps its file open
    return ds


def _read_open_file(f, path) -> Dataset:
    if "frames" not in f or not isinstance(f["frames"], h5py.Dataset):
        raise WmfastError(f"{path}: no `frames` dataset (found: {', '.join(sorted(f.keys())) or 'nothing'})")
    frames = f["frames"]
    check_frames_u8(frames, path)
    if frames.size * frames.dtype.itemsize <= IN_MEMORY_BYTES:
        frames = _read_all(frames, path)
    info = _read_meta(f, path)
    if info.get("format") == FORMAT:
        return _wmfast_dataset(f, frames, info, path)
    n = frames.shape[0]
    meta = {"source": "tinyworlds-h5", "path": path, "episodes_from": f"segments of {SEGMENT_FRAMES} frames"}
    return Dataset(frames, None, segment_episodes(n), 0, [], meta, source=path)


def _read_all(frames, path) -> np.ndarray:
    try:
        return frames[:]
    except OSError as e:
        raise WmfastError(f"{path}: corrupt frames ({str(e).splitlines()[0]})") from None


def _read_meta(f, path) -> dict:
    raw = f.attrs.get("wmfast")
    if raw is None:
        return {}
    try:
        info = json.loads(raw)
    except (TypeError, ValueError):
        raise WmfastError(f"{path}: metadata attribute `wmfast` is not valid JSON") from None
    if not isinstance(info, dict):
        raise WmfastError(f"{path}: metadata attribute `wmfast` must be a JSON object")
    if info.get("format") == FORMAT and info.get("version", 0) > VERSION:
        raise WmfastError(f"{path}: dataset format version {info['version']} is newer than this wmfast ({VERSION})")
    return info


def _wmfast_dataset(f, frames, info: dict, path) -> Dataset:
    n = frames.shape[0]
    for key in ("actions", "episode_starts"):
        if key not in f:
            raise WmfastError(f"{path}: wmfast dataset without `{key}`")
    starts = np.asarray(f["episode_starts"][:])
    if starts.dtype.kind not in "iu" or starts.ndim != 1 or len(starts) == 0 or starts[0] != 0 \
            or (np.diff(starts) <= 0).any() or starts[-1] >= n:
        raise WmfastError(f"{path}: episode_starts must be increasing integers starting at 0 and below {n}")
    episodes = episodes_from_starts(starts, n)
    actions = f["actions"][:] if info.get("has_actions", True) else None
    rewards = f["rewards"][:] if "rewards" in f else None
    meta = {k: v for k, v in info.items() if k not in ("n_actions", "action_names", "has_actions")}
    meta.setdefault("source", "wmfast-h5")
    meta["path"] = path
    return Dataset(frames, actions, episodes, info.get("n_actions", 0), info.get("action_names"), meta,
                   rewards, source=path)
