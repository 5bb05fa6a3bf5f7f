"""Finite scalar quantization (Mentzer et al. 2023) as tinyworlds uses it.

Each latent dimension is squashed by tanh and rounded to one of `levels` values in [-1, 1]
(straight-through gradient). A latent's index is its digits in base `levels`, dimension 0
least significant, so the implicit codebook has K = levels ** dim entries.
"""
import torch
import torch.nn as nn

from wmfast.errors import WmfastError


class FSQ(nn.Module):
    def __init__(self, dim: int, levels: int, persistent: bool = True):
        super().__init__()
        if levels < 2:
            raise WmfastError(f"FSQ needs at least 2 levels, got {levels}")
        self.dim, self.levels = dim, levels
        # tinyworlds stores the basis in the tokenizer's and LAM's state dicts, not the dynamics'.
        self.register_buffer("basis", levels ** torch.arange(dim, dtype=torch.long), persistent=persistent)  # [dim]

    @property
    def codebook_size(self) -> int:
        return self.levels ** self.dim

    def forward(self, z: torch.Tensor):
        """z [..., dim] -> (quantized [..., dim] in [-1, 1], aux loss 0)."""
        return self.quantize(z), z.new_zeros(())

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        scaled = 0.5 * (torch.tanh(z) + 1) * (self.levels - 1)              # [0, levels-1]
        rounded = scaled + (torch.round(scaled) - scaled).detach()          # straight-through
        return 2 * rounded / (self.levels - 1) - 1

    def indices(self, q: torch.Tensor) -> torch.Tensor:
        """Quantized latents [..., dim] -> int64 indices [...]."""
        digits = torch.round((q + 1) * (self.levels - 1) / 2).long().clamp(0, self.levels - 1)
        return (digits * self.basis).sum(-1)

    def latents(self, idx: torch.Tensor) -> torch.Tensor:
        """int64 indices [...] -> quantized latents [..., dim] (float32)."""
        digits = (idx.long()[..., None] // self.basis) % self.levels
        return 2 * digits.float() / (self.levels - 1) - 1
