"""Evaluation of a trained LAPA model on one split.

    report = evaluate_lapa("runs/breakout", split="test")     # -> runs/breakout/lapa/eval_test/

PSNR (from the split's mean MSE), SSIM (torchmetrics, Gaussian 11x11 window, per pair then
averaged), L1 and L2, each for: the model, copy-last-frame (predict frame t+1 = frame t) and the
model fed shuffled codes (every pair decoded with another pair's codes: how much the code
matters), on all pairs and on the "moving" pairs (frame t != frame t+1). Code usage histogram,
perplexity and a t-SNE map of the used code vectors (scikit-learn); originals / reconstructions /
difference heatmaps; per game element, from fixed regions of Breakout's native 210 x 160 screen
(not from RAM, so any recording of the screen works): paddle-region PSNR, brick-state accuracy
(each of the 6 x 18 bricks on/off) and ball-position error (centroid of the lit pixels between
the bricks and the paddle).
"""
import math
import os

import numpy as np
import torch

from wmfast.config import save_json
from wmfast.errors import WmfastError
from wmfast.models.lapa import to_model_channels

# Breakout's native screen layout (rows, cols), measured on ALE frames.
PADDLE_ROWS, PLAY_COLS = slice(189, 193), slice(8, 152)
BRICK_TOP, BRICK_H, BRICK_W, BRICK_ROWS, BRICK_COLS = 57, 6, 8, 6, 18
BALL_ROWS = slice(93, 189)      # between the lowest bricks and the paddle: only the ball is drawn there
LIT = 0.15                      # a pixel / brick is "on" above this intensity (max over channels)


def _ssim_per_pair(pred, target):
    from torchmetrics.functional.image import structural_similarity_index_measure

    return structural_similarity_index_measure(pred, target, data_range=1.0, reduction="none")


@torch.no_grad()
def score_pairs(model, pairs, idx, device="cpu", batch_size: int = 32) -> dict:
    """Model reconstruction on the pairs idx: mean MSE, PSNR (of the mean MSE), SSIM, L1, and the PSNR
    of the model and of copy-last-frame on the pairs where something moved (the issue's target)."""
    model.eval()
    mse, copy_mse, l1, ssim, moving = [], [], [], [], []
    for s in range(0, len(idx), batch_size):
        frame_t, frame_t1 = pairs.batch(idx[s:s + batch_size], device)
        x0 = to_model_channels(frame_t, model.config.grayscale)
        x1 = to_model_channels(frame_t1, model.config.grayscale)
        recon = model.decode(frame_t, model.encode(frame_t, frame_t1))
        mse.append((recon - x1).pow(2).mean((1, 2, 3)).cpu())
        copy_mse.append((x0 - x1).pow(2).mean((1, 2, 3)).cpu())
        moving.append(moved(x0, x1).cpu())
        l1.append((recon - x1).abs().mean((1, 2, 3)).cpu())
        ssim.append(_ssim_per_pair(recon, x1).cpu())
    mse, copy_mse, l1, ssim, moving = map(torch.cat, (mse, copy_mse, l1, ssim, moving))
    out = {"mse": float(mse.mean()), "psnr": psnr(float(mse.mean())), "ssim": float(ssim.mean()),
           "l1": float(l1.mean()), "copy_psnr": psnr(float(copy_mse.mean()))}
    if moving.any():
        out.update(moving_psnr=psnr(float(mse[moving].mean())), moving_copy_psnr=psnr(float(copy_mse[moving].mean())))
    return out


def moved(x0, x1):
    """[B, C, H, W] x 2 -> bool [B]: some pixel changed by more than half a grey level."""
    return (x1 - x0).abs().amax((1, 2, 3)) > 0.5 / 255


def psnr(mse: float) -> float:
    return 10 * math.log10(1.0 / mse) if mse > 0 else float("inf")


# -- per game element --------------------------------------------------------------------------

def _intensity(x):                                                          # [B, C, H, W] -> [B, H, W]
    return x.amax(1)


def brick_states(x) -> torch.Tensor:
    """[B, C, 210, 160] -> bool [B, 6, 18]: brick present (mean intensity over its cell above LIT)."""
    region = _intensity(x)[:, BRICK_TOP:BRICK_TOP + BRICK_ROWS * BRICK_H, PLAY_COLS]      # [B, 36, 144]
    cells = region.reshape(x.shape[0], BRICK_ROWS, BRICK_H, BRICK_COLS, BRICK_W).mean((2, 4))
    return cells > LIT


def ball_position(x):
    """[B, C, 210, 160] -> (centroid [B, 2] (row, col), found [B] bool) of lit pixels in the ball region."""
    region = _intensity(x)[:, BALL_ROWS, PLAY_COLS]                                        # [B, 96, 144]
    mask = (region > LIT).float()
    n = mask.sum((1, 2))
    rows = torch.arange(region.shape[1], dtype=torch.float32)[None, :, None] + BALL_ROWS.start
    cols = torch.arange(region.shape[2], dtype=torch.float32)[None, None, :] + PLAY_COLS.start
    centre = torch.stack([(mask * rows).sum((1, 2)), (mask * cols).sum((1, 2))], 1) / n.clamp(min=1)[:, None]
    return centre, n > 0


