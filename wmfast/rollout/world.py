"""`wmfast.World`: play a trained world model frame by frame.

    world = wmfast.World.load("run", mode="compat")     # or mode="fast", steps=2
    world.reset(frames)                                  # uint8 [B, T0, H, W, 3] or float [B, T0, 3, H, W]
    frame = world.step(action_ids)                       # [B] ids (or [B, A] latent codes) -> [B, 3, H, W]
    video = world.rollout(action_ids)                    # [B, N] -> [B, N, 3, H, W]

mode="compat" gives exactly the reference step (wmfast.rollout.reference_step: same tokens at
temperature 0): the last C frames are re-tokenized and their actions re-inferred every frame, as
tinyworlds does. It is faster because
  - MaskGIT is batched with static shapes: no per-item loops, no host syncs; all steps run
    (an item with nothing left to unmask chooses nothing, so skipping the early exit is exact);
  - context caching: the dynamics' temporal attention is causal, so during one frame's MaskGIT
    steps the context frames' activations never change. They run once per frame (prefill) and each
    MaskGIT step runs only the new frame's P tokens, attending to the cached context keys/values.

mode="fast" adds named approximations (`wmfast bench rollout` measures the quality cost of each):
  - "token context": the context stays in token space: generated tokens are kept instead of
    re-encoding the decoded pixels, and the actions given are kept instead of re-inferring them;
  - "streaming caches" (stream=True, the default for fast): the dynamics and the tokenizer decoder
    keep the keys/values of the last C frames in a ring; each frame runs through each model once,
    at the temporal position it was generated at (the reference re-encodes the window as it
    slides, because the temporal PE is absolute);
  - fewer MaskGIT steps (steps=1, 2, 4, 8 instead of 10).
"""
import numpy as np
import torch

from wmfast.errors import WmfastError
from wmfast.nn.pe import temporal_pe
from wmfast.rollout.backends import EagerBackend, check_backend, resolve_device
from wmfast.rollout.cache import FrameKVCache
from wmfast.rollout.maskgit import choose_tokens, sampling_noise, schedule_targets
from wmfast.validate import check_finite, check_frames, check_indices, check_tensor, FLOATS, INTS

MODES = ("compat", "fast")
ACTION_SPACES = ("latent", "game")
BACKENDS = ("eager", "compile", "onnx")


