"""The conv latent action model (the LAPO / LAPA family), the one the presets train.

encoder: concat(x_t, x_t+1, x_t+1 - x_t) -> 3 stride-2 conv blocks -> global average pool -> Linear
         -> VQ (n_actions codes); encoder_frames 4 reads x_t-1 .. x_t+2 and their three differences,
         diff_gain scales the differences
decoder: x_t (conv_context 2: x_t-1 and x_t) -> 2 conv blocks -> FiLM by the code -> 2 convs
         -> predicts x_t+1 - x_t
loss:    MSE on frames 1..T-1 (changed pixels weighted changed_weight) + the VQ's loss (+ in few-label
         mode the label head's cross-entropy on the labelled transitions)

Each pair is independent and the decoder always sees the true previous frame, so the code only has
to carry the change.
"""
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from wmfast.config import Range
from wmfast.errors import WmfastError
from wmfast.models.lam_common import LamConfig, LatentActionModel, OneHotCodes, VQConfig
from wmfast.nn.collectives import batch_var
from wmfast.nn.conv import ConvBlock, FiLM, NORMS
from wmfast.nn.losses import change_weighted_mse
from wmfast.nn.quantizers import make_quantizer


@dataclass
class ConvLamConfig(LamConfig):
    ARCHITECTURE = "conv"
    frame_size: int = 64
    n_actions: int = 8              # VQ codes
    code_dim: int = 16              # width of a VQ code: what the encoder outputs and the decoder reads
    vq: VQConfig = field(default_factory=VQConfig)
    # The world model sees one-hot code ids as action latents (Genie embeds the action index), so
    # action_dim = n_actions. Codes that sit close together in code space are otherwise hard for the
    # dynamics to tell apart.
    onehot_actions: bool = False
    conv_channels: int = 32         # base width
    conv_norm: str = "group"        # "group", "batch" or "none"
    conv_context: int = 1           # the decoder reads x_t (1) or x_t-1 and x_t (2: motion it can extrapolate itself)
    first_pair_weight: float = 0.0  # conv_context 2: loss weight of each clip's first pair, where the decoder
                                    # sees no motion (x_t-1 = x_t)
    # Atari paddles lag and coast: half of a_t's effect lands in x_t+1 -> x_t+2, and x_t -> x_t+1 also
    # carries a_t-1, so the encoder may read x_t-1 .. x_t+2 (4) instead of the pair (2); frames past a
    # clip's ends repeat its first / last frame.
    encoder_frames: int = field(default=2, metadata={"rule": (2, 4)})
    # A small mover's change is a few pixels of the frame: scaled up, the difference channels reach the
    # encoder (a supervised inverse-dynamics CNN on 32 px Pong learned the move only so, issue 26).
    diff_gain: float = field(default=1.0, metadata={"rule": Range(0, None, lo_open=True)})
    # Loss weight of the pixels that change from x_t to x_t+1 (1: plain MSE): an Atari paddle is a few
    # pixels, and under a plain MSE the code need not carry its move (wmfast.nn.losses).
    changed_weight: float = field(default=1.0, metadata={"rule": Range(0, None, lo_open=True)})
    # Few-label mode (ActionsTrainConfig.label_fraction): a linear head reads the game action from the
    # encoder's output before quantization, trained by cross-entropy on the labelled transitions only
    # (LAOM / CLAM). label_classes: the data's game actions (set by the trainer; 0: no head).
    label_classes: int = field(default=0, metadata={"rule": Range(0)})
    label_weight: float = field(default=1.0, metadata={"rule": Range(0)})

    def __post_init__(self):
        self.nested_vq()

    def check(self):
        if self.code_dim < 1:
            raise WmfastError(f"ConvLamConfig.code_dim must be >= 1, got {self.code_dim}")
        if self.conv_norm not in NORMS:
            raise WmfastError(f"ConvLamConfig.conv_norm must be one of {NORMS}, got {self.conv_norm!r}")
        if self.conv_norm == "group" and self.conv_channels > 8 and self.conv_channels % 8:
            raise WmfastError(f"ConvLamConfig.conv_channels must be a multiple of 8 (the GroupNorm groups) above 8, "
                              f"got {self.conv_channels}")
        if self.first_pair_weight < 0:
            raise WmfastError(f"first_pair_weight must be >= 0, got {self.first_pair_weight}")

    @property
    def action_dim(self) -> int:
        """A: the width of the action latents the world model sees."""
        return self.n_actions if self.onehot_actions else self.code_dim


