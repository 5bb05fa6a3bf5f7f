"""Latent action model (LAM): infers a discrete action between consecutive frames.

Two architectures (LatentActionConfig.architecture):
- "transformer" (default): tinyworlds' LAM, bit-exact with its checkpoints unless opt-in options
  below are set.
- "conv" (the LAPO / LAPA family): a conv inverse-dynamics encoder over
  concat(x_t, x_t+1, x_t+1 - x_t) -> global average pool -> Linear -> VQ, and a conv decoder that
  sees x_t, takes the code through FiLM and predicts x_t+1 - x_t. Each pair is independent and the
  decoder always sees the true previous frame, so the code only has to carry the change.

transformer encoder: patch embedding -> STT -> mean over patches -> concat (frame t, frame t+1)
         -> LayerNorm(2E), Linear(2E, 4A), GELU, Linear(4A, A) -> quantizer (FSQ, 2 levels)
         (opt-in `use_windowed_attention`: STT -> one attention layer over the 2P tokens of each
         frame pair, mean-pooled (wmfast.ops.pair_attention) -> LayerNorm(E), Linear(E, 4A), GELU,
         Linear(4A, A); see WindowedActionHead)
decoder: frames 0..T-2 -> patch embedding (training: frames 1.. replaced by mask_token)
         -> STT with FiLM on the action latents -> LayerNorm, Linear(E, 3 S S), Tanh
         -> predicts frames 1..T-1
"""
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from wmfast.config import SpaceTimeConfig
from wmfast.errors import WmfastError
from wmfast.nn import PatchEmbedding, STTransformer, unpatchify
from wmfast.nn.patch import patchify
from wmfast.nn.conv import ConvBlock, FiLM, NORMS
from wmfast.nn.quantizers import make_quantizer
from wmfast.ops import pair_attention
from wmfast.nn import capture_flag as _capture
from wmfast.validate import check_finite, check_float_input, check_frames, check_indices, check_same_batch, \
    check_tensor, FLOATS


