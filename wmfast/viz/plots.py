"""Pictures of captured attention (matplotlib, Agg): per-head heatmaps, attention over the frame,
and the entropy summary. Every function takes plain tensors and writes one PNG."""
import math

import numpy as np
import torch
import torch.nn.functional as F


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def head_grid(num_heads: int, max_cols: int = 8):
    cols = min(num_heads, max_cols)
    return math.ceil(num_heads / cols), cols


def to_image(frame) -> np.ndarray:
    """frame [3, H, W] float in [-1, 1] -> [H, W, 3] float in [0, 1]."""
    return ((frame.detach().float().cpu().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()


def mosaic(tiles, rows: int, cols: int, gap: int, fill=np.nan):
    """tiles [N, h, w, ...] -> one [rows*(h+gap)-gap, cols*(w+gap)-gap, ...] array (one imshow is far
    faster than one axes per head) and each tile's (top, left)."""
    n, h, w = tiles.shape[:3]
    out = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap) + tiles.shape[3:], fill, dtype=np.float32)
    corners = []
    for i in range(n):
        top, left = (i // cols) * (h + gap), (i % cols) * (w + gap)
        out[top:top + h, left:left + w] = tiles[i]
        corners.append((top, left))
    return out, corners


def label_heads(ax, corners, width: int):
    for h, (top, left) in enumerate(corners):
        ax.text(left + width / 2 - 0.5, top - 0.6, f"head {h}", ha="center", va="bottom", fontsize=8)


def plot_head_maps(maps, path, title: str, xlabel: str = "key", ylabel: str = "query"):
    """maps [H, Q, K] -> one heatmap per head, side by side on one colour scale (0 .. max)."""
    plt = pyplot()
    maps = maps.detach().float().cpu().numpy()
    H, Q, K = maps.shape
    rows, cols = head_grid(H)
    gap = max(1, K // 12)
    canvas, corners = mosaic(maps, rows, cols, gap)
    cell = 2.3 / max(Q, K)                                                          # inches per row / column
    fig, ax = plt.subplots(figsize=(cols * K * cell + 1.6, rows * Q * cell + 1.1))
    cmap = plt.get_cmap("viridis").with_extremes(bad="white")
    im = ax.imshow(canvas, cmap=cmap, vmin=0.0, vmax=float(maps.max()) or 1.0, interpolation="nearest")
    label_heads(ax, corners, K)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel(f"{xlabel} (0..{K - 1} left to right, per head)", fontsize=8)
    ax.set_ylabel(f"{ylabel} (0..{Q - 1} top down)", fontsize=8)
    for side in ax.spines.values():
        side.set_visible(False)
    fig.colorbar(im, ax=ax, shrink=0.8, label="probability")
    ax.set_title(title, fontsize=9, pad=14)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return path


def upsample_weights(weights, grid: int, size: int):
    """weights [H, grid*grid] over patches -> [H, size, size] (bilinear, so the map reads as a field)."""
    w = weights.detach().float().cpu().reshape(-1, 1, grid, grid)
    return F.interpolate(w, size=(size, size), mode="bilinear", align_corners=False)[:, 0]


def plot_frame_overlay(frames, weights, grid: int, query: int, query_frame: int, path, title: str):
    """Attention of one query patch over the patches of one or more frames.

    frames [F, 3, S, S] float in [-1, 1] (F = 1 for spatial attention, 2 for a frame pair), weights
    [H, F * grid * grid] (the query's row), query: the query's patch index inside frame query_frame."""
    plt = pyplot()
    Fn, _, S, _ = frames.shape
    H = weights.shape[0]
    image = np.concatenate([to_image(f) for f in frames], axis=1)                         # [S, F*S, 3]
    heat = torch.cat([upsample_weights(w, grid, S) for w in weights.reshape(H, Fn, -1).unbind(1)], dim=-1)
    heat = (heat / (float(heat.max()) or 1.0)).numpy()                                   # [H, S, F*S] in [0, 1]
    colour = plt.get_cmap("inferno")(heat)[..., :3]                                      # [H, S, F*S, 3]
    alpha = 0.25 + 0.6 * heat[..., None]               # the frame shows through where attention is low
    tiles = image[None] * (1 - alpha) + colour * alpha
    rows, cols = head_grid(H, 4)
    gap = max(2, S // 16)
    canvas, corners = mosaic(tiles, rows, cols, gap, fill=1.0)
    scale = 2.4 / S
    fig, ax = plt.subplots(figsize=(cols * Fn * S * scale + 0.4, rows * S * scale + 0.8))
    ax.imshow(canvas, interpolation="nearest")
    patch = S / grid
    qr, qc = divmod(query, grid)
    for top, left in corners:
        x0 = left + query_frame * S + qc * patch - 0.5
        ax.add_patch(plt.Rectangle((x0, top + qr * patch - 0.5), patch, patch, fill=False, edgecolor="cyan",
                                   linewidth=1.5))
        for f in range(1, Fn):
            ax.plot([left + f * S - 0.5] * 2, [top - 0.5, top + S - 0.5], color="white", linewidth=1)
    label_heads(ax, corners, Fn * S)
    ax.axis("off")
    ax.set_title(title, fontsize=9, pad=14)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_entropy_summary(summary: dict, path, title: str = "attention entropy per head"):
    """summary: name -> {"entropy_nats": [H], "max_entropy_nats": float} -> grouped bars, one group
    per call, one bar per head, a black line at each call's uniform-attention maximum (log K)."""
    plt = pyplot()
    names = list(summary)
    heads = max(len(v["entropy_nats"]) for v in summary.values()) if names else 1
    width = 0.8 / heads
    fig, ax = plt.subplots(figsize=(min(40.0, max(6.0, 0.22 * heads * len(names) + 2)), 4.8))
    colours = plt.get_cmap("tab10")
    for i, name in enumerate(names):
        ent = summary[name]["entropy_nats"]
        for h, e in enumerate(ent):
            ax.bar(i - 0.4 + (h + 0.5) * width, e, width, color=colours(h % 10),
                   label=f"head {h}" if i == 0 else None)
        top = summary[name]["max_entropy_nats"]
        ax.hlines(top, i - 0.45, i + 0.45, colors="black", linewidth=1.5,
                  label="uniform attention (log K)" if i == 0 else None)
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("entropy (nats)")
    ax.set_ylim(bottom=0)
    ax.set_title(title + "  (near zero: the head looks at ~one key)", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_frames(frames, path, title: str = "input frames"):
    """frames [T, 3, S, S] -> one strip."""
    plt = pyplot()
    T = frames.shape[0]
    fig, axes = plt.subplots(1, T, figsize=(1.8 * T, 2.1), squeeze=False)
    for t, ax in enumerate(axes.flat):
        ax.imshow(to_image(frames[t]), interpolation="nearest")
        ax.set_title(f"t={t}", fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
