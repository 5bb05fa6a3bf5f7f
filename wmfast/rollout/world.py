"""`wmfast.World`: play a trained world model frame by frame.

    world = wmfast.World.load("run", mode="compat")     # or mode="fast", steps=2
    world.reset(frames)                                  # uint8 [B, T0, H, W, 3] or float [B, T0, 3, H, W]
    frame = world.step(action_ids)                       # [B] ids (or [B, A] latent codes) -> [B, 3, H, W]
    video = world.rollout(action_ids)                    # [B, N] -> [B, N, 3, H, W]

The engine is backend-agnostic: it runs the same loop over any rollout backend (see
wmfast.rollout.backends: "eager" and "compile" run the models' own methods, "onnx" their exported
graphs), so every backend gives the same tokens at temperature 0.

mode="compat" gives exactly the reference step (wmfast.rollout.reference_step: same tokens at
temperature 0): the last C frames are re-tokenized and their actions re-inferred every frame, as
tinyworlds does. It is faster because
  - MaskGIT is batched with static shapes: no per-item loops, no host syncs; all steps run
    (an item with nothing left to unmask chooses nothing, so skipping the early exit is exact);
  - context caching: the dynamics' temporal attention is causal, so during one frame's MaskGIT
    steps the context frames' activations never change. They run once per frame (prefill into a
    cache allocated once) and each MaskGIT step runs only the new frame's P tokens against them.

mode="fast" keeps the context in token space and runs fewer MaskGIT steps (`wmfast eval --long-play`
measures how long each setting stays true to the game, `wmfast bench rollout` its speed):
  - "token context": the actions given are kept instead of re-inferring them with the LAM; with a
    frame-wise tokenizer (TokenizerConfig.temporal_attention=False) the generated tokens are kept as
    well and only the new frame is decoded, since a frame's tokens do not depend on its place in a
    window. A space-time tokenizer encodes a frame differently at each place, and generated tokens
    kept as context drift off what the dynamics was trained on within a few frames (maze: the agent
    is lost by frame 4-19), so for such runs the window is re-encoded from pixels as in compat;
  - "window" (the default): the last C frames run through the dynamics every frame at temporal
    positions 0..C-1, the positions it was trained on, so play holds past the training window;
  - "streaming caches" (stream=True): the dynamics and a space-time decoder keep the keys/values of
    the last C frames in a ring and run each frame once, at the position it was generated at. With
    the absolute temporal PE this puts every frame past the first C at a position the model never
    saw, and the shipped maze World loses its agent within 2-4 frames: kept for measurement only;
  - fewer MaskGIT steps (steps=1, 2, 4, 8 instead of 10), each committing only tokens the model is
    sure of (min_confidence, FAST_MIN_CONFIDENCE by default) and taking extra steps for the others.
"""
import numpy as np
import torch

from wmfast.device import resolve_device
from wmfast.errors import WmfastError
from wmfast.models.dynamics import MAX_EXTRA_STEPS, sampling_noise, unmask_targets
from wmfast.nn.kv_cache import KVCache
from wmfast.nn.pe import temporal_pe
from wmfast.rollout.backends import make_backend
from wmfast.validate import check_number, check_finite, check_frames, check_indices, check_tensor, FLOATS, INTS

MODES = ("compat", "fast")
# Fast mode's MaskGIT commits per step only tokens this sure (and always the surest one); the rest get
# extra steps. With one shared step, two unsure tokens of a moved maze agent were decided apart and the
# agent doubled (1 of 8 policy games at frame 26); at 0.9 none did, for about 10% more time per frame.
FAST_MIN_CONFIDENCE = 0.9
ACTION_SPACES = ("latent", "game")


