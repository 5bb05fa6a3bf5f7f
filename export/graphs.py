"""The exportable pieces of a world model: one small wrapper module per ONNX graph.

Each wrapper calls the model's own submodules (never a copy of their maths), so the exported
graph computes exactly what eager PyTorch computes. The rollout loop (MaskGIT schedule,
sampling, context window) stays in Python; the graphs are the heavy, loop-free parts.

Shapes are written with symbolic names: "batch" (dynamic unless exported with --batch N),
"frames" (video length), "steps" (frame transitions; the dynamics graph sees steps + 1
frames, because torch.export cannot derive "frames - 1" from a root "frames") and "slots" (the
context frames a key/value cache holds).

The cached entry points (what `World(backend="onnx")` runs) are the models' own prefill / extend /
maskgit_step methods: the caches go in as inputs (bound by pointer, never copied) and the new
frames' keys/values come out.
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
        self.tokenizer = tokenizer

    def forward(self, frames):
        return self.tokenizer.encode(frames, check=False, return_z=True)


class TokenizerDecoderGraph(nn.Module):
    """latents [B, T, P, L] -> frames [B, T, 3, H, W]."""

    def __init__(self, tokenizer):
        super().__init__()
        self.tokenizer = tokenizer

    def forward(self, latents):
        return self.tokenizer.decode(latents, check=False)


class CodeLatentsGraph(nn.Module):
    """Code ids -> latents (a tokenizer's or a LAM's `latents`): token indices [B, T, P] int64 ->
    latents [B, T, P, L] (FSQ digits or VQ codebook rows), or action ids [B] -> action latents [B, A]."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, indices):
        return self.model.latents(indices, check=False)


class ActionEncoderGraph(nn.Module):
    """frames [B, T, 3, H, W] -> (quantized action latents [B, T-1, A], pre-quantization z [B, T-1, A])."""

    def __init__(self, lam):
        super().__init__()
        self.lam = lam

    def forward(self, frames):
        return self.lam.encode(frames, check=False, return_z=True)


class DynamicsGraph(nn.Module):
    """latents [B, T, P, L] + actions [B, T-1, A] -> logits [B, T, P, K] (no masking: the
    caller writes the mask token into the latents, as MaskGIT does)."""

    def __init__(self, dynamics):
        super().__init__()
        self.dynamics = dynamics

    def forward(self, latents, actions):
        return self.dynamics.logits(latents, actions)


class DynamicsPrefillGraph(nn.Module):
    """Context latents [B, T, P, L] + actions [B, T, A] (the first is ignored: frame 0 has no action
    into it; padding keeps T symbolic down to one frame) + pe [T, E] -> (k, v) [blocks, B, P, H, T, Dh]."""

    def __init__(self, dynamics):
        super().__init__()
        self.dynamics = dynamics

    def forward(self, latents, actions, pe):
        return self.dynamics.context_kv(latents, actions[:, 1:], pe)


class MaskGITStepGraph(nn.Module):
    """One MaskGIT step of the new frame against the context cache (DynamicsModel.maskgit_step, with its
    min_confidence rule as a 0-d input, 0 for none); greedy, or sampled with Exp(1) noise [B, P, K] and a
    temperature (0-d) as extra inputs."""

    def __init__(self, dynamics, tokenizer):
        super().__init__()
        self.dynamics, self.tokenizer = dynamics, tokenizer

    def token_latents(self, indices):
        return self.tokenizer.latents(indices, check=False)

    def forward(self, x, masked, tokens, target, actions, cache_k, cache_v, valid, pe, min_confidence):
        return self.dynamics.maskgit_step(x, masked, tokens, target, actions, cache_k, cache_v, valid, pe,
                                          self.token_latents, min_confidence=min_confidence)


class MaskGITSampledGraph(MaskGITStepGraph):
    def forward(self, x, masked, tokens, target, actions, cache_k, cache_v, valid, pe, min_confidence, noise,
                temperature):
        return self.dynamics.maskgit_step(x, masked, tokens, target, actions, cache_k, cache_v, valid, pe,
                                          self.token_latents, noise, temperature, min_confidence)


