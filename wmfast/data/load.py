"""`load_dataset(spec)`: one entry point for every data source.

    path/to/file.h5        a wmfast dataset, or a tinyworlds HDF5 (`frames` only)
    path/to/folder         video files, image frames, or sub-folders of image frames
    game:NAME[:EPISODES]   an embedded game, generated once and cached
    atari:GAME[:EPISODES]  Arcade Learning Environment episodes (ale-py), generated once and cached

Generated datasets are cached under $WMFAST_CACHE (default ~/.cache/wmfast), keyed by every
setting that changes their content, so a repeated load is a file read.
"""
import os

from wmfast.data.dataset import Dataset, read_h5
from wmfast.data.frames import check_size
from wmfast.errors import WmfastError

GAME_EPISODES, GAME_STEPS = 100, 100
ATARI_EPISODES, ATARI_MAX_STEPS = 20, 500


def cache_dir() -> str:
    return os.environ.get("WMFAST_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "wmfast")


def load_dataset(spec, *, size: int = None, seed: int = 0, steps: int = None, progress: bool = True) -> Dataset:
    """Open a dataset from a spec string or path (see the module doc).

    size: frame size for generated data (default 64) and for folders (resize on reading);
    seed / steps: seed and steps per episode (Atari: the episode cap) of generated data.
    """
    if isinstance(spec, Dataset):
        return spec
    spec = os.fspath(spec)
    kind, _, rest = spec.partition(":")
    if kind in ("game", "atari") and rest:
        name, episodes = _name_and_episodes(spec, rest)
        if kind == "game":
            return _cached_game(name, episodes, steps, size, seed, progress)
        return _cached_atari(name, episodes, steps, size, seed, progress)
    if os.path.isdir(spec):
        from wmfast.data.readers import read_folder

        return read_folder(spec, size=None if size is None else check_size(size))
    if os.path.isfile(spec):
        return read_h5(spec)
    hint = " (generated data is named game:NAME or atari:GAME)" if ":" not in spec else ""
    raise WmfastError(f"dataset not found: {spec}{hint}")


def _name_and_episodes(spec: str, rest: str):
    name, _, count = rest.partition(":")
    if not name:
        raise WmfastError(f"bad dataset spec {spec!r}: expected game:NAME[:EPISODES] or atari:GAME[:EPISODES]")
    if not count:
        return name, None
    if not count.isdigit() or int(count) < 1:
        raise WmfastError(f"bad dataset spec {spec!r}: EPISODES must be a positive integer, got {count!r}")
    return name, int(count)


def _cached_game(name, episodes, steps, size, seed, progress) -> Dataset:
    from wmfast.data.games import generate_game_dataset, make_game

    version = make_game(name).version
    episodes, steps = episodes or GAME_EPISODES, steps or GAME_STEPS
    size = check_size(64 if size is None else size)
    path = os.path.join(cache_dir(), "games", f"{name}-v{version}-ep{episodes}-st{steps}-{size}px-seed{seed}.h5")
    if not os.path.isfile(path):
        generate_game_dataset(name, episodes, steps, size=size, seed=seed, out=path, progress=progress)
    return read_h5(path)


def _cached_atari(game, episodes, steps, size, seed, progress) -> Dataset:
    from wmfast.data.atari import ATARI_VERSION, default_policy, generate_atari_dataset, rom_id

    rom = rom_id(game)
    episodes, steps = episodes or ATARI_EPISODES, steps or ATARI_MAX_STEPS
    size = check_size(64 if size is None else size, allow_native=True)
    policy = default_policy(rom)
    path = os.path.join(cache_dir(), "atari", f"{rom}-v{ATARI_VERSION}-ep{episodes}-max{steps}-"
                                              f"{size or 'native'}px-{policy}-seed{seed}.h5")
    if not os.path.isfile(path):
        generate_atari_dataset(rom, episodes, size=size, policy=policy, seed=seed, max_steps=steps, out=path,
                               progress=progress)
    return read_h5(path)


def convert_dataset(spec, out, size: int = None, progress: bool = True) -> str:
    """Write any readable source (video/PNG folder, tinyworlds HDF5, ...) as a wmfast dataset,
    area-resized to size x size when given. Returns the path written."""
    import numpy as np

    from wmfast.data.dataset import write_dataset
    from wmfast.data.frames import resize_uint8

    ds = load_dataset(spec, size=size, progress=progress)
    frames = ds.frames if isinstance(ds.frames, np.ndarray) else ds.frames[:]
    if size is not None:
        frames = resize_uint8(frames, check_size(size))
    return write_dataset(out, frames, ds.actions, ds.episodes, ds.n_actions, ds.action_names,
                         {**ds.meta, "converted_from": os.fspath(spec)}, ds.rewards)


def dataset_info(spec, preview=None) -> dict:
    """A summary of a dataset: sizes, episodes, actions and their frequencies, metadata.
    With `preview` (a .png path), also draws the first frames of a few episodes there."""
    import numpy as np

    ds = load_dataset(spec)
    if preview is not None:
        write_preview(ds, preview)
    lengths = [e - s for s, e in ds.episodes]
    info = {"source": ds.source, "frames": len(ds), "height": ds.height, "width": ds.width,
            "episodes": ds.n_episodes, "episode_length_min": min(lengths), "episode_length_max": max(lengths),
            "n_actions": ds.n_actions, "action_names": ds.action_names, "meta": ds.meta}
    if ds.actions is not None:
        known = ds.actions[ds.actions >= 0]
        info["action_counts"] = dict(zip(ds.action_names, np.bincount(known, minlength=ds.n_actions).tolist()))
    if ds.rewards is not None:
        info["reward_sum"] = float(ds.rewards.sum())
    return info


def write_preview(ds, path, episodes: int = 4, frames: int = 8, size: int = 64) -> str:
    """A PNG grid: one row per episode (its first frames, left to right), frames resized to size."""
    import imageio.v3 as iio
    import numpy as np

    from wmfast.data.frames import resize_uint8

    path = os.fspath(path)
    if not path.lower().endswith(".png"):
        raise WmfastError(f"preview must be a .png path, got {path}")
    rows = []
    for s, e in ds.episodes[:episodes]:
        clip = resize_uint8(np.asarray(ds.frames[s:min(e, s + frames)]), size)
        clip = np.concatenate([clip, np.zeros((frames - len(clip), size, size, 3), np.uint8)])
        clip = np.pad(clip, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=255)  # white frame borders
        rows.append(np.concatenate(list(clip), axis=1))  # [size + 2, frames * (size + 2), 3]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    iio.imwrite(path, np.concatenate(rows, axis=0))
    return path
