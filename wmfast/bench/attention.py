"""`wmfast bench attention`: pair-window attention, ours vs the baselines, on the same inputs.

Methods (forward, and forward + backward, pooled and not):
  ours            torch.ops.wmfast.pair_attention (C++ kernel on CPU, Triton on CUDA)
  naive           cat the frame pairs into windows -> SDPA -> mean (eager)
  naive_compiled  the same under torch.compile (dynamic shapes, compiled once per mode)
  sdpa_strided    SDPA on an overlapping as_strided view of the frames (no cat), where the backend takes it
  flex            FlexAttention with frame-pair block masks (CUDA only; skipped with a note elsewhere)
Shapes: P in {16, 64, 256}, D in {4, 16, 32, 64}, T in {4, 8} with E = 128 (H = E / D) (or the
shapes given; `make gpu-check` runs GPU_CHECK_SHAPES), the batch sized so each call does about the
same work. Ratios are baseline time / ours, from the fastest of
`reps` repetitions (medians are recorded too).
"""
import math

import torch
import torch.nn.functional as F
from tqdm import tqdm

from wmfast.bench.common import machine_info, print_table, time_fn, write_json
from wmfast.errors import WmfastError
from wmfast.ops import pair_attention
from wmfast.ops.reference import pair_windows

EMBED = 128
# Datasheet peaks of the H100 SXM (dense bf16, HBM3, special-function exp per FA3), for the
# fraction-of-peak columns on that GPU only.
H100_PEAKS = {"bytes_per_s": 3.35e12, "flops": 989e12, "exps_per_s": 3.9e12}


def naive_pair_attention(q, k, v, pool: bool = False):
    """The baseline: materialise the windows, SDPA, mean. q, k, v [B, T, P, H, D]."""
    B, T, P, H, D = q.shape
    qw, kw, vw = (pair_windows(x).reshape(B * (T - 1), 2 * P, H, D).transpose(1, 2) for x in (q, k, v))
    out = F.scaled_dot_product_attention(qw, kw, vw)                       # [B*W, H, 2P, D]
    out = out.transpose(1, 2).reshape(B, T - 1, 2 * P, H, D)
    return out.mean(dim=2) if pool else out


def strided_pair_attention(q, k, v, pool: bool = False):
    """SDPA on overlapping window views [B, W, H, 2P, D] of the frames (no concatenated copy on
    our side; the backend may still copy)."""
    B, T, P, H, D = q.shape

    def windows(x):
        x = x.contiguous()
        s = x.stride()
        return x.as_strided((B, T - 1, H, 2 * P, D), (s[0], s[1], s[3], s[2], s[4]))

    out = F.scaled_dot_product_attention(windows(q), windows(k), windows(v))  # [B, W, H, 2P, D]
    out = out.transpose(2, 3)                                                 # [B, W, 2P, H, D]
    return out.mean(dim=2) if pool else out


