"""Rollout backends: what the World engine calls to run the three models.

The protocol (tensors are torch tensors on the engine's device):

    encode(frames [B, T, 3, H, W] f32)               -> token indices [B, T, P] int64
    latents(idx [B, T, P] int64)                      -> [B, T, P, L] f32
    lam_encode(frames [B, T, 3, H, W] f32)            -> action latents [B, T-1, A] f32
    action_latents(ids [B] int64)                     -> [B, A] f32
    dynamics_logits(lat [B, T, P, L], act [B, T-1, A]) -> logits [B, T, P, K] f32
    decode(lat [B, T, P, L] f32)                      -> frames [B, T, 3, H, W] f32

Any object with these methods can drive a World (wmfast.export.runtime.OnnxBackend implements
them over onnxruntime). A backend that also has the cached entry points below
(`supports_cache = True`) lets the engine run only the new frame through the transformers,
attending to cached keys/values of the context frames.
"""
from typing import Protocol, runtime_checkable

import torch

from wmfast.errors import WmfastError

PROTOCOL = ("encode", "latents", "lam_encode", "action_latents", "dynamics_logits", "decode")


@runtime_checkable
class Backend(Protocol):
    def encode(self, frames): ...
    def latents(self, idx): ...
    def lam_encode(self, frames): ...
    def action_latents(self, ids): ...
    def dynamics_logits(self, lat, act): ...
    def decode(self, lat): ...


def check_backend(backend):
    missing = [m for m in PROTOCOL if not callable(getattr(backend, m, None))]
    if missing:
        raise WmfastError(f"{type(backend).__name__} is not a rollout backend: it lacks {missing}")
    return backend


class EagerBackend:
    """The protocol over the PyTorch modules of a WorldModel, plus cached entry points.

    Cached entry points (x: new frames, pe: their rows of the temporal PE [Tn, E], past: one
    (k, v) [B*P, H, Tc, Dh] per block, past_valid: [Tc] bool or None):
      dynamics_prefill(lat [B, T, P, L], act [B, T-1, A], pe) -> past of those frames
      dynamics_extend(lat [B, Tn, P, L], act [B, Tn, A], past, pe, past_valid, head=True)
          -> (logits [B, Tn, P, K] or None, kv of the new frames)
      decoder_prefill(lat [B, T, P, L], pe) -> past
      decoder_extend(lat [B, Tn, P, L], past, pe, past_valid) -> (frames [B, Tn, 3, H, W], kv)
    """

    supports_cache = True

    def __init__(self, model):
        model.require("tokenizer", "actions", "dynamics")
        self.tok, self.lam, self.dyn = model.tokenizer, model.lam, model.dynamics

    # -- the protocol ---------------------------------------------------------------------
    def encode(self, frames):
        return self.tok.encode_indices(frames)

    def latents(self, idx):
        return self.tok.quantizer.latents(idx)

    def lam_encode(self, frames):
        return self.lam.quantizer.quantize(self.lam.encoder(frames))

    def action_latents(self, ids):
        return self.lam.quantizer.latents(ids)

    def dynamics_logits(self, lat, act):
        return self.dyn.logits(lat, act)

    def decode(self, lat):
        return self.tok.decoder(lat)

    # -- cached entry points ----------------------------------------------------------------
    def dynamics_prefill(self, lat, act, pe):
        x = self.dyn.latent_embed(lat) + self.dyn.pos                          # [B, T, P, E]
        return self.dyn.transformer.forward_cached(x, pe, act)[1]

    def dynamics_extend(self, lat, act, past, pe, past_valid=None, head: bool = True):
        x = self.dyn.latent_embed(lat) + self.dyn.pos                          # [B, Tn, P, E]
        x, kv = self.dyn.transformer.forward_cached(x, pe, act, past, past_valid)
        return (self.dyn.output_mlp(x) if head else None), kv                  # [B, Tn, P, K]

    def decoder_prefill(self, lat, pe):
        dec = self.tok.decoder
        return dec.transformer.forward_cached(dec.latent_embed(lat) + dec.pos, pe)[1]

    def decoder_extend(self, lat, past, pe, past_valid=None):
        dec = self.tok.decoder
        x, kv = dec.transformer.forward_cached(dec.latent_embed(lat) + dec.pos, pe, None, past, past_valid)
        return dec.frame_head(x), kv                                           # [B, Tn, 3, H, W]


def resolve_device(device) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise WmfastError("device 'cuda' asked for, but no CUDA device is available")
    return device
