"""World-model quality on held-out episodes: what the demo and the benchmarks report.

- tokenizer reconstruction PSNR;
- latent-vs-true action agreement (NMI, best-mapping accuracy) of the latent action model;
- next-frame PSNR, teacher-forced (true context every step) and autoregressive (own frames);
- Genie's controllability gap: PSNR at t with inferred actions minus PSNR with random actions.
Pixels live in [-1, 1], so PSNR = 10 log10(4 / MSE).
"""
import math

import torch

from wmfast.rollout.world import World


def compat_rollout(model, context, action_ids, steps):
    return World(model, device=context.device, mode="compat", steps=steps).reset(context).rollout(action_ids)


def psnr(pred, truth) -> torch.Tensor:
    """Per-frame PSNR over the last three dims: [..., 3, H, W] -> [...]."""
    mse = (pred.float() - truth.float()).pow(2).mean(dim=(-3, -2, -1)).clamp(min=1e-10)
    return 10 * torch.log10(4.0 / mse)


def held_out_clips(ds, length: int, count: int, frame_size: int, seed: int = 0, val_fraction: float = 0.1):
    """`count` clips of `length` frames from held-out episodes: frames [N, T, 3, S, S], actions [N, T-1]."""
    from wmfast.data import ClipSampler

    _, val_eps = ds.split(val_fraction, seed=seed)
    sampler = ClipSampler(ds, clip_len=length, frame_size=frame_size, episodes=val_eps or None, seed=seed + 1)
    return sampler.sample(count)


@torch.no_grad()
def evaluate_world_model(model, frames, true_actions=None, horizon: int = 8, steps: int = 8, rollout_fn=None,
                         seed: int = 0) -> dict:
    """frames [N, C+horizon, 3, H, W] held-out clips -> quality metrics (floats).

    rollout_fn(model, context, action_ids, steps) -> frames; defaults to the World engine in compat
    mode, which gives the reference loop's frames exactly (tested), only faster."""
    rollout_fn = rollout_fn or compat_rollout
    C = model.dynamics.config.context_length
    ctx, future = frames[:, :C], frames[:, C:C + horizon]
    H = future.shape[1]
    out = {}
    rec = model.tokenizer.decode(model.tokenizer.latents(model.tokenizer.encode(frames)))
    out["tokenizer_psnr"] = float(psnr(rec, frames).mean())
    inferred = model.lam.indices(model.lam.encode(frames))                        # [N, C+H-1]
    if true_actions is not None and bool((true_actions >= 0).any()):
        from wmfast.data import action_agreement

        agreement = action_agreement(true_actions.cpu().numpy().ravel(), inferred.cpu().numpy().ravel())
        out["action_nmi"] = float(agreement["nmi"])
        out["action_purity"] = float(agreement["purity"])
    act = inferred[:, C - 1:C - 1 + H]                                             # actions into each future frame
    # teacher forcing: each future frame predicted from the TRUE previous C frames
    tf = torch.stack([rollout_fn(model, frames[:, i:i + C], act[:, i:i + 1], steps)[:, 0] for i in range(H)], 1)
    out["psnr_teacher_forced"] = float(psnr(tf, future).mean())
    ar = rollout_fn(model, ctx, act, steps)                                        # [N, H, 3, H, W]
    ar_psnr = psnr(ar, future)                                                     # [N, H]
    out["psnr_autoregressive"] = float(ar_psnr.mean())
    out["psnr_autoregressive_per_step"] = [float(v) for v in ar_psnr.mean(0)]
    out["psnr_copy_last_frame"] = float(psnr(ctx[:, -1:].expand_as(future), future).mean())
    t = min(4, H)
    g = torch.Generator().manual_seed(seed)
    random_act = torch.randint(0, model.lam.num_actions, act[:, :t].shape, generator=g).to(act.device)
    rnd = rollout_fn(model, ctx, random_act, steps)
    out["controllability_t"] = t
    out["psnr_inferred_t"] = float(psnr(ar[:, t - 1], future[:, t - 1]).mean())
    out["psnr_random_t"] = float(psnr(rnd[:, t - 1], future[:, t - 1]).mean())
    out["controllability_gap"] = out["psnr_inferred_t"] - out["psnr_random_t"]
    out["_rollout"], out["_truth"], out["_context"] = ar, future, ctx
    return out


def format_table(metrics: dict) -> str:
    rows = [(k, v) for k, v in metrics.items() if not k.startswith("_") and not isinstance(v, list)]
    width = max(len(k) for k, _ in rows)
    lines = [f"{'metric'.ljust(width)}  value", f"{'-' * width}  -----"]
    for k, v in rows:
        lines.append(f"{k.ljust(width)}  {v:.3f}" if isinstance(v, float) and not math.isnan(v) else f"{k.ljust(width)}  {v}")
    return "\n".join(lines)


def numbers_only(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not k.startswith("_")}
