"""`wmfast bench viz`: is attention capture free when off?

For each model (dynamics, tokenizer encoder + decoder, windowed LAM encoder) on the same inputs,
in the same process, absent and off timed in interleaved pairs (alternating which goes first),
then on:
  absent  the same code without the feature: each attention forward with its
          `if _capture.active: ...` lines removed (rebuilt from the current source, so it tracks it)
  off     the shipped code, capture off (the feature present: one flag check per attention call)
  on      inside capture_attention (for scale: what recording costs)
Reports the median of >= 20 samples per variant (each sample averages enough forwards to last
~20 ms), off / absent (target: within 2 %; the ratio of the minima is recorded too, as it is less
sensitive to other jobs on a shared machine), and checks the three give bit-identical outputs.
One CPU thread by default: on a busy machine OpenMP threads waiting on each other dominate.
"""
import contextlib
import inspect
import os
import statistics
import textwrap
import time

import torch

from wmfast.bench.common import machine_info, print_table, write_json
from wmfast.errors import WmfastError
from wmfast.viz import capture_attention

FLAG_LINE = "if _capture.active"
TARGET = 0.02


def without_capture(fn):
    """fn rebuilt from its source with the `if _capture.active:` block removed (a build without the feature)."""
    lines = textwrap.dedent(inspect.getsource(fn)).splitlines()
    kept, skip_below, removed = [], None, 0
    for line in lines:
        body = line.lstrip()
        indent = len(line) - len(body)
        if skip_below is not None:
            if not body or indent > skip_below:
                continue
            skip_below = None
        if body.startswith(FLAG_LINE):
            skip_below, removed = indent, removed + 1
            continue
        kept.append(line)
    if removed != 1:
        raise WmfastError(f"{fn.__qualname__}: expected one `{FLAG_LINE}` block, found {removed}")
    namespace = {}
    exec(compile("\n".join(kept), f"<{fn.__qualname__} without capture>", "exec"), fn.__globals__, namespace)
    return namespace[fn.__name__]


class FeatureAbsent:
    """Context: the attention classes run their forward without the capture check."""

    def __init__(self):
        from wmfast.viz.capture import attention_classes

        self.classes = [c for c in attention_classes() if FLAG_LINE in inspect.getsource(c.forward)]
        self.stripped = {c: without_capture(c.forward) for c in self.classes}

    def __enter__(self):
        self.saved = {c: c.__dict__["forward"] for c in self.classes}
        for c, f in self.stripped.items():
            c.forward = f

    def __exit__(self, *exc):
        for c, f in self.saved.items():
            c.forward = f


def bench_models(preset: str, batch: int, frames: int, device):
    """name -> (callable running one forward, attention calls per forward), on fixed random inputs."""
    from wmfast.viz.report import random_world

    world = random_world(preset, {"use_windowed_attention": True}).to(device)
    tok, lam, dyn = world.tokenizer, world.lam, world.dynamics
    S, P = tok.config.frame_size, tok.config.num_patches
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(batch, frames, 3, S, S, generator=g) * 2 - 1).to(device)
    lat = torch.rand(batch, frames, P, tok.config.latent_dim, generator=g).to(device)
    act = torch.rand(batch, frames - 1, lam.config.action_dim, generator=g).to(device)
    return {
        "dynamics": (lambda: dyn.logits(lat, act), dyn),
        "tokenizer": (lambda: tok.decoder(tok.encoder(x)), tok),
        "lam_windowed_encoder": (lambda: lam.encoder(x), lam),
    }


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def sample(fn, inner: int, device) -> tuple:
    """(wall ms, this thread's CPU ms) per forward, averaged over `inner` forwards. With one torch
    thread the work runs on this thread, so its CPU time ignores the time other jobs held the core."""
    sync(device)
    w0, c0 = time.perf_counter(), time.thread_time()
    for _ in range(inner):
        fn()
    sync(device)
    return (time.perf_counter() - w0) * 1e3 / inner, (time.thread_time() - c0) * 1e3 / inner