@dataclass
class LatentActionConfig(SpaceTimeConfig):
    n_actions: int = 8
    quantizer: str = "fsq"          # "fsq": A = log_levels(n_actions) dims; "vq": n_actions codes of dim action_dim
    action_dim: int = 0             # A; 0 means log_levels(n_actions) for FSQ, 16 for VQ
    variance_target: float = 0.01   # anti-collapse hinge on the encoder's batch variance
    variance_weight: float = 100.0
    # Opt-in encoder head: attention over each frame pair's 2P tokens instead of mean-pool + concat.
    # Checkpoints whose config.json lacks the key load as the legacy (tinyworlds) encoder.
    use_windowed_attention: bool = False
    # --- opt-in settings (defaults keep tinyworlds' behaviour; configs without the keys load as legacy) ---
    architecture: str = "transformer"  # "transformer" (tinyworlds) or "conv" (LAPO/LAPA-style conv VQ LAM)
    fsq_levels: int = 2             # FSQ levels per action dim
    vq_beta: float = 0.25           # VQ commitment weight
    vq_ema: bool = False            # VQ codebook by EMA instead of gradients
    vq_dead_code_every: int = 0     # reset codes unused for this many steps (0: never)
    vq_entropy_weight: float = 0.0  # VQ batch-entropy regulariser
    encoder_frame_diff: bool = False   # transformer encoder also embeds x_t - x_t-1
    action_injection: str = "film"  # transformer decoder: "film" (tinyworlds) or "add" (action embedding added to tokens, Jasmine)
    film_init_scale: float = 0.0    # > 0: rescale the decoder's FiLM projection init (0: default init)
    decoder_sees_past: bool = False # transformer decoder sees frames 0..T-2 unmasked while training
    changed_pixel_weight: float = 1.0  # loss weight of pixels that change between t and t+1
    conv_channels: int = 32         # conv architecture: base width
    conv_norm: str = "group"        # conv architecture: "group", "batch" or "none"
    # VQ only: the world model sees one-hot code ids as action latents (Genie embeds the action
    # index), so action_dim = n_actions and the VQ codes have code_dim dims. Codes that sit close
    # together in code space are otherwise hard for the dynamics to tell apart.
    onehot_actions: bool = False
    code_dim: int = 0               # VQ code width with onehot_actions (0: 16)
    conv_context: int = 1           # conv decoder reads x_t (1) or x_t-1 and x_t (2: motion it can extrapolate itself)
    first_pair_weight: float = 0.0  # conv, conv_context 2: loss weight of each clip's first pair, where the decoder
                                    # sees no motion (x_t-1 = x_t)
    action_free_prior: bool = False # conv: an action-free predictor of x_t+1 from (x_t-1, x_t) trains beside the
                                    # decoder, which adds only the code's correction: the code explains the residual

    def __post_init__(self):
        if self.architecture not in LAM_ARCHITECTURES:
            raise WmfastError(f"LatentActionConfig.architecture must be one of {LAM_ARCHITECTURES}, "
                              f"got {self.architecture!r}")
        if self.quantizer not in ("fsq", "vq"):
            raise WmfastError(f"LatentActionConfig.quantizer must be 'fsq' or 'vq', got {self.quantizer!r}")
        if self.action_injection not in ("film", "add"):
            raise WmfastError(f"LatentActionConfig.action_injection must be 'film' or 'add', got {self.action_injection!r}")
        if self.conv_norm not in NORMS:
            raise WmfastError(f"LatentActionConfig.conv_norm must be one of {NORMS}, got {self.conv_norm!r}")
        if self.quantizer == "fsq":
            L = self.fsq_levels
            dims = round(math.log(self.n_actions, L)) if self.n_actions >= 2 and L >= 2 else 0
            if L < 2 or dims < 1 or L ** dims != self.n_actions:
                raise WmfastError(f"n_actions must be a power of {self.fsq_levels} (fsq_levels) for the FSQ action "
                                  f"quantizer, got {self.n_actions}")
            if self.action_dim == 0:
                self.action_dim = dims
        elif self.onehot_actions:
            self.code_dim = self.code_dim or 16
            if self.action_dim not in (0, self.n_actions):
                raise WmfastError(f"onehot_actions makes action_dim = n_actions = {self.n_actions}, got {self.action_dim}")
            self.action_dim = self.n_actions
        elif self.action_dim == 0:
            self.action_dim = 16
        if self.onehot_actions and self.quantizer != "vq":
            raise WmfastError("onehot_actions needs quantizer='vq'")
        if self.n_actions < 1 or self.action_dim < 1:
            raise WmfastError(f"n_actions and action_dim must be >= 1, got {self.n_actions}, {self.action_dim}")
        if self.conv_context not in (1, 2):
            raise WmfastError(f"conv_context must be 1 or 2, got {self.conv_context}")
        if self.first_pair_weight < 0:
            raise WmfastError(f"first_pair_weight must be >= 0, got {self.first_pair_weight}")
        if self.changed_pixel_weight <= 0:
            raise WmfastError(f"changed_pixel_weight must be > 0, got {self.changed_pixel_weight}")


    @property
    def vq_code_dim(self) -> int:
        """Width of the quantizer's codes: what the encoder outputs and the LAM decoder reads."""
        return self.code_dim if self.onehot_actions else self.action_dim


LAM_ARCHITECTURES = ("transformer", "conv")
CHANGED_PIXEL = 0.05    # |x_t+1 - x_t| above this (pixels in [-1, 1]) counts as changed


