"""`wmfast bench serve`: N concurrent websocket players against a real `wmfast serve` process.

Each player connects, starts from a held-out episode (or a random clip when the run has no
dataset), and steps for a fixed number of frames with random actions, one step in flight, as
the page does. Measured per player count: frames/s per player, step latency p50/p99 (send to
frame received), total frames/s, errors, server memory (its /api/stats). Side by side, the same
load on a server with batching off (one World per player, each stepped at batch 1): the
throughput batching buys. The server is a separate process, so clients and server do not share a
GIL; on a small machine they share the CPU, which the machine facts and load average record.
"""
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np

from wmfast.errors import WmfastError
from wmfast.serve.app import HEADER


class ServerProcess:
    """`python -m wmfast serve` on 127.0.0.1 with a free port, stopped on exit."""

    def __init__(self, run: str, mode: str, steps: int, max_sessions: int, batching: bool = True,
                 threads: int = 0, data: str = None):
        self.cmd = [sys.executable, "-m", "wmfast", "serve", "--run", run, "--host", "127.0.0.1", "--port", "0",
                    "--mode", mode, "--maskgit-steps", str(steps), "--max-sessions", str(max_sessions),
                    "--log-level", "warning", "--threads", str(threads)]
        self.cmd += [] if batching else ["--no-batching"]
        self.cmd += ["--data", data] if data else []

    def __enter__(self):
        # stderr to a file: a pipe nobody reads would block the server once full
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline()            # "wmfast serve: NAME on http://127.0.0.1:PORT/ ..."
        if " on http://" not in line:
            self.proc.kill()
            self.proc.wait()
            self.log.seek(0)
            raise WmfastError(f"the server did not start: {(line + self.log.read())[-400:]}")
        self.url = line.split(" on ", 1)[1].split()[0].rstrip("/")
        return self

    def stats(self) -> dict:
        with urllib.request.urlopen(self.url + "/api/stats", timeout=10) as r:
            return json.load(r)

    def models(self) -> dict:
        with urllib.request.urlopen(self.url + "/api/models", timeout=10) as r:
            return json.load(r)

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.log.close()


async def _player(url: str, start: dict, num_actions: int, frames: int, warmup: int, seed: int, barrier):
    """One player: start, warm up, then `frames` timed steps. -> (latencies ms, seconds, errors)."""
    import websockets

    rng = np.random.default_rng(seed)
    latencies, errors = [], []
    async with websockets.connect(url.replace("http", "ws") + "/ws", max_size=1 << 22) as ws:
        async def reply():
            while True:
                msg = await ws.recv()
                if isinstance(msg, bytes):
                    return msg
                data = json.loads(msg)
                if data.get("type") == "error":
                    errors.append(data["message"])
                    return None

        await ws.send(json.dumps({"type": "start", **start}))
        await reply()
        for i in range(warmup + frames):
            if i == warmup:
                await barrier()
                t_start = time.perf_counter()
            t0 = time.perf_counter()
            await ws.send(json.dumps({"type": "step", "action": int(rng.integers(num_actions)), "seq": i}))
            msg = await reply()
            if msg is None or len(msg) < HEADER.size or HEADER.unpack(msg[:HEADER.size])[0] != i:
                errors.append(f"step {i}: no frame or the wrong frame")
                continue
            if i >= warmup:
                latencies.append(1e3 * (time.perf_counter() - t0))
        seconds = time.perf_counter() - t_start
    return latencies, seconds, errors


async def _run_players(url: str, model: dict, n: int, frames: int, warmup: int, mode: str, steps: int):
    episodes = model["episodes"] or [None]
    arrived, go = [0], asyncio.Event()

    async def barrier():                                # timing starts when every player is warm
        arrived[0] += 1
        if arrived[0] == n:
            go.set()
        try:
            await asyncio.wait_for(go.wait(), 120)
        except asyncio.TimeoutError:                    # a player failed to warm up: time the rest anyway
            pass

    starts = []
    for i in range(n):
        start = {"model": model["name"], "mode": mode, "steps": steps}
        if episodes[0] is not None:
            start["episode"] = episodes[i % len(episodes)]
        starts.append(start)
    t0 = time.perf_counter()
    out = await asyncio.gather(*(_player(url, starts[i], len(model["actions"]), frames, warmup, i, barrier)
                                 for i in range(n)), return_exceptions=True)
    wall = time.perf_counter() - t0
    return out, wall


def measure(server: ServerProcess, players: int, frames: int, warmup: int, mode: str, steps: int) -> dict:
    model = server.models()["models"][0]
    before = server.stats()
    out, _ = asyncio.run(_run_players(server.url, model, players, frames, warmup, mode, steps))
    lat, fps, errors, seconds = [], [], [], []
    for r in out:
        if isinstance(r, BaseException):
            errors.append(f"{type(r).__name__}: {r}")
            continue
        latencies, secs, errs = r
        lat += latencies
        errors += errs
        seconds.append(secs)
        fps.append(len(latencies) / secs if secs > 0 else 0.0)
    stats = server.stats()
    row = {"players": players, "frames": frames, "fps_per_player": float(np.mean(fps)) if fps else 0.0,
           "fps_per_player_min": float(np.min(fps)) if fps else 0.0,
           "p50_ms": float(np.percentile(lat, 50)) if lat else None,
           "p99_ms": float(np.percentile(lat, 99)) if lat else None,
           "total_fps": len(lat) / max(seconds) if seconds else 0.0, "errors": len(errors),
           "server_rss_mb": stats.get("rss_mb"), "server_peak_rss_mb": stats.get("peak_rss_mb"),
           "server_mean_batch": (stats["requests"] - before["requests"]) / max(1, stats["ticks"] - before["ticks"]),
           "server_tick_ms": stats["tick_ms"]}
    if errors:
        row["error_examples"] = errors[:5]
    return row


