"""Latent action extraction: every frame pair of a dataset -> its LAPA code(s), in an HDF5 file.

    extract_codes("runs/breakout", "breakout.h5", "codes.h5")

codes.h5 (read with h5py):
    codes        [N, 7, 5] int16 (grid, H x W) or [N] (pooled)   the code(s) of pair n
    frame_index  [N] int64   index t of frame t in the source dataset; frame t+1 is index t + 1
    episode      [N] int64   source episode of the pair
    split        [N] int8    0 train, 1 val, 2 test in the run's split; -1 when the data is not the run's
    actions      [N] int64   true action taken at t (-1 unknown)
    events       [N, 5] bool pair-level Breakout events (attrs["events"] names them)
    frames_t, frames_t1 [N, H, W, 3] uint8   only with frames=True (else use frame_index into the source)
    attrs["wmfast_lapa"]     JSON: run, source, grid, event names, this layout
Beside it, <out>_events.json / .png: the code -> game-event table (how often each code is used
where each event happens) and its picture.

Events come from fixed regions of Breakout's native 210 x 160 screen (see wmfast.lapa.evaluate):
paddle_left / paddle_right (the paddle's centre moved), ball_bounce (the ball's velocity flipped
sign between t-1 -> t and t -> t+1), brick_broken (fewer bricks at t+1), nothing (none of these).
For grid models each event is placed in the grid cell where it happens and the table counts codes
by cell; for pooled models it counts the pair's one code.
"""
import json
import os

import h5py
import numpy as np
import torch

from wmfast.config import save_json
from wmfast.errors import WmfastError
from wmfast.lapa.evaluate import (PADDLE_ROWS, PLAY_COLS, BRICK_H, BRICK_TOP, BRICK_W, ball_position, brick_states,
                                  save_figure)

EVENTS = ("paddle_left", "paddle_right", "ball_bounce", "brick_broken", "nothing")
CELL = 32   # pixels per grid cell after five stride-2 convs


def paddle_x(x):
    """[B, C, 210, 160] -> paddle centre column [B] (NaN when not visible)."""
    region = x.amax(1)[:, PADDLE_ROWS, PLAY_COLS] > 0.15                                # [B, 4, 144]
    cols = torch.arange(region.shape[2], dtype=torch.float32) + PLAY_COLS.start
    n = region.float().sum((1, 2))
    cx = (region.float() * cols).sum((1, 2)) / n.clamp(min=1)
    return torch.where(n > 0, cx, torch.full_like(cx, float("nan")))


