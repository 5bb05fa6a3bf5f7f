"""The World on a CUDA device: where one frame's time goes, and steady-state frame times.

PROFILE: torch.profiler over one steady-state frame (after warm-up) of a random model at tinyworlds'
shape, per (backend, mode, batch): the top kernels by device time, the number of kernel launches,
and device-busy time against the frame's wall time (the gap is launch and host overhead).
TIMES: per steady-state frame, CUDA events around each `world.step` (median and p90 over the
frames; `reset` timed apart), and the frames compared with the eager World's token for token.
    python -c "from wmfast.bench.world_gpu import run_world_gpu_benchmark; run_world_gpu_benchmark('out.json')"
"""
import statistics
import time

import torch

from wmfast.bench.common import machine_info, print_table, write_json
from wmfast.rollout.shapes import SHAPES, random_world_model
from wmfast.rollout.world import World

# (backend, mode, steps, batch), most wanted first
SETTINGS = [("eager", "fast", 10, 1), ("eager", "compat", 10, 1), ("eager", "fast", 10, 32),
            ("compile", "fast", 10, 1), ("compile", "compat", 10, 1), ("compile", "fast", 10, 32)]
WARM_FRAMES, TIMED_FRAMES, TOP_KERNELS = 3, 20, 12


def inputs(model, batch, frames, seed=0):
    g = torch.Generator().manual_seed(seed)
    S, C = model.frame_size, model.dynamics.config.context_length
    context = (torch.rand(batch, C, 3, S, S, generator=g) * 2 - 1).cuda()
    ids = torch.randint(0, model.lam.num_actions, (batch, frames), generator=g).cuda()
    return context, ids


def frame_times(world, context, ids) -> dict:
    """CUDA-event time of each steady-state step, and of the reset, in ms; the frames stepped."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    world.reset(context)
    end.record()
    torch.cuda.synchronize()
    reset_ms = start.elapsed_time(end)
    frames, times = [], []
    for i in range(ids.shape[1]):
        start.record()
        frames.append(world.step(ids[:, i]))
        end.record()
        torch.cuda.synchronize()
        if i >= WARM_FRAMES:
            times.append(start.elapsed_time(end))
    times.sort()
    return {"reset_ms": reset_ms, "median_ms": statistics.median(times),
            "p90_ms": times[min(len(times) - 1, int(0.9 * len(times)))], "frames": torch.stack(frames, 1)}


def profile_frame(world, context, ids) -> dict:
    """torch.profiler over one steady-state frame: top kernels, launches, device-busy vs wall."""
    from torch.profiler import ProfilerActivity, profile

    world.reset(context)
    for i in range(WARM_FRAMES):
        world.step(ids[:, i])
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        world.step(ids[:, WARM_FRAMES])
        torch.cuda.synchronize()
        wall_ms = (time.perf_counter() - t0) * 1e3
    kernels = {}
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            k = kernels.setdefault(e.name, [0, 0.0])
            k[0] += 1
            k[1] += e.device_time_total / 1e3 if hasattr(e, "device_time_total") else e.cuda_time_total / 1e3
    busy = sum(ms for _, ms in kernels.values())
    top = sorted(kernels.items(), key=lambda kv: -kv[1][1])[:TOP_KERNELS]
    return {"wall_ms": wall_ms, "device_busy_ms": busy, "launches": sum(n for n, _ in kernels.values()),
            "top_kernels": [{"kernel": name[:120], "calls": n, "ms": ms, "share": ms / busy if busy else None}
                            for name, (n, ms) in top]}


def run_world_gpu_benchmark(json_path=None, settings=SETTINGS, shape: str = "tinyworlds"):
    report = {"benchmark": "world_gpu", "shape": shape, "sizes": SHAPES[shape], "machine": machine_info("cuda"),
              "protocol": f"CUDA events per world.step after {WARM_FRAMES} warm frames, median/p90 over "
                          f"{TIMED_FRAMES} frames, reset apart; profile of one steady-state frame",
              "allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32), "rows": []}
    model = random_world_model(**SHAPES[shape], seed=0)
    eager_frames = {}
    for backend, mode, steps, batch in settings:
        row = {"backend": backend, "mode": mode, "steps": steps, "batch": batch}
        t0 = time.perf_counter()
        try:
            world = World(model, device="cuda", backend=backend, mode=mode, steps=steps, seed=0)
            context, ids = inputs(model, batch, WARM_FRAMES + TIMED_FRAMES)
            t = frame_times(world, context, ids)                           # the first pass compiles
            row["first_pass_s"] = time.perf_counter() - t0
            t = frame_times(world, context, ids)
            frames = t.pop("frames")
            row.update(t)
            row["ms_per_item_frame"] = t["median_ms"] / batch
            key = (mode, steps, batch)
            if backend == "eager":
                eager_frames[key] = frames
            elif key in eager_frames:
                row["max_abs_diff_vs_eager"] = float((frames - eager_frames[key]).abs().max())
            row["profile"] = profile_frame(world, context, ids)
        except Exception as e:                                            # one setting failing costs that row only
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
        report["rows"].append(row)
        write_json(report, json_path)
        print(f"world {backend} {mode} b{batch}: " + (row.get("error") or
              f"{row['median_ms']:.2f} ms/frame (p90 {row['p90_ms']:.2f}), device busy "
              f"{row['profile']['device_busy_ms']:.2f} ms in {row['profile']['launches']} launches"), flush=True)
    print_table([{k: v for k, v in r.items() if k != "profile"} for r in report["rows"]],
                ["backend", "mode", "batch", "median_ms", "p90_ms", "reset_ms", "ms_per_item_frame",
                 "max_abs_diff_vs_eager", "first_pass_s"])
    write_json(report, json_path)
    return report