def frames_to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """float [..., 3, H, W] in [-1, 1] -> uint8 [..., H, W, 3] (same device)."""
    return ((frames.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).movedim(-3, -1)


class World:
    """A world model to play: reset(frames), then step(actions) or rollout(actions)."""

    def __init__(self, model, device="auto", backend="eager", mode: str = "compat", steps: int = 10,
                 temperature: float = 0.0, schedule_k: float = 5.0, seed: int = None, stream: bool = None,
                 context_length: int = None, compile_options: dict = None, actions: str = "latent"):
        model.require("tokenizer", "actions", "dynamics")
        if actions not in ACTION_SPACES:
            raise WmfastError(f"actions must be one of {ACTION_SPACES}, got {actions!r}")
        if mode not in MODES:
            raise WmfastError(f"mode must be one of {MODES}, got {mode!r}")
        if not isinstance(steps, int) or steps < 1:
            raise WmfastError(f"steps must be an integer >= 1, got {steps!r}")
        if temperature < 0:
            raise WmfastError(f"temperature must be >= 0, got {temperature}")
        self.device = resolve_device(device)
        self.mode, self.steps, self.temperature, self.schedule_k, self.seed = mode, steps, float(temperature), schedule_k, seed
        self.backend_name = backend if isinstance(backend, str) else type(backend).__name__
        self.model = model
        self.backend = self._make_backend(model, backend)
        self.cached = bool(getattr(self.backend, "supports_cache", False))
        if stream and (mode != "fast" or not self.cached):
            raise WmfastError("stream=True needs mode='fast' and a backend with cached entry points "
                              f"(mode={mode!r}, backend={self.backend_name})")
        self.stream = self.cached and mode == "fast" if stream is None else bool(stream)

        dcfg = model.dynamics.config
        self.C = int(context_length or dcfg.context_length)
        if self.C < 1:
            raise WmfastError(f"context_length must be >= 1, got {self.C}")
        self.P, self.L, self.A, self.K = dcfg.num_patches, dcfg.latent_dim, dcfg.conditioning_dim, dcfg.codebook_size
        self.frame_size = model.frame_size
        self.num_latent_actions = model.lam.num_actions
        # actions="game": step() takes the game's own action ids, mapped through RUN/action_map.json.
        self.action_map = None
        if actions == "game":
            from wmfast.action_map import ActionMap

            if not model.path:
                raise WmfastError("actions='game' needs a model loaded from a run directory with an action_map.json")
            self.action_map = ActionMap.load(model.path)
            if self.action_map.num_latents != self.num_latent_actions:
                raise WmfastError(f"{model.path}/action_map.json maps to {self.action_map.num_latents} latent codes "
                                  f"but the run's LAM has {self.num_latent_actions}; run `wmfast eval` again")
        self.actions = actions
        self.num_actions = self.action_map.num_game_actions if self.action_map else self.num_latent_actions
        self._mask = model.dynamics.mask_token.detach().float().to(self.device)             # [1, 1, 1, L]
        self._targets = schedule_targets(self.P, steps, schedule_k, self.device)
        self._min_per_step = max(self.P // 16, 1)
        self._pe_dyn = temporal_pe(self.C + 1, dcfg.embed_dim).to(self.device)                # [C+1, E]
        self._pe_dec = temporal_pe(self.C + 1, model.tokenizer.config.embed_dim).to(self.device)
        self._step_fn = self._unmask_step
        if backend == "compile":
            # One compiled MaskGIT step serves every step (the target is a tensor input). On CUDA,
            # reduce-overhead replays it as a CUDA graph.
            options = {"mode": "reduce-overhead" if self.device.type == "cuda" else None, "dynamic": False,
                       **(compile_options or {})}
            self._step_fn = torch.compile(self._unmask_step, **options)
        self._generator = None
        self._state = None
        self.batch_size = None
        self.tokens = None          # token indices [B, P] of the last generated frame

    @classmethod
    def load(cls, path, device="auto", backend="eager", mode: str = "compat", steps: int = 10,
             temperature: float = 0.0, schedule_k: float = 5.0, seed: int = None, **kwargs) -> "World":
        """A World over a run directory (backend="onnx" uses <path>/onnx, exporting it first if missing)."""
        import wmfast

        model = wmfast.load(path)
        return cls(model, device, backend, mode, steps, temperature, schedule_k, seed, **kwargs)

    def _make_backend(self, model, backend):
        if backend in ("eager", "compile"):
            model.to(self.device)
            for m in model.modules():
                m.eval()
            return EagerBackend(model)
        if backend == "onnx":
            if not model.path:
                raise WmfastError("backend='onnx' needs a model loaded from a run directory (World.load(path))")
            from wmfast.export.runtime import OnnxBackend

            return OnnxBackend.for_run(model.path, device=str(self.device))
        if isinstance(backend, str):
            raise WmfastError(f"backend must be one of {BACKENDS} or a backend object, got {backend!r}")
        return check_backend(backend)

    def __repr__(self):
        return (f"World(mode={self.mode}, steps={self.steps}, backend={self.backend_name}, stream={self.stream}, "
                f"device={self.device}, context={self.C}, frame_size={self.frame_size})")

    # -- public API ---------------------------------------------------------------------------
    @torch.no_grad()
    def reset(self, frames) -> "World":
        """Start from context frames: uint8 [B, T0, H, W, 3] or float [B, T0, 3, H, W] in [-1, 1].
        The last C (context_length) frames are kept."""
        frames = self._as_frames(frames)[:, -self.C:]                                       # [B, Tc, 3, H, W]
        self.batch_size = frames.shape[0]
        if self.seed is not None:
            self._generator = torch.Generator(device=self.device).manual_seed(self.seed)
        self.tokens = None
        if self.mode == "compat":
            self._state = {"window": frames}
            return self
        be = self.backend
        lat = be.latents(be.encode(frames))                                                  # [B, Tc, P, L]
        act = self._infer_actions(frames)                                                    # [B, Tc-1, A]
        if self.stream:
            Tc = frames.shape[1]
            self._state = {"dyn": FrameKVCache(be.dynamics_prefill(lat, act, self._pe_dyn[:Tc]), self.C),
                           "dec": FrameKVCache(be.decoder_prefill(lat, self._pe_dec[:Tc]), self.C)}
        else:
            self._state = {"lat": lat, "act": act}
        return self

    @torch.no_grad()
    def step(self, actions, as_uint8: bool = False):
        """actions: ids int [B] or latent codes float [B, A] -> next frames float [B, 3, H, W] in about
        [-1, 1] (generated frames are not clipped, as in the reference), or uint8 [B, H, W, 3]."""
        if self._state is None:
            raise WmfastError("call world.reset(frames) before world.step(actions)")
        a = self._action_latents(actions)                                                    # [B, A]
        frame = self._step_compat(a) if self.mode == "compat" else self._step_fast(a)
        return frames_to_uint8(frame) if as_uint8 else frame

    @torch.no_grad()
    def rollout(self, actions, as_uint8: bool = False, progress: bool = False):
        """actions: ids int [B, N] or latent codes float [B, N, A] -> N frames [B, N, 3, H, W]
        (uint8 [B, N, H, W, 3] with as_uint8)."""
        actions = self._as_tensor(actions, "rollout actions")
        want = 2 if not actions.is_floating_point() else 3
        if actions.dim() != want:
            raise WmfastError(f"rollout actions must be ids [B, N] or latent codes [B, N, A], got shape "
                              f"{tuple(actions.shape)}")
        steps = range(actions.shape[1])
        if progress:
            from tqdm import tqdm

            steps = tqdm(steps, desc=f"rollout ({self.mode})", unit="frame")
        return torch.stack([self.step(actions[:, i], as_uint8) for i in steps], dim=1)

    # -- input checks ---------------------------------------------------------------------------
    @staticmethod
    def _as_tensor(x, name: str):
        if isinstance(x, torch.Tensor):
            return x
        try:
            return torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError):
            raise WmfastError(f"{name} must be a tensor, array or list of numbers, got {type(x).__name__}") from None

    def _as_frames(self, frames):
        frames = self._as_tensor(frames, "frames")
        S = self.frame_size
        if frames.dtype == torch.uint8:
            check_tensor(frames, "uint8 frames", ndim=5, last_dims=(S, S, 3))
            frames = frames.to(self.device, torch.float32).div(255.0).sub(0.5).div(0.5).movedim(-1, -3)
        else:
            check_frames(frames, S)
        if frames.shape[0] < 1 or frames.shape[1] < 1:
            raise WmfastError(f"frames need at least one batch item and one frame, got shape {tuple(frames.shape)}")
        return frames.to(self.device, torch.float32)

    def _action_latents(self, actions):
        actions = self._as_tensor(actions, "actions (action ids or latent codes)")
        B = self.batch_size
        if actions.is_floating_point():
            check_tensor(actions, "action latent codes", ndim=2, dtypes=FLOATS, last_dims=(self.A,))
            check_finite(actions, "action latent codes")
        else:
            check_tensor(actions, "action ids", dtypes=INTS)
            if actions.dim() != 1:
                raise WmfastError(f"action ids must be [B={B}] (or latent codes [B, {self.A}]), "
                                  f"got shape {tuple(actions.shape)}")
            check_indices(actions, "game action ids" if self.action_map else "action ids", self.num_actions)
        if actions.shape[0] != B:
            raise WmfastError(f"actions have batch {actions.shape[0]} but the world was reset with batch {B}")
        if actions.is_floating_point():
            return actions.to(self.device, torch.float32)
        if self.action_map is not None:
            actions = self.action_map.to_latent(actions)
        return self.backend.action_latents(actions.to(self.device, torch.int64))

    def _infer_actions(self, frames):
        """Latent actions between consecutive frames [B, T-1, A] (none for a single frame)."""
        if frames.shape[1] < 2:
            return frames.new_zeros(frames.shape[0], 0, self.A)
        return self.backend.lam_encode(frames)

    # -- engines ------------------------------------------------------------------------------
    def _step_compat(self, a):
        """The reference step, with the dynamics' context cached across MaskGIT steps."""
        be, window = self.backend, self._state["window"]                                   # [B, Tw, 3, H, W]
        Tw = window.shape[1]
        lat = be.latents(be.encode(window))                                                 # [B, Tw, P, L]
        ctx_act = self._infer_actions(window)                                               # [B, Tw-1, A]
        new_lat = self._generate(lat, ctx_act, a)                                           # [B, 1, P, L]
        frame = be.decode(torch.cat([lat, new_lat], 1))[:, -1]                              # [B, 3, H, W]
        self._state["window"] = torch.cat([window, frame[:, None]], 1)[:, -self.C:]
        return frame

    def _step_fast(self, a):
        be = self.backend
        if self.stream:
            dyn, dec = self._state["dyn"], self._state["dec"]
            pos = dyn.frames                                                                # new frame's position
            pe = self._pe_dyn[pos:pos + 1]
            new_lat = self._maskgit_cached(a, dyn.past(), pe, dyn.valid)                    # [B, 1, P, L]
            # Commit the finished frame: its own keys/values, with its final tokens.
            dyn.write(be.dynamics_extend(new_lat, a[:, None], dyn.past(), pe, dyn.valid, head=False)[1])
            frames, kv = be.decoder_extend(new_lat, dec.past(), self._pe_dec[pos:pos + 1], dec.valid)
            dec.write(kv)
            return frames[:, 0]
        lat, act = self._state["lat"], self._state["act"]                                   # [B, Tw, P, L], [B, Tw-1, A]
        new_lat = self._generate(lat, act, a)
        lat = torch.cat([lat, new_lat], 1)                                                  # [B, Tw+1, P, L]
        frame = be.decode(lat)[:, -1]
        keep = min(lat.shape[1], self.C)
        act = torch.cat([act, a[:, None]], 1)
        self._state = {"lat": lat[:, -keep:], "act": act[:, act.shape[1] - (keep - 1):]}
        return frame

    def _generate(self, lat, ctx_act, a):
        """MaskGIT for one frame after context latents lat [B, Tw, P, L] with actions ctx_act
        [B, Tw-1, A] between them and a [B, A] into the new frame -> new latents [B, 1, P, L]."""
        if self.cached:
            Tw = lat.shape[1]
            past = self.backend.dynamics_prefill(lat, ctx_act, self._pe_dyn[:Tw])
            return self._maskgit_cached(a, past, self._pe_dyn[Tw:Tw + 1], None)
        return self._maskgit_full(lat, torch.cat([ctx_act, a[:, None]], 1))

    def _noise(self, B):
        if self.temperature <= 0:
            return None
        return sampling_noise((B, self.P, self.K), self.device, self._generator)

    def _maskgit_cached(self, a, past, pe, past_valid):
        B = a.shape[0]
        x = self._mask.expand(B, 1, self.P, self.L).clone()                                 # [B, 1, P, L]
        masked = torch.ones(B, self.P, dtype=torch.bool, device=self.device)                # [B, P]
        tokens = torch.zeros(B, self.P, dtype=torch.int64, device=self.device)
        act = a[:, None]                                                                    # [B, 1, A]
        for target in self._targets:
            x, masked, tokens = self._step_fn(x, masked, tokens, target, act, past, pe, past_valid, self._noise(B))
        self.tokens = tokens
        return x

    def _unmask_step(self, x, masked, tokens, target, act, past, pe, past_valid, noise):
        """One MaskGIT step on the new frame only: x [B, 1, P, L] -> (x, masked, tokens)."""
        logits, _ = self.backend.dynamics_extend(x, act, past, pe, past_valid)              # [B, 1, P, K]
        new, chosen = choose_tokens(logits[:, 0], masked, target, self._min_per_step, self.temperature, noise)
        x = torch.where(chosen[:, None, :, None], self.backend.latents(new[:, None]).to(x.dtype), x)
        return x, masked & ~chosen, torch.where(chosen, new, tokens)

    def _maskgit_full(self, lat, act):
        """Uncached MaskGIT over backend.dynamics_logits (for backends without cached entry points)."""
        B = lat.shape[0]
        new = self._mask.expand(B, 1, self.P, self.L)
        masked = torch.ones(B, self.P, dtype=torch.bool, device=self.device)
        tokens = torch.zeros(B, self.P, dtype=torch.int64, device=self.device)
        for target in self._targets:
            logits = self.backend.dynamics_logits(torch.cat([lat, new], 1).contiguous(), act)[:, -1]   # [B, P, K]
            chosen_tokens, chosen = choose_tokens(logits, masked, target, self._min_per_step, self.temperature,
                                                  self._noise(B))
            new = torch.where(chosen[:, None, :, None], self.backend.latents(chosen_tokens[:, None]).to(new.dtype), new)
            masked, tokens = masked & ~chosen, torch.where(chosen, chosen_tokens, tokens)
        self.tokens = tokens
        return new