def flex_pair_attention_factory(B, T, P, H, device):
    """FlexAttention over stacked queries [Q; Q] (2TP) against K, V (TP): the first copy of frame t
    sees frames t, t+1 (window t), the second sees t-1, t (window t-1). CUDA only."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    n = T * P

    def mask_mod(b, h, q_idx, kv_idx):
        second = q_idx >= n
        qf = (q_idx - second * n) // P
        kf = kv_idx // P
        first_ok = (~second) & (qf <= T - 2) & ((kf == qf) | (kf == qf + 1))
        second_ok = second & (qf >= 1) & ((kf == qf - 1) | (kf == qf))
        return first_ok | second_ok

    block = min(128, max(16, 1 << (2 * P - 1).bit_length()))
    mask = create_block_mask(mask_mod, None, None, 2 * n, n, device=device, BLOCK_SIZE=block)
    flex = torch.compile(flex_attention, dynamic=False)

    def run(q, k, v, pool: bool = False):
        qh, kh, vh = (x.permute(0, 3, 1, 2, 4).reshape(B, H, n, x.shape[-1]) for x in (q, k, v))
        out = flex(torch.cat([qh, qh], dim=2), kh, vh, block_mask=mask)    # [B, H, 2n, D]
        first = out[:, :, :n].reshape(B, H, T, P, -1)[:, :, :-1]            # window t, rows of frame t
        second = out[:, :, n:].reshape(B, H, T, P, -1)[:, :, 1:]            # window t, rows of frame t+1
        win = torch.cat([first, second], dim=3).permute(0, 2, 3, 1, 4)      # [B, W, 2P, H, D]
        return win.mean(dim=2) if pool else win

    return run


# `make gpu-check`: tinyworlds' dynamics attention (P = 256, 8 heads of 16) and a longer clip with
# wider heads; every method compiles once per shape on a GPU, so the set stays this small.
GPU_CHECK_SHAPES = ((256, 16, 4), (64, 32, 8))


def bench_shapes(quick: bool):
    if quick:
        return [(16, 16, 4), (64, 16, 4), (256, 16, 4)]
    return [(P, D, T) for P in (16, 64, 256) for D in (4, 16, 32, 64) for T in (4, 8)]


def parse_shapes(text: str) -> list:
    """"256x16x4,64x32x8" -> [(P, D, T), ...]; D must divide the embedding (128)."""
    shapes = []
    for item in str(text).split(","):
        try:
            P, D, T = (int(v) for v in item.strip().lower().split("x"))
        except ValueError:
            raise WmfastError(f"shapes must be PxDxT items separated by commas (e.g. 256x16x4), got {item!r}") from None
        if P < 1 or D < 1 or T < 2 or EMBED % D:
            raise WmfastError(f"shape {item!r}: need P >= 1, T >= 2 and D dividing {EMBED}")
        shapes.append((P, D, T))
    return shapes


def batch_for(P, T, H, budget):
    """Batch so that B * (T-1) * (2P)^2 * H scores is about `budget`."""
    return max(1, min(256, budget // ((T - 1) * 4 * P * P * H)))


def op_counts(B, T, P, H, D, pool):
    """Minimal bytes, FLOPs and exps of the forward (for the fraction-of-peak columns)."""
    W = T - 1
    bytes_ = 3 * B * T * P * H * D * 2 + (B * W * H * D if pool else B * W * 2 * P * H * D) * 2
    return {"bytes": bytes_, "flops": 16 * B * W * H * P * P * D, "exps": 3 * B * T * H * P * P}


def run_attention_bench(json_path=None, quick: bool = False, device: str = "cpu", dtype: str = "float32",
                        reps: int = 5, shapes=None, max_seconds: float = None):
    """Time every method on every shape; print a table of ratios and write JSON (+ a PNG).
    shapes: [(P, D, T), ...] (default: the grid, or three small ones with quick); max_seconds:
    start no new shape after this long, the first excepted (those left out are named in the notes)."""
    import time

    start = time.perf_counter()
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise WmfastError("bench attention: --device cuda but no CUDA device is available")
    dt = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}.get(dtype)
    if dt is None:
        raise WmfastError(f"bench attention: unknown dtype {dtype!r} (float32, float16, bfloat16)")
    on_gpu = device.startswith("cuda")
    budget = (1 << 20) if quick else (1 << 22)
    if on_gpu:
        budget <<= 6
    compiled = {}
    notes = []
    if not on_gpu:
        notes.append("flex: FlexAttention needs CUDA for block-sparse kernels; skipped on CPU.")
        notes.append("GPU fraction-of-peak columns are only computed on an H100.")
    rows = []
    gen = torch.Generator(device="cpu").manual_seed(0)
    shapes = list(shapes or bench_shapes(quick))
    for i, (P, D, T) in enumerate(tqdm(shapes, desc="bench attention", unit="shape")):
        if i and max_seconds is not None and time.perf_counter() - start > max_seconds:   # the first always runs
            notes.append(f"time budget of {max_seconds:g} s spent: shapes {shapes[i:]} (P, D, T) not measured")
            break
        H = EMBED // D
        B = batch_for(P, T, H, budget)
        q, k, v = (torch.randn(B, T, P, H, D, generator=gen).to(device=device, dtype=dt) for _ in range(3))
        methods = {"ours": pair_attention, "naive": naive_pair_attention, "sdpa_strided": strided_pair_attention}
        if on_gpu:   # one block mask and one compiled kernel per shape, pooled or not
            try:
                methods["flex"] = flex_pair_attention_factory(B, T, P, H, device)
            except Exception as e:  # an older torch without flex_attention
                notes.append(f"flex unavailable: {str(e).splitlines()[0]}")
        for pool in (False, True):
            reference = naive_pair_attention(q.float(), k.float(), v.float(), pool)
            row = {"P": P, "D": D, "T": T, "H": H, "B": B, "pool": pool}
            for mode in ("fwd", "fwd+bwd"):
                # one dynamic-shape compile per (pool, grad mode), reused across shapes
                methods["naive_compiled"] = compiled.setdefault(
                    (pool, mode), torch.compile(naive_pair_attention, dynamic=True))
                for name, fn in methods.items():
                    try:
                        t = time_one(fn, q, k, v, pool, mode, device, reps)
                        row[f"{name}_{mode}_ms"], row[f"{name}_{mode}_min_ms"] = t["median_ms"], t["min_ms"]
                        if mode == "fwd":
                            with torch.no_grad():
                                row[f"{name}_max_err"] = float((fn(q, k, v, pool).float() - reference).abs().max())
                    except Exception as e:
                        row[f"{name}_{mode}_ms"] = None
                        notes.append(f"{name} P={P} D={D} T={T} pool={pool} {mode}: {type(e).__name__}: "
                                     f"{str(e).splitlines()[0][:160]}")
                # ratios of the fastest repetition: robust on a shared machine, where medians
                # carry other processes' load
                ours = row.get(f"ours_{mode}_min_ms")
                for name in methods:
                    base = row.get(f"{name}_{mode}_min_ms")
                    if name != "ours" and ours and base:
                        row[f"x_{name}_{mode}"] = base / ours
            if on_gpu and "H100" in torch.cuda.get_device_name() and row.get("ours_fwd_ms"):
                counts = op_counts(B, T, P, H, D, pool)
                seconds = row["ours_fwd_ms"] / 1e3
                row["fwd_frac_bandwidth"] = counts["bytes"] / seconds / H100_PEAKS["bytes_per_s"]
                row["fwd_frac_matmul"] = counts["flops"] / seconds / H100_PEAKS["flops"]
                row["fwd_frac_exp"] = counts["exps"] / seconds / H100_PEAKS["exps_per_s"]
            rows.append(row)
    report = {"benchmark": "attention", "machine": machine_info(device), "dtype": dtype, "embed_dim": EMBED,
              "quick": quick, "reps": reps, "shapes": shapes, "seconds": round(time.perf_counter() - start, 1),
              "notes": sorted(set(notes)), "rows": rows}
    columns = ["P", "D", "T", "B", "pool", "ours_fwd_ms", "x_naive_fwd", "x_naive_compiled_fwd",
               "x_sdpa_strided_fwd", "ours_fwd+bwd_ms", "x_naive_fwd+bwd", "x_naive_compiled_fwd+bwd",
               "x_sdpa_strided_fwd+bwd"]
    if on_gpu:
        columns += ["x_flex_fwd", "x_flex_fwd+bwd", "fwd_frac_bandwidth", "fwd_frac_exp"]
    print_table(rows, columns)
    for note in report["notes"]:
        print("note:", note)
    if json_path:
        write_json(report, json_path)
        plot_speedups(rows, str(json_path).rsplit(".", 1)[0] + ".png")
    return report


def time_one(fn, q, k, v, pool, mode, device, reps):
    if mode == "fwd":
        def call():
            with torch.no_grad():
                fn(q, k, v, pool)
        return time_fn(call, device=device, warmup=1, reps=reps)
    leaves = [x.detach().requires_grad_() for x in (q, k, v)]

    def call():
        out = fn(*leaves, pool)
        out.backward(torch.ones_like(out))
    return time_fn(call, device=device, warmup=1, reps=reps)


def plot_speedups(rows, png_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    for ax, mode in zip(axes, ("fwd", "fwd+bwd")):
        labels = [f"P{r['P']} D{r['D']} T{r['T']}{' pool' if r['pool'] else ''}" for r in rows]
        for name in ("naive", "naive_compiled", "sdpa_strided", "flex"):
            ys = [r.get(f"x_{name}_{mode}") or math.nan for r in rows]
            if not all(math.isnan(y) for y in ys):
                ax.plot(range(len(rows)), ys, "o-", label=f"vs {name}")
        ax.axhline(1.0, color="gray", lw=0.8)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(labels, rotation=90, fontsize=6)
        ax.set_title(f"pair_attention speedup ({mode})")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("baseline time / ours")
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