class ConvActionEncoder(nn.Module):
    """Inverse dynamics: each pair (x_t, x_t+1) -> one action vector.
    concat(frames, diff_gain * their differences) [N, 9 (or 21), H, W] -> 3 stride-2 ConvBlocks
    -> mean over H, W -> Linear -> code. The frames are x_t, x_t+1 (encoder_frames 2) or x_t-1 .. x_t+2 (4)."""

    def __init__(self, cfg: ConvLamConfig):
        super().__init__()
        c, n = cfg.conv_channels, cfg.conv_norm
        self.frames, self.diff_gain = cfg.encoder_frames, cfg.diff_gain
        channels = 3 * self.frames + 3 * (self.frames - 1)
        self.convs = nn.Sequential(ConvBlock(channels, c, 2, n), ConvBlock(c, 2 * c, 2, n),
                                   ConvBlock(2 * c, 2 * c, 2, n))
        self.head = nn.Linear(2 * c, cfg.code_dim)

    def window(self, frames):
        """frames [B, T, 3, H, W] -> per pair t the encoder's frames [N, F, 3, H, W], N = B (T-1)."""
        B, T = frames.shape[:2]
        if self.frames == 2:
            return torch.stack([frames[:, :-1], frames[:, 1:]], 2).flatten(0, 1)
        pairs = torch.arange(T - 1, device=frames.device)
        at = (pairs[:, None] + torch.arange(-1, 3, device=frames.device)).clamp(0, T - 1)   # [T-1, 4]
        return frames[:, at].flatten(0, 1)

    def forward(self, frames):
        B, T = frames.shape[:2]
        x = self.window(frames)                                                # [N, F, 3, H, W]
        diffs = (x[:, 1:] - x[:, :-1]) * self.diff_gain
        h = self.convs(torch.cat([x.flatten(1, 2), diffs.flatten(1, 2)], 1))   # [N, 2c, H/8, W/8]
        return self.head(h.mean(dim=(2, 3))).view(B, T - 1, -1)               # [B, T-1, code dim]


class ConvActionDecoder(nn.Module):
    """x_t and the code of the action into x_t+1 -> predicted x_t+1 = x_t + delta. Two convs read
    x_t, FiLM applies the code at full scale, two convs predict the change. Stride 1 throughout:
    the change is local (the agent moves), and the frame itself is given, so nothing passes a
    bottleneck but the action."""

    def __init__(self, cfg: ConvLamConfig):
        super().__init__()
        c, n = cfg.conv_channels, cfg.conv_norm
        self.context = cfg.conv_context
        self.read = nn.Sequential(ConvBlock(3 * self.context, c, 1, n), ConvBlock(c, c, 1, n))
        self.film = FiLM(cfg.code_dim, c)
        self.predict = nn.Sequential(ConvBlock(c, c, 1, n), nn.Conv2d(c, 3, 3, 1, 1))

    def forward(self, frames, codes):
        # frames [B, T, 3, H, W], codes [B, T-1, code dim] -> predicted frames 1..T-1 [B, T-1, 3, H, W]
        B, T = frames.shape[:2]
        x = frames[:, :-1].flatten(0, 1)                                      # [N, 3, H, W]
        if self.context == 2:
            # Frame t-1 for each of frames 0..T-2 (frame 0 stands in for the frame before a clip).
            previous = torch.cat([frames[:, :1], frames[:, :-2]], 1).flatten(0, 1)
            x_in = torch.cat([previous, x], 1)                                # [N, 6, H, W]
        else:
            x_in = x
        h = self.film(self.read(x_in), codes.flatten(0, 1))                   # [N, c, H, W]
        return (x + self.predict(h)).view(B, T - 1, *x.shape[1:])