def element_scores(pred, target):
    """Per-pair paddle-region MSE, brick-state accuracy and ball-position error (NaN if no ball)."""
    paddle_mse = (pred - target)[:, :, PADDLE_ROWS, PLAY_COLS].pow(2).mean((1, 2, 3))
    bricks = (brick_states(pred) == brick_states(target)).float().mean((1, 2))
    (c_pred, f_pred), (c_true, f_true) = ball_position(pred), ball_position(target)
    err = (c_pred - c_true).norm(dim=1)
    err = torch.where(f_pred & f_true, err, torch.full_like(err, float("nan")))
    return {"paddle_mse": paddle_mse, "brick_acc": bricks, "ball_err": err, "ball_found": f_pred.float(),
            "ball_present": f_true.float()}


# -- the evaluation ----------------------------------------------------------------------------

@torch.no_grad()
def evaluate_lapa(run, data=None, split: str = "test", out=None, max_pairs: int = None, batch_size: int = 32,
                  device="cpu", best: bool = False, seed: int = 0, progress: bool = True) -> dict:
    """Score a trained LAPA model on a split (see the module doc); writes eval.json + PNGs to out
    (default run/lapa/eval_<split>/) and returns the report."""
    from tqdm.auto import tqdm

    from wmfast.data import load_dataset
    from wmfast.lapa.data import PairData, load_split
    from wmfast.checkpoint import lapa_folder, load_lapa
    from wmfast.config import load_json

    folder = lapa_folder(run)
    model = load_lapa(folder, device, best=best)
    cfg = model.config
    if data is None:
        data = load_json(os.path.join(folder, "split.json"))["source"]
    ds = load_dataset(data) if isinstance(data, (str, os.PathLike)) else data
    split_map = load_split(folder, ds) if split != "all" else None
    pairs = PairData(ds, split_map, cfg.height, cfg.width)
    idx = pairs.indices(None if split == "all" else split)
    if len(idx) == 0:
        raise WmfastError(f"split {split!r} has no frame pairs")
    if max_pairs is not None and len(idx) > max_pairs:
        idx = idx[np.linspace(0, len(idx) - 1, max_pairs).astype(int)]
    out = out or os.path.join(folder, f"eval_{split}")
    os.makedirs(out, exist_ok=True)

    # Pass 1: the codes of every pair (the shuffled-code baseline needs other pairs' codes).
    codes = []
    for s in tqdm(range(0, len(idx), batch_size), desc="lapa encode", disable=not progress):
        codes.append(model.encode(*pairs.batch(idx[s:s + batch_size], device)).cpu())
    codes = torch.cat(codes)                                                # [N, 7, 5] or [N]
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(len(idx)))
    if len(idx) > 1:
        perm = torch.where(perm == torch.arange(len(idx)), perm.roll(1), perm)   # nobody keeps its own codes
    shuffled = codes[perm]

    # Pass 2: reconstructions with the true and the shuffled codes, and copy-last-frame.
    per = {m: {"mse": [], "l1": [], "ssim": []} for m in ("model", "copy_last", "shuffled_codes")}
    elements = {m: [] for m in per}
    moving = []
    for s in tqdm(range(0, len(idx), batch_size), desc="lapa eval", disable=not progress):
        frame_t, frame_t1 = pairs.batch(idx[s:s + batch_size], device)
        x0, x1 = to_model_channels(frame_t, cfg.grayscale), to_model_channels(frame_t1, cfg.grayscale)
        preds = {"model": model.decode(frame_t, codes[s:s + batch_size]),
                 "copy_last": x0,
                 "shuffled_codes": model.decode(frame_t, shuffled[s:s + batch_size])}
        moving.append(moved(x0, x1).cpu())
        for name, pred in preds.items():
            per[name]["mse"].append((pred - x1).pow(2).mean((1, 2, 3)).cpu())
            per[name]["l1"].append((pred - x1).abs().mean((1, 2, 3)).cpu())
            per[name]["ssim"].append(_ssim_per_pair(pred, x1).cpu())
            if (cfg.height, cfg.width) == (210, 160):
                elements[name].append({k: v.cpu() for k, v in element_scores(pred, x1).items()})
    moving = torch.cat(moving)
    per = {m: {k: torch.cat(v) for k, v in d.items()} for m, d in per.items()}

    report = {"run": folder, "data": str(ds.source), "split": split, "pairs": len(idx),
              "moving_pairs": int(moving.sum()), "channels": "grey" if cfg.grayscale else "rgb",
              "grid": list(cfg.code_shape), "all": {}, "moving": {}}
    for subset, mask in (("all", torch.ones_like(moving)), ("moving", moving)):
        if mask.sum() == 0:
            continue
        for name, d in per.items():
            mse = float(d["mse"][mask].mean())
            report[subset][name] = {"psnr": psnr(mse), "ssim": float(d["ssim"][mask].mean()),
                                    "l1": float(d["l1"][mask].mean()), "l2": mse}
        if "model" in report[subset]:
            report[subset]["model_beats_copy_fraction"] = float(
                (per["model"]["mse"][mask] < per["copy_last"]["mse"][mask]).float().mean())
    report["shuffled_codes_psnr_cost_db"] = report["all"]["model"]["psnr"] - report["all"]["shuffled_codes"]["psnr"]
    if elements["model"]:
        report["elements"] = _element_report(elements)
        report["elements"]["source"] = "fixed regions of the native 210x160 Breakout screen (not RAM)"

    counts = torch.bincount(codes.flatten(), minlength=cfg.num_codes).float()
    p = counts / counts.sum()
    report["codes"] = {"used": int((counts > 0).sum()), "of": cfg.num_codes,
                       "usage_pct": 100.0 * float((counts > 0).float().mean()),
                       "perplexity": float(torch.exp(-(p[p > 0] * p[p > 0].log()).sum()))}
    from wmfast.nn.vq import plot_code_usage

    figures = {"code_usage": plot_code_usage(counts, os.path.join(out, "code_usage.png"), f"{split} code usage"),
               "tsne": plot_tsne(model.quantizer.codebook.detach().cpu(), counts, os.path.join(out, "code_tsne.png"),
                                 seed),
               "examples": save_reconstructions(model, pairs, _example_pairs(idx, moving), 
                                                os.path.join(out, "examples.png"), device)}
    report["figures"] = {k: v for k, v in figures.items() if v}
    save_json(report, os.path.join(out, "eval.json"))
    return report


