"""ClipSampler: shapes and ranges, no episode crossing, action alignment, stride, resizing."""
import numpy as np
import pytest
import torch

from wmfast.data import ClipSampler, Dataset
from wmfast.errors import WmfastError

N_ACTIONS = 7


def indexed_dataset(lengths=(12, 5, 20, 9), size=8):
    """Frame i is filled with the value i (so a clip tells which frames it holds); action i = i % 7."""
    n = sum(lengths)
    frames = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, size, size, 3)).copy()
    ends = np.cumsum(lengths)
    episodes = [(int(e - l), int(e)) for e, l in zip(ends, lengths)]
    actions = np.arange(n) % N_ACTIONS
    actions[ends - 1] = -1
    return Dataset(frames, actions, episodes, N_ACTIONS)


def frame_ids(frames: torch.Tensor) -> np.ndarray:
    """Invert the uint8 -> [-1, 1] conversion of the constant frames: [B, T] stored indices."""
    return np.rint((frames[:, :, 0, 0, 0].double().numpy() + 1) * 127.5).astype(np.int64)


def episode_of(ds, idx):
    return np.searchsorted(np.array([e for _, e in ds.episodes]), idx, side="right")


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_clips_stay_inside_episodes_and_align_actions(stride):
    ds = indexed_dataset()
    sampler = ClipSampler(ds, clip_len=4, stride=stride, frame_size=8, seed=0)
    frames, actions = sampler.sample(256)
    assert frames.shape == (256, 4, 3, 8, 8) and frames.dtype == torch.float32
    assert actions.shape == (256, 3) and actions.dtype == torch.int64
    ids = frame_ids(frames)
    assert (np.diff(ids, axis=1) == stride).all()
    eps = episode_of(ds, ids)
    assert (eps == eps[:, :1]).all()  # never across a boundary
    # Episode 1 (5 frames) only fits clips with stride 1.
    assert (1 in eps[:, 0]) == (stride == 1)
    for b in range(256):
        for t in range(3):
            window = ds.actions[ids[b, t]:ids[b, t] + stride]
            want = window[0] if (window == window[0]).all() else -1
            assert actions[b, t] == want
    if stride == 1:  # action t is the one stored at clip frame t
        assert np.array_equal(actions.numpy(), ds.actions[ids[:, :-1]])


def test_every_clip_start_is_reachable_and_uniform():
    ds = indexed_dataset(lengths=(6, 4))
    sampler = ClipSampler(ds, clip_len=3, frame_size=8, seed=1)
    assert len(sampler) == 4 + 2
    starts = frame_ids(sampler.sample(6000)[0])[:, 0]
    counts = np.bincount(starts, minlength=10)
    assert set(np.nonzero(counts)[0]) == {0, 1, 2, 3, 6, 7}
    assert counts[counts > 0].min() > 800


def test_values_and_range():
    frames = np.zeros((4, 8, 8, 3), np.uint8)
    frames[1] = 255
    frames[2] = 128
    sampler = ClipSampler(Dataset(frames), clip_len=4, frame_size=8)
    x, a = sampler.episode_clip(0, 0)
    assert x[0, 0].eq(-1).all() and x[0, 1].eq(1).all()
    assert torch.allclose(x[0, 2], torch.tensor(128 / 127.5 - 1), atol=1e-6)
    assert a.tolist() == [[-1, -1, -1]]  # no actions stored -> unknown


def test_area_resize_matches_block_mean():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    x, _ = ClipSampler(Dataset(frames), clip_len=6, frame_size=8).episode_clip(0, 0)
    ref = frames.astype(np.float64).reshape(6, 8, 2, 8, 2, 3).mean((2, 4)) / 127.5 - 1  # [T, 8, 8, 3]
    assert np.allclose(x[0].permute(0, 2, 3, 1).double().numpy(), ref, atol=1e-5)


def test_non_square_frames_become_square():
    frames = np.random.default_rng(0).integers(0, 256, (3, 21, 16, 3), dtype=np.uint8)
    ds = Dataset(frames)
    assert ds.frame_size is None
    x, _ = ClipSampler(ds, clip_len=2, frame_size=8).sample(2)
    assert x.shape == (2, 2, 3, 8, 8) and x.min() >= -1 and x.max() <= 1
    with pytest.raises(WmfastError, match="not square"):
        ClipSampler(ds, clip_len=2, frame_size=None)


def test_episode_clip_is_deterministic_and_checked():
    ds = indexed_dataset()
    sampler = ClipSampler(ds, clip_len=3, stride=2, frame_size=8, seed=0)
    x, a = sampler.episode_clip(2, 4)
    s = ds.episodes[2][0]
    assert frame_ids(x)[0].tolist() == [s + 4, s + 6, s + 8]
    x2, _ = ClipSampler(ds, clip_len=3, stride=2, frame_size=8, seed=9).episode_clip(2, 4)
    assert torch.equal(x, x2)
    with pytest.raises(WmfastError, match="no clip of 3 frames"):
        sampler.episode_clip(1, 1)  # episode 1 has 5 frames: frames 1, 3, 5 would leave it
    with pytest.raises(WmfastError, match="out of range"):
        sampler.episode_clip(7, 0)


def test_episode_subset_and_errors():
    ds = indexed_dataset()
    sampler = ClipSampler(ds, clip_len=3, frame_size=8, episodes=[3], seed=0)
    ids = frame_ids(sampler.sample(64)[0])
    assert (episode_of(ds, ids) == 3).all()
    with pytest.raises(WmfastError, match="no episode holds a clip"):
        ClipSampler(ds, clip_len=6, frame_size=8, episodes=[1])
    with pytest.raises(WmfastError, match="out of range"):
        ClipSampler(ds, clip_len=2, frame_size=8, episodes=[4])
    with pytest.raises(WmfastError, match="frame_size"):
        ClipSampler(ds, clip_len=2, frame_size=0)


def test_same_seed_same_batches():
    ds = indexed_dataset()
    a = ClipSampler(ds, clip_len=3, frame_size=8, seed=5).sample(16)
    b = ClipSampler(ds, clip_len=3, frame_size=8, seed=5).sample(16)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_lazy_h5_frames_read_the_same(tmp_path, monkeypatch):
    from wmfast.data import dataset as dataset_module
    from wmfast.data import load_dataset, write_dataset

    ds = indexed_dataset()
    path = write_dataset(tmp_path / "d.h5", ds.frames, ds.actions, ds.episodes, N_ACTIONS)
    monkeypatch.setattr(dataset_module, "IN_MEMORY_BYTES", 0)  # force lazy h5py reads
    lazy = load_dataset(path)
    assert not isinstance(lazy.frames, np.ndarray)
    for stride in (1, 2):
        x1, a1 = ClipSampler(lazy, clip_len=4, stride=stride, frame_size=8, seed=3).sample(8)
        x2, a2 = ClipSampler(ds, clip_len=4, stride=stride, frame_size=8, seed=3).sample(8)
        assert torch.equal(x1, x2) and torch.equal(a1, a2)
