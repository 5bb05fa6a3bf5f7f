"""Readers for folders of video files or image frames (imageio): frames only, no actions."""
import os
import re
import warnings

import imageio.v3 as iio
import numpy as np

from wmfast.data.dataset import Dataset, segment_episodes
from wmfast.data.frames import resize_uint8
from wmfast.errors import WmfastError

VIDEO_EXTS = (".mp4", ".gif", ".avi", ".mov", ".mkv", ".webm", ".m4v")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def _natural_key(name: str):
    """frame2.png before frame10.png."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _files(folder: str, exts) -> list:
    names = [n for n in os.listdir(folder) if n.lower().endswith(exts) and os.path.isfile(os.path.join(folder, n))]
    return [os.path.join(folder, n) for n in sorted(names, key=_natural_key)]


def _rgb(img: np.ndarray, path: str) -> np.ndarray:
    """Any imageio frame -> uint8 [H, W, 3] (grey is repeated, alpha dropped)."""
    if img.dtype != np.uint8:
        if img.dtype.kind == "u" and img.dtype.itemsize == 2:  # 16-bit PNG
            img = (img >> 8).astype(np.uint8)
        else:
            raise WmfastError(f"{path}: unsupported pixel type {img.dtype} (expected 8-bit images)")
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[2] not in (1, 3, 4):
        raise WmfastError(f"{path}: unsupported image shape {list(img.shape)}")
    return np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img[..., :3]


class _Stacker:
    """Collects frames at one size: `size` when given, else the first frame's size (area resize)."""

    def __init__(self, size):
        self.shape = None if size is None else (size, size)
        self.chunks = []

    def add(self, frames: np.ndarray) -> int:  # frames [n, H, W, 3]
        if self.shape is None:
            self.shape = frames.shape[1:3]
        self.chunks.append(resize_uint8(frames, self.shape))
        return len(frames)

    def stack(self) -> np.ndarray:
        return np.concatenate(self.chunks)


def _quiet(fn, *args):
    """imageio probes every plugin on an unreadable file, and some warn that they are deprecated."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return fn(*args)


def _read_image(path: str) -> np.ndarray:
    try:
        return _rgb(_quiet(iio.imread, path), path)
    except WmfastError:
        raise
    except Exception as e:  # imageio raises many types for unreadable files
        raise WmfastError(f"{path}: cannot read image ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


def _read_video(path: str) -> tuple:
    """-> (frames [n, H, W, 3] uint8, fps or None)."""
    try:
        frames = [_rgb(np.asarray(f), path) for f in _quiet(lambda: list(iio.imiter(path)))]
        try:
            fps = iio.immeta(path).get("fps")
        except Exception:
            fps = None
    except WmfastError:
        raise
    except Exception as e:
        raise WmfastError(f"{path}: cannot read video ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    if not frames:
        raise WmfastError(f"{path}: video has no frames")
    return np.stack(frames), fps


def read_folder(folder, size: int = None) -> Dataset:
    """A folder of video files (one episode each), of image frames (one sequence, cut into
    pseudo-episodes), or of sub-folders of image frames (one episode each). `size` resizes frames
    to size x size on reading (area); without it all frames take the first frame's size."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise WmfastError(f"not a folder: {folder}")
    stack = _Stacker(size)
    videos = _files(folder, VIDEO_EXTS)
    if videos:
        lengths, fps = [], []
        for path in videos:
            frames, rate = _read_video(path)
            lengths.append(stack.add(frames))
            fps.append(rate)
        meta = {"source": "video-folder", "path": folder, "files": [os.path.basename(p) for p in videos],
                "fps": fps[0] if len(set(fps)) == 1 else fps}
        if len(videos) == 1:
            meta["episodes_from"] = "segments of the single video"
            return Dataset(stack.stack(), None, segment_episodes(lengths[0]), meta=meta, source=folder)
        return Dataset(stack.stack(), None, _contiguous(lengths), meta=meta, source=folder)
    images = _files(folder, IMAGE_EXTS)
    if images:
        for path in images:
            stack.add(_read_image(path)[None])
        meta = {"source": "image-folder", "path": folder, "episodes_from": "segments of the frame sequence"}
        return Dataset(stack.stack(), None, segment_episodes(len(images)), meta=meta, source=folder)
    subfolders = sorted((d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d))), key=_natural_key)
    lengths, names = [], []
    for sub in subfolders:
        images = _files(os.path.join(folder, sub), IMAGE_EXTS)
        if images:
            lengths.append(sum(stack.add(_read_image(p)[None]) for p in images))
            names.append(sub)
    if not lengths:
        raise WmfastError(f"{folder}: no video files ({', '.join(VIDEO_EXTS)}) or images "
                          f"({', '.join(IMAGE_EXTS)}) found, nor sub-folders of images")
    meta = {"source": "image-folders", "path": folder, "episodes": names}
    return Dataset(stack.stack(), None, _contiguous(lengths), meta=meta, source=folder)


def _contiguous(lengths) -> list:
    ends = np.cumsum(lengths)
    return [(int(e - n), int(e)) for e, n in zip(ends, lengths)]
