"""`wmfast bench vq`: the fused nearest-code lookup against the usual ways to write it.

Methods, all on the same fp32 inputs in this process, each returning indices and codes:
  ours     wmfast.ops.vq_lookup (C++ kernel on CPU, Triton on CUDA; also returns distances)
  expand   addmm(||c||^2, z, c.T, alpha=-2).argmin(1), codebook[idx]   ("matmul expansion", the norm
           folded into the GEMM: one N x K buffer, the strongest plain-PyTorch form)
  cdist    torch.cdist(z, c).argmin(1), codebook[idx]
  faiss    faiss.IndexFlatL2(D) over the codebook (built outside the timing), search k=1 (CPU)
Per shape and thread count: median ms, ratio of each baseline's time to ours, GFLOP/s
(2 N K D per call) as a fraction of the sgemm rate measured in the same rounds, and peak extra
memory. Timing and memory are separate passes: every shape is timed first (>= 5 interleaved
rounds, median and spread) with the default allocator; then, on CPU, a fresh process pins glibc's
mmap threshold at 64 KiB (so freed buffers leave the RSS) and measures each method's peak
resident-set growth during one call (Linux VmHWM, reset through /proc/self/clear_refs); on CUDA,
torch's peak allocated bytes. Both include the outputs (reported
separately as output_mib). A baseline whose
N x K fp32 score matrix exceeds --max-baseline-gib is skipped and the reason recorded.
"""
import ctypes
import math
import os
import statistics
import time

import torch
from tqdm import tqdm

from wmfast.bench.common import machine_info, print_table, time_fn, write_json
from wmfast.ops import vq_lookup

FULL_GRID = {"N": (4096, 65536, 262144), "K": (256, 1024, 8192), "D": (32, 128)}
QUICK_GRID = {"N": (4096,), "K": (256, 1024), "D": (32,)}
HEADLINE = (65536, 1024, 32)
METHODS = ("ours", "expand", "cdist", "faiss")


# -- methods -----------------------------------------------------------------------------------
def make_methods(z, codebook):
    """name -> zero-argument callable (None where unavailable), plus why unavailable."""
    methods, missing = {}, {}
    methods["ours"] = lambda: vq_lookup(z, codebook)

    def expand():
        c2 = codebook.pow(2).sum(-1)                                      # [K]
        idx = torch.addmm(c2, z, codebook.T, alpha=-2).argmin(-1)         # one [N, K] score buffer
        return idx, codebook.index_select(0, idx)

    def cdist():
        idx = torch.cdist(z, codebook).argmin(-1)
        return idx, codebook.index_select(0, idx)

    methods["expand"], methods["cdist"] = expand, cdist
    if z.is_cuda:
        missing["faiss"] = "faiss-cpu runs on the CPU only"
        return methods, missing
    try:
        import faiss
    except ImportError:
        missing["faiss"] = "faiss is not installed (pip install wmfast[bench])"
        return methods, missing
    index = faiss.IndexFlatL2(codebook.shape[1])
    index.add(codebook.numpy())
    zn = z.numpy()

    def faiss_search():
        _, labels = index.search(zn, 1)
        idx = torch.from_numpy(labels[:, 0])
        return idx, codebook.index_select(0, idx)

    methods["faiss"] = faiss_search
    return methods, missing


# -- measurement helpers -----------------------------------------------------------------------
def pin_malloc_mmap_threshold(nbytes: int = 64 * 1024) -> bool:
    """Make glibc serve every allocation >= nbytes with mmap (and unmap it on free), so the
    RSS follows live buffers. Returns False where that is not possible (non-glibc)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        M_MMAP_THRESHOLD = -3
        return bool(libc.mallopt(M_MMAP_THRESHOLD, nbytes))
    except (OSError, AttributeError):
        return False


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def peak_extra_mib(fn):
    """One fn() call -> (peak RSS growth in MiB during it, or None without /proc; its output)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")                                                  # resets VmHWM to the current RSS
        before = _status_kib("VmRSS:")
    except OSError:
        return None, fn()
    out = fn()
    return max(0.0, (_status_kib("VmHWM:") - before) / 1024), out


