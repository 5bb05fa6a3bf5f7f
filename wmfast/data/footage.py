"""Footage as users have it: the same frames re-encoded the ways real recordings differ from ours.

    clips = reencode(clips_u8, "jpeg40", rng)        # uint8 [B, T, H, W, 3] -> the same shape

A user's footage was resized by some other program, compressed to JPEG frames or a video, or
cropped a pixel off. Each variant here turns stored frames into such footage at the same size:
  - jpeg75, jpeg40: each frame saved as a JPEG of that quality (PIL) and read back;
  - h264: each clip encoded as an H.264 video (libx264 through imageio-ffmpeg, CRF 28, yuv420p
    chroma subsampling, as screen recorders and phones write it) and decoded;
  - rescale: resized up to 1.5x and back with bilinear filtering (PIL), instead of area averaging;
  - shift1: the picture moved by one pixel in a random direction (edges repeated), per clip.
The evaluator (wmfast.evaluate.footage_robustness) scores a model on each; training can draw from
the cheap ones (AUGMENTATIONS) so a model sees such footage (TrainConfig.augment).
"""
import io
import os
import tempfile

import numpy as np

from wmfast.errors import WmfastError

VARIANTS = ("jpeg75", "jpeg40", "h264", "rescale", "shift1")
AUGMENTATIONS = ("jpeg75", "jpeg40", "rescale", "shift1")     # cheap enough for every training step
H264_CRF = 28


def check_variants(names, allowed=VARIANTS) -> list:
    names = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
    bad = [n for n in names if n not in allowed]
    if bad:
        raise WmfastError(f"unknown footage variant {bad[0]!r}; choose from {', '.join(allowed)}")
    return names


def jpeg(frames_u8: np.ndarray, quality: int) -> np.ndarray:
    """uint8 [..., H, W, 3] -> each frame through a JPEG of `quality`."""
    from PIL import Image

    flat = frames_u8.reshape(-1, *frames_u8.shape[-3:])
    out = np.empty_like(flat)
    for i, frame in enumerate(flat):
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
        out[i] = np.asarray(Image.open(buf).convert("RGB"))
    return out.reshape(frames_u8.shape)


def h264(clip_u8: np.ndarray, crf: int = H264_CRF) -> np.ndarray:
    """uint8 [T, H, W, 3] -> the clip through an H.264 video (H and W even)."""
    import imageio_ffmpeg

    T, H, W, _ = clip_u8.shape
    if H % 2 or W % 2:
        raise WmfastError(f"h264 needs even frame sides (yuv420p), got {H}x{W}")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "clip.mp4")
        writer = imageio_ffmpeg.write_frames(path, (W, H), fps=15, codec="libx264", pix_fmt_out="yuv420p",
                                             macro_block_size=1, output_params=["-crf", str(crf)],
                                             ffmpeg_log_level="error")
        writer.send(None)
        for frame in clip_u8:
            writer.send(np.ascontiguousarray(frame))
        writer.close()
        reader = imageio_ffmpeg.read_frames(path)
        meta = next(reader)
        frames = [np.frombuffer(f, np.uint8).reshape(meta["size"][1], meta["size"][0], 3) for f in reader]
    if len(frames) != T:
        raise WmfastError(f"h264 round trip gave {len(frames)} frames for {T}")
    return np.stack(frames)


def rescale(frames_u8: np.ndarray, factor: float = 1.5) -> np.ndarray:
    """uint8 [..., H, W, 3] -> resized to factor x and back, bilinear (PIL)."""
    from PIL import Image

    flat = frames_u8.reshape(-1, *frames_u8.shape[-3:])
    H, W = flat.shape[1:3]
    big = (int(round(W * factor)), int(round(H * factor)))
    out = np.stack([np.asarray(Image.fromarray(f).resize(big, Image.BILINEAR).resize((W, H), Image.BILINEAR))
                    for f in flat])
    return out.reshape(frames_u8.shape)


def shift(clip_u8: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """uint8 [T, H, W, 3] -> moved by (dy, dx) pixels, the edges repeated."""
    T, H, W, _ = clip_u8.shape
    p = max(abs(dy), abs(dx))
    padded = np.pad(clip_u8, ((0, 0), (p, p), (p, p), (0, 0)), mode="edge")
    return padded[:, p - dy:p - dy + H, p - dx:p - dx + W]


def reencode(clips_u8: np.ndarray, variant: str, rng: np.random.Generator) -> np.ndarray:
    """uint8 [B, T, H, W, 3] -> the same clips as `variant` footage (rng: shift1's directions)."""
    clips_u8 = np.asarray(clips_u8)
    if clips_u8.ndim != 5 or clips_u8.shape[-1] != 3 or clips_u8.dtype != np.uint8:
        raise WmfastError(f"reencode wants uint8 clips [B, T, H, W, 3], got {clips_u8.dtype} {clips_u8.shape}")
    check_variants([variant])
    if variant.startswith("jpeg"):
        return jpeg(clips_u8, int(variant[4:]))
    if variant == "h264":
        return np.stack([h264(c) for c in clips_u8])
    if variant == "rescale":
        return rescale(clips_u8)
    moves = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
    return np.stack([shift(c, *moves[rng.integers(len(moves))]) for c in clips_u8])
