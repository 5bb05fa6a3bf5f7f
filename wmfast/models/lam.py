"""tinyworlds' latent action model: a space-time transformer infers the action between frames.

Bit-exact with tinyworlds' checkpoints (wmfast.compat.tinyworlds) unless use_windowed_attention is set.

encoder: patch embedding -> STT -> mean over patches -> concat (frame t, frame t+1)
         -> LayerNorm(2E), Linear(2E, 4A), GELU, Linear(4A, A) -> quantizer (FSQ, 2 levels)
         (use_windowed_attention: STT -> one attention layer over the 2P tokens of each frame pair,
         mean-pooled (wmfast.ops.pair_attention) -> LayerNorm(E), Linear(E, 4A), GELU, Linear(4A, A);
         see WindowedActionHead)
decoder: frames 0..T-2 -> patch embedding (training: frames 1.. replaced by mask_token)
         -> STT with FiLM on the action latents -> LayerNorm, Linear(E, 3 S S), Tanh
         -> predicts frames 1..T-1
loss:    smooth L1 on frames 1..T-1 + a hinge that keeps the encoder's batch variance up + the
         quantizer's loss
"""
import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from wmfast.config import SpaceTimeConfig
from wmfast.errors import WmfastError
from wmfast.models.lam_common import LamConfig, LatentActionModel, VQConfig
from wmfast.nn import PatchEmbedding, STTransformer, unpatchify
from wmfast.nn import capture_flag as _capture
from wmfast.nn.collectives import batch_var
from wmfast.nn.quantizers import make_quantizer
from wmfast.ops import pair_attention

FSQ_LEVELS = 2   # tinyworlds' action FSQ: each action dim is one bit


@dataclass
class TransformerLamConfig(LamConfig, SpaceTimeConfig):
    ARCHITECTURE = "transformer"
    n_actions: int = 8
    quantizer: str = "fsq"          # "fsq": A = log2(n_actions) dims; "vq": n_actions codes of dim action_dim
    action_dim: int = 0             # A; 0 means log2(n_actions) for FSQ, 16 for VQ
    vq: VQConfig = field(default_factory=VQConfig)   # quantizer "vq" only
    variance_target: float = 0.01   # anti-collapse hinge on the encoder's batch variance
    variance_weight: float = 100.0
    # Attention over each frame pair's 2P tokens instead of mean-pool + concat. Checkpoints whose
    # config.json lacks the key load as the tinyworlds encoder.
    use_windowed_attention: bool = False

    def __post_init__(self):
        self.nested_vq()
        if self.quantizer == "fsq":
            dims = round(math.log(self.n_actions, FSQ_LEVELS)) if self.n_actions >= 2 else 0
            if dims < 1 or FSQ_LEVELS ** dims != self.n_actions:
                raise WmfastError(f"n_actions must be a power of {FSQ_LEVELS} for the FSQ action quantizer, "
                                  f"got {self.n_actions}")
            self.action_dim = self.action_dim or dims
        else:
            self.action_dim = self.action_dim or 16

    @property
    def code_dim(self) -> int:
        """Width of the encoder's output before quantization (as ConvLamConfig.code_dim)."""
        return self.action_dim


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
    def __init__(self, cfg: TransformerLamConfig):
        super().__init__()
        E, A = cfg.embed_dim, cfg.action_dim
        self.windowed = cfg.use_windowed_attention
        self.patch_embed = PatchEmbedding(cfg.frame_size, cfg.patch_size, E)
        self.transformer = STTransformer(E, cfg.num_heads, cfg.hidden_dim, cfg.num_blocks)
        if self.windowed:
            self.window_head = WindowedActionHead(E, cfg.num_heads, A)
        else:  # tinyworlds' head (state keys action_head.0/.1/.3)
            self.action_head = nn.Sequential(nn.LayerNorm(2 * E), nn.Linear(2 * E, 4 * A), nn.GELU(),
                                             nn.Linear(4 * A, A))

    def forward(self, frames):
        x = self.transformer(self.patch_embed(frames))           # [B, T, P, E]
        if self.windowed:
            return self.window_head(x)                           # [B, T-1, A] (before quantization)
        pooled = x.mean(dim=2)                                   # [B, T, E]
        pairs = torch.cat([pooled[:, :-1], pooled[:, 1:]], -1)   # [B, T-1, 2E]
        return self.action_head(pairs)                           # [B, T-1, A] (before quantization)


class ActionDecoder(nn.Module):
    def __init__(self, cfg: TransformerLamConfig):
        super().__init__()
        E, S = cfg.embed_dim, cfg.patch_size
        self.frame_size, self.patch_size = cfg.frame_size, S
        self.mask_token = nn.Parameter(torch.randn(1, 1, 1, E) * 0.02)
        self.patch_embed = PatchEmbedding(cfg.frame_size, S, E)
        self.transformer = STTransformer(E, cfg.num_heads, cfg.hidden_dim, cfg.num_blocks, cond_dim=cfg.action_dim)
        self.frame_head = nn.Sequential(nn.LayerNorm(E), nn.Linear(E, 3 * S * S), nn.Tanh())

    def forward(self, frames, actions, mask_future: bool = False):
        # frames [B, T, 3, H, W], actions [B, T-1, A] -> predicted frames 1..T-1 [B, T-1, 3, H, W]
        x = self.patch_embed(frames[:, :-1])                     # [B, T-1, P, E]
        if mask_future:
            # Training hides every frame but the first, so the actions must carry the change.
            keep = torch.zeros(1, x.shape[1], 1, 1, dtype=torch.bool, device=x.device)
            keep[:, 0] = True
            x = torch.where(keep, x, self.mask_token.to(x.dtype))
        x = self.transformer(x, actions)                         # [B, T-1, P, E]
        x = self.frame_head(x)                                   # [B, T-1, P, 3 S S]
        return unpatchify(x, self.patch_size, self.frame_size, self.frame_size)


class TransformerLam(LatentActionModel):
    config_class = TransformerLamConfig

    def __init__(self, cfg: TransformerLamConfig):
        super().__init__()
        self.config = cfg
        self.encoder = ActionEncoder(cfg)
        self.decoder = ActionDecoder(cfg)
        vq_options = cfg.vq.options() if cfg.quantizer == "vq" else {}
        self.quantizer = make_quantizer(cfg.quantizer, cfg.action_dim, levels=FSQ_LEVELS,
                                        codebook_size=cfg.n_actions, **vq_options)

    def forward(self, frames):
        """frames [B, T, 3, H, W] -> (predicted frames 1..T-1, loss, metrics)."""
        cfg = self.config
        z = self.encoder(frames)                                 # [B, T-1, A]
        q, q_loss = self.quantizer(z)
        pred = self.decoder(frames, q, mask_future=True)
        rec_loss = F.smooth_l1_loss(pred, frames[:, 1:], reduction="none").mean()
        variance = batch_var(z.reshape(-1, z.shape[-1])).mean()  # the global batch's under DDP
        var_loss = cfg.variance_weight * F.relu(cfg.variance_target - variance)
        metrics = {"recon_loss": rec_loss.detach(), "encoder_variance": variance.detach(),
                   "action_indices": self.quantizer.indices(q.detach())}
        return pred, rec_loss + var_loss + q_loss, metrics
