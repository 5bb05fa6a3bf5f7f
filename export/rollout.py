"""The rollout loop over any backend that implements the rollout protocol (see runtime.py).

`BackendDynamics` runs DynamicsModel's own MaskGIT functions (generate, _unmask_step, _write:
the same code objects, not a copy) with the backend's dynamics_logits in place of the model's,
so an ONNX rollout and an eager rollout differ only in which engine computes the graphs.
`backend_rollout` mirrors wmfast.rollout.reference_rollout step for step.
`EagerGraphBackend` is the same protocol over the exporter's own wrapper modules, run eagerly or
torch.compile'd (wmfast.rollout.backends.EagerBackend, the World's, calls the models directly).
"""
import torch

from wmfast.errors import WmfastError
from wmfast.export.graphs import WRAPPERS, STAGE_OF
from wmfast.models.dynamics import DynamicsConfig, DynamicsModel


class BackendDynamics:
    """MaskGIT generation over `backend.dynamics_logits`. With record=True it keeps, for every
    position of the generated frame, the smallest top-1 minus top-2 logit gap it saw (how close
    the decision came to a tie), for parity's near-tie accounting."""

    generate = DynamicsModel.generate
    _unmask_step = DynamicsModel._unmask_step
    _write = staticmethod(DynamicsModel._write)

    def __init__(self, backend, record: bool = False):
        self.backend = backend
        self.config = DynamicsConfig.from_dict(backend.configs["dynamics"], source="dynamics config")
        if backend.mask_token is None:
            raise WmfastError("the backend has no dynamics mask token (was the dynamics stage exported?)")
        self.mask_token = backend.mask_token.reshape(1, 1, 1, -1)
        self.record, self.min_gap = record, None

    def logits(self, x, actions):
        logits = self.backend.dynamics_logits(x, actions)                  # [B, T, P, K]
        if self.record:
            top2 = logits[:, -1].float().topk(2, dim=-1).values            # [B, P, 2]
            gap = top2[..., 0] - top2[..., 1]
            self.min_gap = gap if self.min_gap is None else torch.minimum(self.min_gap, gap)
        return logits

    def token_latents(self, tokens):
        """MaskGIT's latents_fn: tokens [B, N] (N = frames * P) -> [B, N, L] through the backend."""
        B, N = tokens.shape
        P = self.config.num_patches
        return self.backend.latents(tokens.reshape(B, N // P, P)).reshape(B, N, -1)


@torch.no_grad()
def backend_step(backend, dyn: BackendDynamics, context, action_latent, steps=8, temperature=0.0,
                 schedule_k=5.0, generator=None):
    """reference_step over a backend: context [B, C, 3, H, W], action_latent [B, A] ->
    (next frame [B, 3, H, W], its latents [B, P, L])."""
    lat = backend.latents(backend.encode(context))                          # [B, C, P, L]
    if context.shape[1] > 1:
        actions = torch.cat([backend.lam_encode(context), action_latent[:, None]], 1)   # [B, C, A]
    else:
        actions = action_latent[:, None]
    out = dyn.generate(lat, actions, horizon=1, steps=steps, temperature=temperature, schedule_k=schedule_k,
                       latents_fn=dyn.token_latents, generator=generator)    # [B, C+1, P, L]
    return backend.decode(out)[:, -1], out[:, -1]


@torch.no_grad()
def backend_rollout(backend, context, action_ids, steps: int = 8, temperature: float = 0.0, schedule_k: float = 5.0,
                    context_length: int = None, seed: int = None, record: bool = False):
    """reference_rollout over a backend: context [B, T0, 3, H, W], action_ids [B, N] ->
    dict(frames [B, N, 3, H, W], latents [B, N, P, L], and with record=True min_gap [B, N, P])."""
    dyn = BackendDynamics(backend, record=record)
    C = context_length or dyn.config.context_length
    generator = torch.Generator(device=context.device).manual_seed(seed) if seed is not None else None
    window = context[:, -C:].float()
    action_lat = backend.action_latents(action_ids.reshape(-1)).reshape(*action_ids.shape, -1)   # [B, N, A]
    frames, latents, gaps = [], [], []
    for i in range(action_ids.shape[1]):
        dyn.min_gap = None
        nxt, lat = backend_step(backend, dyn, window, action_lat[:, i], steps, temperature, schedule_k, generator)
        frames.append(nxt)
        latents.append(lat)
        gaps.append(dyn.min_gap)
        window = torch.cat([window, nxt[:, None]], 1)[:, -C:]
    out = {"frames": torch.stack(frames, 1), "latents": torch.stack(latents, 1)}
    if record:
        out["min_gap"] = torch.stack(gaps, 1)
    return out


class EagerGraphBackend:
    """The rollout protocol over eager PyTorch modules (the exporter's wrapper modules), optionally
    torch.compile'd; the baseline of parity checks and benchmarks."""

    def __init__(self, model, compile: bool = False, compile_mode: str = None):
        stage_models = {"tokenizer": model.tokenizer, "actions": model.lam, "dynamics": model.dynamics}
        self.modules = {}
        for name, wrapper in WRAPPERS.items():
            stage_model = stage_models[STAGE_OF[name]]
            if stage_model is None:
                continue
            module = wrapper(stage_model).eval()
            self.modules[name] = torch.compile(module, mode=compile_mode, dynamic=False) if compile else module
        self.configs = {s: m.config.to_dict() for s, m in stage_models.items() if m is not None}
        self.mask_token = model.dynamics.mask_token.detach().float().flatten() if model.dynamics is not None else None
        self.num_actions = model.lam.num_actions if model.lam is not None else None

    def run(self, name, *inputs):
        with torch.no_grad():
            out = self.modules[name](*inputs)
        return out if isinstance(out, tuple) else (out,)

    def encode(self, frames):
        return self.run("tokenizer_encoder", frames)[0]

    def latents(self, idx):
        return self.run("token_latents", idx)[0]

    def lam_encode(self, frames):
        return self.run("action_encoder", frames)[0]

    def action_latents(self, ids):
        return self.run("action_latents", ids)[0]

    def dynamics_logits(self, lat, act):
        return self.run("dynamics", lat, act)[0]

    def decode(self, lat):
        return self.run("tokenizer_decoder", lat)[0]
