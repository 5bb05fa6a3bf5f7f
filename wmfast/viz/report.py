"""`wmfast viz attention`: run a world model on one clip with capture on, then draw every
attention call (per-head heatmaps, spatial attention over the frame, temporal frames x frames),
the entropy summary, a JSON of entropies and an index.html that lays them out.

    out/index.html                  the page
    out/attn_entropy_summary.png    bars per call x head, the uniform maximum (log K) marked
    out/attn_entropy.json           name -> entropy per head (nats), maximum, shapes; settings; notes
    out/input_frames.png            the clip
    out/maps/NAME.png               per-head heatmap of every call
    out/overlay/NAME.png            spatial and pair-window calls: the query patch's attention over the frame(s)
"""
import dataclasses
import html
import math
import os
import re

import torch

from wmfast.config import save_json
from wmfast.errors import WmfastError
from wmfast.viz import plots
from wmfast.viz.capture import capture_attention


# -- inputs ----------------------------------------------------------------------------------------
def random_world(preset: str, overrides: dict = None, seed: int = 0):
    """Randomly initialised tokenizer, LAM and dynamics of a size preset (for checking shapes).
    overrides: config values applied to every stage that has the field (e.g. use_windowed_attention)."""
    from wmfast.models import (DynamicsConfig, DynamicsModel, LatentActionConfig, LatentActionModel,
                               TokenizerConfig, VideoTokenizer, WorldModel)
    from wmfast.train import PRESETS

    if preset not in PRESETS:
        raise WmfastError(f"unknown preset {preset!r} (choose from {sorted(PRESETS)})")
    overrides = dict(overrides or {})
    fields = lambda cls: {f.name for f in dataclasses.fields(cls)}                        # noqa: E731
    known = set().union(*(fields(c) for c in (TokenizerConfig, LatentActionConfig, DynamicsConfig)))
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise WmfastError(f"unknown config keys {unknown}")

    def config(cls, **derived):
        values = {**PRESETS[preset], **overrides, **derived}
        return cls(**{k: v for k, v in values.items() if k in fields(cls)})

    torch.manual_seed(seed)
    tok = VideoTokenizer(config(TokenizerConfig)).eval()
    lam = LatentActionModel(config(LatentActionConfig)).eval()
    dyn = DynamicsModel(config(DynamicsConfig, conditioning_dim=lam.config.action_dim,
                               codebook_size=tok.config.num_codes)).eval()
    return WorldModel(tok, lam, dyn, path=f"random weights, preset {preset}")


def load_clip(data, episode: int, start: int, frames: int, frame_size: int):
    """frames [1, T, 3, S, S] in [-1, 1] from an episode of a dataset spec."""
    from wmfast.data import ClipSampler, load_dataset
    from wmfast.demo import default_data

    ds = load_dataset(data or default_data())
    if not 0 <= episode < ds.n_episodes:
        raise WmfastError(f"episode {episode} out of range [0, {ds.n_episodes}) in {ds.source}")
    return ClipSampler(ds, clip_len=frames, frame_size=frame_size, episodes=[episode]).episode_clip(episode, start)[0]


def parse_query(query, grid: int) -> int:
    """'ROW,COL' or a patch index -> patch index in [0, grid*grid)."""
    text = str(query).replace(" ", "")
    try:
        if "," in text:
            r, c = (int(v) for v in text.split(","))
            if not (0 <= r < grid and 0 <= c < grid):
                raise WmfastError(f"--query {query!r}: row and column must be in [0, {grid})")
            return r * grid + c
        idx = int(text)
    except ValueError:
        raise WmfastError(f"--query must be a patch index or ROW,COL, got {query!r}") from None
    if not 0 <= idx < grid * grid:
        raise WmfastError(f"--query {idx} out of range: the frame has {grid * grid} patches ({grid}x{grid})")
    return idx


def most_changed_patch(clip, step: int, patch_size: int) -> int:
    """The patch whose pixels change most between frame step-1 (or step+1) and step: where the agent is."""
    T = clip.shape[1]
    other = step - 1 if step > 0 else min(1, T - 1)
    diff = (clip[0, step] - clip[0, other]).abs().mean(0, keepdim=True)                  # [1, S, S]
    per_patch = torch.nn.functional.avg_pool2d(diff[None], patch_size)[0, 0]             # [G, G]
    return int(per_patch.flatten().argmax())


