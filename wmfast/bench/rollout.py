"""`wmfast bench rollout`: the World engine against the reference rollout loop.

SPEED (randomly initialised models; speed does not depend on the weights) at tinyworlds' default
shape and a small one, batch 1 and 32, and on the trained run itself (its own tokenizer kind) at
batch 1 and 8: ms per generated frame and frames/s for
  - reference: wmfast.rollout.reference_rollout (tinyworlds' loop, batched), 10 MaskGIT steps;
  - compat:    World(mode="compat"), 10 steps; its frames must equal the reference's exactly;
  - fast:      World(mode="fast") (token context, the window at the trained positions) at 10/8/4/2/1
               steps, and with streaming caches (stream=True) at 4 steps.
Every setting rolls out the same frames from the same context and actions in this process.

QUALITY (a trained run, held-out episodes of an embedded game), per setting: next-frame PSNR/MSE
teacher-forced and autoregressive (8 steps), token agreement with compat on the autoregressive
rollout, Genie's controllability gap at t = 4 (PSNR with inferred minus random actions), and the
long-play row beside it: the share of frames where the World still matches the real game replaying
its actions (wmfast.eval.long_play, random held actions) and each game's first wrong frame.
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
    "fast-10": dict(mode="fast", steps=10),
    "fast-8": dict(mode="fast", steps=8),
    "fast-4": dict(mode="fast", steps=4),
    "fast-2": dict(mode="fast", steps=2),
    "fast-1": dict(mode="fast", steps=1),
    "fast-stream-4": dict(mode="fast", steps=4, stream=True),
}
APPROXIMATIONS = {
    "compat": "none (exact reference step, context cached within a frame)",
    "fast-10": "token context (given actions kept; generated tokens kept with a frame-wise tokenizer)",
    "fast-stream-4": "token context + streaming caches (positions past the training window) + 4 steps",
}
LONG_PLAY = dict(games=4, steps=200)        # the long-play row of each quality setting (quick: 2 x 60)


def speed_rows(shape: str, batch: int, frames: int, reps: int = 5, model=None) -> list:
    """One row per setting: ms per frame (median of `reps` rollouts of `frames` frames, timed
    round-robin over the settings, with min/max/spread) and frames/s, plus the compat check. The
    untimed first rollout of each setting is its warm-up and gives the frames compared. `model`:
    time that model (a trained run, rows labelled `shape`) instead of a random one of SHAPES[shape]."""
    if model is None:
        sizes = SHAPES[shape]
        model = random_world_model(**sizes, seed=0)
    g = torch.Generator().manual_seed(0)
    S, C = model.frame_size, model.dynamics.config.context_length
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


def quality_rows(run, data=None, episodes: int = 8, horizon: int = 8, seed: int = 0, long_play_size=LONG_PLAY) -> list:
    """Quality of each setting on held-out clips of `data` (default: the embedded default game), and its
    long-play row when the run has an action map and was trained on an embedded game or Atari recording."""
    import wmfast
    from wmfast.data import DEFAULT_GAME, load_dataset
    from wmfast.eval.long_play import long_play, run_game
    from wmfast.evaluate import evaluate_world_model, held_out_clips

    model = wmfast.load(run)
    C = model.dynamics.config.context_length
    frames, actions = held_out_clips(load_dataset(data or f"game:{DEFAULT_GAME}"), C + horizon, episodes, model.frame_size,
                                     seed=seed)
    rows, videos, compat_tokens = [], {}, None
    try:
        game, render_size, frameskip = run_game(run)
        has_map = os.path.isfile(os.path.join(run, "action_map.json"))
    except WmfastError:
        game, has_map = None, False
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
        if game and has_map:
            lp = long_play(World(model, device="cpu", actions="game", **kwargs), game, actions="random", seed=seed + 1,
                           render_size=render_size, frameskip=frameskip or 4, **long_play_size)
            rows[-1].update(long_play_correct=lp["share"]["correct"], long_play_first_wrong=lp["first_wrong"],
                            long_play_frames=lp["steps"], long_play_games=lp["games"])
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

    if quality and run is None:
        from wmfast.train import pretrained_run

        run = pretrained_run()
    trained = None
    if run is not None and os.path.isdir(run):   # the trained run's own shape and tokenizer kind
        import wmfast

        trained = wmfast.load(run)
        plan = list(plan) + [("run", 1, 3 if not quick else 2), ("run", 8, 2 if not quick else 1)]
    for shape, batch, frames in tqdm(plan, desc="bench rollout (speed)", unit="config"):
        report["speed"] += speed_rows(shape, batch, frames, reps=reps or (3 if quick else 5),
                                      model=trained if shape == "run" else None)
        write_json(report, json_path)
    print_table(report["speed"], ["shape", "batch", "setting", "steps", "ms_per_frame", "frames_per_s", "speedup",
                                  "identical_to_reference"])
    if not quality or run is None:
        report["quality"] = "skipped: no trained run (pass --run DIR)" if quality else "skipped (quality=False)"
        print(report["quality"])
    else:
        if not os.path.isdir(run):
            raise WmfastError(f"no such run directory: {run}")
        report["quality_run"] = os.path.basename(os.path.normpath(run))
        report["quality"], videos = quality_rows(run, data, episodes=4 if quick else 8,
                                                 long_play_size=dict(games=2, steps=60) if quick else LONG_PLAY)
        if json_path:
            gif = os.path.splitext(json_path)[0] + "_rollouts.gif"
            report["quality_gif"] = write_rollout_gif(videos, gif)
            print(f"rollouts (truth | {' | '.join(SETTINGS)}): {gif}")
        print_table(report["quality"], ["setting", "psnr_tf", "psnr_ar", "psnr_ar_step8", "token_agree_step1",
                                        "token_agree_ar", "dtpsnr_t4", "psnr_copy_last", "long_play_correct"])
        held = {r["setting"]: r for r in report["quality"] if "long_play_correct" in r}
        if held:   # each speed figure of the trained run beside how long that setting holds
            for r in report["speed"]:
                if r["shape"] == "run" and r["setting"] in held:
                    r["long_play_correct"] = held[r["setting"]]["long_play_correct"]
            print_table([r for r in report["speed"] if r["shape"] == "run"],
                        ["shape", "batch", "setting", "steps", "ms_per_frame", "speedup", "long_play_correct"])
    report["load_average_after"] = os.getloadavg()
    write_json(report, json_path)
    return report
