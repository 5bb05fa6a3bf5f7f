"""The GPU timing protocol every `wmfast bench` row on CUDA follows.

- Device time, not wall time: triton.testing.do_bench (CUDA events, warm-up first, the L2 flushed
  before every repetition so nothing is timed out of a warm cache, median and p90).
- The chip's own ceilings measured in the same run: device-to-device copy bandwidth (bytes read +
  written), and 8192^3 matrix products in bf16, TF32 and IEEE fp32 on random data.
- Every row is given as a fraction of its floor: max(FLOPs / rate, bytes / bandwidth) with the rate
  of the precision class it computes in.
On the CPU (tests) the same calls fall back to wall time, so the arithmetic is exercised anywhere.
"""
import statistics
import time

import torch

QUANTILES = (0.5, 0.9)


def device_ms(fn, warmup_ms: float = 25, rep_ms: float = 100) -> dict:
    """{"median_ms", "p90_ms"} of fn() in device time with a cold L2 (wall time on the CPU)."""
    if not torch.cuda.is_available():
        return _wall_ms(fn)
    from triton.testing import do_bench

    median, p90 = do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=list(QUANTILES))
    return {"median_ms": median, "p90_ms": p90}


def _wall_ms(fn, reps: int = 5) -> dict:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return {"median_ms": statistics.median(times), "p90_ms": times[min(len(times) - 1, int(0.9 * len(times)))]}


class tf32_matmul:
    """Context: cuBLAS fp32 products in TF32 (on) or IEEE fp32 (off); restores the setting."""

    def __init__(self, on: bool):
        self.on = on

    def __enter__(self):
        self.saved = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = self.on

    def __exit__(self, *exc):
        torch.backends.cuda.matmul.allow_tf32 = self.saved


def measure_ceilings(device: str = "cuda", copy_bytes: int = 2 << 30, n: int = 8192) -> dict:
    """The chip's measured limits: copy GB/s (read + write) and matrix TFLOP/s per precision class.
    Random inputs (zeros run faster than real data on Hopper)."""
    g = torch.Generator(device=device).manual_seed(0)
    src = torch.rand(copy_bytes // 4, device=device, generator=g)
    dst = torch.empty_like(src)
    t = device_ms(lambda: dst.copy_(src), rep_ms=200)["median_ms"]
    out = {"copy_gb_s": 2 * src.numel() * 4 / (t * 1e-3) / 1e9, "matmul_n": n}
    del src, dst
    for name, dtype, tf32 in (("bf16", torch.bfloat16, False), ("tf32", torch.float32, True),
                              ("fp32", torch.float32, False)):
        a = torch.randn(n, n, device=device, generator=g).to(dtype)
        b = torch.randn(n, n, device=device, generator=g).to(dtype)
        with tf32_matmul(tf32):
            t = device_ms(lambda: a @ b, rep_ms=300)["median_ms"]
        out[f"{name}_tflops"] = 2 * n ** 3 / (t * 1e-3) / 1e12
        del a, b
    # tf32x3 (three TF32 products per fp32 product) computes at a third of the TF32 rate
    out["tf32x3_tflops"] = out["tf32_tflops"] / 3
    out["allow_tf32_default"] = bool(torch.backends.cuda.matmul.allow_tf32)
    return out


def floor_ms(flops: float, nbytes: float, tflops: float, copy_gb_s: float) -> float:
    """The fastest any version could run: the larger of the arithmetic and the memory time."""
    return max(flops / (tflops * 1e12), nbytes / (copy_gb_s * 1e9)) * 1e3
