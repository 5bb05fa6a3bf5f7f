"""`wmfast bench export`: World(backend="onnx") against the eager World (and torch.compile), at
tinyworlds' default shape (random weights: speed only), batch 1 (latency) and 32 (throughput),
compat and fast modes, 10 MaskGIT steps, temperature 0.

Every engine rolls out the same frames from the same context and actions in this process; the
report says whether their tokens were identical, and times each setting >= 5 times, round-robin
over the engines, as ms per generated frame (median, min, max, spread), in wall time and in the
process's CPU time (the steadier figure on a shared machine).
"""
import os
import tempfile
import time

import torch
from tqdm import tqdm

from wmfast.bench.common import machine_info, print_table, time_interleaved, write_json
from wmfast.device import resolve_device

BATCHES = (1, 32)
MODES = ("compat", "fast")


def _tokens(world, context, ids) -> torch.Tensor:
    """Tokens [B, N, P] of every generated frame."""
    world.reset(context)
    out = []
    for i in range(ids.shape[1]):
        world.step(ids[:, i])
        out.append(world.tokens.cpu())
    return torch.stack(out, 1)


def shape_label(cfg: dict) -> str:
    P = (cfg["frame_size"] // cfg["patch_size"]) ** 2
    return (f"{cfg['frame_size']} px, P={P}, embed {cfg['embed_dim']}, {cfg['num_blocks']} blocks, "
            f"K={cfg['codebook_size']}, context {cfg['context_length']}")


def onnx_unavailable(device) -> str:
    """Why onnxruntime cannot run on this device (e.g. a CPU-only onnxruntime on a CUDA machine),
    or "" when it can."""
    from wmfast.errors import WmfastError
    from wmfast.export.runtime import resolve_providers

    try:
        resolve_providers(torch.device(device))
    except (WmfastError, ImportError) as e:
        return str(e)
    return ""


def run_export_benchmark(json_path=None, quick: bool = False, run_dir=None, batches=BATCHES, modes=MODES,
                         steps: int = 10, reps: int = None, frames: int = 3, device: str = "cpu",
                         compile: bool = None, threads: int = None) -> dict:
    """Time World rollouts per backend; returns (and writes to json_path) the report with
    speedups vs the eager World. compile (default: on CUDA only) adds World(backend="compile").
    threads (CPU): intra-op threads of torch and onnxruntime alike (default: torch's current
    setting; restored afterwards). Where onnxruntime cannot run on the device (no CUDA EP), its
    rows are left out and the report says why."""
    before = torch.get_num_threads()
    try:
        with torch.no_grad():
            return _run_export_benchmark(json_path, quick, run_dir, batches, modes, steps, reps, frames, device,
                                         compile, threads)
    finally:
        torch.set_num_threads(before)


def _run_export_benchmark(json_path, quick, run_dir, batches, modes, steps, reps, frames, device, compile, threads):
    import wmfast
    from wmfast.rollout.shapes import SHAPES, save_random_run
    from wmfast.rollout.world import World

    load_start = os.getloadavg()
    device = resolve_device(device)   # a one-line error for cuda on a machine without it
    compile = device.type == "cuda" if compile is None else compile
    reps = reps or (3 if quick else 5)
    if threads:
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    tmp = None
    if run_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="wmfast-bench-export-")
        run_dir = save_random_run(tmp.name, "tinyworlds")
    onnx_skipped = onnx_unavailable(device)
    onnx, export_s = None, None
    if not onnx_skipped:
        from wmfast.export import OnnxBackend, export_run

        onnx_dir = os.path.join(run_dir, "onnx")
        t0 = time.perf_counter()
        if not os.path.exists(os.path.join(onnx_dir, "manifest.json")):
            export_run(run_dir, onnx_dir, check=False, progress=not quick)
        export_s = round(time.perf_counter() - t0, 1)
        onnx = OnnxBackend(onnx_dir, device=str(device), run_dir=run_dir, cuda_graph=device.type == "cuda",
                           threads=threads if device.type == "cpu" else None)
    else:
        print(f"bench export: onnxruntime rows skipped: {onnx_skipped}")
    model = wmfast.load(run_dir)
    C, S = model.dynamics.config.context_length, model.frame_size
    generator = torch.Generator().manual_seed(0)
    rows = []
    for batch, mode in tqdm([(b, m) for b in batches for m in modes], desc="bench export", unit="case"):
        context = (torch.rand(batch, C, 3, S, S, generator=generator) * 2 - 1).to(device)
        ids = torch.randint(0, model.lam.num_actions, (batch, frames), generator=generator).to(device)
        worlds = {"eager": World(model, device=device, backend="eager", mode=mode, steps=steps)}
        if onnx is not None:
            worlds["onnxruntime"] = World(model, device=device, backend=onnx, mode=mode, steps=steps)
        if compile:
            worlds["torch.compile"] = World(model, device=device, backend="compile", mode=mode, steps=steps)
        want = _tokens(worlds["eager"], context, ids)
        row = {"mode": mode, "batch": batch, "frames": frames, "maskgit_steps": steps}
        for name, world in worlds.items():
            if name != "eager":
                row[f"{name} identical_tokens"] = bool(torch.equal(_tokens(world, context, ids), want))
        fns = {name: (lambda w=world: w.reset(context).rollout(ids)) for name, world in worlds.items()}
        timings = time_interleaved(fns, device=str(device), warmup=1, reps=reps)
        for name, t in timings.items():
            row[f"{name}_ms_per_frame"] = t["median_ms"] / frames
            row[f"{name}_spread"] = t["spread"]
            row[f"{name}_cpu_ms_per_frame"] = t["cpu"]["median_ms"] / frames
            row[f"{name}_timing"] = t
        for name in worlds:
            if name != "eager":
                row[f"{name} speedup"] = row["eager_ms_per_frame"] / row[f"{name}_ms_per_frame"]
                row[f"{name} cpu speedup"] = row["eager_cpu_ms_per_frame"] / row[f"{name}_cpu_ms_per_frame"]
        rows.append(row)
    engines = [e for e in ("eager", "onnxruntime", "torch.compile") if f"{e}_ms_per_frame" in rows[0]]
    print_table(rows, ["mode", "batch"] + [f"{e}_ms_per_frame" for e in engines]
                + [f"{e} speedup" for e in engines if e != "eager"]
                + [f"{e} cpu speedup" for e in engines if e != "eager" and device.type == "cpu"]
                + [f"{e} identical_tokens" for e in engines if e != "eager"])
    dyn_cfg = model.dynamics.config
    report = {
        "benchmark": "export", "machine": machine_info(str(device)), "load_average": load_start,
        "load_average_end": os.getloadavg(),
        "threads": threads if device.type == "cpu" else None,
        "providers": onnx.providers if onnx else None, "onnx_skipped": onnx_skipped or None,
        "cuda_graph": onnx.graphs["maskgit_step"].cuda_graph if onnx else None,
        "onnxruntime_fused_graphs": onnx.fused if onnx else None,
        "onnxruntime_rewrites": {name: g["onnxruntime"]["fusions"] for name, g in onnx.manifest["graphs"].items()
                                 if "onnxruntime" in g} if onnx else None, "quick": quick,
        "reps": reps, "maskgit_steps": steps, "shape": shape_label(dyn_cfg.to_dict()),
        "tinyworlds_shape": SHAPES["tinyworlds"], "export_s": export_s, "rows": rows,
        "baseline": "the eager World (TorchBackend), same mode, context caches on; timings round-robin",
        "timing": "wall time (perf_counter) per rollout; *_cpu_*: the process's CPU time (process_time) of the "
                  "same calls, which does not count waiting for a core on a shared machine",
    }
    if onnx is not None:
        report["configs"] = onnx.configs
        print("onnxruntime vs eager World: " + ", ".join(
            f"{r['mode']} b{r['batch']} {r['onnxruntime speedup']:.2f}x" for r in rows))
    write_json(report, json_path)
    if tmp is not None:
        tmp.cleanup()
    return report
