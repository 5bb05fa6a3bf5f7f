"""The exportable pieces of a world model: one small wrapper module per ONNX graph.

Each wrapper calls the model's own submodules (never a copy of their maths), so the exported
graph computes exactly what eager PyTorch computes. The rollout loop (MaskGIT schedule,
sampling, context window) stays in Python; the graphs are the heavy, loop-free parts.

Shapes are written with symbolic names: "batch" (dynamic unless exported with --batch N),
"frames" (video length) and "steps" (frame transitions; the dynamics graph sees steps + 1
frames, because torch.export cannot derive "frames - 1" from a root "frames").
"""
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.export import Dim

# The largest dims an exported graph accepts (export needs bounds; these are far above use).
MAX_BATCH, MAX_FRAMES = 4096, 256


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str          # "float32" | "int64"
    shape: tuple        # ints and symbolic names: "batch", "frames", "frames - 1", "steps", "steps + 1"

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class GraphSpec:
    name: str           # file stem, e.g. "tokenizer_encoder"
    stage: str          # run stage whose weights it holds: "tokenizer" | "actions" | "dynamics"
    inputs: tuple       # TensorSpec, ...
    outputs: tuple
    doc: str


# -- wrapper modules ------------------------------------------------------------------------

class TokenizerEncoderGraph(nn.Module):
    """frames [B, T, 3, H, W] -> (token indices [B, T, P] int64, pre-quantization z [B, T, P, L]).
    z rides along so parity can tell a rounding near-tie from a real disagreement."""

    def __init__(self, tokenizer):
        super().__init__()
        self.encoder, self.quantizer = tokenizer.encoder, tokenizer.quantizer

    def forward(self, frames):
        z = self.encoder(frames)                                   # [B, T, P, L]
        return self.quantizer.indices(self.quantizer.quantize(z)), z


class TokenizerDecoderGraph(nn.Module):
    """latents [B, T, P, L] -> frames [B, T, 3, H, W]."""

    def __init__(self, tokenizer):
        super().__init__()
        self.decoder = tokenizer.decoder

    def forward(self, latents):
        return self.decoder(latents)


class TokenLatentsGraph(nn.Module):
    """token indices [B, T, P] int64 -> latents [B, T, P, L] (FSQ digits or VQ codebook rows)."""

    def __init__(self, tokenizer):
        super().__init__()
        self.quantizer = tokenizer.quantizer

    def forward(self, indices):
        return self.quantizer.latents(indices)


class ActionEncoderGraph(nn.Module):
    """frames [B, T, 3, H, W] -> (quantized action latents [B, T-1, A], pre-quantization z [B, T-1, A])."""

    def __init__(self, lam):
        super().__init__()
        self.encoder, self.quantizer = lam.encoder, lam.quantizer

    def forward(self, frames):
        z = self.encoder(frames)                                   # [B, T-1, A]
        return self.quantizer.quantize(z), z


class ActionLatentsGraph(nn.Module):
    """action ids [B] int64 -> action latents [B, A]."""

    def __init__(self, lam):
        super().__init__()
        self.quantizer = lam.quantizer

    def forward(self, action_ids):
        return self.quantizer.latents(action_ids)


class DynamicsGraph(nn.Module):
    """latents [B, T, P, L] + actions [B, T-1, A] -> logits [B, T, P, K] (no masking: the
    caller writes the mask token into the latents, as MaskGIT does)."""

    def __init__(self, dynamics):
        super().__init__()
        self.dynamics = dynamics

    def forward(self, latents, actions):
        return self.dynamics.logits(latents, actions)


WRAPPERS = {
    "tokenizer_encoder": TokenizerEncoderGraph,
    "tokenizer_decoder": TokenizerDecoderGraph,
    "token_latents": TokenLatentsGraph,
    "action_encoder": ActionEncoderGraph,
    "action_latents": ActionLatentsGraph,
    "dynamics": DynamicsGraph,
}
STAGE_OF = {"tokenizer_encoder": "tokenizer", "tokenizer_decoder": "tokenizer", "token_latents": "tokenizer",
            "action_encoder": "actions", "action_latents": "actions", "dynamics": "dynamics"}
GRAPH_NAMES = tuple(WRAPPERS)


