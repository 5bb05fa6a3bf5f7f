"""MaskGIT dynamics model: predicts the next frame's tokens from past tokens and actions.

Linear(L, E) on token latents + spatial PE -> STT with FiLM on action latents -> Linear(E, K).
Training masks a random fraction of tokens and predicts them; inference unmasks the
next frame over a few steps, most confident tokens first (tinyworlds' schedule).
"""
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from wmfast.config import SpaceTimeConfig
from wmfast.errors import WmfastError
from wmfast.nn import FSQ, STTransformer, spatial_pe
from wmfast.validate import check_tensor, FLOATS


@dataclass
class DynamicsConfig(SpaceTimeConfig):
    latent_dim: int = 5             # L, the tokenizer's latent width
    num_bins: int = 4               # FSQ levels of the tokenizer
    codebook_size: int = 0          # K; 0 means num_bins ** latent_dim (an FSQ tokenizer)
    conditioning_dim: int = 3       # A, the action latent width
    context_length: int = 4         # frames of context the model was trained on (rollouts keep this many)

    def __post_init__(self):
        if self.codebook_size == 0:
            self.codebook_size = self.num_bins ** self.latent_dim


def unmask_targets(num_tokens: int, steps: int, schedule_k: float) -> list:
    """Cumulative number of unmasked tokens after each MaskGIT step (exponential schedule,
    computed in float32 as tinyworlds does; the last step unmasks everything)."""
    targets = []
    for m in range(steps):
        if m == steps - 1:
            targets.append(num_tokens)
            continue
        frac = torch.expm1(torch.tensor(schedule_k * m / steps, dtype=torch.float32)) / torch.expm1(
            torch.tensor(schedule_k, dtype=torch.float32))
        targets.append(int(math.ceil(float(num_tokens * frac))))
    return targets