def safe_filename(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


# -- running ---------------------------------------------------------------------------------------
def run_world(world, clip):
    """One pass of every stage the world model has, for the capture: tokenizer encode + decode,
    LAM encode + decode, dynamics logits."""
    tok, lam, dyn = world.tokenizer, world.lam, world.dynamics
    lat = act = None
    if tok is not None:
        lat = tok.latents(tok.encode(clip))                                                # [1, T, P, L]
        tok.decode(lat)
    if lam is not None:
        act = lam.encode(clip)                                                             # [1, T-1, A]
        lam.decode(clip, act)
    if dyn is not None and lat is not None and act is not None:
        dyn(lat, act)


# -- pictures --------------------------------------------------------------------------------------
def draw_call(name, maps, info, clip, step, query, grid, out):
    """The heatmap (and overlay where the call is over patches) of one call -> {kind: relative path}."""
    kind, layout = info["kind"], info["batch_layout"]
    base = safe_filename(name)
    paths = {}
    if kind == "space":
        Tm = layout["frames"]
        t = min(step, Tm - 1)                        # the LAM decoder sees frames 0..T-2
        m = maps[t]                                                                        # [H, P, P] (batch 0)
        paths["heatmap"] = plots.plot_head_maps(m, os.path.join(out, "maps", base + ".png"),
                                                f"{name}: spatial attention, frame {t} (patch x patch)",
                                                "key patch", "query patch")
        if m.shape[-1] == grid * grid:
            paths["overlay"] = plots.plot_frame_overlay(
                clip[0, t:t + 1], m[:, query, :], grid, query, 0, os.path.join(out, "overlay", base + ".png"),
                f"{name}: where query patch {query} (cyan) looks in frame {t}")
    elif kind == "time":
        Tm = layout["frames"]
        m = maps[query]                                                                    # [H, T, T] (batch 0)
        paths["heatmap"] = plots.plot_head_maps(m, os.path.join(out, "maps", base + ".png"),
                                                f"{name}: temporal attention of patch {query} (frame x frame, causal)",
                                                "key frame", "query frame")
    elif kind == "pair":
        W = layout["windows"]
        w = min(max(step - 1, 0), W - 1)             # the window of frames (step-1, step)
        m = maps[w]                                                                        # [H, 2P, 2P]
        P = layout["patches"]
        paths["heatmap"] = plots.plot_head_maps(m, os.path.join(out, "maps", base + ".png"),
                                                f"{name}: window of frames {w},{w + 1} (2P x 2P: frame {w} "
                                                f"patches, then frame {w + 1})", "key", "query")
        if P == grid * grid:
            paths["overlay"] = plots.plot_frame_overlay(
                clip[0, w:w + 2], m[:, P + query, :], grid, query, 1, os.path.join(out, "overlay", base + ".png"),
                f"{name}: patch {query} of frame {w + 1} (cyan) over frames {w} | {w + 1}")
    else:
        paths["heatmap"] = plots.plot_head_maps(maps[0], os.path.join(out, "maps", base + ".png"),
                                                f"{name}: attention (batch item 0)")
    return {k: os.path.relpath(v, out) for k, v in paths.items()}


def write_index(out, title, summary, pictures, settings, notes):
    """index.html: settings, the clip, the entropy chart, then every call's pictures by model."""
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>",
             "<style>body{font-family:sans-serif;margin:1.5em;max-width:1400px}img{max-width:100%;"
             "border:1px solid #ddd;margin:4px}.call{margin:1em 0;padding:.5em;border-top:1px solid #ccc}"
             "table{border-collapse:collapse}td,th{padding:2px 8px;border:1px solid #ddd;font-size:13px}</style>",
             f"</head><body><h1>{esc(title)}</h1><p>",
             "<br>".join(f"<b>{esc(str(k))}</b>: {esc(str(v))}" for k, v in settings.items()), "</p>"]
    for note in notes:
        parts.append(f"<p><i>{esc(note)}</i></p>")
    parts.append("<img src='input_frames.png' alt='input frames'>"
                 "<h2>Entropy per head</h2><img src='attn_entropy_summary.png' alt='entropy summary'>"
                 "<p>Entropy in nats, averaged over the batch and the queries; near zero means the head "
                 "attends to about one key. Data: <a href='attn_entropy.json'>attn_entropy.json</a>.</p>")
    parts.append("<table><tr><th>call</th><th>kind</th><th>entropy per head (nats)</th><th>uniform max</th></tr>")
    for name, s in summary.items():
        ent = ", ".join(f"{e:.3f}" for e in s["entropy_nats"])
        parts.append(f"<tr><td><a href='#{esc(safe_filename(name))}'>{esc(name)}</a></td><td>{esc(s['kind'])}</td>"
                     f"<td>{ent}</td><td>{s['max_entropy_nats']:.3f}</td></tr>")
    parts.append("</table>")
    model = None
    for name, pics in pictures.items():
        prefix = name.split(".")[0]
        if prefix != model:
            model = prefix
            parts.append(f"<h2>{esc(prefix)}</h2>")
        parts.append(f"<div class='call' id='{esc(safe_filename(name))}'><h3>{esc(name)}</h3>")
        for kind in ("overlay", "heatmap"):
            if kind in pics:
                parts.append(f"<img src='{esc(pics[kind])}' alt='{esc(name)} {kind}'>")
        parts.append("</div>")
    parts.append("</body></html>")
    path = os.path.join(out, "index.html")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(parts))
    os.replace(tmp, path)
    return path


