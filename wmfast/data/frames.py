"""Frame conversions shared by the readers and the clip sampler.

Stored frames are uint8 `[N, H, W, 3]`; models take float `[B, T, 3, S, S]` in [-1, 1]
(uint8 / 255, then (x - 0.5) / 0.5, exactly as tinyworlds).
"""
import numpy as np
import torch

from wmfast.errors import WmfastError


def check_size(size, name: str = "size", allow_native: bool = False) -> int:
    """A frame size must be a positive int (0 means 'native' where allowed)."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise WmfastError(f"{name} must be an integer, got {size!r}")
    if allow_native and size == 0:
        return 0
    if not 4 <= size <= 1024:
        lo = "0 (native) or " if allow_native else ""
        raise WmfastError(f"{name} must be {lo}between 4 and 1024 pixels, got {size}")
    return int(size)


def to_float(frames_u8) -> np.ndarray:
    """uint8 [..., H, W, 3] -> float32 [..., 3, H, W] in [-1, 1] (a contiguous numpy array)."""
    x = np.moveaxis(np.asarray(frames_u8), -1, -3).astype(np.float32)  # the copy is contiguous
    x /= 255.0
    x -= 0.5
    x /= 0.5
    return x


def area_weights(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] float32 matrix averaging each output cell over the input pixels it covers,
    weighted by the fraction covered (area interpolation, as OpenCV's INTER_AREA; the block mean
    when n_in is a multiple of n_out). Upsampling (n_out > n_in) is nearest-neighbour."""
    if n_out >= n_in:
        src = np.minimum(((np.arange(n_out) + 0.5) * n_in / n_out).astype(np.int64), n_in - 1)
        return np.eye(n_in, dtype=np.float32)[src]
    edges = np.arange(n_out + 1) * (n_in / n_out)  # output cell edges in input pixels
    pix = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(edges[1:, None], pix + 1) - np.maximum(edges[:-1, None], pix), 0, None)
    return (overlap / overlap.sum(1, keepdims=True)).astype(np.float32)


def resize_float(x: np.ndarray, size) -> np.ndarray:
    """float32 [..., H, W] -> [..., h, w] by area interpolation; size = S or (h, w).
    A non-square source is stretched to the square the models take."""
    h, w = (size, size) if np.isscalar(size) else size
    if x.shape[-2:] == (h, w):
        return x
    return area_weights(x.shape[-2], h) @ x @ area_weights(x.shape[-1], w).T


def to_model_frames(frames_u8, size: int) -> torch.Tensor:
    """uint8 [..., H, W, 3] -> float32 tensor [..., 3, S, S] in [-1, 1].

    Numpy does the work: single-threaded, so loading data never fights the model for the
    intra-op threads (on a busy 2-core machine torch's threaded version was ~10x slower)."""
    return torch.from_numpy(np.ascontiguousarray(resize_float(to_float(frames_u8), size)))


def resize_uint8(frames: np.ndarray, size) -> np.ndarray:
    """uint8 [N, H, W, 3] -> uint8 [N, h, w, 3] by area interpolation; size = S or (h, w)."""
    h, w = (size, size) if np.isscalar(size) else size
    if frames.shape[1:3] == (h, w):
        return frames
    wy, wx = area_weights(frames.shape[1], h), area_weights(frames.shape[2], w)
    out = np.empty((frames.shape[0], h, w, 3), np.uint8)
    for i in range(0, len(frames), 256):  # bounded float32 memory for long videos
        x = np.moveaxis(frames[i:i + 256], -1, 1).astype(np.float32)  # [n, 3, H, W]
        y = np.rint(wy @ x @ wx.T).clip(0, 255).astype(np.uint8)
        out[i:i + 256] = np.moveaxis(y, 1, -1)
    return out


def check_frames_u8(frames, source: str) -> None:
    """Stored frames must be uint8 [N, H, W, 3] with N >= 1."""
    dtype = getattr(frames, "dtype", None)
    shape = tuple(getattr(frames, "shape", ()))
    if dtype != np.uint8:
        raise WmfastError(f"{source}: frames must be uint8, got {dtype}")
    if len(shape) != 4 or shape[3] != 3:
        raise WmfastError(f"{source}: frames must have shape [N, H, W, 3], got {list(shape)}")
    if shape[0] < 1 or shape[1] < 1 or shape[2] < 1:
        raise WmfastError(f"{source}: frames are empty (shape {list(shape)})")
