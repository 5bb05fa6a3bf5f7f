"""Folder readers: video files (one episode each), PNG frames, sub-folders of frames."""
import imageio.v3 as iio
import numpy as np
import pytest

from wmfast.data import ClipSampler, convert_dataset, load_dataset
from wmfast.errors import WmfastError


def blocks(n, size=16, seed=0):
    """Frames of flat 4x4 blocks of saturated colours: they survive GIF palettes and MP4 coding."""
    rng = np.random.default_rng(seed)
    cells = rng.choice([0, 255], size=(n, size // 4, size // 4, 3)).astype(np.uint8)
    return cells.repeat(4, axis=1).repeat(4, axis=2)


def test_gif_folder_one_episode_per_file(tmp_path):
    a, b = blocks(5, seed=1), blocks(7, seed=2)
    iio.imwrite(tmp_path / "clip_2.gif", a, duration=50, loop=0)
    iio.imwrite(tmp_path / "clip_10.gif", b, duration=50, loop=0)
    (tmp_path / "notes.txt").write_text("ignored")
    ds = load_dataset(tmp_path)
    assert ds.episodes == [(0, 5), (5, 12)]  # natural order: clip_2 before clip_10
    assert ds.actions is None and ds.frames.dtype == np.uint8
    assert np.array_equal(ds.frames[:5], a) and np.array_equal(ds.frames[5:], b)
    assert ds.meta["source"] == "video-folder"


def test_mp4_folder(tmp_path):
    frames = blocks(12, size=32)
    iio.imwrite(tmp_path / "v.mp4", frames, fps=10, codec="libx264", macro_block_size=1)
    ds = load_dataset(tmp_path)
    assert ds.frames.shape == (12, 32, 32, 3)
    assert np.abs(ds.frames.astype(int) - frames).mean() < 12  # lossy codec, same picture
    assert ds.meta["fps"] == pytest.approx(10)


def test_png_folder_and_resize(tmp_path):
    frames = blocks(6, size=16)
    for i, f in enumerate(frames):
        iio.imwrite(tmp_path / f"f{i}.png", f)
    ds = load_dataset(tmp_path)
    assert np.array_equal(ds.frames, frames) and ds.episodes == [(0, 6)]
    small = load_dataset(tmp_path, size=8)
    ref = frames.astype(np.float64).reshape(6, 8, 2, 8, 2, 3).mean((2, 4))
    assert np.abs(small.frames - ref).max() <= 0.5 + 1e-9  # area mean, rounded
    x, a = ClipSampler(ds, clip_len=3, frame_size=8).sample(4)
    assert x.shape == (4, 3, 3, 8, 8) and (a == -1).all()


def test_grey_rgba_and_non_square_images(tmp_path):
    iio.imwrite(tmp_path / "0.png", np.full((10, 20), 200, np.uint8))  # grey
    rgba = np.zeros((10, 20, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 7
    iio.imwrite(tmp_path / "1.png", rgba)
    ds = load_dataset(tmp_path)
    assert ds.frames.shape == (2, 10, 20, 3) and ds.frame_size is None
    assert (ds.frames[0] == 200).all() and (ds.frames[1] == [255, 0, 0]).all()


def test_subfolders_are_episodes(tmp_path):
    for ep, n in (("run1", 3), ("run2", 4)):
        (tmp_path / ep).mkdir()
        for i, f in enumerate(blocks(n, seed=n)):
            iio.imwrite(tmp_path / ep / f"{i:03d}.png", f)
    ds = load_dataset(tmp_path)
    assert ds.episodes == [(0, 3), (3, 7)] and ds.meta["episodes"] == ["run1", "run2"]


def test_convert_folder_to_dataset(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    iio.imwrite(src / "a.gif", blocks(4), duration=50, loop=0)
    iio.imwrite(src / "b.gif", blocks(3, seed=5), duration=50, loop=0)
    out = convert_dataset(src, tmp_path / "out.h5", size=8, progress=False)
    ds = load_dataset(out)
    assert ds.frames.shape == (7, 8, 8, 3) and ds.episodes == [(0, 4), (4, 7)]
    assert ds.meta["source"] == "video-folder"


def test_bad_folders(tmp_path):
    with pytest.raises(WmfastError, match="no video files"):
        load_dataset(tmp_path)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(WmfastError, match="broken.png: cannot read image"):
        load_dataset(tmp_path)
    (tmp_path / "broken.png").unlink()
    (tmp_path / "broken.mp4").write_bytes(b"nope")
    with pytest.raises(WmfastError, match="broken.mp4: cannot read video"):
        load_dataset(tmp_path)