def time_variants(fn, model, reps: int, device):
    """Interleaved samples of the three variants (order alternating each rep)
    -> ({clock: {variant: [ms]}}, {variant: output}, forwards per sample)."""
    absent = FeatureAbsent()
    contexts = {"absent": lambda: absent, "off": contextlib.nullcontext, "on": lambda: capture_attention(model)}
    outputs = {}
    with torch.no_grad():
        for v, ctx in contexts.items():                                 # also the warm-up
            with ctx():
                outputs[v] = fn()
        one = sample(fn, 3, device)[0]
        inner = max(1, int(20.0 / max(one, 1e-3)))
        times = {"wall": {v: [] for v in contexts}, "cpu": {v: [] for v in contexts}}

        def take(v):
            with contexts[v]():
                wall, cpu = sample(fn, inner, device)
            times["wall"][v].append(wall)
            times["cpu"][v].append(cpu)

        # absent and off in pairs, alternating which goes first; `on` (which allocates the maps and
        # would slow whatever runs next) is timed after them
        for r in range(reps):
            for v in (("absent", "off") if r % 2 == 0 else ("off", "absent")):
                take(v)
        for r in range(reps):
            take("on")
    return times, outputs, inner


def ratios(times: dict) -> dict:
    """Medians per variant, off / absent and on / absent from the medians, and the median of the
    per-rep paired ratios off_i / absent_i (neighbours in time: robust to slow load drift)."""
    med = {v: statistics.median(t) for v, t in times.items()}
    paired = statistics.median(o / a for o, a in zip(times["off"], times["absent"]))
    return {"absent_ms": med["absent"], "off_ms": med["off"], "on_ms": med["on"],
            "off_over_absent": med["off"] / med["absent"], "paired_off_over_absent": paired,
            "on_over_absent": med["on"] / med["absent"]}


def run_viz_benchmark(json_path=None, preset: str = "small", reps: int = 60, batch: int = 4, frames: int = 4,
                      device="cpu", threads: int = 1) -> dict:
    from tqdm import tqdm

    if reps < 20:
        raise WmfastError(f"reps must be >= 20, got {reps}")
    from wmfast.rollout.backends import resolve_device

    device = resolve_device(device)
    if threads:
        torch.set_num_threads(threads)
    rows = []
    models = bench_models(preset, batch, frames, device)
    for name, (fn, model) in tqdm(models.items(), desc="bench viz", unit="model"):
        times, outputs, inner = time_variants(fn, model, reps, device)
        calls = sum(1 for _ in _attention_calls(model))
        for clock in ("cpu", "wall") if device.type == "cpu" else ("wall",):
            r = ratios(times[clock])
            rows.append({
                "model": name, "clock": clock, "attention_modules": calls, "forwards_per_sample": inner,
                "samples": reps, **r, "within_target": abs(r["off_over_absent"] - 1) <= TARGET,
                "identical_off_vs_absent": bool(torch.equal(outputs["off"], outputs["absent"])),
                "identical_on_vs_absent": bool(torch.equal(outputs["on"], outputs["absent"])),
            })
    print_table(rows, ["model", "clock", "absent_ms", "off_ms", "on_ms", "off_over_absent", "paired_off_over_absent",
                       "on_over_absent", "within_target", "identical_off_vs_absent", "identical_on_vs_absent"])
    report = {"benchmark": "viz capture overhead", "preset": preset, "batch": batch, "frames": frames,
              "target": f"|off / absent - 1| <= {TARGET:.0%} (medians)",
              "statistic": "median of interleaved samples; clock cpu = this thread's CPU time (one torch "
                           "thread), wall = wall time",
              "flag_check_ns": flag_check_ns(), "load_average": _load_average(),
              "machine": machine_info(str(device)), "rows": rows}
    print(f"one flag check (what each attention call does when capture is off): {report['flag_check_ns']:.1f} ns")
    write_json(report, json_path)
    return report


def flag_check_ns(number: int = 1_000_000) -> float:
    """Time of `if _capture.active:` (capture off) minus an empty loop, in ns."""
    import timeit

    from wmfast.viz import flag as _capture

    env = {"_capture": _capture}
    check = min(timeit.repeat("if _capture.active: pass", globals=env, number=number, repeat=5))
    empty = min(timeit.repeat("pass", globals=env, number=number, repeat=5))
    return max(0.0, check - empty) / number * 1e9


def _load_average():
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def _attention_calls(model):
    from wmfast.viz import attention_modules

    return attention_modules(model).values()