def attention_report(run=None, preset=None, data=None, step=None, query=None, out="attention", frames=None,
                     episode: int = 0, start: int = 0, overrides: dict = None, seed: int = 0, device="auto") -> dict:
    """Capture and draw every attention call of a world model on one clip; see the module docstring.

    run: a run directory (or a tinyworlds run); preset: random weights of that size preset instead.
    step: the frame whose spatial attention is drawn (default: the last); query: the query patch
    (index or 'ROW,COL'; default: the patch that changes most into frame `step`); frames: clip length
    (default: the dynamics model's context length, else 4)."""
    from tqdm import tqdm

    import wmfast

    if (run is None) == (preset is None):
        raise WmfastError("give a run directory (--run DIR) or a size preset for random weights (--preset NAME)")
    from wmfast.rollout.backends import resolve_device

    device = resolve_device(device)
    world = wmfast.load(run) if run is not None else random_world(preset, overrides, seed)
    world.to(device)
    first = world.modules()[0].config
    S, G = first.frame_size, first.frame_size // first.patch_size
    T = frames or (world.dynamics.config.context_length if world.dynamics is not None else 4)
    if T < 2:
        raise WmfastError(f"--frames must be >= 2 (the latent action model needs frame pairs), got {T}")
    clip = load_clip(data, episode, start, T, S).to(device)                               # [1, T, 3, S, S]
    step = T - 1 if step is None else int(step)
    if not 0 <= step < T:
        raise WmfastError(f"--step {step} out of range: the clip has {T} frames")
    query = most_changed_patch(clip, step, first.patch_size) if query is None else parse_query(query, G)

    with capture_attention(world) as rec:
        run_world(world, clip)
    os.makedirs(os.path.join(out, "maps"), exist_ok=True)
    os.makedirs(os.path.join(out, "overlay"), exist_ok=True)
    clip = clip.cpu()
    pictures = {}
    for name in tqdm(list(rec.maps), desc="attention maps", unit="call", leave=False):
        pictures[name] = draw_call(name, rec.maps[name], rec.info[name], clip, step, query, G, out)
    summary = rec.summary()
    plots.plot_entropy_summary(summary, os.path.join(out, "attn_entropy_summary.png"))
    plots.plot_frames(clip[0], os.path.join(out, "input_frames.png"),
                      f"input frames (query patch {query} = row {query // G}, col {query % G})")
    source = str(run) if run is not None else f"random weights (preset {preset})"
    settings = {"model": source, "data": data or "default game", "episode": episode, "start": start,
                "frames": T, "step": step, "query_patch": query, "grid": f"{G}x{G}", "device": str(device)}
    notes = list(rec.notes)
    if rec.missing():
        notes.append(f"attention modules that did not run: {rec.missing()}")
    save_json({"settings": settings, "notes": notes, "calls": summary}, os.path.join(out, "attn_entropy.json"))
    index = write_index(out, f"Attention: {source}", summary, pictures, settings, notes)
    return {"index": index, "calls": list(rec.maps), "notes": notes, "query": query, "step": step,
            "out": out, "min_entropy": {n: min(s["entropy_nats"]) for n, s in summary.items()},
            "log_max": {n: math.log(s["num_keys"]) for n, s in summary.items()}}
