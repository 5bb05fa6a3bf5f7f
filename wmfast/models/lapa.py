"""LAPA-style latent-action VQ-VAE: a discrete code that explains the change between two frames.

    m = LapaModel(LapaConfig())                        # defaults = "lapa-breakout" (full width)
    recon, loss, metrics = m(frame_t, frame_t1)        # training: frames [B, 3, 210, 160] in [0, 1]
    codes = m.encode(frame_t, frame_t1)                # [B, 7, 5] int64 (H x W grid), [B] when pooled
    frame_t1_hat = m.decode(frame_t, codes)            # [B, C, 210, 160] in [0, 1]

The encoder sees concat(frame_t, frame_t+1) and goes through five stride-2 3x3 convs
(210 x 160 -> 105 x 80 -> 53 x 40 -> 27 x 20 -> 14 x 10 -> 7 x 5), then a 1x1 conv to the code
dimension; each of the 7 x 5 vectors is vector-quantized (wmfast.nn.VectorQuantizer on the fused
wmfast.ops.vq_lookup). With pooled=True the grid is averaged first: one code per pair.

The decoder sees only frame t, through its own five stride-2 convs down to the same 7 x 5
bottleneck, modulated there by the quantized code (FiLM, default; or cross-attention from the
frame cells to the code cells). Five 4x4 stride-2 transposed convs then double 7 x 5 up to
224 x 160, and the centre 210 rows are kept (a crop instead of output_padding: every
transposed conv stays the same shape-agnostic doubling, and the encoder's ceil-halving of 210
-> 7 is undone by 7 * 32 = 224 >= 210 for any height). There is no skip connection from the
frame path past the bottleneck, so whatever changes between t and t+1 has to come through the code.

Options the CPU recipe uses (all off in the full-width default): a learned background image as
the last layer's per-pixel bias (a parameter, the same for every pair: not a path from frame t),
changed pixels weighted more in the loss, and a loss that lets saturated pixels overshoot (decode
clamps to [0, 1]).

Grayscale (on by default, as specified): frames are converted to luma (ITU-R BT.601) and the
model reads and writes one channel; RGB models (grayscale=False) read and write three.
"""
import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from wmfast.config import Config
from wmfast.errors import WmfastError
from wmfast.nn.conv import FiLM, ConvBlock, UpBlock
from wmfast.nn.losses import change_weighted_mse
from wmfast.nn.vq import VectorQuantizer

LUMA = (0.299, 0.587, 0.114)   # ITU-R BT.601 weights, as in most Atari preprocessing
CONDITIONINGS = ("film", "attention")


