"""`wmfast serve`: world models in a browser (wmfast.serve)."""
from wmfast.cli.common import deprecated_alias, nonneg_float, nonneg_int, number, positive_float, positive_int


def default_run():
    """The shipped maze model: what `serve` and `bench serve` play without --run."""
    from wmfast.errors import WmfastError
    from wmfast.train import pretrained_run

    run = pretrained_run()
    if run is None:
        raise WmfastError("no --run given and no shipped pretrained model found")
    return run


def add_commands(sub):
    p = sub.add_parser("serve", help="play world models in a browser (localhost web server, batched real time)")
    p.add_argument("--run", action="append", default=None, metavar="[NAME=]DIR",
                   help="a run to serve (repeat for several; default: the shipped maze model)")
    p.add_argument("--data", default=None, help="dataset for held-out start episodes (default: the run's recipe.json)")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=number(int, 0, hi=65535), default=8000, help="port (0: any free port)")
    p.add_argument("--mode", default="fast", choices=["fast", "compat"], help="default mode of a new session")
    p.add_argument("--maskgit-steps", type=positive_int, default=1,
                   help="default MaskGIT steps of a new session (1: fast mode adds steps for unsure tokens)")
    deprecated_alias(p, "--steps", "--maskgit-steps")
    p.add_argument("--max-sessions", type=positive_int, default=32, help="players served at once (more are refused)")
    p.add_argument("--max-batch", type=positive_int, default=32, help="rows per World.step at most")
    p.add_argument("--gather-ms", type=nonneg_float, default=10.0,
                   help="how long a tick waits for active players still to ask (ms)")
    p.add_argument("--no-batching", action="store_true", help="one World per player (the unbatched baseline)")
    p.add_argument("--idle-timeout", type=positive_float, default=300.0, help="seconds before an idle session is closed")
    p.add_argument("--max-upload-mb", type=positive_float, default=8.0, help="largest accepted upload (MB)")
    p.add_argument("--threads", type=nonneg_int, default=0, help="torch CPU threads (default: half the CPUs)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"], help="server log level")
    p.set_defaults(func=_serve)


def _serve(a):
    from wmfast.serve import ServeConfig, parse_runs, serve

    config = ServeConfig(host=a.host, port=a.port, mode=a.mode, steps=a.maskgit_steps, device=a.device,
                         threads=a.threads, max_sessions=a.max_sessions, max_batch=a.max_batch, gather_ms=a.gather_ms,
                         batching=not a.no_batching, idle_timeout_s=a.idle_timeout,
                         max_upload_bytes=int(a.max_upload_mb * (1 << 20)))
    runs = parse_runs(a.run or [default_run()])
    serve(runs, config.check(), data=a.data, log_level=a.log_level, on_listen=lambda line: print(line, flush=True))