def frames_to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """float [..., 3, H, W] in [-1, 1] -> uint8 [..., H, W, 3] (same device)."""
    return ((frames.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).movedim(-3, -1)


class World:
    """A world model to play: reset(frames), then step(actions) or rollout(actions).

    backend: a name registered in wmfast.rollout.backends.BACKENDS ("eager", "compile", "onnx")
    or an object implementing the rollout backend protocol."""

    def __init__(self, model, device="auto", backend="eager", mode: str = "compat", steps: int = 10,
                 temperature: float = 0.0, schedule_k: float = 5.0, seed: int = None, stream: bool = False,
                 context_length: int = None, compile_options: dict = None, actions: str = "latent",
                 auto_export: bool = False, min_confidence: float = None):
        model.require("tokenizer", "actions", "dynamics")
        if actions not in ACTION_SPACES:
            raise WmfastError(f"actions must be one of {ACTION_SPACES}, got {actions!r}")
        if mode not in MODES:
            raise WmfastError(f"mode must be one of {MODES}, got {mode!r}")
        if not isinstance(steps, int) or steps < 1:
            raise WmfastError(f"steps must be an integer >= 1, got {steps!r}")
        check_number(temperature, "temperature", lo=0)
        check_number(schedule_k, "schedule_k", lo=0, lo_open=True)
        if min_confidence is None:
            min_confidence = FAST_MIN_CONFIDENCE if mode == "fast" else 0.0
        check_number(min_confidence, "min_confidence", lo=0)
        if min_confidence > 1 or (min_confidence and mode == "compat"):
            raise WmfastError(f"min_confidence must be in [0, 1] (and 0 in compat mode, the reference's rule), "
                              f"got {min_confidence!r}")
        if stream and mode != "fast":
            raise WmfastError(f"stream=True needs mode='fast' (mode={mode!r})")
        self.device = resolve_device(device)
        self.mode, self.steps, self.temperature, self.schedule_k, self.seed = mode, steps, float(temperature), schedule_k, seed
        self.stream = bool(stream)
        self.backend_name = backend if isinstance(backend, str) else type(backend).__name__
        self.model = model
        if backend == "onnx":   # a missing or stale RUN/onnx is an error unless auto_export=True
            compile_options = {**(compile_options or {}), "auto_export": bool(auto_export)}
        self.backend = make_backend(backend, model, self.device, compile_options)

        dcfg = model.dynamics.config
        self.C = int(context_length or dcfg.context_length)
        if self.C < 1:
            raise WmfastError(f"context_length must be >= 1, got {self.C}")
        self.P, self.L, self.A, self.K = dcfg.num_patches, dcfg.latent_dim, dcfg.conditioning_dim, dcfg.codebook_size
        self.frame_size = model.frame_size
        # A frame-wise tokenizer's tokens of a frame are the same anywhere in a window (see the module doc).
        self.frame_wise = not model.tokenizer.config.temporal_attention
        self.num_latent_actions = model.lam.num_actions
        # actions="game": step() takes the game's own action ids, mapped through RUN/action_map.json.
        self.action_map = None
        if actions == "game":
            from wmfast.checkpoint import load_action_map

            if not model.path:
                raise WmfastError("actions='game' needs a model loaded from a run directory with an action_map.json")
            self.action_map = load_action_map(model.path)
            if self.action_map.num_latents != self.num_latent_actions:
                raise WmfastError(f"{model.path}/action_map.json maps to {self.action_map.num_latents} latent codes "
                                  f"but the run's LAM has {self.num_latent_actions}; run `wmfast train action-map` again")
        self.actions = actions
        self.num_actions = self.action_map.num_game_actions if self.action_map else self.num_latent_actions
        self._mask = model.dynamics.mask_token.detach().float().to(self.device)             # [1, 1, 1, L]
        # Cumulative unmask targets as 0-d tensors: one compiled / exported step serves every step.
        self._targets = [torch.tensor(t, dtype=torch.int64, device=self.device)
                         for t in unmask_targets(self.P, steps, schedule_k)]
        # MaskGIT unmasks only tokens this confident (and the most confident one) per step; the rest
        # wait for extra steps (models.dynamics.choose_tokens). 0: the schedule alone (compat's rule).
        self.min_confidence = float(min_confidence)
        self._min_confidence = torch.tensor(self.min_confidence, dtype=torch.float32, device=self.device)
        self._zero = torch.zeros((), dtype=torch.float32, device=self.device)
        self._all = torch.tensor(self.P, dtype=torch.int64, device=self.device)
        self._pe_dyn = temporal_pe(self.C + 1, dcfg.embed_dim).to(self.device)                # [C+1, E]
        self._pe_dec = temporal_pe(self.C + 1, model.tokenizer.config.embed_dim).to(self.device)
        self._caches = {}           # (which, batch) -> KVCache, allocated once
        self._generator = None
        self._state = None
        self.batch_size = None
        self.tokens = None          # token indices [B, P] of the last generated frame

    @classmethod
    def load(cls, path, device="auto", backend="eager", mode: str = "compat", steps: int = 10,
             temperature: float = 0.0, schedule_k: float = 5.0, seed: int = None, **kwargs) -> "World":
        """A World over a run directory (backend="onnx" uses <path>/onnx, made by `wmfast export`;
        auto_export=True exports it when missing or stale)."""
        from wmfast.loader import load

        model = load(path)
        return cls(model, device, backend, mode, steps, temperature, schedule_k, seed, **kwargs)

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
            return self._keep_frame(frames[:, -1])
        be = self.backend
        lat = be.latents(be.encode(frames))                                                  # [B, Tc, P, L]
        act = self._infer_actions(frames)                                                    # [B, Tc-1, A]
        if self.stream:
            Tc = frames.shape[1]
            dyn = be.new_cache("dynamics", self.batch_size, self.C)
            be.dynamics_prefill(lat, act, dyn, self._pe_dyn[:Tc])
            self._state = {"dyn": dyn}
            if not self.frame_wise:
                dec = be.new_cache("decoder", self.batch_size, self.C)
                be.decoder_prefill(lat, dec, self._pe_dec[:Tc])
                self._state["dec"] = dec
        else:
            self._state = {"lat": lat, "act": act}
            if not self.frame_wise:
                self._state["window"] = frames
        return self._keep_frame(frames[:, -1])

    def _keep_frame(self, frame) -> "World":
        """A frame-conditioned action map reads the frame each game action is taken in."""
        if self.action_map is not None and self.action_map.frame_map is not None:
            self._state["frame"] = frame
        return self

    @torch.no_grad()
    def step(self, actions, as_uint8: bool = False):
        """actions: ids int [B] or latent codes float [B, A] -> next frames float [B, 3, H, W] in about
        [-1, 1] (generated frames are not clipped, as in the reference), or uint8 [B, H, W, 3]."""
        if self._state is None:
            raise WmfastError("call world.reset(frames) before world.step(actions)")
        a = self._action_latents(actions)                                                    # [B, A]
        frame = self._step_compat(a) if self.mode == "compat" else self._step_fast(a)
        self._keep_frame(frame)
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
            actions = self.action_map.to_latent(actions.to(self.device), self._state.get("frame"))
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
        lat = be.latents(be.encode(window))                                                 # [B, Tw, P, L]
        ctx_act = self._infer_actions(window)                                               # [B, Tw-1, A]
        new_lat = self._generate(lat, ctx_act, a)                                           # [B, 1, P, L]
        frame = be.decode(torch.cat([lat, new_lat], 1))[:, -1]                              # [B, 3, H, W]
        self._state["window"] = torch.cat([window, frame[:, None]], 1)[:, -self.C:]
        return frame

    def _step_fast(self, a):
        be = self.backend
        if self.stream:
            dyn = self._state["dyn"]
            pos = dyn.frames                                                                # new frame's position
            pe = self._pe_dyn[pos:pos + 1]
            new_lat = self._maskgit(a, dyn, pe)                                             # [B, 1, P, L]
            be.dynamics_commit(new_lat, a[:, None], dyn, pe)       # the finished frame's keys/values, final tokens
            if self.frame_wise:
                return be.decode(new_lat)[:, 0]
            return be.decoder_extend(new_lat, self._state["dec"], self._pe_dec[pos:pos + 1])[:, 0]
        lat, act = self._state["lat"], self._state["act"]                                   # [B, Tw, P, L], [B, Tw-1, A]
        new_lat = self._generate(lat, act, a)                                               # [B, 1, P, L]
        keep = min(lat.shape[1] + 1, self.C)
        act = torch.cat([act, a[:, None]], 1)[:, lat.shape[1] + 1 - keep:]                  # [B, keep-1, A]
        if self.frame_wise:
            frame = be.decode(new_lat)[:, 0]
            self._state = {"lat": torch.cat([lat, new_lat], 1)[:, -keep:], "act": act}
            return frame
        frame = be.decode(torch.cat([lat, new_lat], 1))[:, -1]                               # [B, 3, H, W]
        window = torch.cat([self._state["window"], frame[:, None]], 1)[:, -keep:]
        self._state = {"lat": be.latents(be.encode(window)), "act": act, "window": window}
        return frame

    def _cache(self, which: str, batch: int) -> KVCache:
        """The engine's own cache for the context of one frame (allocated once per batch size)."""
        key = (which, batch)
        if key not in self._caches:
            self._caches[key] = self.backend.new_cache(which, batch, self.C)
        return self._caches[key]

    def _generate(self, lat, ctx_act, a):
        """MaskGIT for one frame after context latents lat [B, Tw, P, L] with actions ctx_act
        [B, Tw-1, A] between them and a [B, A] into the new frame -> new latents [B, 1, P, L]."""
        Tw = lat.shape[1]
        cache = self._cache("dynamics", lat.shape[0])
        self.backend.dynamics_prefill(lat, ctx_act, cache, self._pe_dyn[:Tw])
        return self._maskgit(a, cache, self._pe_dyn[Tw:Tw + 1])

    def _maskgit(self, a, cache, pe):
        B = a.shape[0]
        x = self._mask.expand(B, 1, self.P, self.L).clone()                                 # [B, 1, P, L]
        masked = torch.ones(B, self.P, dtype=torch.bool, device=self.device)                # [B, P]
        tokens = torch.zeros(B, self.P, dtype=torch.int64, device=self.device)
        act = a[:, None]                                                                    # [B, 1, A]
        extra = MAX_EXTRA_STEPS if self.min_confidence else 0
        for step in range(len(self._targets) + extra):
            min_confidence = self._min_confidence
            if step < len(self._targets):
                target = self._targets[step]
            else:                  # extra steps for tokens not confident enough yet (min_confidence > 0)
                if not bool(masked.any()):
                    break
                target = self._all
                if step == len(self._targets) + extra - 1:
                    min_confidence = self._zero      # the last step decides every token left
            noise = None
            if self.temperature > 0:
                noise = sampling_noise((B, self.P, self.K), self.device, self._generator)
            x, masked, tokens = self.backend.maskgit_step(x, masked, tokens, target, act, cache, pe,
                                                          min_confidence, noise, self.temperature or 1.0)
        self.tokens = tokens
        return x

    # == per-row state (for wmfast.serve: many players share one World) ==========================
    # The server steps, each tick, the rows of whichever players asked for a frame. take_rows()
    # copies every batch row's rollout state out of the World; put_rows(rows) makes those rows the
    # World's batch, in the order given. Frame caches are unrolled oldest-first, so a row can go
    # back into any position of any batch of rows with the same key (same number of context frames).
    @torch.no_grad()
    def take_rows(self) -> list:
        """The current state as one independent RowState per batch row (copies, oldest frame first)."""
        if self._state is None:
            raise WmfastError("call world.reset(frames) before world.take_rows()")
        parts = {name: _split_state_value(value, self.batch_size) for name, value in self._state.items()}
        tokens = [None] * self.batch_size if self.tokens is None else list(self.tokens.clone().split(1))
        key = self.row_key()
        return [RowState(key, {name: rows[i] for name, rows in parts.items()}, tokens[i])
                for i in range(self.batch_size)]

    def row_key(self):
        """The key take_rows() would give every row now (without copying anything)."""
        if self._state is None:
            raise WmfastError("call world.reset(frames) before world.row_key()")
        return (self.mode, self.stream) + tuple((name, _state_value_key(v)) for name, v in self._state.items())

    @torch.no_grad()
    def put_rows(self, rows) -> "World":
        """Make rows (RowStates from take_rows of a World of the same model and mode, equal keys)
        the World's batch; step() then continues each row where it was taken."""
        rows = list(rows)
        if not rows or not all(isinstance(r, RowState) for r in rows):
            raise WmfastError("put_rows needs a non-empty list of RowState (from World.take_rows)")
        if any(r.key != rows[0].key for r in rows):
            raise WmfastError(f"put_rows: rows with different keys cannot share a batch: "
                              f"{sorted({r.key for r in rows}, key=repr)}")
        if rows[0].key[:2] != (self.mode, self.stream):
            raise WmfastError(f"put_rows: rows taken from a World with (mode, stream)={rows[0].key[:2]}, "
                              f"this one has {(self.mode, self.stream)}")
        self._state = {name: _join_state_value([r.state[name] for r in rows]) for name in rows[0].state}
        tokens = [r.tokens for r in rows]
        self.tokens = None if any(t is None for t in tokens) else torch.cat(tokens).to(self.device)
        self.batch_size = len(rows)
        return self


class RowState:
    """One batch row's rollout state; rows with equal `key` can be stacked into one batch."""

    def __init__(self, key, state: dict, tokens):
        self.key, self.state, self.tokens = key, state, tokens

    def __repr__(self):
        return f"RowState({self.key})"


def _state_value_key(value):
    """What rows must share to be batched: the frames held (a cache) or the per-row shape (a tensor)."""
    if isinstance(value, KVCache):
        return ("cache", value.frames)
    return ("tensor", tuple(value.shape[1:]))


def _cache_order(cache: KVCache) -> list:
    """Ring slots holding frames, oldest first."""
    if cache.count <= cache.slots:
        return list(range(cache.count))
    start = cache.count % cache.slots
    return list(range(start, cache.slots)) + list(range(start))


def _split_state_value(value, batch: int) -> list:
    """A state entry -> one independent copy per batch row. Cache rows: (k, v) [blocks, 1, P, H, n, Dh]."""
    if isinstance(value, KVCache):
        order = torch.tensor(_cache_order(value), device=value.k.device)
        k, v = value.k[..., order, :], value.v[..., order, :]                             # [blocks, B, P, H, n, Dh]
        return [("cache", value.slots, (k[:, i:i + 1].clone(), v[:, i:i + 1].clone())) for i in range(batch)]
    return list(value.clone().split(1))


def _join_state_value(rows: list):
    """The inverse of _split_state_value over a list of rows (one batch)."""
    if isinstance(rows[0], tuple) and rows[0][0] == "cache":
        slots = rows[0][1]
        k, v = torch.cat([r[2][0] for r in rows], 1), torch.cat([r[2][1] for r in rows], 1)   # [blocks, B, P, H, n, Dh]
        cache = KVCache(k.shape[0], k.shape[1], k.shape[2], k.shape[3], slots, k.shape[5], device=k.device)
        cache.write(k, v)
        return cache
    return torch.cat(rows)
# == end of per-row state ========================================================================