@dataclass
class LapaConfig(Config):
    height: int = 210                 # native Atari screen
    width: int = 160
    grayscale: bool = True
    channels: tuple = (64, 128, 256, 512, 512)   # the five stride-2 convs (and, reversed, the decoder)
    width_mult: float = 1.0           # scales every entry of `channels` (CPU recipes use < 1)
    code_dim: int = 128
    num_codes: int = 256
    pooled: bool = False              # one code per pair instead of one per grid cell
    conditioning: str = "film"        # "film" | "attention"
    attention_heads: int = 4
    norm: str = "batch"
    beta: float = 0.25                # commitment weight
    entropy_weight: float = 0.01      # codebook entropy regularisation
    entropy_temperature: float = 1.0
    dead_code_every: int = 10000      # reset unused codes every N training iterations (0: never)
    dead_code_threshold: float = 1.0
    ema: bool = False
    changed_weight: float = 1.0       # loss weight of pixels that change between t and t+1 (1: plain MSE)
    changed_dilate: int = 2           # ... and of pixels within this many pixels of a change
    background: bool = False          # a learned per-pixel output bias (the static screen), see LapaDecoder
    clamp_loss: bool = False          # no loss below 0 on black / above 1 on white target pixels (decode clamps)

    def __post_init__(self):
        self.channels = tuple(int(c) for c in self.channels)
        if len(self.channels) != 5 or min(self.channels) < 1:
            raise WmfastError(f"LapaConfig.channels must be 5 positive ints, got {list(self.channels)}")
        if self.height < 1 or self.width < 1:
            raise WmfastError(f"LapaConfig: bad frame size {self.height}x{self.width}")
        if not self.width_mult > 0:
            raise WmfastError(f"LapaConfig.width_mult must be > 0, got {self.width_mult}")
        if self.conditioning not in CONDITIONINGS:
            raise WmfastError(f"LapaConfig.conditioning must be one of {CONDITIONINGS}, got {self.conditioning!r}")
        if not self.changed_weight > 0 or self.changed_dilate < 0:
            raise WmfastError(f"LapaConfig needs changed_weight > 0 and changed_dilate >= 0, got "
                              f"{self.changed_weight}, {self.changed_dilate}")
        if self.code_dim < 1 or self.num_codes < 2:
            raise WmfastError(f"LapaConfig needs code_dim >= 1 and num_codes >= 2, got {self.code_dim}, {self.num_codes}")

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["channels"] = list(self.channels)
        return d

    @property
    def in_channels(self) -> int:
        return 1 if self.grayscale else 3

    @property
    def widths(self) -> list:
        return [max(4, int(round(c * self.width_mult))) for c in self.channels]

    @property
    def grid(self) -> tuple:
        """(H, W) after five ceil-halvings: (7, 5) for 210 x 160."""
        return math.ceil(self.height / 32), math.ceil(self.width / 32)

    @property
    def code_shape(self) -> tuple:
        return () if self.pooled else self.grid


# The two named configs. "lapa-breakout" is the specified full-width model (grayscale, as
# specified); "lapa-breakout-small" is the CPU recipe (docs/lapa-breakout/README.md has the
# measurements): quarter width, RGB (the PSNR target is RGB), a 32-dim code lookup (LAPA-style low
# dim: more codes get used), dead codes reset every 50 steps (the run is 1,000 steps, not 100,000),
# changed pixels weighted 20x (the code has to carry the motion), the learned background and the
# clamped loss (the static screen is given, so the bottleneck's capacity goes to what moves).
CONFIGS = {
    "lapa-breakout": {},
    "lapa-breakout-small": {"width_mult": 0.25, "grayscale": False, "code_dim": 32, "dead_code_every": 50,
                            "changed_weight": 20.0, "background": True, "clamp_loss": True},
}


def named_config(name: str, **overrides) -> LapaConfig:
    if name not in CONFIGS:
        raise WmfastError(f"unknown LAPA config {name!r} (choose from {sorted(CONFIGS)})")
    return LapaConfig(**{**CONFIGS[name], **overrides})


def to_model_channels(frames, grayscale: bool):
    """[B, 3, H, W] RGB (or [B, 1, H, W] grey) -> the model's channels."""
    if grayscale and frames.shape[1] == 3:
        w = frames.new_tensor(LUMA)[None, :, None, None]
        return (frames * w).sum(1, keepdim=True)
    return frames


def weighted_mse(err, x0, x1, cfg):
    """Squared error with the changed pixels weighted cfg.changed_weight (wmfast.nn.losses)."""
    return change_weighted_mse(err, x0, x1, cfg.changed_weight, cfg.changed_dilate)


def conv_stack(cin: int, widths, norm: str) -> nn.Sequential:
    """Five stride-2 3x3 convs: [B, cin, H, W] -> [B, widths[-1], ceil(H/32), ceil(W/32)]."""
    layers, c = [], cin
    for w in widths:
        layers.append(ConvBlock(c, w, stride=2, norm=norm))
        c = w
    return nn.Sequential(*layers)


