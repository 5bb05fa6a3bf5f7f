"""Measuring: timing (median, min, max, spread; round-robin), machine facts, JSON reports and text
tables, for the benchmarks (`wmfast bench ...`, through wmfast.bench.common) and the engine's own
reports (export parity). It sits low in the layers (it reads only wmfast.ops' extension flag), so
the engine never imports the benchmark app.

Every benchmark compares against its strongest baseline on the same inputs in the same
process, prints ratios and records the machine, versions and shapes.
"""
import json
import os
import platform
import statistics
import time

import torch


def machine_info(device: str = "cpu") -> dict:
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": device,
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    for mod in ("triton", "onnxruntime", "numpy"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:
            pass
    try:
        from wmfast.ops import HAS_EXTENSION

        info["wmfast_extension"] = HAS_EXTENSION
    except Exception:
        pass
    return info


def _sync(device: str):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def time_fn(fn, *, device: str = "cpu", warmup: int = 2, reps: int = 10, min_time: float = 0.0) -> dict:
    """Median/min/max wall time of fn() in milliseconds (synchronising CUDA around each call)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    start = time.perf_counter()
    while len(times) < reps or (time.perf_counter() - start) < min_time:
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return summarize(times)


def summarize(times: list) -> dict:
    """Median, min, max and spread ((max - min) / median) of repeated timings in ms."""
    med = statistics.median(times)
    return {"median_ms": med, "min_ms": min(times), "max_ms": max(times),
            "spread": (max(times) - min(times)) / med if med > 0 else 0.0, "reps": len(times)}


def time_interleaved(fns: dict, *, device: str = "cpu", warmup: int = 1, reps: int = 5) -> dict:
    """Time several callables round-robin (rep 1 of each, then rep 2, ...), so a change in machine
    load hits every contender alike; {name: summarize(...)} of wall times, plus the same of the
    process's CPU time under "cpu" (on a shared machine wall time also counts the time the process
    waited for a core; CPU time does not, so it is the steadier figure for CPU engines)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    _sync(device)
    times = {name: [] for name in fns}
    cpu = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            _sync(device)
            times[name].append((time.perf_counter() - t0) * 1e3)
            cpu[name].append((time.process_time() - c0) * 1e3)
    return {name: dict(summarize(t), cpu=summarize(cpu[name])) for name, t in times.items()}


def write_json(report: dict, path):
    """Write the report atomically (a killed benchmark never leaves half a file)."""
    if not path:
        return
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=2, default=str)
    os.replace(tmp, path)


def print_table(rows: list, columns: list):
    """Print rows (dicts) as an aligned text table with the given columns."""
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))
