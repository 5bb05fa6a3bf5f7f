"""Clips in and out of the server: uploaded PNG/GIF/MP4 -> context frames; a session -> GIF."""
import io

import numpy as np

from wmfast.errors import WmfastError

# Types are told by their first bytes, never by a client's file name or Content-Type.
KINDS = {"png": ".png", "gif": ".gif", "mp4": ".mp4"}


def sniff(data: bytes) -> str:
    """'png', 'gif' or 'mp4' from the file's magic bytes."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[4:8] == b"ftyp":
        return "mp4"
    raise WmfastError("upload must be a PNG, GIF or MP4 file (its first bytes say otherwise)")


def _pil_frames(data: bytes, max_frames: int, max_side: int):
    from PIL import Image, ImageSequence

    img = Image.open(io.BytesIO(data))          # reads the header only: the size is checked before decoding
    _check_side(img.size, max_side)
    for i, frame in enumerate(ImageSequence.Iterator(img)):
        if i >= max_frames:
            break
        yield np.asarray(frame.convert("RGB"))


def _video_frames(data: bytes, max_frames: int, max_side: int):
    import imageio.v3 as iio

    size = iio.immeta(data, extension=".mp4").get("size")
    if size:
        _check_side(size, max_side)
    for i, frame in enumerate(iio.imiter(data, extension=".mp4")):
        if i >= max_frames:
            break
        _check_side(frame.shape[1::-1], max_side)
        yield frame[..., :3]


def _check_side(size, max_side: int):
    w, h = (int(s) for s in size)
    if w < 1 or h < 1 or max(w, h) > max_side:
        raise WmfastError(f"upload frames are {w}x{h}; at most {max_side}x{max_side} is accepted")


def square(frame: np.ndarray, size: int) -> np.ndarray:
    """uint8 [H, W, 3] -> center crop to a square, area-resized to [size, size, 3]."""
    from PIL import Image

    h, w = frame.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    img = Image.fromarray(np.ascontiguousarray(frame[top:top + s, left:left + s]))
    return np.asarray(img.resize((size, size), Image.BOX if s >= size else Image.BICUBIC))


def decode_clip(data: bytes, frame_size: int, keep: int, max_frames: int = 256, max_side: int = 1024) -> np.ndarray:
    """An uploaded PNG/GIF/MP4 -> its last `keep` frames (of the first max_frames) as uint8
    [T, frame_size, frame_size, 3]; one line naming the problem for anything else."""
    kind = sniff(data)
    reader = _video_frames if kind == "mp4" else _pil_frames
    try:
        frames = [square(f, frame_size) for f in reader(data, max_frames, max_side)][-keep:]
    except WmfastError:
        raise
    except Exception as e:  # noqa: BLE001 -- decoders raise many types on corrupt files
        raise WmfastError(f"could not decode the {kind.upper()} upload: {type(e).__name__}: {e}"[:300]) from None
    if not frames:
        raise WmfastError(f"the {kind.upper()} upload holds no frames")
    return np.stack(frames)


def gif_bytes(frames, fps: float = 10.0, scale: int = 4) -> bytes:
    """uint8 frames [N, H, W, 3] -> an animated GIF, upscaled with crisp pixels."""
    import imageio.v3 as iio

    from wmfast.rollout.media import upscale

    video = upscale(np.stack(list(frames)), scale)
    return iio.imwrite("<bytes>", video, extension=".gif", duration=1000.0 / fps, loop=0)