class CrossAttention(nn.Module):
    """Frame cells attend to code cells: x [B, C, h, w], cond [B, D, h, w] or [B, D] -> [B, C, h, w]."""

    def __init__(self, cond_dim: int, channels: int, heads: int):
        super().__init__()
        heads = max(1, math.gcd(heads, channels))
        self.kv = nn.Linear(cond_dim, channels)
        self.attn = nn.MultiheadAttention(channels, heads, batch_first=True)
        self.norm = nn.LayerNorm(channels)

    def forward(self, x, cond):
        B, C, h, w = x.shape
        q = x.flatten(2).transpose(1, 2)                                    # [B, h*w, C]
        kv = self.kv(cond[:, None] if cond.dim() == 2 else cond.flatten(2).transpose(1, 2))  # [B, n, C]
        out, _ = self.attn(self.norm(q), kv, kv, need_weights=False)        # [B, h*w, C]
        return x + out.transpose(1, 2).reshape(B, C, h, w)


class LapaEncoder(nn.Module):
    """concat(frame_t, frame_t1) [B, 2C, H, W] -> pre-quantization latents [B, gh, gw, D] ([B, D] pooled)."""

    def __init__(self, cfg: LapaConfig):
        super().__init__()
        self.pooled = cfg.pooled
        self.convs = conv_stack(2 * cfg.in_channels, cfg.widths, cfg.norm)
        self.proj = nn.Conv2d(cfg.widths[-1], cfg.code_dim, 1)

    def forward(self, pair):
        z = self.proj(self.convs(pair))                                     # [B, D, gh, gw]
        if self.pooled:
            return z.mean((2, 3))                                           # [B, D]
        return z.permute(0, 2, 3, 1)                                        # [B, gh, gw, D]


class LapaDecoder(nn.Module):
    """frame_t [B, C, H, W] + quantized code [B, gh, gw, D] (or [B, D]) -> frame_t1 [B, C, H, W]."""

    def __init__(self, cfg: LapaConfig):
        super().__init__()
        w = cfg.widths                                                      # e.g. 64 128 256 512 512
        self.height, self.width = cfg.height, cfg.width
        self.frame_convs = conv_stack(cfg.in_channels, w, cfg.norm)        # its own path, no skips out of it
        if cfg.conditioning == "film":
            self.cond = FiLM(cfg.code_dim, w[-1])
        else:
            self.cond = CrossAttention(cfg.code_dim, w[-1], cfg.attention_heads)
        # 512 -> 512 -> 256 -> 128 -> 64 -> C: the encoder's widths in reverse, doubling H and W each time.
        self.ups = nn.Sequential(
            UpBlock(w[4], w[3], cfg.norm), UpBlock(w[3], w[2], cfg.norm), UpBlock(w[2], w[1], cfg.norm),
            UpBlock(w[1], w[0], cfg.norm), UpBlock(w[0], cfg.in_channels, last=True))
        # Optional per-pixel bias of the last layer: a learned background image, the same for every pair
        # (a parameter, not a path from frame t, so nothing skips the bottleneck). Why: the walls, score
        # bar and bricks are most of the screen; with them given, the 7 x 5 bottleneck only has to carry
        # what differs from them (paddle, ball, broken bricks, digits), which a small CPU model learns fast.
        self.background = nn.Parameter(torch.zeros(cfg.in_channels, cfg.height, cfg.width)) if cfg.background else None
        if cfg.background:   # the decoder starts by drawing exactly the background, then learns what differs
            nn.init.zeros_(self.ups[-1][0].weight)
            nn.init.zeros_(self.ups[-1][0].bias)

    def forward(self, frame, q):
        h = self.frame_convs(frame)                                         # [B, 512, 7, 5]
        cond = q if q.dim() == 2 else q.permute(0, 3, 1, 2)                 # [B, D] or [B, D, 7, 5]
        h = self.cond(h, cond)                                              # [B, 512, 7, 5]
        out = self.ups(h)                                                   # [B, C, 224, 160]
        top = (out.shape[2] - self.height) // 2                             # centre crop to [B, C, 210, 160]
        left = (out.shape[3] - self.width) // 2
        out = out[:, :, top:top + self.height, left:left + self.width]
        return out if self.background is None else out + self.background