class WindowedActionHead(nn.Module):
    """Encoder tokens [B, T, P, E] -> one attention layer over the 2P tokens of each frame pair
    (t, t+1), mean-pooled over the pair's queries -> E -> A. The tokens carry the patch embedding's
    spatial PE (built for the model's own frame_size) and the STT's temporal PE, so no PE is added
    here. out_proj commutes with the mean, so it runs on the pooled vectors."""

    def __init__(self, embed_dim: int, num_heads: int, action_dim: int):
        super().__init__()
        if embed_dim % num_heads:
            raise WmfastError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        E, A = embed_dim, action_dim
        self.num_heads = num_heads
        self.norm = nn.LayerNorm(E)
        self.q_proj = nn.Linear(E, E)
        self.k_proj = nn.Linear(E, E)
        self.v_proj = nn.Linear(E, E)
        self.out_proj = nn.Linear(E, E)
        self.head = nn.Sequential(nn.LayerNorm(E), nn.Linear(E, 4 * A), nn.GELU(), nn.Linear(4 * A, A))

    def forward(self, x):
        B, T, P, E = x.shape
        H = self.num_heads
        h = self.norm(x)                                                   # [B, T, P, E]
        q = self.q_proj(h).view(B, T, P, H, E // H)                        # [B, T, P, H, Dh]
        k = self.k_proj(h).view(B, T, P, H, E // H)
        v = self.v_proj(h).view(B, T, P, H, E // H)
        pooled = pair_attention(q, k, v, pool=True)                        # [B, T-1, H, Dh]
        if _capture.active:  # wmfast.viz.capture_attention is open: recompute this call's probabilities
            _capture.record(self, q, k, pairs=True)
        pooled = self.out_proj(pooled.reshape(B, T - 1, E))                # [B, T-1, E]
        return self.head(pooled)                                           # [B, T-1, A]


class ActionEncoder(nn.Module):
    def __init__(self, cfg: LatentActionConfig):
        super().__init__()
        E, A = cfg.embed_dim, cfg.vq_code_dim
        self.patch_embed = PatchEmbedding(cfg.frame_size, cfg.patch_size, E)
        if cfg.encoder_frame_diff:
            self.diff_embed = nn.Linear(3 * cfg.patch_size ** 2, E)
        self.transformer = STTransformer(E, cfg.num_heads, cfg.hidden_dim, cfg.num_blocks)
        if cfg.use_windowed_attention:
            self.window_head = WindowedActionHead(E, cfg.num_heads, A)
        else:  # tinyworlds' head (state keys action_head.0/.1/.3)
            self.action_head = nn.Sequential(nn.LayerNorm(2 * E), nn.Linear(2 * E, 4 * A), nn.GELU(),
                                             nn.Linear(4 * A, A))

    def forward(self, frames):
        x = self.patch_embed(frames)                             # [B, T, P, E]
        if hasattr(self, "diff_embed"):
            # Frame t also sees x_t - x_t-1 (zero for frame 0): the change is what an action explains.
            diff = torch.cat([torch.zeros_like(frames[:, :1]), frames[:, 1:] - frames[:, :-1]], 1)
            x = x + self.diff_embed(patchify(diff, self.patch_embed.patch_size))
        x = self.transformer(x)                                  # [B, T, P, E]
        if hasattr(self, "window_head"):
            return self.window_head(x)                           # [B, T-1, A] (before quantization)
        pooled = x.mean(dim=2)                                   # [B, T, E]
        pairs = torch.cat([pooled[:, :-1], pooled[:, 1:]], -1)   # [B, T-1, 2E]
        return self.action_head(pairs)                           # [B, T-1, A] (before quantization)


class ActionDecoder(nn.Module):
    def __init__(self, cfg: LatentActionConfig):
        super().__init__()
        E, S = cfg.embed_dim, cfg.patch_size
        self.cfg = cfg
        self.mask_token = nn.Parameter(torch.randn(1, 1, 1, E) * 0.02)
        self.patch_embed = PatchEmbedding(cfg.frame_size, S, E)
        film = cfg.action_injection == "film"
        self.transformer = STTransformer(E, cfg.num_heads, cfg.hidden_dim, cfg.num_blocks,
                                         cond_dim=cfg.vq_code_dim if film else None)
        if not film:
            self.action_embed = nn.Linear(cfg.vq_code_dim, E)
        elif cfg.film_init_scale > 0:
            rescale_film(self.transformer, cfg.film_init_scale)
        self.frame_head = nn.Sequential(nn.LayerNorm(E), nn.Linear(E, 3 * S * S), nn.Tanh())

    def forward(self, frames, actions, mask_future: bool):
        # frames [B, T, 3, H, W], actions [B, T-1, A] -> predicted frames 1..T-1 [B, T-1, 3, H, W]
        x = self.patch_embed(frames[:, :-1])                     # [B, T-1, P, E]
        if mask_future:
            # Training hides every frame but the first, so the actions must carry the change.
            keep = torch.zeros(1, x.shape[1], 1, 1, dtype=torch.bool, device=x.device)
            keep[:, 0] = True
            x = torch.where(keep, x, self.mask_token.to(x.dtype))
        if hasattr(self, "action_embed"):
            # Jasmine's injection: the action into frame t+1 is added to every token of frame t.
            x = self.transformer(x + self.action_embed(actions)[:, :, None])
        else:
            x = self.transformer(x, actions)                     # [B, T-1, P, E]
        x = self.frame_head(x)                                   # [B, T-1, P, 3 S S]
        return unpatchify(x, self.cfg.patch_size, self.cfg.frame_size, self.cfg.frame_size)


def rescale_film(module, scale: float):
    """Scale every FiLM projection's initial weights (tinyworlds starts near zero, which lets a
    decoder learn to ignore its condition)."""
    for m in module.modules():
        if hasattr(m, "to_gamma_beta"):
            lin = m.to_gamma_beta[-1]
            with torch.no_grad():
                lin.weight.mul_(scale / lin.weight.std().clamp(min=1e-12))
                lin.bias.zero_()


class ConvActionEncoder(nn.Module):
    """Inverse dynamics: each pair (x_t, x_t+1) -> one action vector.
    concat(x_t, x_t+1, x_t+1 - x_t) [N, 9, H, W] -> 3 stride-2 ConvBlocks -> mean over H, W -> Linear -> A."""

    def __init__(self, cfg: LatentActionConfig):
        super().__init__()
        c, n = cfg.conv_channels, cfg.conv_norm
        self.convs = nn.Sequential(ConvBlock(9, c, 2, n), ConvBlock(c, 2 * c, 2, n), ConvBlock(2 * c, 2 * c, 2, n))
        self.head = nn.Linear(2 * c, cfg.vq_code_dim)

    def forward(self, frames):
        B, T = frames.shape[:2]
        x0, x1 = frames[:, :-1].flatten(0, 1), frames[:, 1:].flatten(0, 1)   # [N, 3, H, W], N = B (T-1)
        h = self.convs(torch.cat([x0, x1, x1 - x0], 1))                       # [N, 2c, H/8, W/8]
        return self.head(h.mean(dim=(2, 3))).view(B, T - 1, -1)               # [B, T-1, A]


class ConvActionDecoder(nn.Module):
    """x_t and the action into x_t+1 -> predicted x_t+1 = x_t + delta. Two convs read x_t, FiLM
    applies the action at full scale, two convs predict the change. Stride 1 throughout: the
    change is local (the agent moves), and the frame itself is given, so nothing passes a
    bottleneck but the action.

    action_free_prior: a second stack predicts x_t+1 from (x_t-1, x_t) without the action; the
    decoder's output is that prediction (detached) plus the action's correction. What moves by
    itself (a ball, an opponent) is then the prior's job and the code is left with what the
    player controls (the residual an action-free model cannot explain)."""

    def __init__(self, cfg: LatentActionConfig):
        super().__init__()
        c, n = cfg.conv_channels, cfg.conv_norm
        self.context = cfg.conv_context
        self.read = nn.Sequential(ConvBlock(3 * self.context, c, 1, n), ConvBlock(c, c, 1, n))
        self.film = FiLM(cfg.vq_code_dim, c)
        self.predict = nn.Sequential(ConvBlock(c, c, 1, n), nn.Conv2d(c, 3, 3, 1, 1))
        if cfg.action_free_prior:
            self.prior = nn.Sequential(ConvBlock(6, c, 1, n), ConvBlock(c, c, 1, n), ConvBlock(c, c, 1, n),
                                       nn.Conv2d(c, 3, 3, 1, 1))

    @staticmethod
    def _previous(frames):
        """Frame t-1 for each of frames 0..T-2 (frame 0 stands in for the frame before a clip)."""
        return torch.cat([frames[:, :1], frames[:, :-2]], 1).flatten(0, 1)  # [N, 3, H, W]

    def prior_prediction(self, frames):
        """Action-free prediction of frames 1..T-1 [B, T-1, 3, H, W]."""
        B, T = frames.shape[:2]
        x = frames[:, :-1].flatten(0, 1)
        return (x + self.prior(torch.cat([self._previous(frames), x], 1))).view(B, T - 1, *x.shape[1:])

    def forward(self, frames, actions, mask_future: bool = False, base=None):
        # frames [B, T, 3, H, W], actions [B, T-1, A] -> predicted frames 1..T-1 [B, T-1, 3, H, W]
        B, T = frames.shape[:2]
        x = frames[:, :-1].flatten(0, 1)                                      # [N, 3, H, W]
        inputs = torch.cat([self._previous(frames), x], 1) if self.context == 2 else x
        h = self.film(self.read(inputs), actions.flatten(0, 1))               # [N, c, H, W]
        if base is None and hasattr(self, "prior"):
            base = self.prior_prediction(frames).detach()
        start = x if base is None else base.flatten(0, 1)
        return (start + self.predict(h)).view(B, T - 1, *x.shape[1:])


def reconstruction_loss(pred, target, previous, cfg: LatentActionConfig):
    """tinyworlds' smooth L1 for the transformer architecture, MSE for the conv architecture; pixels that change
    between t and t+1 weigh changed_pixel_weight (the agent is a few pixels of a static scene)."""
    per_pixel = F.mse_loss(pred, target, reduction="none") if cfg.architecture == "conv" else \
        F.smooth_l1_loss(pred, target, reduction="none")
    if cfg.changed_pixel_weight == 1.0:
        return per_pixel.mean()
    changed = ((target - previous).abs().amax(dim=-3, keepdim=True) > CHANGED_PIXEL).to(per_pixel.dtype)
    return (per_pixel * (1 + (cfg.changed_pixel_weight - 1) * changed)).mean()


class OneHotCodes(nn.Module):
    """A VQ whose public action latents are one-hot code ids [..., K]; training (forward) still
    hands the LAM decoder the straight-through code vectors."""

    def __init__(self, vq):
        super().__init__()
        self.vq = vq

    @property
    def codebook_size(self) -> int:
        return self.vq.codebook_size

    def forward(self, z):
        return self.vq(z)

    def quantize(self, z):
        return F.one_hot(self.vq.indices(z), self.codebook_size).to(z.dtype)

    def indices(self, q):
        return q.argmax(-1)

    def latents(self, idx):
        return F.one_hot(idx.long(), self.codebook_size).float()

    def codes(self, q):
        """One-hot latents [..., K] -> code vectors [..., code dim]."""
        return q.to(self.vq.codebook.dtype) @ self.vq.codebook


class LatentActionModel(nn.Module):
    def __init__(self, cfg: LatentActionConfig):
        super().__init__()
        self.config = cfg
        conv = cfg.architecture == "conv"
        self.encoder = ConvActionEncoder(cfg) if conv else ActionEncoder(cfg)
        self.decoder = ConvActionDecoder(cfg) if conv else ActionDecoder(cfg)
        vq_options = dict(beta=cfg.vq_beta, ema=cfg.vq_ema, dead_code_every=cfg.vq_dead_code_every,
                          entropy_weight=cfg.vq_entropy_weight) if cfg.quantizer == "vq" else {}
        self.quantizer = make_quantizer(cfg.quantizer, cfg.vq_code_dim, levels=cfg.fsq_levels,
                                        codebook_size=cfg.n_actions, **vq_options)
        if cfg.onehot_actions:
            self.quantizer = OneHotCodes(self.quantizer)

    @property
    def num_actions(self) -> int:
        return self.quantizer.codebook_size

    def code_ids(self, codes):
        """Code vectors [..., code dim] (the decoder's input) -> int64 ids [...]."""
        return getattr(self.quantizer, "vq", self.quantizer).indices(codes)

    # -- training -------------------------------------------------------------------------
    def forward(self, frames):
        """frames [B, T, 3, H, W] -> (predicted frames 1..T-1, loss, metrics)."""
        z = self.encoder(frames)                                 # [B, T-1, A]
        q, q_loss = self.quantizer(z)
        cfg = self.config
        prior_loss = 0.0
        first = self.decoder_first_pair() if frames.shape[1] > 2 else 0       # a 2-frame clip has only pair 0
        if cfg.action_free_prior:
            prior = self.decoder.prior_prediction(frames)
            prior_loss = reconstruction_loss(prior[:, first:], frames[:, 1 + first:], frames[:, first:-1], cfg)
            pred = self.decoder(frames, q, base=prior.detach())
        else:
            pred = self.decoder(frames, q, mask_future=not cfg.decoder_sees_past)
        rec_loss = reconstruction_loss(pred[:, first:], frames[:, 1 + first:], frames[:, first:-1], cfg)
        if first and cfg.first_pair_weight > 0:
            rec_loss = rec_loss + cfg.first_pair_weight * reconstruction_loss(pred[:, :1], frames[:, 1:2], frames[:, :1], cfg)
        from wmfast.nn.collectives import batch_var   # the global batch's under DDP; .var(dim=0) in one process

        variance = batch_var(z.reshape(-1, z.shape[-1])).mean()
        var_loss = cfg.variance_weight * F.relu(cfg.variance_target - variance) if cfg.architecture == "transformer" else 0.0
        metrics = {"recon_loss": rec_loss.detach(), "encoder_variance": variance.detach(),
                   "action_indices": self.code_ids(q.detach())}
        return pred, rec_loss + prior_loss + var_loss + q_loss, metrics

    def decoder_first_pair(self) -> int:
        """The first pair the reconstruction loss counts. A decoder that reads x_t-1 and x_t has no
        real x_t-1 for a clip's first pair: there a ball's velocity is unknown, and the code would
        learn to carry it (held-out pong: codes followed the ball, NMI 0.02 with the player's
        actions), so that pair only trains the encoder through the others, or counts with the small
        first_pair_weight: with x_t-1 everywhere, a code could say only "the paddle moved" and leave the
        direction to the motion the decoder sees (held-out pong, one seed of two: UP and DOWN shared
        codes, NMI 0.45); a little loss where no motion is visible makes the code carry the direction."""
        return 1 if self.config.architecture == "conv" and self.config.conv_context == 2 else 0

    # -- public inference API ---------------------------------------------------------------
    @torch.no_grad()
    def encode(self, frames):
        """frames [B, T, 3, H, W] -> quantized action latents [B, T-1, A]."""
        check_frames(frames, self.config.frame_size, min_frames=2)
        return self.quantizer.quantize(self.encoder(frames.float()))

    @torch.no_grad()
    def indices(self, actions):
        """action latents [B, T-1, A] -> action ids [B, T-1] int64."""
        actions = check_float_input(actions, "action latents", None, (self.config.action_dim,))
        return self.quantizer.indices(actions)

    @torch.no_grad()
    def latents(self, action_ids):
        """action ids [...] int -> action latents [..., A]."""
        check_indices(action_ids, "action ids", self.num_actions)
        return self.quantizer.latents(action_ids)

    @torch.no_grad()
    def decode(self, frames, actions):
        """Inference-mode decoder (no masking): frames [B, T, ...] + actions [B, T-1, A] -> frames 1..T-1."""
        check_frames(frames, self.config.frame_size, min_frames=2)
        check_tensor(actions, "action latents", ndim=3, dtypes=FLOATS, last_dims=(frames.shape[1] - 1, self.config.action_dim))
        check_finite(actions, "action latents")
        check_same_batch(frames=frames, actions=actions)
        codes = self.quantizer.codes(actions.float()) if self.config.onehot_actions else actions.float()
        return self.decoder(frames.float(), codes, mask_future=False)