class ConvLam(LatentActionModel):
    config_class = ConvLamConfig

    def __init__(self, cfg: ConvLamConfig):
        super().__init__()
        self.config = cfg
        self.encoder = ConvActionEncoder(cfg)
        self.decoder = ConvActionDecoder(cfg)
        vq = make_quantizer("vq", cfg.code_dim, codebook_size=cfg.n_actions, **cfg.vq.options())
        self.quantizer = OneHotCodes(vq) if cfg.onehot_actions else vq   # state keys quantizer.vq.* / quantizer.*
        self.label_head = nn.Linear(cfg.code_dim, cfg.label_classes) if cfg.label_classes else None

    @property
    def vq(self):
        """The vector quantizer (behind the one-hot latents with onehot_actions)."""
        return self.quantizer.vq if self.config.onehot_actions else self.quantizer

    def decoder_codes(self, actions):
        return self.quantizer.codes(actions) if self.config.onehot_actions else actions

    def first_counted_pair(self, frames) -> int:
        """The first pair the reconstruction loss counts. A decoder that reads x_t-1 and x_t has no
        real x_t-1 for a clip's first pair: there a ball's velocity is unknown, and the code would
        learn to carry it (held-out pong: codes followed the ball, NMI 0.02 with the player's
        actions), so that pair only trains the encoder through the others, or counts with the small
        first_pair_weight: with x_t-1 everywhere, a code could say only "the paddle moved" and leave the
        direction to the motion the decoder sees (held-out pong, one seed of two: UP and DOWN shared
        codes, NMI 0.45); a little loss where no motion is visible makes the code carry the direction."""
        return 1 if self.config.conv_context == 2 and frames.shape[1] > 2 else 0   # a 2-frame clip has only pair 0

    def reconstruction_loss(self, pred, frames):
        """pred [B, n, 3, H, W] of frames[:, 1:] (frames [B, n + 1, ...]) -> the (change-weighted) MSE."""
        err = (pred - frames[:, 1:]) ** 2
        if self.config.changed_weight == 1:
            return err.mean()
        return change_weighted_mse(err.flatten(0, 1), frames[:, :-1].flatten(0, 1), frames[:, 1:].flatten(0, 1),
                                   self.config.changed_weight, dilate=1)

    def label_loss(self, z, labels):
        """Cross-entropy of the label head on the labelled transitions (labels [B, T-1], -1: none)
        -> loss (0 where the batch holds no label)."""
        labelled = labels >= 0
        if not labelled.any():
            return z.sum() * 0
        return F.cross_entropy(self.label_head(z[labelled]), labels[labelled])

    def forward(self, frames, labels=None):
        """frames [B, T, 3, H, W] (labels [B, T-1]: few-label mode's true actions, -1 where unknown)
        -> (predicted frames 1..T-1, loss, metrics)."""
        cfg = self.config
        z = self.encoder(frames)                                 # [B, T-1, code dim]
        codes, q_loss = self.quantizer(z)                        # straight-through code vectors
        pred = self.decoder(frames, codes)
        first = self.first_counted_pair(frames)
        rec_loss = self.reconstruction_loss(pred[:, first:], frames[:, first:])
        if first and cfg.first_pair_weight > 0:
            rec_loss = rec_loss + cfg.first_pair_weight * self.reconstruction_loss(pred[:, :1], frames[:, :2])
        variance = batch_var(z.reshape(-1, z.shape[-1])).mean()  # a metric only: the VQ keeps codes apart
        metrics = {"recon_loss": rec_loss.detach(), "encoder_variance": variance.detach(),
                   "action_indices": self.vq.indices(codes.detach())}
        loss = rec_loss + q_loss
        if labels is not None and self.label_head is not None:
            label_loss = self.label_loss(z, labels)
            loss = loss + cfg.label_weight * label_loss
            metrics["label_loss"] = label_loss.detach()
        return pred, loss, metrics
