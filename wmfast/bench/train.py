"""`wmfast bench train --nproc 1,2 --json F`: training throughput per stage on 1..N processes.

For each process count N, the three stages are trained in order (tokenizer, actions, dynamics) in
a fresh run directory with the same global batch, seed and data, through the real entry points
(`python -m wmfast train ...` for N = 1, the --nproc launcher for N > 1), logging every step.
Reported per stage and N: samples/s (global batch / median step time after the first steps),
scaling efficiency = samples/s(N) / (N x samples/s(1)), and the largest relative difference of
the per-step loss from the 1-process run (which should be float rounding).
Every process gets the same number of threads (--threads, default 1: like one GPU per process),
so efficiency = 1 means N processes train N times as fast; below 1 is DDP's overhead (gradient
all-reduce, metrics all-reduce) plus contention for the machine's cores and memory.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

from wmfast.bench.common import machine_info, print_table, write_json
from wmfast.errors import WmfastError

STAGES = ("tokenizer", "actions", "dynamics")


def _train_command(stage, run, nproc, preset, steps, batch_size, data, device, seed):
    return [sys.executable, "-m", "wmfast", "train", stage, "--run-dir", run, "--data", data, "--preset", preset,
            "--steps", str(steps), "--batch-size", str(batch_size), "--warmup-steps", "5", "--log-every", "1",
            "--save-every", str(steps + 1), "--seed", str(seed), "--device", device, "--nproc", str(nproc)]


def _step_rows(run, stage):
    with open(os.path.join(run, stage, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def _median(values):
    values = sorted(values)
    return values[len(values) // 2] if values else float("nan")


def run_train_bench(json_path=None, nprocs=(1, 2), preset: str = "tiny", steps: int = 30, skip: int = 10,
                    batch_size: int = 8, data: str = "game:pong:8", device: str = "auto", seed: int = 0,
                    out_dir: str = None, threads: int = 1) -> dict:
    """Train every stage at each process count; returns (and writes) the report."""
    nprocs = sorted({int(n) for n in nprocs})
    if not nprocs or nprocs[0] < 1:
        raise WmfastError(f"--nproc needs process counts >= 1, got {nprocs}")
    if 1 not in nprocs:
        nprocs = [1] + nprocs                     # the baseline
    bad = [n for n in nprocs if batch_size % n]
    if bad:
        raise WmfastError(f"--batch-size {batch_size} does not split evenly over {bad} processes")
    if steps <= skip + 2:
        raise WmfastError(f"--steps {steps} must exceed the {skip} warm-up steps by at least 3")
    from wmfast.data import load_dataset

    load_dataset(data)                            # generate and cache once, outside the timings
    root = out_dir or tempfile.mkdtemp(prefix="wmfast-bench-train-")
    rows, losses = [], {}
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    for n in nprocs:
        run = os.path.join(root, f"nproc{n}")
        for stage in STAGES:
            t0 = time.perf_counter()
            done = subprocess.run(_train_command(stage, run, n, preset, steps, batch_size, data, device, seed),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
            wall = time.perf_counter() - t0
            if done.returncode != 0:
                raise WmfastError(f"bench train: {stage} on {n} processes failed:\n{done.stdout[-2000:]}")
            steps_rows = _step_rows(run, stage)
            step_s = _median([batch_size / r["samples_per_s"] for r in steps_rows[skip:]])
            losses[(stage, n)] = [r["loss"] for r in steps_rows]
            rows.append({"stage": stage, "nproc": n, "samples_per_s": batch_size / step_s,
                         "step_ms": 1e3 * step_s, "wall_s_with_startup": wall})
    base = {r["stage"]: r["samples_per_s"] for r in rows if r["nproc"] == 1}
    for r in rows:
        r["speedup"] = r["samples_per_s"] / base[r["stage"]]
        r["scaling_efficiency"] = r["speedup"] / r["nproc"]
        ref, got = losses[(r["stage"], 1)], losses[(r["stage"], r["nproc"])]
        r["max_rel_loss_diff_vs_1"] = max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(ref, got))
    report = {"benchmark": "train", "machine": machine_info("cuda" if device.startswith("cuda") else "cpu"),
              "load_average": os.getloadavg(), "preset": preset, "steps": steps, "timed_steps": steps - skip,
              "global_batch": batch_size, "data": data, "device": device, "threads_per_process": threads,
              "rows": rows,
              "note": "samples/s = global batch / median step time (rank 0's clock, steps after the first "
                      f"{skip}); processes share the machine's cores"}
    if out_dir is None:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    print_table(rows, ["stage", "nproc", "samples_per_s", "step_ms", "speedup", "scaling_efficiency",
                       "max_rel_loss_diff_vs_1"])
    write_json(report, json_path)
    return report

