"""`make gpu-check`: on a CUDA machine, the GPU test subset and every benchmark in under 8 minutes,
results as JSON under benchmarks/results/.

Each part runs in its own subprocess with its own time limit, so a hang, a crash or a missing
package costs that part only: its exit code, time, error tail and any JSON it wrote are recorded
in benchmarks/results/gpu-check.json (written after every part), and the next part runs.

    python benchmarks/gpu_check.py [--only NAME ...] [--out DIR] [--budget SECONDS]
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "benchmarks", "results")
PY = sys.executable
# (name, command given its JSON result path, time limit in s), most wanted first. Each part gets
# at most its limit and what is left of the whole budget (--budget, default 450 s: with the
# `pip install` before it, the check fits in 8 minutes of GPU time); a part that would get less
# than MIN_PART_S is not started, and the summary says so.
PARTS = [
    # first: where one World frame's time goes (torch.profiler, top kernels), and steady-state frame
    # times with CUDA events, eager and torch.compile, batch 1 and 32
    ("world", lambda out: [PY, "-c", "from wmfast.bench.world_gpu import run_world_gpu_benchmark; "
                           f"run_world_gpu_benchmark({out!r})"], 140),
    # device time with a cold L2 against addmm + argmin in the same precision class, with the chip's
    # ceilings measured in the same run
    ("bench-vq", lambda out: [PY, "-m", "wmfast", "bench", "vq", "--device", "cuda", "--json", out], 120),
    # both shapes (every method compiles once per shape)
    ("bench-attention", lambda out: [PY, "-m", "wmfast", "bench", "attention", "--device", "cuda", "--reps", "5",
                                     "--shapes", "256x16x4,64x32x8", "--max-seconds", "60", "--json", out], 85),
    # a CPU-only test file whose optional dependency the GPU image lacks must not stop the GPU tests
    ("gpu-tests", lambda out: [PY, "-m", "pytest", "tests", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                               "--continue-on-collection-errors", f"--junitxml={out[:-5]}.xml"], 105),
]
BUDGET_S, MIN_PART_S = 450, 20


def plan(parts, only=None, budget: float = BUDGET_S, spent: float = 0.0):
    """The parts to run (name, command, limit), their limits cut to the budget left after the
    limits before them; parts left out get the reason instead of a limit."""
    out, left = [], budget - spent
    for name, command, limit in parts:
        if only and name not in only:
            continue
        if left < MIN_PART_S:
            out.append((name, command, None, f"not run: {max(left, 0):.0f} s of the {budget:g} s budget left"))
            continue
        out.append((name, command, min(limit, left), None))
        left -= min(limit, left)
    return out


def gpu_facts() -> dict:
    facts = {"python": platform.python_version()}
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        facts["nvidia_smi"] = out.stdout.strip() or out.stderr.strip()[-300:]
    except (OSError, subprocess.TimeoutExpired) as e:
        facts["nvidia_smi"] = f"unavailable: {e}"
    return facts


def run_part(name, command, limit, out_dir) -> dict:
    path = os.path.join(out_dir, f"gpu-{name}.json")
    cmd = command(path)
    t0 = time.time()
    # recorded as a user would type it: no interpreter or output paths of the machine that ran it
    shown = ["python" if c == PY else os.path.basename(c) if c.startswith(out_dir) else c for c in cmd]
    entry = {"name": name, "command": " ".join(shown).replace(repr(path), repr(os.path.basename(path))),
             "limit_s": limit}
    env = dict(os.environ, PYTHONUNBUFFERED="1", WMFAST_TEST_THREADS=os.environ.get("WMFAST_TEST_THREADS", "4"))
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=limit, env=env)
        entry.update(returncode=proc.returncode, ok=proc.returncode == 0,
                     tail=(proc.stdout + proc.stderr).replace(REPO + os.sep, "")[-3000:])
    except subprocess.TimeoutExpired as e:
        tail = ((e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or ""))
        entry.update(returncode=None, ok=False, error=f"timed out after {limit} s", tail=tail[-3000:])
    except Exception as e:                                  # the part could not even start
        entry.update(returncode=None, ok=False, error=f"{type(e).__name__}: {e}")
    entry["seconds"] = round(time.time() - t0, 1)
    if os.path.exists(path):
        entry["result"] = os.path.basename(path)       # beside gpu-check.json
    return entry


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=None, help="run only these parts")
    ap.add_argument("--out", default=RESULTS, help="results folder")
    ap.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for all parts together")
    a = ap.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    summary = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "gpu": gpu_facts(),
               "budget_s": a.budget, "parts": []}
    start = time.time()
    for name, command, limit, skipped in plan(PARTS, a.only, a.budget):
        left = a.budget - (time.time() - start)
        if skipped is None and left < MIN_PART_S:
            skipped = f"not run: {max(left, 0):.0f} s of the {a.budget:g} s budget left"
        elif skipped is None:   # re-cut to what is really left (parts usually end before their limits)
            limit = min(limit, left)
        if skipped is not None:
            entry = {"name": name, "ok": False, "skipped": skipped, "seconds": 0.0}
            print(f"gpu-check: {name}: {skipped}", flush=True)
        else:
            print(f"gpu-check: {name} (limit {limit:.0f} s) ...", flush=True)
            entry = run_part(name, command, round(limit), a.out)
            print(f"gpu-check: {name}: {'ok' if entry['ok'] else 'FAILED'} in {entry['seconds']} s"
                  + (f" ({entry.get('error')})" if entry.get("error") else ""), flush=True)
        summary["parts"].append(entry)
        summary["seconds"] = round(time.time() - start, 1)
        with open(os.path.join(a.out, "gpu-check.json"), "w") as f:
            json.dump(summary, f, indent=2)
    failed = [p["name"] for p in summary["parts"] if not p["ok"]]
    print(f"gpu-check: {len(summary['parts']) - len(failed)}/{len(summary['parts'])} parts ok"
          + (f"; failed or not run: {failed}" if failed else "") + f"; results in {os.path.relpath(a.out, REPO)}/")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
