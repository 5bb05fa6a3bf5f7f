"""`wmfast bench policy`: chunk latency at batch 1 and throughput at batch 64, eager vs torch.compile
vs onnxruntime (CPU EP), same weights and inputs in one process; outputs checked against eager."""
import os
import platform
import statistics
import tempfile
import time

import numpy as np
import torch

from wmfast.config import save_json
from wmfast.errors import WmfastError

BACKENDS = ("eager", "compile", "onnx")


def _time(fn, x, reps: int, warmup: int = 3) -> list:
    for _ in range(warmup):
        fn(x)
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn(x)
        out.append(time.perf_counter() - t0)
    return out


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
    from wmfast.policy.io import build_policy, count_params, load_policy, save_policy
    from wmfast.policy.cnn import PolicyConfig

    names = [b.strip() for b in str(backends).split(",") if b.strip()]
    bad = [b for b in names if b not in BACKENDS]
    if bad or not names:
        raise WmfastError(f"--backends must be a comma-separated subset of {BACKENDS}, got {backends!r}")
    tmp = None
    if run_dir is None:   # a fresh policy of the specified shape (timings do not depend on the weights)
        tmp = tempfile.mkdtemp(prefix="wmfast-bench-policy-")
        run_dir = save_policy(build_policy(PolicyConfig(kind=kind)), tmp)
    model = load_policy(run_dir)
    cfg = model.config
    reps = {1: 20 if quick else 200, 64: 3 if quick else 20}
    gen = torch.Generator().manual_seed(0)
    inputs = {b: torch.rand(b, 3, cfg.frame_size, cfg.frame_size, generator=gen) * 2 - 1 for b in batches}
    with torch.no_grad():
        ref = {b: model(x) for b, x in inputs.items()}
    results = []
    with torch.no_grad():
        for name in names:
            fn = _runner(name, model, run_dir)
            for b, x in inputs.items():
                times = _time(fn, x, reps.get(b, 10))
                err = float((fn(x) - ref[b]).abs().max())
                med = statistics.median(times)
                results.append({"backend": name, "batch": b, "median_ms": med * 1e3,
                                "p90_ms": float(np.percentile(times, 90)) * 1e3, "per_second": b / med,
                                "max_abs_diff_vs_eager": err, "reps": len(times)})
    eager = {r["batch"]: r["median_ms"] for r in results if r["backend"] == "eager"}
    for r in results:
        if r["batch"] in eager:
            r["speedup_vs_eager"] = eager[r["batch"]] / r["median_ms"]
    report = {"benchmark": "policy", "kind": cfg.kind, "params": count_params(model), "frame_size": cfg.frame_size,
              "chunk": cfg.chunk, "results": results,
              "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                          "torch": torch.__version__, "load_average": list(os.getloadavg())}}
    for r in results:
        print(f"{r['backend']:8s} batch {r['batch']:3d}: {r['median_ms']:8.2f} ms/chunk (median), "
              f"{r['per_second']:9.1f} frames/s, x{r.get('speedup_vs_eager', 1):.2f} vs eager, "
              f"max diff {r['max_abs_diff_vs_eager']:.1e}")
    if json_path:
        os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
        save_json(report, json_path)
    return report