def _element_report(elements) -> dict:
    out = {}
    for name, chunks in elements.items():
        d = {k: torch.cat([c[k] for c in chunks]) for k in chunks[0]}
        err = d["ball_err"][~torch.isnan(d["ball_err"])]
        out[name] = {"paddle_psnr": psnr(float(d["paddle_mse"].mean())),
                     "brick_state_acc": float(d["brick_acc"].mean()),
                     "ball_pos_err_px": float(err.mean()) if len(err) else None,
                     "ball_found_when_present": float((d["ball_found"] * d["ball_present"]).sum()
                                                      / d["ball_present"].sum().clamp(min=1))}
    return out


def _example_pairs(idx, moving, n: int = 6):
    """Evenly spaced moving pairs (or any pairs when none moved)."""
    pool = idx[moving.numpy()] if bool(moving.any()) else idx
    return pool[np.linspace(0, len(pool) - 1, min(n, len(pool))).astype(int)]


@torch.no_grad()
def save_reconstructions(model, pairs, idx, path, device="cpu"):
    """One row per pair: frame t | frame t+1 | reconstruction | |reconstruction - frame t+1| heatmap
    | |frame t+1 - frame t| heatmap (what moved)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model.eval()
    frame_t, frame_t1 = pairs.batch(np.asarray(idx), device)
    g = model.config.grayscale
    x0, x1 = to_model_channels(frame_t, g), to_model_channels(frame_t1, g)
    recon = model.decode(frame_t, model.encode(frame_t, frame_t1))
    cols = [("frame t", x0), ("frame t+1", x1), ("reconstruction", recon),
            ("|recon - t+1|", (recon - x1).abs().amax(1, keepdim=True)),
            ("|t+1 - t|", (x1 - x0).abs().amax(1, keepdim=True))]
    fig, axes = plt.subplots(len(idx), len(cols), figsize=(2.2 * len(cols), 2.6 * len(idx)), squeeze=False)
    for r in range(len(idx)):
        for c, (title, img) in enumerate(cols):
            ax = axes[r, c]
            im = img[r].cpu().permute(1, 2, 0).numpy()
            if title.startswith("|"):
                ax.imshow(im[..., 0], cmap="magma", vmin=0, vmax=1)
            else:
                ax.imshow(im[..., 0] if im.shape[-1] == 1 else im.clip(0, 1), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=8)
    fig.subplots_adjust(wspace=0.05, hspace=0.1)
    return save_figure(fig, path, dpi=70)


def save_figure(fig, path, dpi: int = 90):
    """Write a matplotlib figure to path atomically (temp file + os.replace), close it, return path."""
    import matplotlib.pyplot as plt

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def plot_tsne(codebook, counts, path, seed: int = 0):
    """t-SNE (scikit-learn) of the used code vectors, coloured by log usage; None if < 5 codes used."""
    used = (counts > 0).nonzero().flatten()
    if len(used) < 5:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    xy = TSNE(n_components=2, perplexity=min(30.0, (len(used) - 1) / 3), init="pca",
              random_state=seed).fit_transform(codebook[used].numpy())
    fig, ax = plt.subplots(figsize=(5, 4.5), dpi=90)
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=np.log10(counts[used].numpy()), cmap="viridis", s=14)
    for i, k in enumerate(used.tolist()):
        ax.annotate(str(k), xy[i], fontsize=5, alpha=0.6)
    fig.colorbar(sc, label="log10 usage")
    ax.set_title(f"t-SNE of the {len(used)} used code vectors")
    fig.tight_layout()
    return save_figure(fig, path)
