"""Writing frames people look at: GIF/MP4 rollouts, side by side with the truth when known."""
import os

import numpy as np
import torch


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """float [..., 3, H, W] in [-1, 1] -> uint8 [..., H, W, 3]."""
    x = ((frames.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.movedim(-3, -1).cpu().numpy()


def side_by_side(*videos: np.ndarray, gap: int = 2) -> np.ndarray:
    """uint8 [N, H, W, 3] videos of equal length -> one [N, H, sum W + gaps, 3] video."""
    n, h = videos[0].shape[:2]
    sep = np.full((n, h, gap, 3), 255, np.uint8)
    parts = []
    for i, v in enumerate(videos):
        parts += ([sep] if i else []) + [v]
    return np.concatenate(parts, axis=2)


def upscale(video: np.ndarray, factor: int) -> np.ndarray:
    return video.repeat(factor, axis=1).repeat(factor, axis=2) if factor > 1 else video


def write_video(video: np.ndarray, path, fps: int = 8, scale: int = 4):
    """uint8 [N, H, W, 3] -> GIF or MP4 (by extension), upscaled so small frames are visible."""
    import imageio.v2 as imageio

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    video = upscale(video, scale)
    if str(path).lower().endswith(".gif"):
        imageio.mimsave(path, list(video), duration=1000 / fps, loop=0)
    else:
        imageio.mimsave(path, list(video), fps=fps, macro_block_size=1)
    return path
