"""Fixed sincos positional encodings, laid out exactly as tinyworlds does.

The embedding width E is split three ways: t_dim for time, then x_dim / y_dim for the
patch column / row. Spatial PE fills [x | y | 0], temporal PE fills [0 | t].
"""
import torch


def _even(n: int) -> int:
    return n - (n % 2)


def split_dims(embed_dim: int) -> tuple:
    """(x_dim, y_dim, t_dim) for an embedding of width embed_dim."""
    t_dim = _even(embed_dim // 3)
    s = embed_dim - t_dim
    x_dim = _even(s // 2)
    return x_dim, s - x_dim, t_dim


def sincos_1d(n: int, d: int) -> torch.Tensor:
    """[n, d] with pe[i, 2j] = sin(i / 10000^(2j/d)), pe[i, 2j+1] = cos(...) (interleaved)."""
    if d == 0:
        return torch.zeros(n, 0)
    assert d % 2 == 0, f"sincos width must be even, got {d}"
    pos = torch.arange(n, dtype=torch.float64)[:, None]                     # [n, 1]
    freq = 10000.0 ** (torch.arange(0, d, 2, dtype=torch.float64) / d)       # [d/2]
    angle = pos / freq                                                       # [n, d/2]
    pe = torch.stack([angle.sin(), angle.cos()], dim=-1).reshape(n, d)       # interleave
    return pe.float()


def spatial_pe(grid_h: int, grid_w: int, embed_dim: int) -> torch.Tensor:
    """[1, P, E] for a grid_h x grid_w patch grid, patches in row-major order."""
    x_dim, y_dim, t_dim = split_dims(embed_dim)
    x = sincos_1d(grid_w, x_dim)[None, :, :].expand(grid_h, grid_w, x_dim)   # column of each patch
    y = sincos_1d(grid_h, y_dim)[:, None, :].expand(grid_h, grid_w, y_dim)   # row of each patch
    t = torch.zeros(grid_h, grid_w, t_dim)
    return torch.cat([x, y, t], dim=-1).reshape(1, grid_h * grid_w, embed_dim)


def temporal_pe(num_frames: int, embed_dim: int) -> torch.Tensor:
    """[T, E]: zeros on the spatial part, sincos over T on the last t_dim channels."""
    _, _, t_dim = split_dims(embed_dim)
    return torch.cat([torch.zeros(num_frames, embed_dim - t_dim), sincos_1d(num_frames, t_dim)], dim=-1)
