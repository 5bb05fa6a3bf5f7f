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
from wmfast.nn.kv_cache import cache_for, past_of, stack_kv
from wmfast.validate import check_float_input, check_number, check_same_batch, check_tensor, dtype_of, \
    FLOATS  # noqa: F401


# Keys older config.json files hold that only shaped the training clips, never the model: they are
# dropped on load (the dynamics stage's training config, wmfast.train.trainer.DynamicsTrainConfig,
# holds them now).
TRAINING_KEYS = ("future_mask_prob", "pause_clip_prob")
# Variants that lost our studies (docs/controllable-dynamics/) and were removed -> the value every
# kept model was built with: a config.json holding that value loads, any other is refused.
REMOVED_OPTIONS = {"changed_token_weight": 1.0, "spatial_position_bias": False}


@dataclass
class DynamicsConfig(SpaceTimeConfig):
    latent_dim: int = 5             # L, the tokenizer's latent width
    num_bins: int = 4               # FSQ levels of the tokenizer
    codebook_size: int = 0          # K; 0 means num_bins ** latent_dim (an FSQ tokenizer)
    conditioning_dim: int = 3       # A, the action latent width
    context_length: int = 4         # frames of context the model was trained on (rollouts keep this many)
    # > 0: spatial attention only among patches at most this many rows/columns apart (0: global, as
    # tinyworlds). A moved agent is found among the neighbours of where it was.
    spatial_window: int = 0
    # A learned per-head bias for each relative patch offset in spatial attention (T5/Swin style), plus
    # one the action sets (per head and offset): where a moved object went depends on the action's
    # direction, an offset from where it was, so a head can attend where the action says the moved
    # object comes from, a learned, action-chosen warp. Off: tinyworlds.
    action_position_bias: bool = False

    def __post_init__(self):
        if self.codebook_size == 0:
            self.codebook_size = self.num_bins ** self.latent_dim
        if self.spatial_window < 0:
            raise WmfastError(f"spatial_window must be >= 0, got {self.spatial_window}")

    @classmethod
    def from_dict(cls, d: dict, source: str = "config"):
        """Also loads older config.json files: see TRAINING_KEYS and REMOVED_OPTIONS."""
        if isinstance(d, dict):
            for name, built in REMOVED_OPTIONS.items():
                if name in d and d[name] != built:
                    raise WmfastError(f"{source}: DynamicsConfig.{name}={d[name]!r} was removed (a variant that "
                                      f"lost in docs/controllable-dynamics/); only {name}={built!r} loads")
            d = {k: v for k, v in d.items() if k not in TRAINING_KEYS and k not in REMOVED_OPTIONS}
        return super().from_dict(d, source)


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


def sampling_noise(shape, device, generator=None):
    """Exp(1) noise: argmax(probs / noise) draws from probs (the exponential race; no multinomial)."""
    return torch.empty(shape, device=device).exponential_(generator=generator)


# With min_confidence, extra MaskGIT steps after the schedule at most, the last deciding all that is left:
# the shipped maze model needs at most 2 with steps=1 (150 frames x 8 games); an unsure (say, untrained)
# model would otherwise take one step per token.
MAX_EXTRA_STEPS = 4


