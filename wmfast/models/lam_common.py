"""What the two latent action models share: the VQ settings, one-hot code latents, the config's
saved form and the public inference API.

A LAM infers a discrete action between consecutive frames. The tinyworlds LAM (wmfast.models.lam)
and the conv LAM (wmfast.models.lam_conv) differ in their encoder, decoder and loss; both expose
  encode(frames) -> action latents [B, T-1, A]    indices(latents) -> ids [B, T-1]
  latents(ids) -> action latents [..., A]         decode(frames, latents) -> frames 1..T-1
"""
import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from wmfast.config import NON_NEGATIVE, Config
from wmfast.errors import WmfastError
from wmfast.validate import check_finite, check_float_input, check_frames, check_indices, check_same_batch, \
    check_tensor, FLOATS


@dataclass
class VQConfig(Config):
    """wmfast.nn.VectorQuantizer's training settings."""
    beta: float = field(default=0.25, metadata={"rule": NON_NEGATIVE})           # commitment weight
    ema: bool = False                                                            # codebook by EMA, not gradients
    dead_code_every: int = field(default=0, metadata={"rule": NON_NEGATIVE})     # reset codes unused this many steps (0: never)
    entropy_weight: float = field(default=0.0, metadata={"rule": NON_NEGATIVE})  # batch-entropy regulariser

    def options(self) -> dict:
        """Keyword arguments of wmfast.nn.make_quantizer("vq", ...)."""
        return dataclasses.asdict(self)


# The old flat config's names for the VQ settings (still accepted by --set and old config.json files).
VQ_FIELDS = {"vq_beta": "beta", "vq_ema": "ema", "vq_dead_code_every": "dead_code_every",
             "vq_entropy_weight": "entropy_weight"}


class LamConfig(Config):
    """Mixin of the LAM configs. config.json names the model by `architecture` (a tag of the
    class, not a field) and holds the VQ settings as a nested object."""
    ARCHITECTURE: ClassVar[str] = ""

    def setting(self, key: str):
        """The value of a --set key in this config: the flat vq_* names read the nested VQ settings."""
        if key in VQ_FIELDS and isinstance(getattr(self, "vq", None), VQConfig):
            return getattr(self.vq, VQ_FIELDS[key])
        return getattr(self, key, None)

    def nested_vq(self):
        """self.vq as a VQConfig (from_dict hands it over as a JSON object)."""
        if isinstance(self.vq, dict):
            self.vq = VQConfig.from_dict(self.vq, source="vq")
        elif not isinstance(self.vq, VQConfig):
            raise WmfastError(f"{type(self).__name__}.vq must be a JSON object of VQConfig fields, "
                              f"got {self.vq!r}")

    def to_dict(self) -> dict:
        return {"architecture": self.ARCHITECTURE, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict, source: str = "config"):
        if isinstance(d, dict) and "architecture" in d:
            if d["architecture"] != cls.ARCHITECTURE:
                raise WmfastError(f"{source}: architecture {d['architecture']!r} is not a {cls.__name__} "
                                  f"({cls.ARCHITECTURE!r})")
            d = {k: v for k, v in d.items() if k != "architecture"}
        return super().from_dict(d, source)


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
    """Base of the LAMs: subclasses set `config_class` and build encoder, decoder and quantizer.

    LatentActionModel(cfg) builds the LAM that cfg's class belongs to, so code that loads any LAM
    config needs no table of its own."""
    config_class: ClassVar[type] = None
    _by_config: ClassVar[dict] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        LatentActionModel._by_config[cls.config_class] = cls

    def __new__(cls, cfg=None, *args, **kwargs):
        # cfg is None when copy.deepcopy rebuilds a LAM (it calls cls.__new__(cls) alone).
        if cls is LatentActionModel:
            if type(cfg) not in cls._by_config:
                raise WmfastError(f"no latent action model for a {type(cfg).__name__}")
            cls = cls._by_config[type(cfg)]
        return super().__new__(cls)

    @property
    def num_actions(self) -> int:
        return self.quantizer.codebook_size

    def decoder_codes(self, actions):
        """Action latents [..., A] -> what the decoder reads (the same, unless latents are one-hot ids)."""
        return actions

    # -- public inference API ---------------------------------------------------------------
    # check=False skips validation and the cast to float32 (engines that checked their inputs
    # once, and fp16 ONNX graphs, whose frames arrive in the model's own dtype).
    @torch.no_grad()
    def encode(self, frames, check: bool = True, return_z: bool = False):
        """frames [B, T, 3, H, W] -> quantized action latents [B, T-1, A]; with return_z also the
        encoder output before quantization [B, T-1, code dim]."""
        if check:
            check_frames(frames, self.config.frame_size, min_frames=2)
            frames = frames.float()
        z = self.encoder(frames)
        q = self.quantize(z)
        return (q, z) if return_z else q

    @torch.no_grad()
    def quantize(self, z):
        """encoder output z [B, T-1, code dim] -> quantized action latents [B, T-1, A] (what encode gives)."""
        return self.quantizer.quantize(z)

    @torch.no_grad()
    def indices(self, actions, check: bool = True):
        """action latents [B, T-1, A] -> action ids [B, T-1] int64."""
        if check:
            actions = check_float_input(actions, "action latents", None, (self.config.action_dim,))
        return self.quantizer.indices(actions)

    @torch.no_grad()
    def latents(self, action_ids, check: bool = True):
        """action ids [...] int -> action latents [..., A]."""
        if check:
            check_indices(action_ids, "action ids", self.num_actions)
        return self.quantizer.latents(action_ids)

    @torch.no_grad()
    def decode(self, frames, actions, check: bool = True):
        """Inference-mode decoder (no masking): frames [B, T, ...] + actions [B, T-1, A] -> frames 1..T-1."""
        if check:
            check_frames(frames, self.config.frame_size, min_frames=2)
            check_tensor(actions, "action latents", ndim=3, dtypes=FLOATS,
                         last_dims=(frames.shape[1] - 1, self.config.action_dim))
            check_finite(actions, "action latents")
            check_same_batch(frames=frames, actions=actions)
            frames, actions = frames.float(), actions.float()
        return self.decoder(frames, self.decoder_codes(actions))
