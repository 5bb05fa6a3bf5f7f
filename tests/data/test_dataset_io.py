"""wmfast dataset files: round trip, the tinyworlds layout, and one-line errors for bad files."""
import json
import os

import h5py
import numpy as np
import pytest

from wmfast.data import Dataset, load_dataset, write_dataset
from wmfast.data.dataset import SEGMENT_FRAMES
from wmfast.errors import WmfastError


def small_dataset(n_eps=3, length=7, size=8, seed=0):
    rng = np.random.default_rng(seed)
    n = n_eps * length
    frames = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    actions = rng.integers(0, 4, n).astype(np.int64)
    episodes = [(e * length, (e + 1) * length) for e in range(n_eps)]
    actions[[e - 1 for _, e in episodes]] = -1
    rewards = rng.normal(size=n).astype(np.float32)
    return frames, actions, episodes, rewards


def test_round_trip(tmp_path):
    frames, actions, episodes, rewards = small_dataset()
    meta = {"game": "test", "seed": 3, "frameskip": 4, "sticky": 0.25}
    path = write_dataset(tmp_path / "d.h5", frames, actions, episodes, 4, ["A", "B", "C", "D"], meta, rewards)
    assert os.listdir(tmp_path) == ["d.h5"]  # the temp file is gone
    ds = load_dataset(path)
    assert isinstance(ds.frames, np.ndarray) and np.array_equal(ds.frames, frames)
    assert ds.actions.dtype == np.int64 and np.array_equal(ds.actions, actions)
    assert np.array_equal(ds.rewards, rewards)
    assert ds.episodes == episodes and ds.n_actions == 4 and ds.action_names == ["A", "B", "C", "D"]
    assert {k: ds.meta[k] for k in meta} == meta and ds.meta["format"] == "wmfast-dataset"
    assert ds.frame_size == 8 and len(ds) == 21
    # The tinyworlds layout: a plain `frames` dataset [N, H, W, 3] uint8.
    with h5py.File(path, "r") as f:
        assert f["frames"].dtype == np.uint8 and f["frames"].shape == (21, 8, 8, 3)


def test_dataset_without_actions_round_trips(tmp_path):
    frames, _, episodes, _ = small_dataset()
    ds = load_dataset(write_dataset(tmp_path / "d.h5", frames, None, episodes))
    assert ds.actions is None and ds.episodes == episodes and ds.n_actions == 0


def test_split_holds_out_whole_episodes():
    frames = np.zeros((50, 4, 4, 3), np.uint8)
    ds = Dataset(frames, episodes=[(i * 5, i * 5 + 5) for i in range(10)])
    train, val = ds.split(0.2, seed=1)
    assert len(val) == 2 and len(train) == 8 and not set(train) & set(val)
    assert sorted(train + val) == list(range(10))
    assert ds.split(0.2, seed=1) == (train, val)
    assert ds.split(0.2, seed=2) != (train, val)
    assert ds.split(0.0) == (list(range(10)), [])


def test_tinyworlds_h5_reader(tmp_path):
    """A tinyworlds file: only `frames`; no actions; cut into pseudo-episodes for held-out splits."""
    n = 2 * SEGMENT_FRAMES + 700
    frames = np.random.default_rng(0).integers(0, 256, (n, 4, 4, 3), dtype=np.uint8)
    with h5py.File(tmp_path / "tw.h5", "w") as f:
        f.create_dataset("frames", data=frames)
    ds = load_dataset(str(tmp_path / "tw.h5"))
    assert np.array_equal(ds.frames, frames) and ds.actions is None
    assert ds.episodes == [(0, 1000), (1000, 2000), (2000, n)]
    assert ds.meta["source"] == "tinyworlds-h5"


def _write_raw(path, **datasets):
    with h5py.File(path, "w") as f:
        for k, v in datasets.items():
            f.create_dataset(k, data=v)
    return str(path)


