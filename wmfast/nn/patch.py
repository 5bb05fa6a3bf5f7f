"""Patchify / un-patchify in tinyworlds' layout: channel-major inside a patch
(index c*S*S + row*S + col), patches in row-major order (p = hp*Wp + wp)."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from wmfast.nn.pe import spatial_pe


def patchify(frames: torch.Tensor, patch: int) -> torch.Tensor:
    """[B, T, C, H, W] -> [B, T, P, C*S*S]"""
    B, T, C, H, W = frames.shape
    x = frames.reshape(B, T, C, H // patch, patch, W // patch, patch)
    x = x.permute(0, 1, 3, 5, 2, 4, 6)                                         # [B, T, Hp, Wp, C, S, S]
    return x.reshape(B, T, (H // patch) * (W // patch), C * patch * patch)


def unpatchify(x: torch.Tensor, patch: int, height: int, width: int) -> torch.Tensor:
    """[B, T, P, C*S*S] -> [B, T, C, H, W]"""
    B, T, P, D = x.shape
    C, hp, wp = D // (patch * patch), height // patch, width // patch
    x = x.reshape(B, T, hp, wp, C, patch, patch).permute(0, 1, 4, 2, 5, 3, 6)  # [B, T, C, Hp, S, Wp, S]
    return x.reshape(B, T, C, height, width)


class PatchEmbedding(nn.Module):
    """Frames -> patch tokens + spatial PE. `proj` is the 1x1 conv tinyworlds stores; we apply
    it as a matmul over patch vectors, which is the same map."""

    def __init__(self, frame_size: int, patch_size: int, embed_dim: int, channels: int = 3):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(channels * patch_size * patch_size, embed_dim, kernel_size=1)
        grid = frame_size // patch_size
        self.register_buffer("pos", spatial_pe(grid, grid, embed_dim), persistent=False)  # [1, P, E]

    def forward(self, frames):
        # frames [B, T, C, H, W] -> [B, T, P, E]
        x = patchify(frames, self.patch_size)
        return F.linear(x, self.proj.weight.flatten(1), self.proj.bias) + self.pos


class PixelHead(nn.Module):
    """Tokens -> frames through a 1x1 conv (`to_pixels`) and un-patchify."""

    def __init__(self, frame_size: int, patch_size: int, embed_dim: int, channels: int = 3):
        super().__init__()
        self.patch_size, self.frame_size = patch_size, frame_size
        self.to_pixels = nn.Conv2d(embed_dim, channels * patch_size * patch_size, kernel_size=1)

    def forward(self, x):
        # x [B, T, P, E] -> [B, T, C, H, W]
        x = F.linear(x, self.to_pixels.weight.flatten(1), self.to_pixels.bias)
        return unpatchify(x, self.patch_size, self.frame_size, self.frame_size)
