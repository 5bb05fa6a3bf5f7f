"""`wmfast bench policy`: chunk latency at batch 1 and throughput at batch 64, eager vs torch.compile
vs onnxruntime (CPU EP), same weights and inputs in one process; outputs checked against eager."""
import os
import statistics
import tempfile
import time

import torch

from wmfast.bench.common import machine_info, time_interleaved
from wmfast.config import save_json
from wmfast.errors import WmfastError

BACKENDS = ("eager", "compile", "onnx")


def _block(fn, x, calls: int, cpu_ms: list):
    """One timed repeat: `calls` calls in a row (a batch-1 call is too short to time alone). Also
    appends the process CPU time per call to cpu_ms: on a shared machine wall time counts the waits
    for a core, CPU time (one thread) estimates the wall time on an idle one."""
    def run():
        c0 = time.process_time()
        for _ in range(calls):
            fn(x)
        cpu_ms.append((time.process_time() - c0) * 1e3 / calls)
    return run


def _runner(backend: str, model, run_dir: str):
    if backend == "eager":
        return lambda x: model(x)
    if backend == "compile":
        compiled = torch.compile(model, dynamic=False)
        return lambda x: compiled(x)
    if backend == "onnx":
        import onnxruntime as ort

        from wmfast.export.policy import FILE, export_policy

        path = os.path.join(run_dir, "onnx", FILE)
        if not os.path.isfile(path):
            export_policy(run_dir, check=False)
        so = ort.SessionOptions()
        so.intra_op_num_threads = torch.get_num_threads()
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        return lambda x: torch.from_numpy(sess.run(None, {name: x.numpy()})[0])
    raise WmfastError(f"unknown backend {backend!r}; choose from {BACKENDS}")


def run_policy_bench(json_path=None, run_dir=None, kind: str = "act", quick: bool = False,
                     backends="eager,compile,onnx", batches=(1, 64)) -> dict:
    from wmfast.checkpoint import load_policy, save_model
    from wmfast.models.policy import PolicyConfig, build_policy, count_params

    names = [b.strip() for b in str(backends).split(",") if b.strip()]
    bad = [b for b in names if b not in BACKENDS]
    if bad or not names:
        raise WmfastError(f"--backends must be a comma-separated subset of {BACKENDS}, got {backends!r}")
    tmp = None
    if run_dir is None:   # a fresh policy of the specified shape (timings do not depend on the weights)
        tmp = tempfile.mkdtemp(prefix="wmfast-bench-policy-")
        run_dir = save_model(build_policy(PolicyConfig(kind=kind)), tmp)
    model = load_policy(run_dir)
    cfg = model.config
    repeats = 5 if quick else 9
    calls = {1: 20 if quick else 100, 64: 1 if quick else 4}   # calls per repeat, per batch size
    gen = torch.Generator().manual_seed(0)
    inputs = {b: torch.rand(b, 3, cfg.frame_size, cfg.frame_size, generator=gen) * 2 - 1 for b in batches}
    results = []
    with torch.no_grad():
        ref = {b: model(x) for b, x in inputs.items()}
        runners = {name: _runner(name, model, run_dir) for name in names}
        for b, x in inputs.items():
            n = calls.get(b, 2)
            # Round-robin repeats: a change in machine load hits every backend alike.
            cpu = {name: [] for name in runners}
            timed = time_interleaved({name: _block(fn, x, n, cpu[name]) for name, fn in runners.items()}, warmup=1,
                                     reps=repeats)
            for name, t in timed.items():
                med = t["median_ms"] / n
                results.append({"backend": name, "batch": b, "median_ms": med, "min_ms": t["min_ms"] / n,
                                "spread": t["spread"], "repeats": t["reps"], "calls_per_repeat": n,
                                "cpu_median_ms": statistics.median(cpu[name][1:]),   # [0]: the warmup
                                "per_second": b * 1e3 / med,
                                "max_abs_diff_vs_eager": float((runners[name](x) - ref[b]).abs().max())})
    eager = {r["batch"]: r["median_ms"] for r in results if r["backend"] == "eager"}
    for r in results:
        if r["batch"] in eager:
            r["speedup_vs_eager"] = eager[r["batch"]] / r["median_ms"]
    ms1 = {r["backend"]: r["median_ms"] for r in results if r["batch"] == 1}
    cpu1 = {r["backend"]: r["cpu_median_ms"] for r in results if r["batch"] == 1}
    report = {"benchmark": "policy", "kind": cfg.kind, "params": count_params(model), "frame_size": cfg.frame_size,
              "chunk": cfg.chunk, "run": os.fspath(run_dir) if tmp is None else None, "results": results,
              "targets": {"eager_batch1_under_2ms": ms1.get("eager", float("inf")) < 2.0,
                          "onnx_no_slower_than_eager": ms1["onnx"] <= ms1["eager"]
                          if {"onnx", "eager"} <= set(ms1) else None,
                          "eager_batch1_cpu_under_2ms": cpu1.get("eager", float("inf")) < 2.0,
                          "onnx_cpu_no_slower_than_eager": cpu1["onnx"] <= cpu1["eager"]
                          if {"onnx", "eager"} <= set(cpu1) else None},
              "machine": {**machine_info("cpu"), "load_average": list(os.getloadavg())}}
    for r in results:
        print(f"{r['backend']:8s} batch {r['batch']:3d}: {r['median_ms']:8.3f} ms/chunk (median of {r['repeats']} "
              f"x {r['calls_per_repeat']} calls, spread {r['spread']:.0%}; CPU {r['cpu_median_ms']:.3f} ms), "
              f"{r['per_second']:9.1f} frames/s, "
              f"x{r.get('speedup_vs_eager', 1):.2f} vs eager, max diff {r['max_abs_diff_vs_eager']:.1e}")
    if json_path:
        os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
        save_json(report, json_path)
    return report
