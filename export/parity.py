"""Parity of an ONNX export against eager PyTorch: the same inputs through both, per graph and
for a whole rollout.

Per graph (teacher-forced: both sides get the same inputs): max abs / max rel error of every
float output, token agreement for discrete outputs, and each disagreement classified. A
disagreement is a near-tie (allowed, counted and shown) when it is fully explained by float
round-off: for the encoders, the eager quantizer maps the onnxruntime pre-quantization output
to the onnxruntime token; for the dynamics, the eager top-1 and top-2 logits are within 2*atol
(each side may be off by atol). Anything else is unexplained and fails the check.

Rollout: wmfast.rollout.reference_rollout (eager, the ground truth) against the World engine
(compat mode, temperature 0) over the eager TorchBackend and over OnnxBackend. Tokens of
generated frames must agree; a divergence passes only if its first differing positions were
near-ties (eager top-1 and top-2 logits within 2*atol at some MaskGIT step of that frame).
"""
import os

import torch
from tqdm import tqdm

from wmfast.errors import WmfastError
from wmfast.export.graphs import STAGE_OF, wrapper_for
from wmfast.export.runtime import OnnxBackend
from wmfast.loader import load
from wmfast.measure import machine_info, print_table, time_fn, write_json
from wmfast.nn.pe import temporal_pe
from wmfast.rollout.backends import TorchBackend
from wmfast.rollout.reference import reference_rollout
from wmfast.rollout.world import World

# fp32: 1e-4 abs on pixels and logits, 100% tokens but near-ties. fp16 graphs by cosine.
TOLERANCES = {"fp32": {"atol": 1e-4, "min_cosine": None, "min_tokens": 1.0},
              "fp16": {"atol": 2e-2, "min_cosine": 0.999, "min_tokens": 0.99}}


def max_errors(got: torch.Tensor, want: torch.Tensor) -> dict:
    """max |got - want|, max of |got - want| / max(|want|, 1e-3) (relative, floored near zero), cosine."""
    got, want = got.double(), want.double()
    diff = (got - want).abs()
    rel = diff / want.abs().clamp(min=1e-3)
    cos = torch.nn.functional.cosine_similarity(got.flatten(), want.flatten(), dim=0, eps=1e-12)
    return {"max_abs": float(diff.max()) if diff.numel() else 0.0, "max_rel": float(rel.max()) if rel.numel() else 0.0,
            "cosine": float(cos)}


