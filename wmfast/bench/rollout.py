"""`wmfast bench rollout`: the World engine against the reference rollout loop.

SPEED (randomly initialised models; speed does not depend on the weights) at tinyworlds' default
shape and a small one, batch 1 and 32: ms per generated frame and frames/s for
  - reference: wmfast.rollout.reference_rollout (tinyworlds' loop, batched), 10 MaskGIT steps;
  - compat:    World(mode="compat"), 10 steps; its frames must equal the reference's exactly;
  - fast:      World(mode="fast") with token context and streaming caches, 10/8/4/2/1 steps, and
               token context alone (stream=False) at 10 steps.
Every setting rolls out the same frames from the same context and actions in this process.

QUALITY (a trained run, held-out episodes of an embedded game), per setting: next-frame PSNR/MSE
teacher-forced and autoregressive (8 steps), token agreement with compat on the autoregressive
rollout, and Genie's controllability gap at t = 4 (PSNR with inferred minus random actions).
"""
import os
import time

import torch

from wmfast.bench.common import machine_info, print_table, time_interleaved, write_json
from wmfast.errors import WmfastError
from wmfast.rollout.reference import reference_rollout
from wmfast.rollout.shapes import SHAPES, random_world_model
from wmfast.rollout.world import World

REF_STEPS = 10
# name -> World kwargs
SETTINGS = {
    "compat": dict(mode="compat", steps=10),
    "fast-tokens-10": dict(mode="fast", steps=10, stream=False),
    "fast-10": dict(mode="fast", steps=10),
    "fast-8": dict(mode="fast", steps=8),
    "fast-4": dict(mode="fast", steps=4),
    "fast-2": dict(mode="fast", steps=2),
    "fast-1": dict(mode="fast", steps=1),
}
APPROXIMATIONS = {
    "compat": "none (exact reference step, context cached within a frame)",
    "fast-tokens-10": "token context (generated tokens and given actions kept; no re-encoding)",
    "fast-10": "token context + streaming caches (each frame through each model once)",
}


def speed_rows(shape: str, batch: int, frames: int, reps: int = 5) -> list:
    """One row per setting: ms per frame (median of `reps` rollouts of `frames` frames, timed
    round-robin over the settings, with min/max/spread) and frames/s, plus the compat check. The
    untimed first rollout of each setting is its warm-up and gives the frames compared."""
    sizes = SHAPES[shape]
    model = random_world_model(**sizes, seed=0)
    g = torch.Generator().manual_seed(0)
    S, C = sizes["frame_size"], sizes["context_length"]
    context = torch.rand(batch, C, 3, S, S, generator=g) * 2 - 1
    ids = torch.randint(0, model.lam.num_actions, (batch, frames), generator=g)
    base = {"shape": shape, "batch": batch, "frames": frames}
    worlds = {name: World(model, device="cpu", **kwargs) for name, kwargs in SETTINGS.items()}
    ref = reference_rollout(model, context, ids, steps=REF_STEPS)
    outs = {name: world.reset(context).rollout(ids) for name, world in worlds.items()}
    fns = {"reference": lambda: reference_rollout(model, context, ids, steps=REF_STEPS),
           **{name: (lambda w=world: w.reset(context).rollout(ids)) for name, world in worlds.items()}}
    timings = time_interleaved(fns, warmup=0, reps=reps)
    ref_ms = timings["reference"]["median_ms"] / frames
    rows = []
    for name, t in timings.items():
        ms = t["median_ms"] / frames
        row = {**base, "setting": name, "steps": SETTINGS.get(name, {"steps": REF_STEPS})["steps"],
               "ms_per_frame": ms, "frames_per_s": 1e3 * batch / ms, "speedup": ref_ms / ms,
               "spread": t["spread"], "reps": t["reps"]}
        if name == "compat":
            row["identical_to_reference"] = bool(torch.equal(outs[name], ref))
        elif name != "reference":
            row["max_abs_diff_vs_reference"] = float((outs[name] - ref).abs().max())
        rows.append(row)
    return rows