def event_cells(prev, x0, x1, has_prev, grid):
    """Frames t-1, t, t+1 [B, C, 210, 160] -> event labels per grid cell [B, gh, gw] (index into EVENTS),
    one event per cell (priority: brick_broken, ball_bounce, paddle moves, nothing)."""
    B = x0.shape[0]
    labels = torch.full((B, *grid), EVENTS.index("nothing"), dtype=torch.long)
    gh, gw = grid
    # paddle moves: the cell under the paddle's new centre
    p0, p1 = paddle_x(x0), paddle_x(x1)
    dx = p1 - p0
    row = min(PADDLE_ROWS.start // CELL, gh - 1)
    for b in range(B):
        if torch.isnan(dx[b]) or abs(float(dx[b])) < 0.5:
            continue
        labels[b, row, min(int(p1[b]) // CELL, gw - 1)] = EVENTS.index("paddle_left" if dx[b] < 0 else "paddle_right")
    # ball bounce: velocity sign flips (needs frame t-1 of the same episode)
    (c_prev, f_prev), (c0, f0), (c1, f1) = ball_position(prev), ball_position(x0), ball_position(x1)
    v0, v1 = c0 - c_prev, c1 - c0
    flip = ((v0 * v1) < 0).any(1) & f_prev & f0 & f1 & has_prev
    for b in flip.nonzero().flatten().tolist():
        labels[b, min(int(c0[b, 0]) // CELL, gh - 1), min(int(c0[b, 1]) // CELL, gw - 1)] = EVENTS.index("ball_bounce")
    # brick broken: a brick on at t and off at t+1, in the cell of that brick
    broken = brick_states(x0) & ~brick_states(x1)                                        # [B, 6, 18]
    for b, r, c in broken.nonzero().tolist():
        y, xcol = BRICK_TOP + r * BRICK_H + BRICK_H // 2, PLAY_COLS.start + c * BRICK_W + BRICK_W // 2
        labels[b, min(y // CELL, gh - 1), min(xcol // CELL, gw - 1)] = EVENTS.index("brick_broken")
    return labels


def pair_events(labels) -> torch.Tensor:
    """Cell labels [B, gh, gw] -> multi-hot pair events [B, 5] ("nothing" only when no other event)."""
    hot = torch.stack([(labels == e).flatten(1).any(1) for e in range(len(EVENTS))], 1)
    hot[:, EVENTS.index("nothing")] = ~hot[:, :EVENTS.index("nothing")].any(1)
    return hot


@torch.no_grad()
def extract_codes(run, data, out, frames: bool = False, batch_size: int = 64, device="cpu",
                  progress: bool = True) -> dict:
    """Write codes for every pair of `data` to `out` (HDF5) + the code -> event table; returns a summary."""
    from tqdm.auto import tqdm

    from wmfast.data import load_dataset
    from wmfast.lapa.data import SPLITS, PairData, load_split, split_matches
    from wmfast.checkpoint import lapa_folder, load_lapa

    out = os.fspath(out)
    if not out.endswith((".h5", ".hdf5")):
        raise WmfastError(f"--out must be an .h5 file, got {out}")
    folder = lapa_folder(run)
    model = load_lapa(folder, device)
    cfg = model.config
    ds = load_dataset(data) if isinstance(data, (str, os.PathLike)) else data
    pairs = PairData(ds, None, cfg.height, cfg.width)
    idx = pairs.indices()
    if len(idx) == 0:
        raise WmfastError(f"{ds.source}: no frame pairs (episodes need at least 2 frames)")
    split_id = np.full(len(ds), -1, np.int8)
    if split_matches(folder, ds):
        for i, name in enumerate(SPLITS):
            for e in load_split(folder, ds)[name]:
                split_id[ds.episodes[e][0]:ds.episodes[e][1]] = i
    breakout = (cfg.height, cfg.width) == (210, 160)
    grid = cfg.grid
    table = np.zeros((cfg.num_codes, len(EVENTS)), np.int64)
    codes_all, events_all = [], []
    for s in tqdm(range(0, len(idx), batch_size), desc="lapa extract", disable=not progress):
        b = idx[s:s + batch_size]
        frame_t, frame_t1 = pairs.batch(b, device)
        codes = model.encode(frame_t, frame_t1).cpu()                              # [B, 7, 5] or [B]
        codes_all.append(codes)
        if breakout:
            has_prev = torch.from_numpy(pairs.episode_of[np.maximum(b - 1, 0)] == pairs.episode_of[b]) & \
                torch.from_numpy(b > 0)
            prev = pairs.frames_at(np.maximum(b - 1, 0))
            labels = event_cells(prev, frame_t.cpu(), frame_t1.cpu(), has_prev, grid)   # [B, gh, gw]
            events = pair_events(labels)
            events_all.append(events)
            if cfg.pooled:
                for e in range(len(EVENTS)):
                    np.add.at(table[:, e], codes[events[:, e]].numpy(), 1)
            else:
                np.add.at(table, (codes.flatten().numpy(), labels.flatten().numpy()), 1)
    codes = torch.cat(codes_all).numpy()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = f"{out}.tmp{os.getpid()}"
    info = {"run": folder, "source": str(ds.source), "grid": list(cfg.code_shape), "num_codes": cfg.num_codes,
            "events": list(EVENTS) if breakout else [], "layout": __doc__.split("codes.h5 (read with h5py):")[1]
            .split("Beside it")[0]}
    try:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("codes", data=codes.astype(np.int16))
            f.create_dataset("frame_index", data=idx.astype(np.int64))
            f.create_dataset("episode", data=pairs.episode_of[idx])
            f.create_dataset("split", data=split_id[idx])
            f.create_dataset("actions", data=pairs.actions(idx).astype(np.int64))
            if events_all:
                f.create_dataset("events", data=torch.cat(events_all).numpy())
            if frames:
                n, h, w = len(idx), ds.height, ds.width
                kw = dict(chunks=(min(n, 16), h, w, 3), compression="gzip", compression_opts=4)
                f.create_dataset("frames_t", data=pairs.frames[idx], **kw)
                f.create_dataset("frames_t1", data=pairs.frames[idx + 1], **kw)
            f.attrs["wmfast_lapa"] = json.dumps(info)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    summary = {"out": out, "pairs": len(idx), "codes_shape": list(codes.shape),
               "split_known": bool((split_id >= 0).any())}
    if breakout:
        stem = os.path.splitext(out)[0]
        summary["event_table"] = write_event_table(table, stem + "_events.json", stem + "_events.png",
                                                   "cell" if not cfg.pooled else "pair")
    return summary


def write_event_table(table, json_path, png_path, unit: str, top: int = 32) -> dict:
    """counts [K, 5] -> JSON (per used code: counts and fractions per event) + a heatmap of the top codes."""
    used = np.nonzero(table.sum(1))[0]
    rows = {int(k): {"count": int(table[k].sum()),
                     **{e: round(float(table[k, i] / table[k].sum()), 4) for i, e in enumerate(EVENTS)}}
            for k in used}
    totals = {e: int(table[:, i].sum()) for i, e in enumerate(EVENTS)}
    save_json({"unit": unit, "events": list(EVENTS), "event_totals": totals, "codes": rows}, json_path)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Codes sorted by how strongly they go with a non-"nothing" event, then the most used ones.
    frac = table / np.maximum(table.sum(1, keepdims=True), 1)
    order = sorted(used, key=lambda k: (-frac[k, :4].sum(), -table[k].sum()))[:top]
    fig, ax = plt.subplots(figsize=(6, 0.25 * len(order) + 1.5), dpi=90)
    ax.imshow(frac[order], aspect="auto", cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(EVENTS)), EVENTS, rotation=30, fontsize=7)
    ax.set_yticks(range(len(order)), [f"code {k} (n={table[k].sum()})" for k in order], fontsize=6)
    ax.set_title(f"code -> event (fraction of each code's {unit}s)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, png_path)
    return {"json": json_path, "png": png_path, "event_totals": totals}