class DynamicsCommitGraph(nn.Module):
    """A finished frame's latents [B, 1, P, L] + action [B, 1, A] against the cache -> its (k, v)."""

    def __init__(self, dynamics):
        super().__init__()
        self.dynamics = dynamics

    def forward(self, latents, actions, cache_k, cache_v, valid, pe):
        return self.dynamics.extend(latents, actions, cache_k, cache_v, valid, pe, head=False)[1]


class DecoderPrefillGraph(nn.Module):
    """latents [B, T, P, L] + pe [T, E] -> the decoder's (k, v) [blocks, B, P, H, T, Dh]."""

    def __init__(self, tokenizer):
        super().__init__()
        self.decoder = tokenizer.decoder

    def forward(self, latents, pe):
        return self.decoder.context_kv(latents, pe)


class DecoderExtendGraph(nn.Module):
    """A new frame's latents [B, 1, P, L] against the decoder cache -> (frames [B, 1, 3, H, W], k, v)."""

    def __init__(self, tokenizer):
        super().__init__()
        self.decoder = tokenizer.decoder

    def forward(self, latents, cache_k, cache_v, valid, pe):
        frames, (k, v) = self.decoder.extend(latents, cache_k, cache_v, valid, pe)
        return frames, k, v


WRAPPERS = {
    "tokenizer_encoder": TokenizerEncoderGraph,
    "tokenizer_decoder": TokenizerDecoderGraph,
    "token_latents": CodeLatentsGraph,
    "action_encoder": ActionEncoderGraph,
    "action_latents": CodeLatentsGraph,
    "dynamics": DynamicsGraph,
    "dynamics_prefill": DynamicsPrefillGraph,
    "maskgit_step": MaskGITStepGraph,
    "maskgit_step_sampled": MaskGITSampledGraph,
    "dynamics_commit": DynamicsCommitGraph,
    "decoder_prefill": DecoderPrefillGraph,
    "decoder_extend": DecoderExtendGraph,
}
STAGE_OF = {"tokenizer_encoder": "tokenizer", "tokenizer_decoder": "tokenizer", "token_latents": "tokenizer",
            "action_encoder": "actions", "action_latents": "actions", "dynamics": "dynamics",
            "dynamics_prefill": "dynamics", "maskgit_step": "dynamics", "maskgit_step_sampled": "dynamics",
            "dynamics_commit": "dynamics", "decoder_prefill": "tokenizer", "decoder_extend": "tokenizer"}
# Graphs whose wrapper needs a second stage's model (the MaskGIT step writes tokenizer latents).
ALSO_NEEDS = {"maskgit_step": "tokenizer", "maskgit_step_sampled": "tokenizer"}