def browser_player(url: str, seconds: float) -> dict:
    """One player in headless Chromium (the page, no frame cap), holding keys in turn; the page's
    own window.wmfastStats measured over `seconds` after a warm-up."""
    import shutil

    from playwright.sync_api import sync_playwright

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        raise WmfastError("--browser needs Debian's chromium on PATH (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                          "--headless"])
        page = browser.new_page()
        page.goto(url + "/")
        page.select_option("#cap", "0")
        page.wait_for_function("window.wmfastStats.frames >= 10", timeout=60000)
        first = page.evaluate("[window.wmfastStats.frames, performance.now()]")
        keys, t_end = ["ArrowUp", "ArrowLeft", "ArrowDown", "ArrowRight"], time.time() + seconds
        i = 0
        while time.time() < t_end:
            page.keyboard.down(keys[i % 4])
            time.sleep(min(0.5, max(0.0, t_end - time.time())))
            page.keyboard.up(keys[i % 4])
            i += 1
        last = page.evaluate("[window.wmfastStats.frames, performance.now()]")
        stats = page.evaluate("window.wmfastStats")
        browser.close()
    return {"seconds": seconds, "frames": last[0] - first[0], "fps": 1e3 * (last[0] - first[0]) / (last[1] - first[1]),
            "latency_ms_p50": stats["latency_ms_p50"], "latency_ms_p99": stats["latency_ms_p99"],
            "errors": stats["errors"]}


def bench_serve(run: str, players=(1, 4, 16), frames: int = 100, mode: str = "fast", steps: int = 1,
                unbatched: int = 16, warmup: int = 5, threads: int = 0, data: str = None, json_path=None,
                browser: float = 0.0) -> dict:
    """The numbers `wmfast bench serve` prints and writes (see the module docstring)."""
    from wmfast.bench.common import machine_info, print_table, write_json

    players = sorted({int(p) for p in players})
    if not players or players[0] < 1 or frames < 1:
        raise WmfastError("--players must be positive integers and --frames >= 1")
    load_before = os.getloadavg()
    report = {"benchmark": "serve", "run": run, "mode": mode, "steps": steps, "frames": frames, "warmup": warmup,
              "machine": machine_info("cpu"), "load_avg_before": load_before, "results": [], "unbatched": None}
    max_sessions = max(players + [unbatched]) + 4
    with ServerProcess(run, mode, steps, max_sessions, True, threads, data) as server:
        for n in players:
            row = measure(server, n, frames, warmup, mode, steps)
            report["results"].append(row)
            print(f"batched   {n:3d} players: {row['fps_per_player']:.1f} frames/s each, "
                  f"p50 {row['p50_ms']:.0f} ms, p99 {row['p99_ms']:.0f} ms, {row['errors']} errors", flush=True)
        if browser:
            report["browser"] = browser_player(server.url, browser)
            b = report["browser"]
            print(f"browser     1 player : {b['fps']:.1f} frames/s in the page, p50 {b['latency_ms_p50']:.0f} ms, "
                  f"p99 {b['latency_ms_p99']:.0f} ms, {b['errors']} errors", flush=True)
    if unbatched:
        with ServerProcess(run, mode, steps, max_sessions, False, threads, data) as server:
            row = measure(server, unbatched, frames, warmup, mode, steps)
        report["unbatched"] = row
        print(f"unbatched {unbatched:3d} players: {row['fps_per_player']:.1f} frames/s each, "
              f"p50 {row['p50_ms']:.0f} ms, p99 {row['p99_ms']:.0f} ms, {row['errors']} errors", flush=True)
        same = [r for r in report["results"] if r["players"] == unbatched]
        if same and row["total_fps"] > 0:
            report["batched_vs_unbatched_throughput"] = same[0]["total_fps"] / row["total_fps"]
    report["load_avg_after"] = os.getloadavg()
    rows = report["results"] + ([dict(report["unbatched"], players=f"{unbatched} unbatched")] if unbatched else [])
    print_table(rows, ["players", "fps_per_player", "p50_ms", "p99_ms", "total_fps", "errors", "server_rss_mb",
                       "server_mean_batch"])
    if "batched_vs_unbatched_throughput" in report:
        print(f"batched / unbatched throughput at {unbatched} players: "
              f"{report['batched_vs_unbatched_throughput']:.2f}x")
    print(f"load average before {load_before[0]:.2f}, after {report['load_avg_after'][0]:.2f} "
          f"({os.cpu_count()} CPUs; the machine may be shared)")
    write_json(report, json_path)
    return report
