"""Video tokenizer: frames -> discrete tokens -> frames (an FSQ, or VQ, autoencoder).

encoder: patch embedding -> STT (causal in time) -> LayerNorm + Linear(E, L) -> quantizer
decoder: Linear(L, E) + spatial PE -> STT -> 1x1 conv to pixels -> un-patchify
"""
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from wmfast.config import SpaceTimeConfig
from wmfast.nn import PatchEmbedding, PixelHead, STTransformer, spatial_pe
from wmfast.nn.kv_cache import cache_for, past_of, stack_kv
from wmfast.nn.quantizers import make_quantizer
from wmfast.validate import check_float_input, check_frames, check_indices, check_tensor, FLOATS  # noqa: F401


@dataclass
class TokenizerConfig(SpaceTimeConfig):
    latent_dim: int = 5
    num_bins: int = 4
    quantizer: str = "fsq"          # "fsq" (tinyworlds) or "vq" (learned codebook)
    codebook_size: int = 0          # K for "vq"; FSQ's K is num_bins ** latent_dim
    # False: no attention across frames, so a frame's tokens and its decoded pixels depend on that
    # frame alone. A World can then keep its generated tokens as context (they are the tokens the
    # frame would be encoded to anywhere in a window) and decode only the new frame. True: tinyworlds'
    # space-time tokenizer, whose tokens for a frame change with its place in the window.
    temporal_attention: bool = True

    @property
    def num_codes(self) -> int:
        return self.codebook_size if self.quantizer == "vq" else self.num_bins ** self.latent_dim


class TokenizerEncoder(nn.Module):
    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        self.patch_embed = PatchEmbedding(cfg.frame_size, cfg.patch_size, cfg.embed_dim)
        self.transformer = STTransformer(cfg.embed_dim, cfg.num_heads, cfg.hidden_dim, cfg.num_blocks,
                                         temporal=cfg.temporal_attention)
        self.latent_head = nn.Sequential(nn.LayerNorm(cfg.embed_dim), nn.Linear(cfg.embed_dim, cfg.latent_dim))

    def forward(self, frames):
        x = self.patch_embed(frames)              # [B, T, P, E]
        x = self.transformer(x)                   # [B, T, P, E]
        return self.latent_head(x)                # [B, T, P, L] (before quantization)


class TokenizerDecoder(nn.Module):
    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        grid = cfg.frame_size // cfg.patch_size
        self.latent_embed = nn.Linear(cfg.latent_dim, cfg.embed_dim)
        self.register_buffer("pos", spatial_pe(grid, grid, cfg.embed_dim), persistent=False)  # [1, P, E]
        self.transformer = STTransformer(cfg.embed_dim, cfg.num_heads, cfg.hidden_dim, cfg.num_blocks,
                                         temporal=cfg.temporal_attention)
        self.frame_head = PixelHead(cfg.frame_size, cfg.patch_size, cfg.embed_dim)

    def forward(self, latents):
        x = self.latent_embed(latents) + self.pos  # [B, T, P, E]
        x = self.transformer(x)
        return self.frame_head(x)                  # [B, T, 3, H, W]

    # -- cached inference (streaming rollouts): as DynamicsModel.prefill / extend ----------------
    def new_cache(self, batch: int, slots: int, device=None):
        return cache_for(self.transformer, batch, self.pos.shape[1], slots, device)

    def context_kv(self, latents, pe):
        """latents [B, T, P, L], pe [T, E] -> (k, v) [blocks, B, P, H, T, Dh] of those frames."""
        return stack_kv(self.transformer.forward_cached(self.latent_embed(latents) + self.pos, pe)[1], latents.shape[0])

    def prefill(self, latents, cache, pe):
        cache.clear().write(*self.context_kv(latents, pe))
        return cache

    def extend(self, latents, cache_k, cache_v, valid, pe):
        """New frames' latents [B, Tn, P, L] against cached frames -> (frames [B, Tn, 3, H, W],
        (k, v) [blocks, B, P, H, Tn, Dh] of the new frames)."""
        x, kvs = self.transformer.forward_cached(self.latent_embed(latents) + self.pos, pe, None,
                                                 past_of(cache_k, cache_v), valid)
        return self.frame_head(x), stack_kv(kvs, latents.shape[0])


class VideoTokenizer(nn.Module):
    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        self.config = cfg
        self.encoder = TokenizerEncoder(cfg)
        self.decoder = TokenizerDecoder(cfg)
        self.quantizer = make_quantizer(cfg.quantizer, cfg.latent_dim, levels=cfg.num_bins,
                                        codebook_size=cfg.codebook_size)

    # -- training -------------------------------------------------------------------------
    def forward(self, frames):
        """frames [B, T, 3, H, W] -> (reconstruction, loss, metrics)."""
        q, q_loss = self.quantizer(self.encoder(frames))     # [B, T, P, L]
        recon = self.decoder(q)
        rec_loss = F.smooth_l1_loss(recon, frames)
        return recon, rec_loss + q_loss, {"recon_loss": rec_loss.detach(), "indices": self.quantizer.indices(q.detach())}

    # -- public inference API ---------------------------------------------------------------
    # check=False skips validation and the cast to float32 (engines that checked their inputs once:
    # generated frames may stray slightly outside [-1, 1] and go back in as they are, as in
    # tinyworlds; fp16 ONNX graphs, whose frames arrive in the model's own dtype).
    @torch.no_grad()
    def encode(self, frames, check: bool = True, return_z: bool = False):
        """frames [B, T, 3, H, W] float in [-1, 1] -> token indices [B, T, P] int64; with return_z
        also the encoder output before quantization [B, T, P, L]."""
        if check:
            check_frames(frames, self.config.frame_size)
            frames = frames.float()
        z = self.encoder(frames)
        idx = self.quantize(z)
        return (idx, z) if return_z else idx

    @torch.no_grad()
    def quantize(self, z):
        """encoder output z [B, T, P, L] -> token indices [B, T, P] int64 (what encode gives for it)."""
        return self.quantizer.indices(self.quantizer.quantize(z))

    @torch.no_grad()
    def latents(self, idx, check: bool = True):
        """token indices [B, T, P] -> latents [B, T, P, L]."""
        if check:
            check_indices(idx, "token indices", self.config.num_codes)
        return self.quantizer.latents(idx)

    @torch.no_grad()
    def decode(self, latents, check: bool = True):
        """latents [B, T, P, L] -> frames [B, T, 3, H, W]."""
        if check:
            latents = check_float_input(latents, "latents", 4, (self.config.num_patches, self.config.latent_dim))
        return self.decoder(latents.float())
