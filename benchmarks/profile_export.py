"""Where a World rollout spends its time, per rollout-backend call: the eager World against
World(backend="onnx") on the standard graphs and on their onnxruntime forms (export/fusions.py).

    python benchmarks/profile_export.py --json benchmarks/results/cpu-export-profile.json [--run RUN]

Tinyworlds' default shape (random weights), 1 thread, 3 frames after a 4-frame context, 10
MaskGIT steps, temperature 0; the three Worlds run round-robin in one process, 5 times. Each
backend call is timed in the process's CPU time (waiting for a shared core is not counted), and
reported per generated frame. Without --run, a random run is made and exported (minutes).
"""
import argparse
import collections
import os
import sys
import tempfile
import time

import torch


class TimedBackend:
    """A rollout backend that adds up the CPU time of each protocol call of the one it wraps."""

    def __init__(self, inner):
        from wmfast.rollout.backends import PROTOCOL

        self.inner, self.ms = inner, collections.defaultdict(float)
        for name in PROTOCOL:
            setattr(self, name, self._timed(name, getattr(inner, name)))

    def _timed(self, name, fn):
        def call(*args, **kwargs):
            t0 = time.process_time()
            out = fn(*args, **kwargs)
            self.ms[name] += (time.process_time() - t0) * 1e3
            return out
        return call


def profile(run_dir, mode="compat", batch=1, frames=3, reps=5) -> dict:
    import wmfast
    from wmfast.export import OnnxBackend
    from wmfast.rollout.backends import make_backend
    from wmfast.rollout.world import World

    model = wmfast.load(run_dir)
    onnx_dir = os.path.join(run_dir, "onnx")
    backends = {"eager": TimedBackend(make_backend("eager", model, torch.device("cpu"))),
                "onnx standard graphs": TimedBackend(OnnxBackend(onnx_dir, threads=1, fused=False)),
                "onnx rewritten graphs": TimedBackend(OnnxBackend(onnx_dir, threads=1, fused=True))}
    worlds = {name: World(model, backend=be, mode=mode) for name, be in backends.items()}
    g = torch.Generator().manual_seed(0)
    S, C = model.frame_size, model.dynamics.config.context_length
    context = torch.rand(batch, C, 3, S, S, generator=g) * 2 - 1
    ids = torch.randint(0, model.lam.num_actions, (batch, frames), generator=g)
    tokens, totals = {}, collections.defaultdict(float)
    for w in worlds.values():                                    # warm-up (sessions, shapes)
        w.reset(context).rollout(ids)
    for be in backends.values():
        be.ms.clear()
    for _ in range(reps):
        for name, w in worlds.items():
            t0 = time.process_time()
            w.reset(context).rollout(ids)
            totals[name] += (time.process_time() - t0) * 1e3
            tokens[name] = w.tokens.clone()
    per_frame = reps * frames
    return {"mode": mode, "batch": batch, "frames": frames, "reps": reps,
            "identical_tokens": {n: bool(torch.equal(t, tokens["eager"])) for n, t in tokens.items()},
            "cpu_ms_per_frame": {n: totals[n] / per_frame for n in worlds},
            "calls_cpu_ms_per_frame": {n: {k: v / per_frame for k, v in sorted(be.ms.items())}
                                       for n, be in backends.items()}}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", default=None)
    p.add_argument("--run", default=None, help="a run with an export in RUN/onnx (default: a random one)")
    p.add_argument("--reps", type=int, default=5)
    a = p.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from wmfast.measure import machine_info, write_json

    torch.set_num_threads(1)
    tmp = None
    run = a.run
    if run is None:
        from wmfast.export import export_run
        from wmfast.rollout.shapes import save_random_run

        tmp = tempfile.TemporaryDirectory(prefix="wmfast-profile-export-")
        run = save_random_run(tmp.name, "tinyworlds")
        export_run(run, check=False)
    load = os.getloadavg()
    with torch.no_grad():
        rows = [profile(run, mode, reps=a.reps) for mode in ("compat", "fast")]
    report = {"benchmark": "profile_export", "machine": machine_info("cpu"), "load_average": load,
              "load_average_end": os.getloadavg(), "threads": 1, "shape": "tinyworlds default (random weights)",
              "timing": "CPU time (process_time) per backend call, per generated frame", "rows": rows}
    for r in rows:
        print(r["mode"], {k: round(v, 1) for k, v in r["cpu_ms_per_frame"].items()}, r["identical_tokens"])
        for name, calls in r["calls_cpu_ms_per_frame"].items():
            print(f"  {name:22s}", {k: round(v, 1) for k, v in calls.items()})
    write_json(report, a.json)
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
