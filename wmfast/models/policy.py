"""Image -> action policies, one config for all three (kind: bc | chunk | act), read top to bottom:
the shared image encoder, behaviour cloning, action chunking with an MLP head, and ACT.

The image encoder:

    frames uint8 [B, H, W, 3] --to_input--> float [B, 3, H, W] in [-1, 1]
    Conv2d(3, C, 3x3, pad 1) + ReLU + MaxPool(4) -> Conv2d(C, C, 3x3, pad 1) + ReLU + MaxPool(2)
    -> features [B, C, H/8, W/8]     (128 x 128 -> 16 x 16 x 32: 256 tokens for ACT)

Padding 1 keeps each 3x3 convolution size-preserving, so only the pools shrink the image (by 8):
without it 128 would give (126 / 4 = 31 - 2) / 2 = 14, not 16.

Behaviour cloning: CNN -> flatten -> MLP -> one action.

    frames [B, 3, S, S] -> ConvTokens [B, C, S/8, S/8] -> flatten [B, C*S*S/64]
    -> Linear + ReLU (hidden) -> Linear -> [B, 1, out]   (a chunk of one, so every policy returns [B, K, out])

Action chunking with an MLP head: CNN -> flatten -> MLP -> a chunk of K actions at once.

    frames [B, 3, S, S] -> ConvTokens [B, C, S/8, S/8] -> flatten [B, C*S*S/64]
    -> Linear + ReLU (hidden) -> Linear(hidden, K*out) -> [B, K, out]

ACT-style policy: learned action queries attend to image tokens through a transformer decoder.

    frames [B, 3, 128, 128]
    -> ConvTokens: [B, 32, 16, 16] -> tokens [B, 256, 32] + learned 2-D positional embedding [1, 256, 32]
    -> 8 learned queries [1, 8, 32] (zeros at init, as specified) -> nn.TransformerDecoder
       (d_model 32, 2 heads, dim_feedforward 256, 2 layers, post-norm, no causal mask: every query sees
       every other query and every token)                                            -> [B, 8, 32]
    -> one shared Linear(32, out) per query                                          -> [B, 8, out]

The parameter count of the specified model is exactly 69,282:
    conv 3->32 3x3                              896
    conv 32->32 3x3                           9,248
    positional embedding 16 x 16 x 32         8,192   one learned vector per token (a row + column
                                                      factorisation would give 1,024 and miss the count)
    action queries 8 x 32                       256
    2 decoder layers x 25,312                50,624   self-attn 4,224 + cross-attn 4,224 + FFN 16,672
                                                      + 3 LayerNorms 192
    head Linear(32, 2)                           66
                                             ------
                                             69,282
so the decoder has no final LayerNorm (nn.TransformerDecoder(norm=None)) and the CNN's 32 channels are
the tokens directly (no input projection).

Zero queries: at initialisation all 8 queries are equal, and with no positional signal on the queries
they would stay equal in the first self-attention; they become different through training, because
each gets a different target (action t + k). That is the specified design (ACT adds nothing else).

ACT's reference code looped over its decoder layers but fed the original queries into each one, so
only the last (or first) layer's work reached the output; here nn.TransformerDecoder chains them, and a
test checks that changing either layer changes the output.
"""
import dataclasses

import numpy as np
import torch
import torch.nn as nn

from wmfast.config import Config
from wmfast.errors import WmfastError

POLICY_KINDS = ("bc", "chunk", "act")   # registry kinds too: config.json "kind" names the class


@dataclasses.dataclass
class PolicyConfig(Config):
    kind: str = "act"                 # bc | chunk | act
    frame_size: int = 128             # square input frames (a multiple of 8)
    render_size: int = 0              # embedded games: rendered at this size, then area-resized to frame_size,
    # as a world model's data was made (a policy trained in its dream sees such frames); 0: frame_size
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
        if self.kind not in POLICY_KINDS:
            raise WmfastError(f"policy kind must be one of {POLICY_KINDS}, got {self.kind!r}")
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


