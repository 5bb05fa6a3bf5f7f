"""The image encoder every policy shares, and the policy config.

    frames uint8 [B, H, W, 3] --to_input--> float [B, 3, H, W] in [-1, 1]
    Conv2d(3, C, 3x3, pad 1) + ReLU + MaxPool(4) -> Conv2d(C, C, 3x3, pad 1) + ReLU + MaxPool(2)
    -> features [B, C, H/8, W/8]     (128 x 128 -> 16 x 16 x 32: 256 tokens for ACT)

Padding 1 keeps each 3x3 convolution size-preserving, so only the pools shrink the image (by 8):
without it 128 would give (126 / 4 = 31 - 2) / 2 = 14, not 16.
"""
import dataclasses

import numpy as np
import torch
import torch.nn as nn

from wmfast.config import Config
from wmfast.errors import WmfastError

KINDS = ("bc", "chunk", "act")


@dataclasses.dataclass
class PolicyConfig(Config):
    kind: str = "act"                 # bc | chunk | act
    frame_size: int = 128             # square input frames (a multiple of 8)
    chunk: int = 8                    # actions per prediction (bc: 1)
    action_space: str = "continuous"  # continuous (regression, MSE) | discrete (classification, cross-entropy)
    action_dim: int = 2               # continuous: numbers per action
    num_actions: int = 0              # discrete: classes per action
    action_names: tuple = ()          # discrete: names of the classes (for tables and maps)
    channels: int = 32                # CNN width (ACT: 32 = d_model, so tokens need no projection)
    hidden: int = 256                 # bc / chunk: MLP hidden width
    d_model: int = 32                 # act
    nhead: int = 2
    dim_feedforward: int = 256
    num_layers: int = 2
    dropout: float = 0.1
    game: str = ""                    # the game it was trained on (reach, pong, maze, ...)
    teacher: str = ""                 # the scripted teacher it imitated (wmfast.policy.teachers), if any

    def __post_init__(self):
        self.action_names = tuple(self.action_names)
        if self.kind not in KINDS:
            raise WmfastError(f"policy kind must be one of {KINDS}, got {self.kind!r}")
        if self.frame_size < 8 or self.frame_size % 8:
            raise WmfastError(f"policy frame_size must be a multiple of 8 (two pools: 4 then 2), got {self.frame_size}")
        if self.kind == "bc" and self.chunk != 1:
            raise WmfastError(f"a bc policy predicts one action (chunk=1), got chunk={self.chunk}")
        if self.chunk < 1:
            raise WmfastError(f"chunk must be >= 1, got {self.chunk}")
        if self.action_space not in ("continuous", "discrete"):
            raise WmfastError(f"action_space must be continuous or discrete, got {self.action_space!r}")
        if self.discrete and self.num_actions < 2:
            raise WmfastError(f"a discrete policy needs num_actions >= 2, got {self.num_actions}")
        if self.kind == "act" and (self.d_model % 4 or self.d_model % self.nhead):
            raise WmfastError(f"act: d_model ({self.d_model}) must be divisible by 4 (2-D sine positions) and by "
                              f"nhead ({self.nhead})")
        if self.kind == "act" and self.channels != self.d_model:
            raise WmfastError(f"act: the CNN's channels ({self.channels}) are the tokens, so they must equal "
                              f"d_model ({self.d_model})")

    @property
    def discrete(self) -> bool:
        return self.action_space == "discrete"

    @property
    def out_dim(self) -> int:
        """Numbers per predicted action: a velocity (continuous) or class logits (discrete)."""
        return self.num_actions if self.discrete else self.action_dim

    @property
    def grid(self) -> int:
        return self.frame_size // 8


class ConvTokens(nn.Module):
    """frames [B, 3, S, S] -> features [B, C, S/8, S/8]."""

    def __init__(self, channels: int = 32):
        super().__init__()
        # MaxPool then ReLU: max(relu(x)) == relu(max(x)) exactly (ReLU is monotonic), and the ReLU then
        # runs on 16x (4x) fewer elements, forward and backward: the specified Conv+ReLU+MaxPool, cheaper.
        self.net = nn.Sequential(
            nn.Conv2d(3, channels, 3, padding=1), nn.MaxPool2d(4), nn.ReLU(),         # [B, C, S/4, S/4]
            nn.Conv2d(channels, channels, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(),  # [B, C, S/8, S/8]
        ).to(memory_format=torch.channels_last)   # weights too: the convolutions follow them (see forward)

    def forward(self, x):
        # Channels-last: max pooling on [B, C, H, W] walks one plane at a time and took half of an
        # eager batch-1 call; with channels innermost it vectorizes over C (~13x faster pooling, ~4x
        # faster ACT chunk on one CPU thread). Same numbers; ONNX export ignores memory formats.
        return self.net(x.contiguous(memory_format=torch.channels_last))


def flat_mlp(cfg: PolicyConfig, outputs: int) -> nn.Sequential:
    """BC's and the chunk policy's head: features [B, C, G, G] -> flatten -> Linear + ReLU -> [B, outputs]."""
    return nn.Sequential(nn.Flatten(), nn.Linear(cfg.channels * cfg.grid ** 2, cfg.hidden), nn.ReLU(),
                         nn.Linear(cfg.hidden, outputs))


def to_input(frames, frame_size: int = None) -> torch.Tensor:
    """uint8 frames [B, H, W, 3] (numpy or torch) -> float [B, 3, H, W] in [-1, 1], checked."""
    x = torch.as_tensor(np.asarray(frames)) if not isinstance(frames, torch.Tensor) else frames
    if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[-1] != 3:
        raise WmfastError(f"policy input must be uint8 frames [B, H, W, 3], got {x.dtype} {tuple(x.shape)}")
    if frame_size is not None and (x.shape[1] != frame_size or x.shape[2] != frame_size):
        raise WmfastError(f"policy expects {frame_size}x{frame_size} frames, got {x.shape[1]}x{x.shape[2]}")
    return x.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def check_input(x, cfg: PolicyConfig) -> None:
    S = cfg.frame_size
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != (3, S, S) \
            or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise WmfastError(f"policy input must be float frames [B, 3, {S}, {S}], got {shape}")