def parity_inputs(model, batch: int, frames: int, generator) -> dict:
    """Inputs for every graph, made with eager PyTorch so both sides see identical tensors."""
    out = {}
    tok, lam, dyn = model.tokenizer, model.lam, model.dynamics
    S = model.frame_size
    video = torch.rand(batch, frames, 3, S, S, generator=generator) * 2 - 1
    if tok is not None:
        idx = tok.encode(video, check=False)
        lat = tok.latents(idx, check=False)
        out.update(tokenizer_encoder=(video,), token_latents=(idx,), tokenizer_decoder=(lat,))
    if tok is not None and tok.config.temporal_attention:
        pe = temporal_pe(frames, tok.config.embed_dim)
        cache = tok.decoder.prefill(lat[:, :-1], tok.decoder.new_cache(batch, frames), pe[:-1])
        out.update(decoder_prefill=(lat, pe), decoder_extend=(lat[:, -1:], cache.k, cache.v, cache.valid, pe[-1:]))
    if lam is not None:
        ids = torch.randint(0, lam.num_actions, (batch,), generator=generator)
        out.update(action_encoder=(video,), action_latents=(ids,))
    if dyn is not None:
        cfg = dyn.config
        if tok is not None:
            lat = tok.latents(tok.encode(video, check=False), check=False)
        else:
            lat = torch.randint(0, cfg.num_bins, (batch, frames, cfg.num_patches, cfg.latent_dim),
                                generator=generator).float() * 2 / (cfg.num_bins - 1) - 1
        # Mid-MaskGIT input: the last frame half masked, as during generation.
        masked = torch.rand(batch, cfg.num_patches, generator=generator) < 0.5
        lat = lat.clone()
        lat[:, -1] = torch.where(masked[..., None], dyn.mask_token.detach().reshape(1, 1, -1), lat[:, -1])
        if lam is not None:
            act = lam.encode(video, check=False)
        else:
            act = torch.rand(batch, frames - 1, cfg.conditioning_dim, generator=generator) * 2 - 1
        out["dynamics"] = (lat, act)
        pe = temporal_pe(frames, cfg.embed_dim)
        padded = torch.cat([act.new_zeros(batch, 1, act.shape[2]), act], 1)                 # [B, T, A]
        cache = dyn.prefill(lat[:, :-1], act[:, :-1], dyn.new_cache(batch, frames), pe[:-1])   # a free slot
        new = (lat[:, -1:], act[:, -1:], cache.k, cache.v, cache.valid, pe[-1:])
        out.update(dynamics_prefill=(lat, padded, pe), dynamics_commit=new)
        if tok is not None:
            tokens = torch.randint(0, cfg.codebook_size, (batch, cfg.num_patches), generator=generator)
            # min_confidence 0.5: random logits are far less sure, so only each item's most confident token goes
            step = (lat[:, -1:], masked, tokens, torch.tensor(cfg.num_patches // 2)) + new[1:] + (torch.tensor(0.5),)
            noise = torch.empty(batch, cfg.num_patches, cfg.codebook_size).exponential_(generator=generator)
            out.update(maskgit_step=step, maskgit_step_sampled=step + (noise, torch.tensor(0.7)))
    return out


def eager_graphs(model) -> dict:
    """{graph name: its wrapper module over the model, eval mode} for the stages the model has."""
    stage_models = {"tokenizer": model.tokenizer, "actions": model.lam, "dynamics": model.dynamics}
    out = {}
    for name, stage in STAGE_OF.items():
        try:
            if stage_models[stage] is not None:
                out[name] = wrapper_for(name, stage_models).eval()
        except AttributeError:      # a second stage it needs is missing
            continue
    return out


@torch.no_grad()
def run_eager(modules: dict, name: str, *inputs) -> tuple:
    out = modules[name](*inputs)
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def explained_quantizer_flips(model, onnx_z, onnx_tokens, eager_tokens, as_index: bool):
    """Of the positions where tokens differ, how many are near-ties: the eager model's quantize maps
    the onnxruntime z (itself within tolerance of eager z) to the onnxruntime token. model: the
    tokenizer (token indices, as_index) or the LAM (action latents)."""
    requant = model.quantize(onnx_z)
    if as_index:
        differ = onnx_tokens != eager_tokens
        agree_with_onnx = requant == onnx_tokens
    else:
        differ = (onnx_tokens != eager_tokens).any(-1)
        agree_with_onnx = (requant == onnx_tokens).all(-1)
    return int(differ.sum()), int((differ & agree_with_onnx).sum())


def compare_graph(name, eager_out, onnx_out, inputs, model, tol) -> list:
    """Rows (one per output) comparing onnxruntime outputs with eager outputs of one graph."""
    atol = tol["atol"]
    rows = []
    for i, (want, got) in enumerate(zip(eager_out, onnx_out)):
        row = {"graph": name, "output": OUTPUT_NAMES[name][i]}
        if want.is_floating_point() and want.numel():
            row.update(max_errors(got, want))
            row["passed"] = row["max_abs"] <= atol and (tol["min_cosine"] is None or row["cosine"] >= tol["min_cosine"])
        else:
            row.update(max_abs=float((got.long() - want.long()).abs().max()) if want.numel() else 0.0)
            row["passed"] = row["max_abs"] == 0
        rows.append(row)
    # Discrete decisions: token agreement and near-tie accounting.
    if name == "tokenizer_encoder":
        differ, ties = explained_quantizer_flips(model.tokenizer, onnx_out[1], onnx_out[0], eager_out[0], True)
        tokens_row(rows[0], differ, ties, eager_out[0].numel(), tol, decides=True)
    elif name == "action_encoder":
        differ, ties = explained_quantizer_flips(model.lam, onnx_out[1], onnx_out[0], eager_out[0], False)
        tokens_row(rows[0], differ, ties, eager_out[0][..., 0].numel(), tol, decides=True)
    elif name == "dynamics":
        want, got = eager_out[0], onnx_out[0]
        top2 = want.topk(2, dim=-1).values
        near = (top2[..., 0] - top2[..., 1]) <= 2 * atol
        differ = want.argmax(-1) != got.argmax(-1)
        tokens_row(rows[0], int(differ.sum()), int((differ & near).sum()), differ.numel(), tol, decides=False)
    return rows


def tokens_row(row, differ: int, ties: int, total: int, tol, decides: bool):
    """Add token agreement to a row. For a token output (decides=True) agreement is the verdict:
    the float error of a flipped index means nothing. For logits it is added to the error check."""
    row.update(tokens_pct=100.0 * (total - differ) / max(total, 1), near_ties=ties, unexplained=differ - ties)
    if tol["min_tokens"] >= 1.0:
        ok = differ == ties
    else:
        ok = (total - differ) >= tol["min_tokens"] * total
    row["passed"] = ok if decides else (row["passed"] and ok)


OUTPUT_NAMES = {"tokenizer_encoder": ("indices", "z"), "tokenizer_decoder": ("frames",), "token_latents": ("latents",),
                "action_encoder": ("actions", "z"), "action_latents": ("actions",), "dynamics": ("logits",),
                "dynamics_prefill": ("k", "v"), "dynamics_commit": ("k", "v"), "decoder_prefill": ("k", "v"),
                "decoder_extend": ("frames", "k", "v"), "maskgit_step": ("next_x", "next_masked", "next_tokens"),
                "maskgit_step_sampled": ("next_x", "next_masked", "next_tokens")}


def compare_rollouts(model, onnx, batch: int, context_frames: int, horizon: int, steps: int, tol, generator,
                     reps: int = 3) -> dict:
    """reference_rollout vs the World engine (compat, temperature 0) over TorchBackend and OnnxBackend."""
    S, atol = model.frame_size, tol["atol"]
    context = torch.rand(batch, context_frames, 3, S, S, generator=generator) * 2 - 1
    ids = torch.randint(0, model.lam.num_actions, (batch, horizon), generator=generator)
    want = reference_rollout(model, context, ids, steps=steps, temperature=0.0)
    recorder = TorchBackend(model, record=True)
    eager = world_rollout(World(model, device="cpu", backend=recorder, steps=steps), context, ids, recorder)
    onnx_world = World(model, device=str(onnx.device), backend=onnx, steps=steps)
    got = world_rollout(onnx_world, context, ids)
    loop_err = float((eager["frames"] - want).abs().max())
    differ = eager["tokens"] != got["tokens"].cpu()                         # [B, N, P]
    per_frame = differ.flatten(2).any(-1).any(0)                            # [N]
    first = int(per_frame.float().argmax()) if bool(per_frame.any()) else None
    agreeing = slice(0, first if first is not None else horizon)
    frames_err = float((got["frames"][:, agreeing].cpu() - want[:, agreeing]).abs().max()) if first != 0 else 0.0
    out = {"batch": batch, "context_frames": context_frames, "horizon": horizon, "maskgit_steps": steps,
           "eager_loop_vs_reference_max_abs": loop_err,
           "tokens_pct": 100.0 * (1 - float(differ.float().mean())), "first_divergent_frame": first,
           "frames_max_abs": frames_err}
    passed = loop_err <= 1e-6 and frames_err <= atol
    if first is not None:
        gaps = eager["min_gap"][:, first]                                   # [B, P]
        flips = differ[:, first]
        out["first_divergence_flips"] = int(flips.sum())
        out["first_divergence_near_ties"] = int((flips & (gaps <= 2 * atol)).sum())
        if tol["min_tokens"] >= 1.0:   # fp32: a divergence must start at near-ties only
            passed = passed and out["first_divergence_near_ties"] == out["first_divergence_flips"]
        else:
            passed = passed and out["tokens_pct"] >= 100.0 * tol["min_tokens"]
    out["passed"] = bool(passed)
    eager_world = World(model, device="cpu", steps=steps)
    out["eager_ms_per_frame"] = timed(lambda: eager_world.reset(context).step(ids[:, 0]), reps)
    out["onnx_ms_per_frame"] = timed(lambda: onnx_world.reset(context).step(ids[:, 0]), reps)
    return out


def world_rollout(world, context, ids, recorder=None) -> dict:
    """frames [B, N, 3, H, W] and tokens [B, N, P] of a World rollout (and, with a recording
    TorchBackend, each frame's smallest top-1 minus top-2 logit gap min_gap [B, N, P])."""
    world.reset(context)
    frames, tokens, gaps = [], [], []
    for i in range(ids.shape[1]):
        if recorder is not None:
            recorder.min_gap = None
        frames.append(world.step(ids[:, i]))
        tokens.append(world.tokens)
        gaps.append(recorder.min_gap if recorder is not None else None)
    out = {"frames": torch.stack(frames, 1), "tokens": torch.stack(tokens, 1)}
    if recorder is not None:
        out["min_gap"] = torch.stack(gaps, 1)
    return out


def timed(fn, reps: int):
    """Median ms per call over reps calls (after one warm-up), or None when reps is 0."""
    return time_fn(fn, warmup=1, reps=reps)["median_ms"] if reps > 0 else None


@torch.no_grad()
def check_parity(run_dir, onnx_dir=None, batch: int = None, frames: int = None, horizon: int = 3, steps: int = 8,
                 seed: int = 0, device="cpu", strict: bool = False, reps: int = 5, progress: bool = True,
                 backend: OnnxBackend = None) -> dict:
    """Run the same inputs through eager PyTorch and onnxruntime; returns the report (see the
    module docstring). report["passed"] is False when anything is above tolerance. reps: calls
    timed per graph for the ms columns (0 skips timing)."""
    onnx_dir = onnx_dir or os.path.join(run_dir, "onnx")
    model = load(run_dir)
    onnx = backend or OnnxBackend(onnx_dir, device=device, strict=strict, run_dir=run_dir)
    manifest = onnx.manifest
    tol = TOLERANCES[manifest["dtype"]]
    static_batch = manifest["batch"] if isinstance(manifest["batch"], int) else None
    if batch is not None and static_batch is not None and batch != static_batch:
        raise WmfastError(f"{onnx_dir} was exported for batch {static_batch}; cannot check batch {batch}")
    batch = batch or static_batch or 2
    ctx = model.dynamics.config.context_length if model.dynamics is not None else 4
    frames = frames or max(ctx, 2)
    generator = torch.Generator().manual_seed(seed)
    inputs = parity_inputs(model, batch, frames, generator)
    eager = eager_graphs(model)
    rows = []
    names = [n for n in onnx.graphs if n in inputs]
    for name in tqdm(names, desc="parity", unit="graph", disable=not progress):
        args = inputs[name]
        eager_out = run_eager(eager, name, *args)
        onnx_out = [o.cpu() for o in onnx.graph(name)(*args)]
        graph_rows = compare_graph(name, eager_out, onnx_out, args, model, tol)
        graph_rows[0]["eager_ms"] = timed(lambda: run_eager(eager, name, *args), reps)
        graph_rows[0]["onnx_ms"] = timed(lambda: onnx.graph(name)(*args), reps)
        rows += graph_rows
    report = {"run": os.path.basename(os.path.normpath(run_dir)), "onnx_dir": os.path.basename(os.path.normpath(onnx_dir)),
              "dtype": manifest["dtype"], "opset": manifest["opset"], "batch": batch, "frames": frames,
              "tolerance": tol, "providers": [p[0] if isinstance(p, tuple) else p for p in onnx.providers],
              "graphs": rows, "machine": machine_info(str(device))}
    complete = all(g in onnx.graphs for g in STAGE_OF) and all(m is not None for m in model.modules()) \
        and len(model.modules()) == 3
    if complete:
        report["rollout"] = compare_rollouts(model, onnx, batch, max(ctx - 1, 1), horizon, steps, tol, generator,
                                             reps=min(reps, 3))
    report["placement"] = onnx.placements or onnx.audit_placement()     # nodes per execution provider
    report["passed"] = all(r["passed"] for r in rows) and report.get("rollout", {"passed": True})["passed"]
    return report


def print_report(report: dict):
    print(f"parity: {report['onnx_dir']} ({report['dtype']}, opset {report['opset']}) vs eager PyTorch, "
          f"batch {report['batch']}, {report['frames']} frames, providers {report['providers']}, "
          f"atol {report['tolerance']['atol']:g}")
    print_table(report["graphs"], ["graph", "output", "max_abs", "max_rel", "tokens_pct", "near_ties", "unexplained",
                                   "eager_ms", "onnx_ms", "passed"])
    r = report.get("rollout")
    if r:
        print(f"rollout ({r['batch']} x {r['horizon']} frames, {r['maskgit_steps']} MaskGIT steps, temperature 0): "
              f"tokens {r['tokens_pct']:.2f}%, frames max abs {r['frames_max_abs']:.3g}, "
              f"first divergent frame {r['first_divergent_frame']}"
              + (f" ({r['first_divergence_near_ties']}/{r['first_divergence_flips']} flips near-ties)"
                 if r["first_divergent_frame"] is not None else "")
              + (f", ms/frame eager {r['eager_ms_per_frame']:.1f} onnx {r['onnx_ms_per_frame']:.1f}"
                 if r["eager_ms_per_frame"] is not None else "")
              + f" -> {'PASS' if r['passed'] else 'FAIL'}")
    if report.get("placement"):
        print("nodes per provider: " + ", ".join(f"{g} {c}" for g, c in report["placement"].items()))
    print("PASS" if report["passed"] else "FAIL: above tolerance (see the rows marked False)")


def parity_exit_code(exported: dict, print_fn=print_report) -> int:
    """After an export: print its parity report, if one ran (exported["parity"]); the exit code
    of `wmfast export` (1 when parity failed, else 0)."""
    if "parity" not in exported:
        return 0
    print_fn(exported["parity"])
    return 0 if exported["parity"]["passed"] else 1


def write_report(report: dict, path):
    write_json(report, path)
