"""Rollout backends: what the World engine calls to run the three models, and their registry.

The protocol (torch tensors on the engine's device; caches are wmfast.nn.kv_cache.KVCache objects,
allocated once by new_cache and written in place; pe: rows of the temporal PE [T, E]):

    encode(frames [B, T, 3, H, W] f32)               -> token indices [B, T, P] int64
    latents(idx [B, T, P] int64)                      -> [B, T, P, L] f32
    lam_encode(frames [B, T, 3, H, W] f32)            -> action latents [B, T-1, A] f32
    action_latents(ids [B] int64)                     -> [B, A] f32
    decode(lat [B, T, P, L] f32)                      -> frames [B, T, 3, H, W] f32
    new_cache(which: "dynamics" | "decoder", batch, slots) -> KVCache
    dynamics_prefill(lat [B, T, P, L], act [B, T-1, A], cache, pe [T, E])  (context keys/values -> cache)
    maskgit_step(x [B, 1, P, L], masked [B, P], tokens [B, P], target, act [B, 1, A], cache, pe [1, E],
                 min_confidence [] f32, noise=None, temperature=1.0) -> (x, masked, tokens)
                 (DynamicsModel.maskgit_step; min_confidence 0 unmasks by the schedule alone)
    dynamics_commit(lat [B, 1, P, L], act [B, 1, A], cache, pe [1, E])   (append the frame's keys/values)
    decoder_prefill(lat [B, T, P, L], cache, pe)
    decoder_extend(lat [B, 1, P, L], cache, pe) -> frames [B, 1, 3, H, W]  (and append its keys/values)

`TorchBackend` runs the models' own methods (eager, or torch.compile'd); the ONNX backend
(wmfast.export.runtime.OnnxBackend) runs exported graphs of the same methods. Backends are looked up
by name in BACKENDS, whose entries may be "module:attribute" strings imported on first use, so the
engine never imports the export package unless asked for it.
"""
import importlib

import torch

from wmfast.device import resolve_device  # noqa: F401  (re-exported: World and apps import it here)
from wmfast.errors import WmfastError

PROTOCOL = ("encode", "latents", "lam_encode", "action_latents", "decode", "new_cache", "dynamics_prefill",
            "maskgit_step", "dynamics_commit", "decoder_prefill", "decoder_extend")


def check_backend(backend):
    missing = [m for m in PROTOCOL if not callable(getattr(backend, m, None))]
    if missing:
        raise WmfastError(f"{type(backend).__name__} is not a rollout backend: it lacks {missing}")
    return backend


class TorchBackend:
    """The protocol over the PyTorch modules of a WorldModel.

    compile: False, True or a dict of torch.compile options: one compiled MaskGIT step serves
    every step (the target is a tensor input); on CUDA it defaults to mode="reduce-overhead" (CUDA
    graphs). record=True keeps, per position of the frame being generated, the smallest top-1 minus
    top-2 logit gap seen over its MaskGIT steps (`min_gap` [B, P]; eager only), for near-tie accounting."""

    def __init__(self, model, compile=False, record: bool = False):
        model.require("tokenizer", "actions", "dynamics")
        self.tok, self.lam, self.dyn = model.tokenizer, model.lam, model.dynamics
        self.record, self.min_gap = record, None
        self._step = self._maskgit_step
        self._cuda_graphs = False
        if compile:
            device = next(self.dyn.parameters()).device
            options = {"mode": "reduce-overhead" if device.type == "cuda" else None, "dynamic": False,
                       **(compile if isinstance(compile, dict) else {})}
            self._step = torch.compile(self._maskgit_step, **options)
            self._cuda_graphs = options["mode"] in ("reduce-overhead", "max-autotune")

    @classmethod
    def create(cls, model, device, compile=False, **options):
        """The registry's factory: the model moved to the device, in eval mode."""
        model.to(device)
        for m in model.modules():
            m.eval()
        return cls(model, compile=compile, **options)

    def encode(self, frames):
        return self.tok.encode(frames, check=False)

    def latents(self, idx):
        return self.tok.latents(idx, check=False)

    def lam_encode(self, frames):
        return self.lam.encode(frames, check=False)

    def action_latents(self, ids):
        return self.lam.latents(ids, check=False)

    def decode(self, lat):
        return self.tok.decode(lat, check=False)

    def new_cache(self, which: str, batch: int, slots: int):
        module = self.dyn if which == "dynamics" else self.tok.decoder
        return module.new_cache(batch, slots, device=next(self.dyn.parameters()).device)

    def dynamics_prefill(self, lat, act, cache, pe):
        self.dyn.prefill(lat, act, cache, pe)

    def maskgit_step(self, x, masked, tokens, target, act, cache, pe, min_confidence, noise=None,
                     temperature: float = 1.0):
        args = (x, masked, tokens, target, act, cache.k, cache.v, cache.valid, pe, min_confidence, noise, temperature)
        if not self._cuda_graphs:
            return self._step(*args)
        # A CUDA graph replay overwrites its previous outputs, which the next step reads as inputs.
        torch.compiler.cudagraph_mark_step_begin()
        return tuple(t.clone() for t in self._step(*args))

    def _maskgit_step(self, x, masked, tokens, target, act, cache_k, cache_v, valid, pe, min_confidence, noise,
                      temperature):
        if self.record:
            logits, _ = self.dyn.extend(x, act, cache_k, cache_v, valid, pe, kv=False)
            top2 = logits[:, 0].float().topk(2, dim=-1).values                              # [B, P, 2]
            gap = top2[..., 0] - top2[..., 1]
            self.min_gap = gap if self.min_gap is None else torch.minimum(self.min_gap, gap)
        return self.dyn.maskgit_step(x, masked, tokens, target, act, cache_k, cache_v, valid, pe,
                                     self.latents, noise, temperature, min_confidence)

    def dynamics_commit(self, lat, act, cache, pe):
        cache.write(*self.dyn.extend(lat, act, cache.k, cache.v, cache.valid, pe, head=False)[1])

    def decoder_prefill(self, lat, cache, pe):
        self.tok.decoder.prefill(lat, cache, pe)

    def decoder_extend(self, lat, cache, pe):
        frames, kv = self.tok.decoder.extend(lat, cache.k, cache.v, cache.valid, pe)
        cache.write(*kv)
        return frames


# name -> factory(model, device, compile_options) or "module:attribute" of one (imported on use)
BACKENDS = {
    "eager": lambda model, device, compile_options=None: TorchBackend.create(model, device),
    "compile": lambda model, device, compile_options=None: TorchBackend.create(model, device,
                                                                              compile=compile_options or True),
    "onnx": "wmfast.export.runtime:OnnxBackend.for_world",
}


def register_backend(name: str, factory):
    """Make World(backend=name) build its backend with factory(model, device, compile_options)."""
    BACKENDS[name] = factory


def make_backend(backend, model, device, compile_options=None):
    """A backend object from a registered name (or an object implementing the protocol)."""
    if not isinstance(backend, str):
        return check_backend(backend)
    if backend not in BACKENDS:
        raise WmfastError(f"backend must be one of {tuple(BACKENDS)} or a backend object, got {backend!r}")
    factory = BACKENDS[backend]
    if isinstance(factory, str):
        module, attr = factory.split(":")
        factory = importlib.import_module(module)
        for part in attr.split("."):
            factory = getattr(factory, part)
    return check_backend(factory(model, device, compile_options))