def choose_tokens(logits, masked, target, min_per_step: int, temperature=0.0, noise=None, min_confidence=None):
    """The MaskGIT selection rule (tinyworlds'), batched with static shapes and no host syncs.

    logits [B, N, K], masked [B, N] bool, target: cumulative unmask target (int or 0-d int64) ->
    (tokens [B, N], chosen [B, N] bool). Every masked position gets a token (argmax, or with noise
    [B, N, K] a sample at `temperature`) and a confidence (its max probability); each item unmasks
    its n most confident masked positions, n = min_per_step at least, up to the target. An item with
    nothing masked chooses nothing, so running every step is the same as stopping early.

    min_confidence (float or 0-d tensor, None: off): of those, only positions at least this confident
    are unmasked, and always the most confident one. Tokens chosen in one step are drawn independently,
    so two uncertain ones (where the agent went, where it was) can disagree: a moved agent doubled or
    gone. Left masked, the uncertain ones are decided in later steps, each seeing what was decided."""
    B, N, _ = logits.shape
    logits = logits.float()
    probs = F.softmax(logits / temperature if noise is not None else logits, dim=-1)             # [B, N, K]
    confidence = probs.max(dim=-1).values                                                        # [B, N]
    tokens = (probs / noise).argmax(dim=-1) if noise is not None else probs.argmax(dim=-1)      # [B, N]
    still = masked.sum(dim=1)                                                                    # [B]
    n = (target - (N - still)).clamp(min=0).minimum(still).clamp(min=min_per_step)               # [B]
    # Rank by confidence, equal confidences in position order (a stable descending sort), counted
    # pairwise: exact, and exportable (ONNX's TopK is not stable).
    conf = confidence.masked_fill(~masked, float("-inf"))
    earlier = torch.ones(N, N, dtype=torch.bool, device=logits.device).tril(-1)                  # [i, j]: j < i
    ahead = (conf[:, None, :] > conf[:, :, None]) | ((conf[:, None, :] == conf[:, :, None]) & earlier)
    rank = ahead.sum(dim=-1)                                                                     # [B, N]
    chosen = masked & (rank < n[:, None])
    if min_confidence is not None:
        chosen = chosen & ((confidence >= min_confidence) | (rank == 0))
    return tokens, chosen


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
        for block in self.transformer.blocks:
            if cfg.spatial_window > 0:
                block.spatial_attn.restrict_to_window(grid, cfg.spatial_window)
            if cfg.action_position_bias:
                block.spatial_attn.add_position_bias(grid, cfg.conditioning_dim)
        self.output_mlp = nn.Linear(cfg.embed_dim, cfg.codebook_size)
        self.fsq = FSQ(cfg.latent_dim, cfg.num_bins, persistent=False)   # index -> latent for FSQ tokenizers

    def logits(self, latents, actions):
        # latents [B, T, P, L], actions [B, T-1 or T, A] -> logits [B, T, P, K]
        x = self.latent_embed(latents) + self.pos
        return self.output_mlp(self.transformer(x, actions))

    def forward(self, latents, actions):
        """Logits [B, T, P, K] for every position, no masking."""
        dt = dtype_of(self)
        latents = check_float_input(latents, "latents", 4, (self.config.num_patches, self.config.latent_dim), dt)
        actions = check_float_input(actions, "actions", 3, (self.config.conditioning_dim,), dt)
        check_same_batch(latents=latents, actions=actions)
        return self.logits(latents, actions)

    # -- training -------------------------------------------------------------------------
    @staticmethod
    def training_mask(ratio, uniforms, keep_frame, last_frame_only=None):
        """Which tokens a training step masks [B, T, P] (bool): ratio [], uniforms [B, T, P],
        keep_frame [B, 1, P] (one frame per (b, p) left visible), last_frame_only [B] bool or None
        (those clips keep their context frames and mask their last frame only)."""
        T = uniforms.shape[1]
        frame = torch.arange(T, device=uniforms.device)[None, :, None]
        mask = (uniforms < ratio) & (frame != keep_frame)
        if last_frame_only is not None:
            mask = torch.where(last_frame_only[:, None, None], (uniforms < ratio) & (frame == T - 1), mask)
        return mask

    def training_loss(self, latents, indices, actions, generator=None, noise=None, future_mask_prob: float = 0.0):
        """MaskGIT loss: mask ratio ~ U[0.5, 1) per batch, one random frame per (b, p) kept.
        latents [B, T, P, L], indices [B, T, P], actions [B, T-1, A] -> (logits, loss, metrics).
        noise: optional (ratio [], uniforms [B, T, P], keep_frame [B, 1, P] int64, last_frame_only [B] bool or
        None) drawn by the caller (the trainer keys them by (seed, step, clip) so they do not depend on the
        process count); without it they are drawn here, each clip masking its last frame only with
        probability future_mask_prob (0: tinyworlds' masking)."""
        B, T, P, _ = latents.shape
        dev = latents.device
        if noise is None:
            ratio = 0.5 + 0.5 * torch.rand((), device=dev, generator=generator)
            uniforms = torch.rand(B, T, P, device=dev, generator=generator)                  # [B, T, P]
            keep_frame = torch.randint(0, T, (B, 1, P), device=dev, generator=generator)
            last_frame_only = (torch.rand(B, device=dev, generator=generator) < future_mask_prob
                               if future_mask_prob > 0 else None)
        else:
            ratio, uniforms, keep_frame, last_frame_only = noise
        mask = self.training_mask(ratio, uniforms, keep_frame, last_frame_only)
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
                 schedule_k: float = 5.0, latents_fn=None, generator=None, min_confidence: float = None):
        """lat_ctx [B, Tc, P, L], actions [B, Tc+H-1, A] -> [B, Tc+H, P, L].

        Batched, with tinyworlds' per-item unmasking rule and no per-item Python loops.
        latents_fn maps token indices to latents (default: this model's FSQ). min_confidence: see
        choose_tokens; tokens still masked after `steps` steps get up to MAX_EXTRA_STEPS extra steps,
        the last deciding every token left."""
        dt = dtype_of(self)
        check_number(steps, "steps", lo=1, integer=True)
        check_number(horizon, "horizon", lo=1, integer=True)
        check_number(temperature, "temperature", lo=0)
        lat_ctx = check_float_input(lat_ctx, "lat_ctx", 4, (self.config.num_patches, self.config.latent_dim), dt)
        B, Tc, P, L = lat_ctx.shape
        T = Tc + horizon
        actions = check_float_input(actions, "actions", 3, (self.config.conditioning_dim,), dt)
        if actions.shape[0] != B or actions.shape[1] not in (T - 1, T):
            raise WmfastError(f"actions must be [B={B}, {T - 1}, A] for {Tc} context frames + horizon {horizon}, "
                              f"got {tuple(actions.shape)}")
        latents_fn = latents_fn or self.fsq.latents
        N = horizon * P
        x = torch.cat([lat_ctx.float(), self.mask_token.float().expand(B, horizon, P, L)], dim=1)  # [B, T, P, L]
        masked = torch.ones(B, N, dtype=torch.bool, device=x.device)                              # [B, H*P]
        min_per_step = max(N // 16, 1)
        for target in unmask_targets(N, steps, schedule_k):
            if not bool(masked.any()):
                break
            x, masked = self._unmask_step(x, actions, masked, target, min_per_step, temperature, latents_fn, generator,
                                          min_confidence)
        for extra in range(MAX_EXTRA_STEPS if min_confidence is not None else 0):
            if not bool(masked.any()):
                break
            last = extra == MAX_EXTRA_STEPS - 1          # decides every token left
            x, masked = self._unmask_step(x, actions, masked, N, min_per_step, temperature, latents_fn, generator,
                                          None if last else min_confidence)
        if bool(masked.any()):
            tokens = self.logits(x, actions)[:, Tc:].flatten(1, 2).argmax(-1)                     # [B, H*P]
            x = self._write(x, tokens, masked, latents_fn)
        return x

    def _unmask_step(self, x, actions, masked, target, min_per_step, temperature, latents_fn, generator,
                     min_confidence=None):
        B, T, P, L = x.shape
        N = masked.shape[1]
        logits = self.logits(x, actions)[:, T - N // P:].flatten(1, 2)                             # [B, N, K]
        noise = sampling_noise(logits.shape, x.device, generator) if temperature > 0 else None
        tokens, chosen = choose_tokens(logits, masked, target, min_per_step, temperature, noise, min_confidence)
        return self._write(x, tokens, chosen, latents_fn), masked & ~chosen

    @staticmethod
    def _write(x, tokens, where, latents_fn):
        """Write latents of `tokens` [B, N] into the last N/P frames of x where `where` [B, N]."""
        B, T, P, L = x.shape
        N = tokens.shape[1]
        horizon = x[:, T - N // P:].reshape(B, N, L)
        new = torch.where(where[..., None], latents_fn(tokens).to(x.dtype), horizon)
        return torch.cat([x[:, : T - N // P], new.view(B, N // P, P, L)], dim=1)

    # -- cached inference (rollout engines) ---------------------------------------------------
    # The temporal attention is causal, so context frames never see the frame being generated:
    # their keys/values are computed once (prefill) and each MaskGIT step runs only the new frame's
    # P tokens against them (extend). pe: the frames' rows of temporal_pe [T, E] (absolute).
    def new_cache(self, batch: int, slots: int, device=None):
        """A KVCache for `batch` items and `slots` context frames, allocated once and reused."""
        return cache_for(self.transformer, batch, self.config.num_patches, slots, device)

    def context_kv(self, lat, act, pe):
        """lat [B, T, P, L], act [B, T-1, A] -> (k, v) [blocks, B, P, H, T, Dh] of those frames."""
        x = self.latent_embed(lat) + self.pos                                                      # [B, T, P, E]
        return stack_kv(self.transformer.forward_cached(x, pe, act)[1], lat.shape[0])

    def prefill(self, lat, act, cache, pe):
        """Write the context frames' keys/values into the (cleared) cache; returns the cache."""
        cache.clear().write(*self.context_kv(lat, act, pe))
        return cache

    def extend(self, lat, act, cache_k, cache_v, valid, pe, head: bool = True, kv: bool = True):
        """New frames lat [B, Tn, P, L] with actions act [B, Tn, A] attending to cached frames
        (cache_k/v [blocks, B, P, H, slots, Dh], valid [slots] bool; None: no cached frames) ->
        (logits [B, Tn, P, K] or None, (k, v) [blocks, B, P, H, Tn, Dh] of the new frames or None)."""
        x = self.latent_embed(lat) + self.pos                                                      # [B, Tn, P, E]
        x, kvs = self.transformer.forward_cached(x, pe, act, past_of(cache_k, cache_v), valid)
        return (self.output_mlp(x) if head else None), (stack_kv(kvs, lat.shape[0]) if kv else None)

    def maskgit_step(self, x, masked, tokens, target, act, cache_k, cache_v, valid, pe, latents_fn,
                     noise=None, temperature=1.0, min_confidence=None):
        """One MaskGIT step on the new frame only: x [B, 1, P, L] (mask token where still masked),
        masked [B, P] bool, tokens [B, P] int64, target 0-d int64, act [B, 1, A] -> (x, masked, tokens)."""
        P = self.config.num_patches
        logits, _ = self.extend(x, act, cache_k, cache_v, valid, pe, kv=False)                    # [B, 1, P, K]
        new, chosen = choose_tokens(logits[:, 0], masked, target, max(P // 16, 1), temperature, noise, min_confidence)
        x = torch.where(chosen[:, None, :, None], latents_fn(new[:, None]).to(x.dtype), x)
        return x, masked & ~chosen, torch.where(chosen, new, tokens)
