"""Conv building blocks shared by the conv latent action model (wmfast.models.latent_actions,
kind="conv") and the LAPA-style latent-action VQ-VAE (wmfast.models.lapa).

    down = ConvBlock(6, 64, stride=2)            # [B, 6, H, W] -> [B, 64, ceil(H/2), ceil(W/2)]
    up = UpBlock(64, 32)                         # [B, 64, h, w] -> [B, 32, 2h, 2w]
    film = FiLM(cond_dim=16, channels=64)        # x [B, 64, h, w], cond [B, 16] or [B, 16, h, w]
"""
import torch
import torch.nn as nn

from wmfast.errors import WmfastError

NORMS = ("batch", "group", "none")


def norm2d(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    if kind == "none":
        return nn.Identity()
    raise WmfastError(f"unknown norm {kind!r} (choose from {NORMS})")


class ConvBlock(nn.Sequential):
    """3x3 conv (stride 1 or 2, padding 1) -> norm -> ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 2, norm: str = "batch"):
        super().__init__(nn.Conv2d(cin, cout, 3, stride, 1, bias=norm == "none"), norm2d(norm, cout), nn.ReLU())


class UpBlock(nn.Sequential):
    """4x4 transposed conv doubling H and W -> norm -> ReLU (last=True: the bare conv, for outputs)."""

    def __init__(self, cin: int, cout: int, norm: str = "batch", last: bool = False):
        if last:
            super().__init__(nn.ConvTranspose2d(cin, cout, 4, 2, 1))
        else:
            super().__init__(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=norm == "none"), norm2d(norm, cout), nn.ReLU())


class FiLM(nn.Module):
    """x * (1 + gamma) + beta with (gamma, beta) = Linear(cond). cond is one vector per item
    [B, D] (broadcast over H, W) or a map [B, D, H, W] at x's resolution. init_scale scales the
    initial Linear weights: tinyworlds-like near-zero modulation lets a decoder ignore its
    condition early on, so the conv LAM starts at full scale (1.0)."""

    def __init__(self, cond_dim: int, channels: int, init_scale: float = 1.0):
        super().__init__()
        self.proj = nn.Linear(cond_dim, 2 * channels)
        with torch.no_grad():
            self.proj.weight.mul_(init_scale)
            self.proj.bias.zero_()

    def forward(self, x, cond):
        if cond.dim() == 2:                                          # [B, D] -> [B, 2C, 1, 1]
            film = self.proj(cond)[:, :, None, None]
        else:                                                        # [B, D, H, W] -> [B, 2C, H, W]
            film = self.proj(cond.movedim(1, -1)).movedim(-1, 1)
        gamma, beta = film.chunk(2, dim=1)
        return x * (1 + gamma) + beta