def graph_specs(configs: dict) -> dict:
    """Stage configs (dataclasses keyed by stage) -> {graph name: GraphSpec} for the stages present."""
    specs = {}
    tok, lam, dyn = configs.get("tokenizer"), configs.get("actions"), configs.get("dynamics")
    f32, i64 = "float32", "int64"
    if tok is not None:
        S, P, L = tok.frame_size, tok.num_patches, tok.latent_dim
        frames = TensorSpec("frames", f32, ("batch", "frames", 3, S, S))
        specs["tokenizer_encoder"] = GraphSpec(
            "tokenizer_encoder", "tokenizer", (frames,),
            (TensorSpec("indices", i64, ("batch", "frames", P)), TensorSpec("z", f32, ("batch", "frames", P, L))),
            "frames in [-1, 1] -> token indices (and the encoder output before quantization)")
        specs["tokenizer_decoder"] = GraphSpec(
            "tokenizer_decoder", "tokenizer", (TensorSpec("latents", f32, ("batch", "frames", P, L)),),
            (TensorSpec("frames", f32, ("batch", "frames", 3, S, S)),), "token latents -> frames")
        specs["token_latents"] = GraphSpec(
            "token_latents", "tokenizer", (TensorSpec("indices", i64, ("batch", "frames", P)),),
            (TensorSpec("latents", f32, ("batch", "frames", P, L)),), "token indices -> latents")
    if lam is not None:
        S, A = lam.frame_size, lam.action_dim
        specs["action_encoder"] = GraphSpec(
            "action_encoder", "actions", (TensorSpec("frames", f32, ("batch", "frames", 3, S, S)),),
            (TensorSpec("actions", f32, ("batch", "frames - 1", A)), TensorSpec("z", f32, ("batch", "frames - 1", A))),
            "frames -> quantized action latents between consecutive frames (and the encoder output)")
        specs["action_latents"] = GraphSpec(
            "action_latents", "actions", (TensorSpec("action_ids", i64, ("batch",)),),
            (TensorSpec("actions", f32, ("batch", A)),), "action ids -> action latents")
    if dyn is not None:
        P, L, A, K = dyn.num_patches, dyn.latent_dim, dyn.conditioning_dim, dyn.codebook_size
        specs["dynamics"] = GraphSpec(
            "dynamics", "dynamics",
            (TensorSpec("latents", f32, ("batch", "steps + 1", P, L)), TensorSpec("actions", f32, ("batch", "steps", A))),
            (TensorSpec("logits", f32, ("batch", "steps + 1", P, K)),),
            "latents (mask token where unknown) + actions -> logits over the tokenizer codebook")
    return specs


# -- example inputs and dynamic shapes for torch.export ------------------------------------------

# Distinct example sizes, so the exporter cannot unify two symbolic dims by their values, and
# none is 0 or 1 (which torch.export specialises).
EXAMPLE = {"batch": 2, "frames": 5, "steps": 3}


def resolve_dim(dim, sizes: dict) -> int:
    """A spec dim (int or "name", "name + k", "name - k") -> its size given {name: size}."""
    if isinstance(dim, int):
        return dim
    parts = dim.split()
    value = sizes[parts[0]]
    if len(parts) == 3:
        value = value + int(parts[2]) if parts[1] == "+" else value - int(parts[2])
    return value


def example_inputs(spec: GraphSpec, batch, generator=None) -> tuple:
    """Random example inputs in range: frames in [-1, 1], indices in [0, K), binary-ish latents."""
    sizes = dict(EXAMPLE, batch=batch if isinstance(batch, int) else EXAMPLE["batch"])
    out = []
    for t in spec.inputs:
        shape = tuple(resolve_dim(d, sizes) for d in t.shape)
        if t.dtype == "int64":
            out.append(torch.zeros(shape, dtype=torch.long))   # index 0 is valid for every codebook
        else:
            out.append(torch.rand(shape, generator=generator) * 2 - 1)
    return tuple(out)


def dynamic_shapes(spec: GraphSpec, batch) -> tuple:
    """torch.export dynamic_shapes for the spec: batch (unless static), frames / steps."""
    dims = {"batch": Dim("batch", min=1, max=MAX_BATCH),
            "frames": Dim("frames", min=2 if spec.name == "action_encoder" else 1, max=MAX_FRAMES),
            "steps": Dim("steps", min=1, max=MAX_FRAMES - 1)}
    out = []
    for t in spec.inputs:
        axes = {}
        for i, d in enumerate(t.shape):
            if d == "batch" and isinstance(batch, int):
                continue
            if isinstance(d, str):
                name, *rest = d.split()
                axes[i] = dims[name] + int(rest[1]) if rest else dims[name]
        out.append(axes)
    return tuple(out)