def wrapper_for(name: str, stage_models: dict) -> nn.Module:
    """The wrapper module of graph `name` over the run's stage models ({stage: model})."""
    own = stage_models[STAGE_OF[name]]
    if name in ALSO_NEEDS:
        return WRAPPERS[name](own, stage_models[ALSO_NEEDS[name]])
    return WRAPPERS[name](own)
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
            (TensorSpec("actions", f32, ("batch", "frames - 1", A)),
             TensorSpec("z", f32, ("batch", "frames - 1", lam.code_dim))),
            "frames -> quantized action latents between consecutive frames (and the encoder output)")
        specs["action_latents"] = GraphSpec(
            "action_latents", "actions", (TensorSpec("action_ids", i64, ("batch",)),),
            (TensorSpec("actions", f32, ("batch", A)),), "action ids -> action latents")
    if tok is not None and tok.temporal_attention:   # a frame-wise decoder has no temporal cache
        kv = cache_specs(tok, "frames")
        cache = cache_inputs(tok, tok.embed_dim)
        specs["decoder_prefill"] = GraphSpec(
            "decoder_prefill", "tokenizer",
            (TensorSpec("latents", f32, ("batch", "frames", P, L)), TensorSpec("pe", f32, ("frames", tok.embed_dim))),
            kv, "context latents -> the tokenizer decoder's temporal keys/values (streaming rollouts)")
        specs["decoder_extend"] = GraphSpec(
            "decoder_extend", "tokenizer", (TensorSpec("latents", f32, ("batch", 1, P, L)),) + cache,
            (TensorSpec("frames", f32, ("batch", 1, 3, S, S)),) + cache_specs(tok, 1),
            "a new frame's latents against the decoder cache -> its pixels and keys/values")
    if dyn is not None:
        P, L, A, K = dyn.num_patches, dyn.latent_dim, dyn.conditioning_dim, dyn.codebook_size
        specs["dynamics"] = GraphSpec(
            "dynamics", "dynamics",
            (TensorSpec("latents", f32, ("batch", "steps + 1", P, L)), TensorSpec("actions", f32, ("batch", "steps", A))),
            (TensorSpec("logits", f32, ("batch", "steps + 1", P, K)),),
            "latents (mask token where unknown) + actions -> logits over the tokenizer codebook")
        specs["dynamics_prefill"] = GraphSpec(
            "dynamics_prefill", "dynamics",
            (TensorSpec("latents", f32, ("batch", "frames", P, L)), TensorSpec("actions", f32, ("batch", "frames", A)),
             TensorSpec("pe", f32, ("frames", dyn.embed_dim))),
            cache_specs(dyn, "frames"), "context latents + actions (the first ignored) -> temporal keys/values")
        new = (TensorSpec("latents", f32, ("batch", 1, P, L)), TensorSpec("actions", f32, ("batch", 1, A)))
        cache = cache_inputs(dyn, dyn.embed_dim)
        specs["dynamics_commit"] = GraphSpec(
            "dynamics_commit", "dynamics", new + cache, cache_specs(dyn, 1),
            "a finished frame's latents + action against the cache -> its keys/values (streaming rollouts)")
        if tok is not None:
            state = (TensorSpec("x", f32, ("batch", 1, P, L)), TensorSpec("masked", "bool", ("batch", P)),
                     TensorSpec("tokens", i64, ("batch", P)))
            step_in = state + (TensorSpec("target", i64, ()), TensorSpec("actions", f32, ("batch", 1, A))) + cache + \
                (TensorSpec("min_confidence", f32, ()),)
            state = tuple(TensorSpec(f"next_{t.name}", t.dtype, t.shape) for t in state)
            specs["maskgit_step"] = GraphSpec(
                "maskgit_step", "dynamics", step_in, state,
                "one greedy MaskGIT step of the new frame against the context cache")
            specs["maskgit_step_sampled"] = GraphSpec(
                "maskgit_step_sampled", "dynamics",
                step_in + (TensorSpec("noise", f32, ("batch", P, K)), TensorSpec("temperature", f32, ())), state,
                "one sampled MaskGIT step (Exp(1) noise, temperature) against the context cache")
    return specs


def cache_specs(cfg, frames) -> tuple:
    """(k, v) [blocks, batch, P, H, frames, Dh] of a config's transformer."""
    shape = ("batch", cfg.num_patches, cfg.num_heads, frames, cfg.embed_dim // cfg.num_heads)
    return (TensorSpec("k", "float32", (cfg.num_blocks,) + shape), TensorSpec("v", "float32", (cfg.num_blocks,) + shape))


def cache_inputs(cfg, embed_dim: int) -> tuple:
    """The cache as graph inputs: k, v over "slots" frames, which slots are valid, the new frame's pe."""
    k, v = cache_specs(cfg, "slots")
    return (TensorSpec("cache_k", k.dtype, k.shape), TensorSpec("cache_v", v.dtype, v.shape),
            TensorSpec("valid", "bool", ("slots",)), TensorSpec("pe", "float32", (1, embed_dim)))


# -- example inputs and dynamic shapes for torch.export ------------------------------------------

# Distinct example sizes, so the exporter cannot unify two symbolic dims by their values, and
# none is 0 or 1 (which torch.export specialises).
EXAMPLE = {"batch": 2, "frames": 5, "steps": 3, "slots": 6}


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
        elif t.dtype == "bool":
            out.append(torch.ones(shape, dtype=torch.bool))
        elif t.name in ("noise", "temperature"):
            out.append(torch.rand(shape, generator=generator) + 0.5)
        else:
            out.append(torch.rand(shape, generator=generator) * 2 - 1)
    return tuple(out)


def dynamic_shapes(spec: GraphSpec, batch) -> tuple:
    """torch.export dynamic_shapes for the spec: batch (unless static), frames / steps."""
    dims = {"batch": Dim("batch", min=1, max=MAX_BATCH),
            "frames": Dim("frames", min=2 if spec.name == "action_encoder" else 1, max=MAX_FRAMES),
            "steps": Dim("steps", min=1, max=MAX_FRAMES - 1), "slots": Dim("slots", min=1, max=MAX_FRAMES)}
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
