"""Helpers for the LAPA tests: tiny synthetic Breakout-like data at the native 210 x 160 and a tiny LAPA config for fast tests."""
import numpy as np

from wmfast.models.lapa import LapaConfig

ACTIONS = ["NOOP", "FIRE", "RIGHT", "LEFT"]


def tiny_config(**kw) -> LapaConfig:
    base = dict(width_mult=1 / 16, code_dim=8, num_codes=16, grayscale=False, dead_code_every=0)
    return LapaConfig(**{**base, **kw})


def breakout_like(episodes: int = 6, length: int = 6, seed: int = 0):
    """Frames [N, 210, 160, 3] uint8 with walls, a brick band, a paddle that follows the action
    (RIGHT +8 px, LEFT -8 px) and a ball moving diagonally; actions [N] (-1 on each episode's last frame)."""
    rng = np.random.default_rng(seed)
    frames, actions, bounds = [], [], []
    for e in range(episodes):
        start = len(frames)
        px, bx, by = int(rng.integers(20, 120)), int(rng.integers(20, 130)), int(rng.integers(100, 170))
        for t in range(length):
            f = np.zeros((210, 160, 3), np.uint8)
            f[17:32, :] = 142                       # top wall
            f[32:196, :8] = 142                     # side walls
            f[32:196, 152:] = 142
            f[57:93, 8:152] = (200, 72, 72)         # bricks
            f[189:193, px:px + 16] = (200, 72, 72)  # paddle
            f[by:by + 4, bx:bx + 2] = (200, 72, 72)  # ball
            frames.append(f)
            a = int(rng.integers(4)) if t < length - 1 else -1
            actions.append(a)
            px = int(np.clip(px + {2: 8, 3: -8}.get(a, 0), 8, 136))
            bx, by = bx + 3, by - 4
        bounds.append((start, len(frames)))
    return np.stack(frames), np.array(actions, np.int64), bounds