def require_kind(cfg: PolicyConfig, kind: str) -> None:
    """A policy class builds only from a config of its own kind (config.json's kind names the class)."""
    if cfg.kind != kind:
        raise WmfastError(f"a {kind} policy needs PolicyConfig(kind={kind!r}), got kind={cfg.kind!r}")


class BCPolicy(nn.Module):
    def __init__(self, cfg: PolicyConfig):
        super().__init__()
        require_kind(cfg, "bc")
        self.config = cfg
        self.cnn = ConvTokens(cfg.channels)
        self.mlp = flat_mlp(cfg, cfg.out_dim)

    def forward(self, x):
        """x float [B, 3, S, S] in [-1, 1] -> actions [B, 1, out]."""
        check_input(x, self.config)
        return self.mlp(self.cnn(x)).unsqueeze(1)


class ChunkPolicy(nn.Module):
    def __init__(self, cfg: PolicyConfig):
        super().__init__()
        require_kind(cfg, "chunk")
        self.config = cfg
        self.cnn = ConvTokens(cfg.channels)
        self.mlp = flat_mlp(cfg, cfg.chunk * cfg.out_dim)

    def forward(self, x):
        """x float [B, 3, S, S] in [-1, 1] -> actions [B, K, out]."""
        check_input(x, self.config)
        return self.mlp(self.cnn(x)).view(x.shape[0], self.config.chunk, self.config.out_dim)


def sincos_2d(grid: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """2-D sine-cosine positions [grid*grid, dim] (row-major tokens): the first half of the channels
    encode the row, the second half the column, each as sin | cos of dim/4 frequencies."""
    if dim % 4:
        raise ValueError(f"sincos_2d needs dim divisible by 4, got {dim}")
    omega = temperature ** -(torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))      # [dim/4]
    pos = torch.arange(grid, dtype=torch.float64)[:, None] * omega[None]                     # [G, dim/4]
    one = torch.cat([pos.sin(), pos.cos()], 1)                                              # [G, dim/2]
    rows = one[:, None, :].expand(grid, grid, dim // 2)
    cols = one[None, :, :].expand(grid, grid, dim // 2)
    return torch.cat([rows, cols], -1).reshape(grid * grid, dim).float()


class ACTPolicy(nn.Module):
    def __init__(self, cfg: PolicyConfig):
        super().__init__()
        require_kind(cfg, "act")
        self.config = cfg
        self.cnn = ConvTokens(cfg.channels)
        # Learned, but started at ACT's fixed 2-D sine embedding: with 256 tokens, a small random start
        # (std 0.02) left the position of the ball and effector almost invisible to the queries, and
        # the 128 x 128 recipe barely learned in its first epochs (val MSE 0.49 -> 0.46 in 4 epochs).
        self.pos = nn.Parameter(sincos_2d(cfg.grid, cfg.d_model)[None])
        self.queries = nn.Parameter(torch.zeros(1, cfg.chunk, cfg.d_model))
        layer = nn.TransformerDecoderLayer(cfg.d_model, cfg.nhead, cfg.dim_feedforward, cfg.dropout,
                                           batch_first=True)
        self.decoder = nn.TransformerDecoder(layer, cfg.num_layers, norm=None)
        self.head = nn.Linear(cfg.d_model, cfg.out_dim)

    def forward(self, x):
        """x float [B, 3, S, S] in [-1, 1] -> actions [B, chunk, out] (velocities or class logits)."""
        check_input(x, self.config)
        B = x.shape[0]
        f = self.cnn(x)                                                   # [B, C, G, G]
        tokens = f.flatten(2).transpose(1, 2) + self.pos                  # [B, G*G, C]
        q = self.queries.expand(B, -1, -1)                                # [B, K, C]
        h = self.decoder(q, tokens)                                       # [B, K, C], no masks
        return self.head(h)                                               # [B, K, out]


POLICIES = {"bc": BCPolicy, "chunk": ChunkPolicy, "act": ACTPolicy}


def build_policy(cfg: PolicyConfig) -> nn.Module:
    """The policy class cfg.kind names, built from cfg."""
    return POLICIES[cfg.kind](cfg)


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())
