"""The reference rollout: the plain, slow loop every fast path is tested against.

One step (tinyworlds' inference, batched): the last C frames in pixels are tokenized; the
latent action model gives the C-1 context actions; the chosen action's latent is appended;
MaskGIT generates frame C+1; all C+1 latents are decoded and the last decoded frame is the
new frame, which joins the pixel context.
"""
from functools import partial

import torch

from wmfast.errors import WmfastError
from wmfast.validate import check_frames, check_indices


@torch.no_grad()
def reference_step(model, context, action_latent, steps: int = 8, temperature: float = 0.0,
                   schedule_k: float = 5.0, generator=None):
    """context [B, C, 3, H, W], action_latent [B, A] -> next frame [B, 3, H, W].

    Inputs are not validated here: generated frames may stray slightly outside [-1, 1] and
    join the context as they are (as in tinyworlds); reference_rollout checks the user's input."""
    tok, lam, dyn = model.tokenizer, model.lam, model.dynamics
    lat = tok.latents(tok.encode(context, check=False), check=False)       # [B, C, P, L]
    actions = action_latent[:, None]                                       # [B, 1, A]
    if context.shape[1] > 1:
        actions = torch.cat([lam.encode(context, check=False), actions], 1)   # [B, C, A]
    out = dyn.generate(lat, actions, horizon=1, steps=steps, temperature=temperature,
                       schedule_k=schedule_k, latents_fn=partial(tok.latents, check=False), generator=generator)
    return tok.decode(out, check=False)[:, -1]                             # [B, 3, H, W]


@torch.no_grad()
def reference_rollout(model, context, action_ids, steps: int = 8, temperature: float = 0.0,
                      schedule_k: float = 5.0, context_length: int = None, seed: int = None):
    """context [B, T0, 3, H, W], action_ids [B, N] int -> generated frames [B, N, 3, H, W]."""
    model.require("tokenizer", "actions", "dynamics")
    check_frames(context, model.frame_size, name="context")
    check_indices(action_ids, "action ids", model.lam.num_actions, ndim=2)
    if action_ids.shape[0] != context.shape[0]:
        raise WmfastError(f"action ids have batch {action_ids.shape[0]} but context has batch {context.shape[0]}")
    C = context_length or model.dynamics.config.context_length
    generator = None
    if seed is not None:
        generator = torch.Generator(device=context.device).manual_seed(seed)
    window = context[:, -C:].float()
    latents = model.lam.latents(action_ids.to(context.device))            # [B, N, A]
    frames = []
    for i in range(action_ids.shape[1]):
        nxt = reference_step(model, window, latents[:, i], steps, temperature, schedule_k, generator)
        frames.append(nxt)
        window = torch.cat([window, nxt[:, None]], 1)[:, -C:]
    return torch.stack(frames, 1)


@torch.no_grad()
def reference_token_rollout(model, context, action_ids, steps: int = 8, schedule_k: float = 5.0,
                            context_length: int = None, min_confidence: float = None):
    """The plain loop that defines World(mode="fast") at temperature 0 (window context), the oracle of
    its tests: the last C frames are kept as token latents with the actions given for them (the LAM
    infers only the context's own actions, once), MaskGIT generates each frame from that window at
    positions 0..C, and the new frame is decoded. A space-time tokenizer's tokens depend on a frame's
    place in the window, so for it the window is re-encoded from the decoded pixels every frame; a
    frame-wise tokenizer keeps the generated tokens and decodes the new frame alone. min_confidence:
    DynamicsModel.generate's rule (the World's fast default when None).
    context [B, T0, 3, H, W], action_ids [B, N] int -> generated frames [B, N, 3, H, W]."""
    model.require("tokenizer", "actions", "dynamics")
    check_frames(context, model.frame_size, name="context")
    check_indices(action_ids, "action ids", model.lam.num_actions, ndim=2)
    tok, lam, dyn = model.tokenizer, model.lam, model.dynamics
    C = context_length or dyn.config.context_length
    window = context[:, -C:].float()                                       # [B, Tw, 3, H, W]
    lat = tok.latents(tok.encode(window, check=False), check=False)        # [B, Tw, P, L]
    acts = lam.encode(window, check=False) if window.shape[1] > 1 else \
        window.new_zeros(window.shape[0], 0, dyn.config.conditioning_dim)  # [B, Tw-1, A]
    given = model.lam.latents(action_ids.to(context.device))               # [B, N, A]
    frame_wise = not tok.config.temporal_attention
    if min_confidence is None:
        from wmfast.rollout.world import FAST_MIN_CONFIDENCE

        min_confidence = FAST_MIN_CONFIDENCE
    frames = []
    for i in range(action_ids.shape[1]):
        acts = torch.cat([acts, given[:, i:i + 1]], 1)                     # [B, Tw, A]
        out = dyn.generate(lat, acts, horizon=1, steps=steps, schedule_k=schedule_k,
                           latents_fn=partial(tok.latents, check=False), min_confidence=min_confidence or None)   # [B, Tw+1, P, L]
        frame = tok.decode(out[:, -1:] if frame_wise else out, check=False)[:, -1]
        frames.append(frame)
        keep = min(out.shape[1], C)
        acts = acts[:, acts.shape[1] + 1 - keep:]
        if frame_wise:
            lat = out[:, -keep:]
        else:
            window = torch.cat([window, frame[:, None]], 1)[:, -keep:]
            lat = tok.latents(tok.encode(window, check=False), check=False)
    return torch.stack(frames, 1)
