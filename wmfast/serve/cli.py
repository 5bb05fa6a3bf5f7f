"""`wmfast serve` and `wmfast bench serve` (thin: each calls one library function)."""
from wmfast.cli import command, int_list


def _default_run():
    from wmfast.errors import WmfastError
    from wmfast.train import pretrained_run

    run = pretrained_run()
    if run is None:
        raise WmfastError("no --run given and no shipped pretrained model found")
    return run


@command
def add_serve(sub, bench):
    p = sub.add_parser("serve", help="play world models in a browser (localhost web server, batched real time)")
    p.add_argument("--run", action="append", default=None, metavar="[NAME=]DIR",
                   help="a run to serve (repeat for several; default: the shipped maze model)")
    p.add_argument("--data", default=None, help="dataset for held-out start episodes (default: the run's recipe.json)")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (0: any free port)")
    p.add_argument("--mode", default="fast", choices=["fast", "compat"], help="default mode of a new session")
    p.add_argument("--steps", type=int, default=4, help="default MaskGIT steps of a new session")
    p.add_argument("--max-sessions", type=int, default=32, help="players served at once (more are refused)")
    p.add_argument("--max-batch", type=int, default=32, help="rows per World.step at most")
    p.add_argument("--gather-ms", type=float, default=10.0, help="how long a tick waits for active players still to ask (ms)")
    p.add_argument("--no-batching", action="store_true", help="one World per player (the unbatched baseline)")
    p.add_argument("--idle-timeout", type=float, default=300.0, help="seconds before an idle session is closed")
    p.add_argument("--max-upload-mb", type=float, default=8.0, help="largest accepted upload (MB)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: half the CPUs)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"], help="server log level")
    p.set_defaults(func=_serve)


def _serve(a):
    from wmfast.serve import ServeConfig, parse_runs, serve

    config = ServeConfig(host=a.host, port=a.port, mode=a.mode, steps=a.steps, device=a.device, threads=a.threads,
                         max_sessions=a.max_sessions, max_batch=a.max_batch, gather_ms=a.gather_ms,
                         batching=not a.no_batching, idle_timeout_s=a.idle_timeout,
                         max_upload_bytes=int(a.max_upload_mb * (1 << 20)))
    runs = parse_runs(a.run or [_default_run()])
    serve(runs, config.check(), data=a.data, log_level=a.log_level, on_listen=lambda line: print(line, flush=True))


@command
def add_bench_serve(sub, bench):
    p = bench.add_parser("serve", help="concurrent websocket players against `wmfast serve`: fps, latency, batching")
    p.add_argument("--run", default=None, help="run to serve (default: the shipped maze model)")
    p.add_argument("--data", default=None, help="dataset for start episodes (default: the run's recipe.json)")
    p.add_argument("--players", type=int_list, default="1,4,16", help="comma-separated player counts")
    p.add_argument("--frames", type=int, default=100, help="timed frames per player")
    p.add_argument("--warmup", type=int, default=5, help="untimed frames per player first")
    p.add_argument("--mode", default="fast", choices=["fast", "compat"], help="World mode of every session")
    p.add_argument("--steps", type=int, default=4, help="MaskGIT steps")
    p.add_argument("--unbatched", type=int, default=16, help="players for the unbatched side-by-side run (0: skip)")
    p.add_argument("--threads", type=int, default=0, help="server torch threads (default: half the CPUs)")
    p.add_argument("--browser", type=float, default=0.0, metavar="SECONDS",
                   help="also play one player in headless Chromium this long, frames/s measured in the page")
    p.add_argument("--json", default=None, help="write the report here")
    p.set_defaults(func=_bench_serve)


def _bench_serve(a):
    from wmfast.serve.bench import bench_serve

    report = bench_serve(a.run or _default_run(), a.players, a.frames, a.mode, a.steps, a.unbatched, a.warmup,
                         a.threads, a.data, a.json, a.browser)
    errors = sum(r["errors"] for r in report["results"]) + (report["unbatched"] or {}).get("errors", 0)
    errors += (report.get("browser") or {}).get("errors", 0)
    return 1 if errors else 0