class DynamicsModel(nn.Module):
    def __init__(self, cfg: DynamicsConfig):
        super().__init__()
        self.config = cfg
        grid = cfg.frame_size // cfg.patch_size
        self.mask_token = nn.Parameter(torch.randn(1, 1, 1, cfg.latent_dim) * 0.02)   # in latent space
        self.latent_embed = nn.Linear(cfg.latent_dim, cfg.embed_dim)
        self.register_buffer("pos", spatial_pe(grid, grid, cfg.embed_dim), persistent=False)  # [1, P, E]
        self.transformer = STTransformer(cfg.embed_dim, cfg.num_heads, cfg.hidden_dim, cfg.num_blocks,
                                         cond_dim=cfg.conditioning_dim)
        self.output_mlp = nn.Linear(cfg.embed_dim, cfg.codebook_size)
        self.fsq = FSQ(cfg.latent_dim, cfg.num_bins, persistent=False)   # index -> latent for FSQ tokenizers

    def logits(self, latents, actions):
        # latents [B, T, P, L], actions [B, T-1 or T, A] -> logits [B, T, P, K]
        x = self.latent_embed(latents) + self.pos
        return self.output_mlp(self.transformer(x, actions))

    def forward(self, latents, actions):
        """Logits [B, T, P, K] for every position, no masking."""
        check_tensor(latents, "latents", ndim=4, dtypes=FLOATS,
                     last_dims=(self.config.num_patches, self.config.latent_dim))
        check_tensor(actions, "actions", ndim=3, dtypes=FLOATS, last_dims=(self.config.conditioning_dim,))
        return self.logits(latents, actions)

    # -- training -------------------------------------------------------------------------
    def training_loss(self, latents, indices, actions, generator=None):
        """MaskGIT loss: mask ratio ~ U[0.5, 1) per batch, one random frame per (b, p) kept.
        latents [B, T, P, L], indices [B, T, P], actions [B, T-1, A] -> (logits, loss, metrics)."""
        B, T, P, _ = latents.shape
        dev = latents.device
        ratio = 0.5 + 0.5 * torch.rand((), device=dev, generator=generator)
        mask = torch.rand(B, T, P, device=dev, generator=generator) < ratio                  # [B, T, P]
        keep_frame = torch.randint(0, T, (B, 1, P), device=dev, generator=generator)
        mask &= torch.arange(T, device=dev)[None, :, None] != keep_frame
        x = torch.where(mask[..., None], self.mask_token.to(latents.dtype), latents)
        logits = self.logits(x, actions)                                                     # [B, T, P, K]
        ce = F.cross_entropy(logits.float().flatten(0, 2), indices.flatten(), reduction="none")
        m = mask.flatten().float()
        loss = (ce * m).sum() / m.sum().clamp(min=1)
        acc = ((logits.argmax(-1) == indices).flatten().float() * m).sum() / m.sum().clamp(min=1)
        return logits, loss, {"masked_accuracy": acc.detach(), "mask_ratio": ratio.detach()}

    # -- MaskGIT inference ------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, lat_ctx, actions, horizon: int = 1, steps: int = 8, temperature: float = 0.0,
                 schedule_k: float = 5.0, latents_fn=None, generator=None):
        """lat_ctx [B, Tc, P, L], actions [B, Tc+H-1, A] -> [B, Tc+H, P, L].

        Batched, with tinyworlds' per-item unmasking rule and no per-item Python loops.
        latents_fn maps token indices to latents (default: this model's FSQ)."""
        check_tensor(lat_ctx, "lat_ctx", ndim=4, dtypes=FLOATS,
                     last_dims=(self.config.num_patches, self.config.latent_dim))
        B, Tc, P, L = lat_ctx.shape
        T = Tc + horizon
        check_tensor(actions, "actions", ndim=3, dtypes=FLOATS, last_dims=(self.config.conditioning_dim,))
        if actions.shape[0] != B or actions.shape[1] not in (T - 1, T):
            raise WmfastError(f"actions must be [B={B}, {T - 1}, A] for {Tc} context frames + horizon {horizon}, "
                              f"got {tuple(actions.shape)}")
        if steps < 1 or horizon < 1:
            raise WmfastError(f"steps and horizon must be >= 1, got steps={steps}, horizon={horizon}")
        latents_fn = latents_fn or self.fsq.latents
        N = horizon * P
        x = torch.cat([lat_ctx.float(), self.mask_token.float().expand(B, horizon, P, L)], dim=1)  # [B, T, P, L]
        masked = torch.ones(B, N, dtype=torch.bool, device=x.device)                              # [B, H*P]
        min_per_step = max(N // 16, 1)
        for target in unmask_targets(N, steps, schedule_k):
            if not bool(masked.any()):
                break
            x, masked = self._unmask_step(x, actions, masked, target, min_per_step, temperature, latents_fn, generator)
        if bool(masked.any()):
            tokens = self.logits(x, actions)[:, Tc:].flatten(1, 2).argmax(-1)                     # [B, H*P]
            x = self._write(x, tokens, masked, latents_fn)
        return x

    def _unmask_step(self, x, actions, masked, target, min_per_step, temperature, latents_fn, generator):
        B, T, P, L = x.shape
        N = masked.shape[1]
        logits = self.logits(x, actions)[:, T - N // P:].flatten(1, 2).float()                     # [B, N, K]
        probs = F.softmax(logits / temperature if temperature > 0 else logits, dim=-1)
        confidence = probs.max(dim=-1).values                                                      # [B, N]
        if temperature > 0:
            tokens = torch.multinomial(probs.flatten(0, 1), 1, generator=generator).view(B, N)
        else:
            tokens = probs.argmax(dim=-1)
        still = masked.sum(dim=1)                                                                  # [B]
        n = (target - (N - still)).clamp(min=0).minimum(still).clamp(min=min_per_step)             # [B]
        # Rank the masked positions by confidence (stable: equal confidences keep (h, p) order).
        conf = confidence.masked_fill(~masked, float("-inf"))
        order = torch.sort(conf, dim=1, descending=True, stable=True).indices
        rank = torch.empty_like(order).scatter_(1, order, torch.arange(N, device=x.device).expand(B, N))
        chosen = masked & (rank < n[:, None])
        return self._write(x, tokens, chosen, latents_fn), masked & ~chosen

    @staticmethod
    def _write(x, tokens, where, latents_fn):
        """Write latents of `tokens` [B, N] into the last N/P frames of x where `where` [B, N]."""
        B, T, P, L = x.shape
        N = tokens.shape[1]
        horizon = x[:, T - N // P:].reshape(B, N, L)
        new = torch.where(where[..., None], latents_fn(tokens).to(x.dtype), horizon)
        return torch.cat([x[:, : T - N // P], new.view(B, N // P, P, L)], dim=1)