def quality_rows(run, data=None, episodes: int = 8, horizon: int = 8, seed: int = 0) -> list:
    """Quality of each setting on held-out clips of `data` (default: the embedded default game)."""
    import wmfast
    from wmfast.data import DEFAULT_GAME, load_dataset
    from wmfast.evaluate import evaluate_world_model, held_out_clips

    model = wmfast.load(run)
    C = model.dynamics.config.context_length
    frames, actions = held_out_clips(load_dataset(data or f"game:{DEFAULT_GAME}"), C + horizon, episodes, model.frame_size,
                                     seed=seed)
    rows, videos, compat_tokens = [], {}, None
    for name, kwargs in SETTINGS.items():
        world = World(model, device="cpu", **kwargs)
        recorded = {}

        def rollout_fn(m, context, ids, steps, world=world, recorded=recorded):
            world.reset(context)
            out, toks = [], []
            for i in range(ids.shape[1]):
                out.append(world.step(ids[:, i]))
                toks.append(world.tokens)
            if ids.shape[1] == horizon and "ar" not in recorded:    # the autoregressive rollout
                recorded["ar"] = torch.stack(toks, 1)                 # [N, H, P]
            return torch.stack(out, 1)

        t0 = time.perf_counter()
        m = evaluate_world_model(model, frames, actions, horizon=horizon, rollout_fn=rollout_fn, seed=seed)
        tokens = recorded["ar"]
        if name == "compat":
            compat_tokens = tokens
        agree = (tokens == compat_tokens).float().mean(dim=(0, 2))   # [H]
        future = m["_truth"]
        rows.append({
            "setting": name, "steps": kwargs["steps"], "approximation": APPROXIMATIONS.get(name, "steps only"),
            "psnr_tf": m["psnr_teacher_forced"], "psnr_ar": m["psnr_autoregressive"],
            "mse_ar": float((m["_rollout"] - future).pow(2).mean()),
            "psnr_ar_step8": m["psnr_autoregressive_per_step"][-1],
            "token_agree_step1": float(agree[0]), "token_agree_ar": float(agree.mean()),
            "dtpsnr_t4": m["controllability_gap"], "psnr_copy_last": m["psnr_copy_last_frame"],
            "seconds": time.perf_counter() - t0,
        })
        videos[name] = torch.cat([m["_context"][0], m["_rollout"][0]])            # [C+H, 3, S, S]
    videos["truth"] = torch.cat([m["_context"][0], m["_truth"][0]])
    return rows, videos


def write_rollout_gif(videos: dict, path) -> str:
    """truth | compat | fast-... side by side (first held-out clip), beside the JSON report."""
    from wmfast.rollout.media import side_by_side, to_uint8, write_video

    order = ["truth"] + [k for k in videos if k != "truth"]
    return write_video(side_by_side(*(to_uint8(videos[k]) for k in order)), path, fps=4, scale=2)


def bench_rollout(json_path=None, run=None, data=None, quick: bool = False, threads: int = None, plan=None,
                  quality: bool = True, reps: int = None) -> dict:
    """Speed rows for each (shape, batch, frames) of `plan` (default: by `quick`), then, with
    quality, the quality rows on a trained run (default: the shipped pretrained one)."""
    if threads:
        torch.set_num_threads(threads)
    report = {"benchmark": "rollout", "machine": machine_info("cpu"), "load_average_before": os.getloadavg(),
              "reference": f"reference_rollout, {REF_STEPS} MaskGIT steps, temperature 0",
              "shapes": SHAPES, "settings": SETTINGS, "quick": quick, "speed": [], "quality": None}
    plan = plan or ([("small", 1, 2), ("small", 32, 1), ("tinyworlds", 1, 1)] if quick else
                    [("small", 1, 3), ("small", 32, 2), ("tinyworlds", 1, 2), ("tinyworlds", 32, 1)])
    from tqdm import tqdm

    for shape, batch, frames in tqdm(plan, desc="bench rollout (speed)", unit="config"):
        report["speed"] += speed_rows(shape, batch, frames, reps=reps or (3 if quick else 5))
        write_json(report, json_path)
    print_table(report["speed"], ["shape", "batch", "setting", "steps", "ms_per_frame", "frames_per_s", "speedup",
                                  "identical_to_reference"])
    if quality and run is None:
        from wmfast.train import pretrained_run

        run = pretrained_run()
    if not quality or run is None:
        report["quality"] = "skipped: no trained run (pass --run DIR)" if quality else "skipped (quality=False)"
        print(report["quality"])
    else:
        if not os.path.isdir(run):
            raise WmfastError(f"no such run directory: {run}")
        report["quality_run"] = os.path.basename(os.path.normpath(run))
        report["quality"], videos = quality_rows(run, data, episodes=4 if quick else 8)
        if json_path:
            gif = os.path.splitext(json_path)[0] + "_rollouts.gif"
            report["quality_gif"] = write_rollout_gif(videos, gif)
            print(f"rollouts (truth | {' | '.join(SETTINGS)}): {gif}")
        print_table(report["quality"], ["setting", "psnr_tf", "psnr_ar", "psnr_ar_step8", "token_agree_step1",
                                        "token_agree_ar", "dtpsnr_t4", "psnr_copy_last"])
    report["load_average_after"] = os.getloadavg()
    write_json(report, json_path)
    return report