def test_bad_files_give_one_line_errors(tmp_path):
    with pytest.raises(WmfastError, match="dataset not found"):
        load_dataset(tmp_path / "missing.h5")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5 at all" * 10)
    with pytest.raises(WmfastError, match="not a readable HDF5 file"):
        load_dataset(tmp_path / "junk.h5")
    # A truncated file (a real dataset cut in half).
    frames, actions, episodes, _ = small_dataset(length=50, size=16)
    good = write_dataset(tmp_path / "good.h5", frames, actions, episodes, 4)
    data = open(good, "rb").read()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(WmfastError, match="cut.h5"):
        load_dataset(tmp_path / "cut.h5")
    with pytest.raises(WmfastError, match="frames must be uint8, got float32"):
        load_dataset(_write_raw(tmp_path / "f.h5", frames=np.zeros((3, 4, 4, 3), np.float32)))
    with pytest.raises(WmfastError, match=r"shape \[N, H, W, 3\]"):
        load_dataset(_write_raw(tmp_path / "s.h5", frames=np.zeros((3, 4, 4), np.uint8)))
    with pytest.raises(WmfastError, match="no `frames` dataset"):
        load_dataset(_write_raw(tmp_path / "n.h5", images=np.zeros((3, 4, 4, 3), np.uint8)))
    with pytest.raises(WmfastError) as info:
        load_dataset(tmp_path / "cut.h5")
    assert "\n" not in str(info.value)


def test_bad_wmfast_metadata_and_actions(tmp_path):
    frames, actions, episodes, _ = small_dataset()
    path = write_dataset(tmp_path / "d.h5", frames, actions, episodes, 4)
    with h5py.File(path, "a") as f:
        del f["actions"]
        f.create_dataset("actions", data=actions.astype(np.float32))
    with pytest.raises(WmfastError, match="actions must be integers"):
        load_dataset(path)
    with h5py.File(path, "a") as f:
        f.attrs["wmfast"] = "{not json"
    with pytest.raises(WmfastError, match="not valid JSON"):
        load_dataset(path)
    with h5py.File(path, "a") as f:
        f.attrs["wmfast"] = json.dumps({"format": "wmfast-dataset", "version": 1, "n_actions": 4})
        del f["episode_starts"]
        f.create_dataset("episode_starts", data=np.array([0, 10, 5]))
    with pytest.raises(WmfastError, match="episode_starts"):
        load_dataset(path)


def test_write_rejects_bad_inputs(tmp_path):
    frames, actions, episodes, _ = small_dataset()
    with pytest.raises(WmfastError, match="uint8"):
        write_dataset(tmp_path / "x.h5", frames.astype(np.float32), actions, episodes, 4)
    bad = actions.copy()
    bad[6] = 1  # the last frame of episode 0 has no next frame
    with pytest.raises(WmfastError, match="last frame must be -1"):
        write_dataset(tmp_path / "x.h5", frames, bad, episodes, 4)
    with pytest.raises(WmfastError, match=r"actions must be in \[-1, 3\)"):
        write_dataset(tmp_path / "x.h5", frames, actions, episodes, 3)
    with pytest.raises(WmfastError, match="episodes cover"):
        write_dataset(tmp_path / "x.h5", frames, actions, episodes[:2], 4)
    assert not os.listdir(tmp_path)  # nothing half-written


def test_bad_specs():
    with pytest.raises(WmfastError, match="unknown game"):
        load_dataset("game:nope")
    with pytest.raises(WmfastError, match="EPISODES must be a positive integer"):
        load_dataset("game:pong:ten")
    with pytest.raises(WmfastError, match="dataset not found: nowhere.h5"):
        load_dataset("nowhere.h5")


def test_game_spec_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("WMFAST_CACHE", str(tmp_path))
    ds1 = load_dataset("game:maze:2", steps=12, progress=False)
    files = list((tmp_path / "games").iterdir())
    assert len(files) == 1 and ds1.n_episodes == 2 and len(ds1) == 26
    mtime = files[0].stat().st_mtime_ns
    ds2 = load_dataset("game:maze:2", steps=12, progress=False)
    assert files[0].stat().st_mtime_ns == mtime  # read, not regenerated
    assert np.array_equal(ds1.frames, ds2.frames) and np.array_equal(ds1.actions, ds2.actions)