class LapaModel(nn.Module):
    def __init__(self, config: LapaConfig = None):
        super().__init__()
        self.config = cfg = config or LapaConfig()
        self.encoder = LapaEncoder(cfg)
        self.quantizer = VectorQuantizer(cfg.num_codes, cfg.code_dim, beta=cfg.beta, ema=cfg.ema,
                                         entropy_weight=cfg.entropy_weight,
                                         entropy_temperature=cfg.entropy_temperature,
                                         dead_code_every=cfg.dead_code_every,
                                         dead_code_threshold=cfg.dead_code_threshold)
        self.decoder = LapaDecoder(cfg)
        self.classifier = None   # code -> game action classifier (attach_classifier); not in the state dict

    @property
    def num_codes(self) -> int:
        return self.config.num_codes

    # -- training ---------------------------------------------------------------------------
    def forward(self, frame_t, frame_t1):
        """-> (reconstruction [B, C, H, W], loss, metrics); loss = MSE + commitment (+ codebook) + entropy."""
        x0 = to_model_channels(frame_t, self.config.grayscale)              # [B, C, H, W]
        x1 = to_model_channels(frame_t1, self.config.grayscale)
        z = self.encoder(torch.cat([x0, x1], 1))                            # [B, 7, 5, D]
        q, vq_loss = self.quantizer(z)                                      # straight-through
        recon = self.decoder(x0, q)                                         # [B, C, H, W]
        diff = recon.float() - x1.float()                                   # [B, C, H, W]
        if self.config.clamp_loss:   # decode() clamps to [0, 1]: going past the range on a saturated pixel is free
            diff = diff.masked_fill(((x1 <= 0) & (diff < 0)) | ((x1 >= 1) & (diff > 0)), 0.0)
        err = diff.pow(2)
        mse = err.mean()
        rec = mse if self.config.changed_weight == 1.0 else weighted_mse(err, x0, x1, self.config)
        metrics = {"mse": mse.detach(), "rec": rec.detach(), **self.quantizer.last_losses,
                   "indices": self.quantizer.indices(q.detach()).detach()}
        return recon, rec + vq_loss, metrics

    # -- inference API ------------------------------------------------------------------------
    def check_frames(self, frames, name: str = "frames"):
        cfg = self.config
        if not torch.is_tensor(frames):
            raise WmfastError(f"{name} must be a torch tensor, got {type(frames).__name__}")
        if not frames.is_floating_point():
            raise WmfastError(f"{name} must be float in [0, 1], got {frames.dtype} (divide uint8 by 255)")
        allowed = (1, 3) if cfg.grayscale else (3,)
        if frames.dim() != 4 or frames.shape[1] not in allowed or tuple(frames.shape[2:]) != (cfg.height, cfg.width):
            want = f"[B, {'1 or 3' if cfg.grayscale else 3}, {cfg.height}, {cfg.width}]"
            raise WmfastError(f"{name} must have shape {want}, got {list(frames.shape)}")
        return to_model_channels(frames.to(self.quantizer.codebook.device, torch.float32), cfg.grayscale)

    def check_codes(self, codes):
        shape = self.config.code_shape
        if not torch.is_tensor(codes) or codes.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise WmfastError(f"codes must be an integer tensor, got {getattr(codes, 'dtype', type(codes).__name__)}")
        if codes.dim() != 1 + len(shape) or tuple(codes.shape[1:]) != shape:
            raise WmfastError(f"codes must have shape [B{''.join(f', {s}' for s in shape)}], got {list(codes.shape)}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.num_codes):
            raise WmfastError(f"codes must be in [0, {self.num_codes}), got [{int(codes.min())}, {int(codes.max())}]")
        return codes.long().to(self.quantizer.codebook.device)

    # check=False skips validation and the cast to float32 (ONNX graphs); frames still go to the
    # model's channels, so RGB footage works with a grayscale model either way.
    @torch.no_grad()
    def encode(self, frame_t, frame_t1, check: bool = True):
        """frames [B, C, H, W] float in [0, 1] -> codes [B, 7, 5] int64 ([B] when pooled)."""
        if check:
            x0, x1 = self.check_frames(frame_t, "frame_t"), self.check_frames(frame_t1, "frame_t1")
            if x0.shape[0] != x1.shape[0]:
                raise WmfastError(f"frame_t and frame_t1 batch sizes differ: {x0.shape[0]} vs {x1.shape[0]}")
        else:
            g = self.config.grayscale
            x0, x1 = to_model_channels(frame_t, g), to_model_channels(frame_t1, g)
        return self.quantizer.indices(self.encoder(torch.cat([x0, x1], 1)))

    @torch.no_grad()
    def decode(self, frame_t, codes, check: bool = True):
        """frame_t [B, C, H, W] + codes [B, 7, 5] ([B] pooled) -> frame_t1 [B, C, H, W] in [0, 1]."""
        if check:
            x0, codes = self.check_frames(frame_t, "frame_t"), self.check_codes(codes)
            if x0.shape[0] != codes.shape[0]:
                raise WmfastError(f"frame_t and codes batch sizes differ: {x0.shape[0]} vs {codes.shape[0]}")
        else:
            x0 = to_model_channels(frame_t, self.config.grayscale)
        return self.decoder(x0, self.quantizer.latents(codes)).clamp(0, 1)

    def latents(self, codes):
        """codes [B, ...] -> code vectors [B, ..., D]."""
        return self.quantizer.latents(codes)

    @torch.no_grad()
    def init_background(self, frames):
        """Start the learned background at the mean of some frames [N, 3, H, W] in [0, 1] (no-op without one)."""
        if self.decoder.background is not None:
            mean = to_model_channels(frames.float(), self.config.grayscale).mean(0)
            self.decoder.background.copy_(mean.to(self.decoder.background))
        return self

    def attach_classifier(self, classifier):
        """Keep the classifier outside this module's state dict (it has its own file)."""
        object.__setattr__(self, "classifier", classifier)
        return self

    def to_game_actions(self, codes):
        """codes [B, 7, 5] ([B] pooled) -> predicted true game action ids [B] (needs a trained classifier)."""
        if self.classifier is None:
            raise WmfastError("this LAPA model has no code -> action classifier; train one with "
                              "`wmfast lapa classifier --run RUN` (wmfast.lapa.classifier.train_classifier)")
        return self.classifier.predict(self.check_codes(codes))

    def extra_repr(self) -> str:
        c = self.config
        return f"grid={c.code_shape}, widths={c.widths}, channels={c.in_channels}, conditioning={c.conditioning}"


@dataclass
class CodeClassifierConfig(Config):
    """The code -> game action classifier: an embedding per code, an MLP over a pair's cells."""
    num_codes: int = 8            # the LAPA model's codebook
    cells: int = 35               # codes per pair (its code grid, 1 when pooled)
    n_actions: int = 2            # the game's action ids
    embed: int = 16
    hidden: int = 128
    action_names: list = field(default_factory=list)   # the game's names of its actions (default: "0", "1", ...)

    def check(self):
        if self.action_names and len(self.action_names) != self.n_actions:
            raise WmfastError(f"CodeClassifierConfig: {len(self.action_names)} action_names for "
                              f"{self.n_actions} actions")


class CodeClassifier(nn.Module):
    """codes [B, *grid] int64 -> action logits [B, n_actions]."""

    def __init__(self, cfg: CodeClassifierConfig):
        super().__init__()
        self.config = cfg
        self.embed = nn.Embedding(cfg.num_codes, cfg.embed)
        self.mlp = nn.Sequential(nn.Linear(cfg.cells * cfg.embed, cfg.hidden), nn.ReLU(),
                                 nn.Linear(cfg.hidden, cfg.n_actions))

    @property
    def action_names(self) -> list:
        return self.config.action_names or [str(i) for i in range(self.config.n_actions)]

    def forward(self, codes):
        return self.mlp(self.embed(codes.reshape(codes.shape[0], -1)).flatten(1))   # [B, n_actions]

    @torch.no_grad()
    def predict(self, codes):
        return self.forward(codes.to(self.embed.weight.device)).argmax(-1)
