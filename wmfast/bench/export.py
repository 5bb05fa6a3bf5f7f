"""`wmfast bench export`: onnxruntime vs eager PyTorch vs torch.compile, per graph and per
rollout step, at batch 1 and 32, at the tinyworlds default shape (random weights: speed only).

All three engines run the same wrapper modules (export/graphs.py) on the same inputs in one
process; the rollout step is the same MaskGIT loop (export/rollout.py) over each engine.
"""
import os
import tempfile
import time

import torch
from tqdm import tqdm

from wmfast.bench.common import machine_info, print_table, time_fn, write_json
from wmfast.checkpoint import save_model
from wmfast.models import (DynamicsConfig, DynamicsModel, LatentActionConfig, LatentActionModel, TokenizerConfig,
                           VideoTokenizer)

BATCHES = (1, 32)


def tinyworlds_default_run(run_dir, seed: int = 0):
    """Random-init models at tinyworlds' default shape: 64 px, patch 4, embed 128, 8 heads,
    hidden 256, 4 blocks, latent 5 x 4 bins, 8 actions, context 4."""
    torch.manual_seed(seed)
    shape = dict(frame_size=64, patch_size=4, embed_dim=128, num_heads=8, hidden_dim=256, num_blocks=4)
    save_model(VideoTokenizer(TokenizerConfig(latent_dim=5, num_bins=4, **shape)).eval(), os.path.join(run_dir, "tokenizer"))
    save_model(LatentActionModel(LatentActionConfig(n_actions=8, **shape)).eval(), os.path.join(run_dir, "actions"))
    save_model(DynamicsModel(DynamicsConfig(latent_dim=5, num_bins=4, conditioning_dim=3, context_length=4, **shape)).eval(),
               os.path.join(run_dir, "dynamics"))
    return run_dir


def graph_inputs(model, batch: int, generator) -> dict:
    """The inputs each graph sees in a rollout step with a full context of C frames."""
    tok, lam, dyn = model.tokenizer, model.lam, model.dynamics
    C, S = dyn.config.context_length, model.frame_size
    frames = torch.rand(batch, C, 3, S, S, generator=generator) * 2 - 1
    idx = torch.randint(0, tok.config.num_codes, (batch, C + 1, tok.config.num_patches), generator=generator)
    lat = tok.quantizer.latents(idx)
    act = lam.quantizer.quantize(lam.encoder(frames))
    ids = torch.randint(0, lam.num_actions, (batch,), generator=generator)
    act = torch.cat([act, lam.quantizer.latents(ids)[:, None]], 1)                     # [B, C, A]
    return {"tokenizer_encoder": (frames,), "token_latents": (idx,), "tokenizer_decoder": (lat,),
            "action_encoder": (frames,), "action_latents": (ids,), "dynamics": (lat, act)}


def run_export_benchmark(json_path=None, quick: bool = False, run_dir=None, batches=BATCHES, steps: int = 8,
                         compile: bool = True) -> dict:
    """Time every graph and one rollout step (one generated frame, `steps` MaskGIT steps) on
    each engine; returns (and writes to json_path) the report with ratios vs eager."""
    import wmfast
    from wmfast.export import OnnxBackend, export_run
    from wmfast.export.rollout import EagerGraphBackend, backend_rollout

    torch.set_grad_enabled(False)
    tmp = None
    if run_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="wmfast-bench-export-")
        run_dir = tinyworlds_default_run(tmp.name)
    onnx_dir = os.path.join(run_dir, "onnx")
    t0 = time.perf_counter()
    if not os.path.exists(os.path.join(onnx_dir, "manifest.json")):
        export_run(run_dir, onnx_dir, check=False)
    export_s = time.perf_counter() - t0
    model = wmfast.load(run_dir)
    engines = {"eager": EagerGraphBackend(model), "onnxruntime": OnnxBackend(onnx_dir, run_dir=run_dir)}
    if compile:
        engines["torch.compile"] = EagerGraphBackend(model, compile=True)
    reps, warmup = (3, 1) if quick else (10, 2)
    rows = []
    generator = torch.Generator().manual_seed(0)
    C, S = model.dynamics.config.context_length, model.frame_size
    work = [(b, name) for b in batches for name in graph_inputs(model, 1, generator)] + [(b, "rollout step") for b in batches]
    bar = tqdm(work, desc="bench export", unit="case")
    inputs = {b: graph_inputs(model, b, generator) for b in batches}
    contexts = {b: (torch.rand(b, C, 3, S, S, generator=generator) * 2 - 1,
                    torch.randint(0, model.lam.num_actions, (b, 1), generator=generator)) for b in batches}
    for batch, name in bar:
        bar.set_postfix_str(f"{name} b{batch}")
        row = {"case": name, "batch": batch}
        for engine, backend in engines.items():
            if name == "rollout step":
                context, ids = contexts[batch]
                fn = (lambda be=backend: backend_rollout(be, context, ids, steps=steps))
            elif engine == "onnxruntime":
                fn = (lambda g=backend.graph(name), args=inputs[batch][name]: g(*args))
            else:
                fn = (lambda be=backend, n=name, args=inputs[batch][name]: be.run(n, *args))
            # A batch-32 rollout step takes seconds on a CPU: fewer repetitions there. torch.compile
            # gets one more warm-up call (its first calls compile, once per new shape).
            big = batch >= 32 and name == "rollout step"
            t = time_fn(fn, warmup=warmup + (engine == "torch.compile"), reps=(1 if quick else 3) if big else reps)
            row[f"{engine}_ms"] = t["median_ms"]
        for engine in engines:
            if engine != "eager":
                row[f"{engine} speedup"] = row["eager_ms"] / row[f"{engine}_ms"]
        rows.append(row)
        bar.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    columns = ["case", "batch"] + [f"{e}_ms" for e in engines] + [f"{e} speedup" for e in engines if e != "eager"]
    print_table(rows, columns)
    report = {
        "benchmark": "export", "machine": machine_info("cpu"), "load_average": os.getloadavg(),
        "providers": engines["onnxruntime"].providers, "quick": quick, "reps": reps, "maskgit_steps": steps,
        "shape": {"frame_size": S, "context_length": C, "config": engines["onnxruntime"].configs},
        "export_s": round(export_s, 1), "rows": rows,
        "note": "CPU only: no GPU was available, so there are no CUDA EP numbers.",
    }
    onnx_vs_eager = [r["onnxruntime speedup"] for r in rows]
    report["cpu_ep_no_slower_than_eager"] = all(s >= 1.0 for s in onnx_vs_eager)
    print(f"onnxruntime CPU EP vs eager: {min(onnx_vs_eager):.2f}x .. {max(onnx_vs_eager):.2f}x "
          f"({'no slower than eager everywhere' if report['cpu_ep_no_slower_than_eager'] else 'slower somewhere'})")
    write_json(report, json_path)
    if tmp is not None:
        tmp.cleanup()
    return report