def peak_extra_cuda_mib(fn):
    """One fn() call -> (peak growth of CUDA memory allocated by torch, in MiB; its output)."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    out = fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2 ** 20, out


def sgemm_gflops(device: str = "cpu", n: int = 1024) -> float:
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    t = time_fn(lambda: a @ b, device=device, warmup=2, reps=7)
    return 2 * n ** 3 / (t["median_ms"] * 1e-3) / 1e9


# -- the benchmark -----------------------------------------------------------------------------
def run_vq_benchmark(json_path=None, threads=(1, 2), quick: bool = False, device: str = "cpu",
                     max_baseline_gib: float = 2.0, budget_s: float = 3.0, png_path=None, grid: dict = None):
    """Run the grid (or `grid`, a dict with any of N, K, D replacing the default's lists);
    print one table per thread count; write JSON (and a PNG of the speedups beside it).
    Returns the report dict."""
    if str(device).startswith("cuda"):
        return run_vq_gpu_benchmark(json_path, quick=quick)
    grid = {**(QUICK_GRID if quick else FULL_GRID), **(grid or {})}
    if quick:
        budget_s = min(budget_s, 0.5)
    shapes = [(N, K, D) for D in grid["D"] for K in grid["K"] for N in grid["N"]]
    report = {
        "benchmark": "vq_lookup", "device": device, "dtype": "float32", "quick": quick,
        "machine": machine_info(device), "aten_cpu_capability": os.environ.get("ATEN_CPU_CAPABILITY", "auto"),
        "memory_method": ("peak RSS growth during one call (VmHWM after /proc/self/clear_refs), glibc mmap "
                          "threshold pinned at 64 KiB in a pass after all timing; includes the outputs")
        if device == "cpu"
        else "torch.cuda.max_memory_allocated growth during one call; includes the outputs",
        "max_baseline_gib": max_baseline_gib, "sgemm_gflops": {}, "rows": [],
    }
    saved_threads = torch.get_num_threads()
    progress = tqdm(total=len(threads) * len(shapes), desc="bench vq", unit="shape")
    try:
        for nt in threads:
            torch.set_num_threads(nt)
            _set_faiss_threads(nt)
            report["sgemm_gflops"][str(nt)] = sgemm_gflops(device)
            for N, K, D in shapes:
                report["rows"].append(bench_shape(N, K, D, nt, device, max_baseline_gib, budget_s))
                progress.update()
                write_json(report, json_path)                             # partial results survive a kill
        memory_pass(report, device)
        write_json(report, json_path)
    finally:
        progress.close()
        torch.set_num_threads(saved_threads)
    report["targets"] = check_targets(report["rows"])
    print_report(report)
    write_json(report, json_path)
    if json_path or png_path:
        png = plot_speedups(report, png_path or os.path.splitext(json_path)[0] + ".png")
        report["png"] = os.path.relpath(png, os.path.dirname(os.path.abspath(json_path))) if json_path else png
        write_json(report, json_path)
    return report


def _set_faiss_threads(n: int):
    try:
        import faiss

        faiss.omp_set_num_threads(n)
    except ImportError:
        pass


def bench_shape(N, K, D, nt, device, max_baseline_gib, budget_s):
    """One shape at one thread count. Every method is called once (warm-up and its indices),
    then timed in 5 to 7 interleaved rounds (one call of each per round, plus a 1024^3 sgemm),
    so load changes on a shared machine hit every method alike."""
    z, codebook = shape_inputs(N, K, D, device)
    methods, missing = make_methods(z, codebook)
    flops = 2.0 * N * K * D
    row = {"N": N, "K": K, "D": D, "threads": nt,
           "output_mib": (N * 8 + N * D * 4 + N * 4) / 2 ** 20, "nk_fp32_gib": N * K * 4 / 2 ** 30}
    active = {}
    for name in METHODS:
        if name in missing:
            row[f"{name}_skipped"] = missing[name]
        elif name in ("expand", "cdist") and row["nk_fp32_gib"] > max_baseline_gib:
            row[f"{name}_skipped"] = (f"its N x K fp32 scores need {row['nk_fp32_gib']:.1f} GiB "
                                      f"> --max-baseline-gib {max_baseline_gib}")
        else:
            active[name] = methods[name]
    first_s, ref_idx = {}, None
    for name, fn in active.items():
        t0 = time.perf_counter()
        out = fn()
        if device != "cpu":
            torch.cuda.synchronize()
        first_s[name] = time.perf_counter() - t0
        idx = out[0].reshape(-1)
        del out
        if name == "ours":
            ref_idx = idx
        else:
            row[f"{name}_index_agreement"] = float((idx == ref_idx).float().mean())
    a = torch.randn(1024, 1024, device=device)
    timed = {**active, "sgemm": lambda: a @ a}
    rounds = int(max(5, min(7, 3 * budget_s // max(max(first_s.values()), 1e-6))))
    samples = {name: [] for name in timed}
    for _ in range(rounds):
        for name, fn in timed.items():
            samples[name].append(time_fn(fn, device=device, warmup=0, reps=1)["median_ms"])
    row["rounds"] = rounds
    row["sgemm_gflops"] = 2 * 1024 ** 3 / (statistics.median(samples.pop("sgemm")) * 1e-3) / 1e9
    for name, times in samples.items():
        row[f"{name}_ms"] = statistics.median(times)
        row[f"{name}_spread"] = (max(times) - min(times)) / row[f"{name}_ms"]
        row[f"{name}_gflops"] = flops / (row[f"{name}_ms"] * 1e-3) / 1e9
        row[f"{name}_frac_sgemm"] = row[f"{name}_gflops"] / row["sgemm_gflops"]
    for name in samples:
        if name != "ours" and "ours_ms" in row:
            row[f"x_{name}"] = row[f"{name}_ms"] / row["ours_ms"]       # > 1: ours is faster
    return row


def shape_inputs(N, K, D, device):
    gen = torch.Generator().manual_seed(N * 31 + K * 7 + D)
    return torch.randn(N, D, generator=gen).to(device), torch.randn(K, D, generator=gen).to(device)


def memory_pass(report, device):
    """Peak memory of every timed method, measured apart from the timing: on CPU in a fresh process
    with the mmap threshold pinned (a pinned allocator would slow the timed calls, and memory the
    timing pass freed would hide RSS growth)."""
    if device != "cpu":
        for row in report["rows"]:
            measure_memory(row, device)
        return
    import json
    import subprocess
    import sys

    code = "from wmfast.bench.vq import memory_worker; memory_worker()"
    proc = subprocess.run([sys.executable, "-c", code], input=json.dumps(report["rows"]), capture_output=True,
                          text=True, timeout=3600)
    if proc.returncode != 0:
        report["memory_error"] = proc.stderr.strip()[-500:]
        return
    measured = json.loads(proc.stdout.strip().splitlines()[-1])
    report["malloc_pinned_for_memory"] = measured["pinned"]
    for row, peaks in zip(report["rows"], measured["peaks"]):
        row.update(peaks)


def memory_worker():
    """memory_pass's fresh process: rows (JSON) on stdin -> {"pinned", "peaks": [{name_peak_mib}]} on stdout."""
    import json
    import sys

    pinned = pin_malloc_mmap_threshold()
    peaks = []
    for row in json.load(sys.stdin):
        torch.set_num_threads(row["threads"])
        measured = {k: v for k, v in row.items() if k in ("N", "K", "D") or k.endswith("_ms")}
        measure_memory(measured, "cpu")
        peaks.append({k: v for k, v in measured.items() if k.endswith("_peak_mib")})
    print(json.dumps({"pinned": pinned, "peaks": peaks}))


def measure_memory(row, device):
    """Peak extra memory of one call of each method that was timed in `row` (the memory pass)."""
    z, codebook = shape_inputs(row["N"], row["K"], row["D"], device)
    methods, _ = make_methods(z, codebook)
    for name in METHODS:
        if f"{name}_ms" in row:
            row[f"{name}_peak_mib"], out = (peak_extra_mib if device == "cpu" else peak_extra_cuda_mib)(methods[name])
            del out


def check_targets(rows):
    """The issue's CPU targets, judged on the measured rows (None where not measured)."""
    def ratios(key, pred):
        return [r[key] for r in rows if key in r and pred(r)]

    out = {}
    for nt in sorted({r["threads"] for r in rows}):
        head = [r for r in rows if (r["N"], r["K"], r["D"]) == HEADLINE and r["threads"] == nt]
        small_d = ratios("x_expand", lambda r: r["D"] <= 32 and r["threads"] == nt)
        big_d = ratios("x_expand", lambda r: r["D"] == 128 and r["threads"] == nt)
        vs_faiss = ratios("x_faiss", lambda r: r["D"] >= 32 and r["threads"] == nt)
        out[str(nt)] = {
            "headline_x_expand": head[0].get("x_expand") if head else None,
            "min_x_expand_D<=32 (target >= 2)": min(small_d) if small_d else None,
            "min_x_expand_D=128 (target >= 1.5)": min(big_d) if big_d else None,
            "min_x_faiss_D>=32 (target >= 1)": min(vs_faiss) if vs_faiss else None,
        }
    return out


def print_report(report):
    m = report["machine"]
    print(f"vq_lookup fp32 on {m.get('cpu_model', m.get('processor'))} ({m['cpu_count']} cpus), "
          f"torch {m['torch']}, extension {m.get('wmfast_extension')}")
    for nt, rate in report["sgemm_gflops"].items():
        print(f"\nthreads={nt}: sgemm {rate:.1f} GFLOP/s (1024^3, before the grid; each row has its own)")
        rows = [r for r in report["rows"] if str(r["threads"]) == nt]
        print_table(rows, ["N", "K", "D", "ours_ms", "expand_ms", "cdist_ms", "faiss_ms", "x_expand", "x_cdist",
                           "x_faiss", "ours_gflops", "sgemm_gflops", "ours_frac_sgemm", "ours_peak_mib", "expand_peak_mib",
                           "faiss_peak_mib"])
    skipped = {(r["N"], r["K"], r["D"]): r[k] for r in report["rows"] for k in r if k.endswith("_skipped")}
    for shape, why in skipped.items():
        print(f"skipped at N,K,D={shape}: {why}")
    print("\ntargets:", report["targets"])


def plot_speedups(report, path):
    """Bar chart of baseline time / ours per shape and thread count (> 1: ours is faster)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    labels = [f"{r['N']}x{r['K']}x{r['D']}/{r['threads']}t" for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(rows)), 4), dpi=100)
    width = 0.27
    for i, name in enumerate(("expand", "cdist", "faiss")):
        vals = [r.get(f"x_{name}", math.nan) for r in rows]
        ax.bar([j + (i - 1) * width for j in range(len(rows))], vals, width, label=f"{name} / ours")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(labels, rotation=70, fontsize=7)
    ax.set_ylabel("speedup of ours (x)")
    ax.set_title("vq_lookup fp32: baseline time / wmfast time (N x K x D / threads)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# -- CUDA: the device-time protocol (wmfast.bench.protocol) --------------------------------------
# (N, K, D, dtype): the target shapes, and N = 4096 over every K and D (timed on the wall
# too: there launch and host overhead are most of the time).
GPU_ROWS = [(65536, 1024, 32, "fp32"), (262144, 1024, 128, "fp32"), (65536, 8192, 128, "fp32"),
            (262144, 8192, 128, "bf16"), (65536, 1024, 32, "bf16")] + \
           [(4096, K, D, "fp32") for D in (32, 128) for K in (256, 8192)]
GPU_QUICK_ROWS = [(4096, 1024, 32, "fp32"), (65536, 1024, 32, "bf16")]
GPU_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def gpu_methods(z, codebook):
    """ours and the strongest plain-PyTorch form, doing the same work: indices and codes, no
    NaN check on either side. In fp32 the baseline's product is IEEE fp32 cuBLAS (TF32 off, the
    fp32-accurate class ours is in through tf32x3); in bf16 both multiply in bf16."""
    from wmfast.bench.protocol import tf32_matmul

    def ours():
        return vq_lookup(z, codebook, check_finite=False)

    def expand():
        with tf32_matmul(False):
            c2 = codebook.float().pow(2).sum(-1).to(codebook.dtype)
            idx = torch.addmm(c2, z, codebook.T, alpha=-2).argmin(-1)
        return idx, codebook.index_select(0, idx)

    return {"ours": ours, "expand": expand}


def wall_ms_per_call(fn, calls: int = 200) -> float:
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1e3 / calls


def run_vq_gpu_benchmark(json_path=None, quick: bool = False, rows=None):
    """Device-time rows (cold L2, median and p90) of ours against addmm + argmin in the same
    precision class, each as a fraction of its floor from the chip's ceilings measured first."""
    from wmfast.bench.protocol import device_ms, floor_ms, measure_ceilings

    report = {"benchmark": "vq_lookup", "device": "cuda", "machine": machine_info("cuda"),
              "protocol": "triton.testing.do_bench: CUDA events, L2 flushed before each repetition, median/p90; "
                          "ours with check_finite=False (no NaN check on either side); N=4096 rows also "
                          "on the wall (200 back-to-back calls, host overhead included)",
              "ceilings": measure_ceilings("cuda"), "rows": []}
    ceil = report["ceilings"]
    for N, K, D, dt in tqdm(rows or (GPU_QUICK_ROWS if quick else GPU_ROWS), desc="bench vq (cuda)", unit="shape"):
        dtype = GPU_DTYPES[dt]
        z, codebook = (x.to(dtype) for x in shape_inputs(N, K, D, "cuda"))
        methods = gpu_methods(z, codebook)
        elem = z.element_size()
        flops, nbytes = 2.0 * N * K * D, (N * D + K * D) * elem + N * (8 + 4 + D * elem)
        rate = ceil["tf32x3_tflops"] if dt == "fp32" else ceil["bf16_tflops"]
        row = {"N": N, "K": K, "D": D, "dtype": dt, "floor_ms": floor_ms(flops, nbytes, rate, ceil["copy_gb_s"]),
               "floor_class": "tf32x3 rate" if dt == "fp32" else "bf16 rate"}
        outs = {name: fn()[0] for name, fn in methods.items()}
        row["index_agreement"] = float((outs["ours"] == outs["expand"]).float().mean())
        for name, fn in methods.items():
            t = device_ms(fn)
            row[f"{name}_ms"], row[f"{name}_p90_ms"] = t["median_ms"], t["p90_ms"]
            row[f"{name}_frac_floor"] = row["floor_ms"] / t["median_ms"]
            if N <= 4096:
                row[f"{name}_wall_ms"] = wall_ms_per_call(fn)
        row["x_expand"] = row["expand_ms"] / row["ours_ms"]
        if "ours_wall_ms" in row:
            row["x_expand_wall"] = row["expand_wall_ms"] / row["ours_wall_ms"]
        report["rows"].append(row)
        write_json(report, json_path)
        del z, codebook, outs
        torch.cuda.empty_cache()
    print(f"ceilings: {', '.join(f'{k} {v:.1f}' for k, v in ceil.items() if isinstance(v, float))}")
    print_table(report["rows"], ["N", "K", "D", "dtype", "ours_ms", "expand_ms", "x_expand", "x_expand_wall",
                                 "ours_frac_floor", "expand_frac_floor", "index_agreement"])
    write_json(report, json_path)
    return report
