"""`wmfast bench export|vq|rollout|attention|train|viz|policy|serve`: the benchmarks (wmfast.bench,
wmfast.bench.policy, wmfast.serve.bench), each a few lines over one library function."""
from wmfast.cli.common import deprecated_alias, device_name, nonneg_float, nonneg_int, number, positive_float, \
    positive_int, positive_int_list


def add_commands(bench):
    """bench: the sub-parsers action of `wmfast bench`."""
    p = bench.add_parser("export", help="onnxruntime vs eager vs torch.compile per graph and rollout step",
                         epilog="examples:\n  wmfast bench export --quick --json export.json")
    p.add_argument("--json", default=None, help="write the report here")
    p.add_argument("--quick", action="store_true", help="fewer repetitions")
    p.add_argument("--run", default=None, help="benchmark this run (default: random tinyworlds-shape models)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads for torch and onnxruntime alike (default: torch's current setting)")
    p.set_defaults(func=_bench_export)

    p = bench.add_parser("vq", help="fused VQ lookup vs matmul expansion, cdist and FAISS (fp32)",
                         epilog="examples:\n  wmfast bench vq --quick\n  wmfast bench vq --json vq.json --threads 1,2")
    p.add_argument("--json", default=None, help="write the report here (and a PNG of the speedups beside it)")
    p.add_argument("--threads", type=positive_int_list, default="1,2",
                   help="comma-separated CPU thread counts (default 1,2)")
    p.add_argument("--quick", action="store_true", help="a few small shapes: a smoke test in seconds")
    p.add_argument("--device", type=device_name, default="cpu", help="cpu or cuda")
    p.add_argument("--max-baseline-gib", type=positive_float, default=2.0,
                   help="skip expand/cdist where their N x K fp32 scores exceed this (default 2)")
    for dim in ("N", "K", "D"):
        p.add_argument(f"--{dim}", type=positive_int_list, default=None,
                       help=f"comma-separated {dim} values replacing the grid's")
    p.set_defaults(func=_bench_vq)

    p = bench.add_parser("rollout", help="World engine (compat, fast) vs the reference rollout loop: speed and quality",
                         epilog="examples:\n  wmfast bench rollout --quick --json rollout.json")
    p.add_argument("--json", default=None, help="write the report here")
    p.add_argument("--run", default=None, help="trained run for the quality table (default: the shipped demo model)")
    p.add_argument("--data", default=None, help="held-out episodes for quality (default: the embedded default game)")
    p.add_argument("--quick", action="store_true", help="fewer batch sizes, frames and episodes")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's choice)")
    p.set_defaults(func=_bench_rollout)

    p = bench.add_parser("attention", help="pair-window attention: ours vs cat+SDPA+mean (eager, compiled), "
                                           "strided SDPA, FlexAttention (CUDA)",
                         epilog="examples:\n  wmfast bench attention --quick --json attention.json")
    p.add_argument("--json", default=None, help="write the report here (and a PNG of the speedups beside it)")
    p.add_argument("--quick", action="store_true", help="three small shapes: a smoke test")
    p.add_argument("--device", type=device_name, default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"], help="q, k, v dtype")
    p.add_argument("--reps", type=positive_int, default=5, help="timed repetitions per shape")
    p.add_argument("--shapes", default=None, help="PxDxT items replacing the grid, e.g. 256x16x4,64x32x8")
    p.add_argument("--max-seconds", type=positive_float, default=None,
                   help="start no new shape after this many seconds (the rest are noted as not measured)")
    p.set_defaults(func=_bench_attention)

    p = bench.add_parser("train", help="training samples/s per stage on 1..N processes (DDP) and scaling efficiency")
    p.add_argument("--nproc", type=positive_int_list, default="1,2",
                   help="comma-separated process counts (1 is always measured)")
    p.add_argument("--preset", default="tiny", help="model size preset")
    p.add_argument("--steps", type=positive_int, default=30, help="optimizer steps per stage and process count")
    p.add_argument("--skip", type=nonneg_int, default=10, help="first steps left out of the timing")
    p.add_argument("--batch-size", type=positive_int, default=8, help="global batch")
    p.add_argument("--data", default="game:pong:8")
    p.add_argument("--device", type=device_name, default="auto")
    p.add_argument("--threads", type=positive_int, default=1, help="intra-op threads per process (the same for every N)")
    p.add_argument("--out", default=None, help="keep the run directories here (default: a temp folder)")
    p.add_argument("--json", default=None)
    p.set_defaults(func=_bench_train)

    p = bench.add_parser("viz", help="attention capture: forward time with the feature present and off vs the "
                                     "same code without it (and with capture on)")
    p.add_argument("--json", default=None, help="write the report here")
    p.add_argument("--preset", default="small", help="model size preset")
    # medians of fewer runs are noise
    p.add_argument("--reps", type=number(int, 20), default=60, help="timed samples per variant (>= 20)")
    p.add_argument("--batch", type=positive_int, default=4, help="clips per forward")
    p.add_argument("--frames", type=positive_int, default=4, help="frames per clip")
    p.add_argument("--device", type=device_name, default="cpu")
    p.add_argument("--threads", type=nonneg_int, default=1, help="torch CPU threads (0: torch's choice)")
    p.set_defaults(func=_bench_viz)

    p = bench.add_parser("policy", help="policy latency (batch 1) and throughput (batch 64): eager, compile, ONNX")
    p.add_argument("--json", default=None)
    p.add_argument("--run", default=None, help="benchmark this policy run (default: a fresh ACT policy)")
    p.add_argument("--kind", choices=["bc", "chunk", "act"], default="act", help="policy architecture")
    p.add_argument("--quick", action="store_true", help="fewer repetitions")
    p.add_argument("--backends", default="eager,compile,onnx", help="comma-separated backends to time")
    p.set_defaults(func=_bench_policy)

    p = bench.add_parser("serve", help="concurrent websocket players against `wmfast serve`: fps, latency, batching")
    p.add_argument("--run", default=None, help="run to serve (default: the shipped maze model)")
    p.add_argument("--data", default=None, help="dataset for start episodes (default: the run's recipe.json)")
    p.add_argument("--players", type=positive_int_list, default="1,4,16", help="comma-separated player counts")
    p.add_argument("--frames", type=positive_int, default=100, help="timed frames per player")
    p.add_argument("--warmup", type=nonneg_int, default=5, help="untimed frames per player first")
    p.add_argument("--mode", default="fast", choices=["fast", "compat"], help="World mode of every session")
    p.add_argument("--maskgit-steps", type=positive_int, default=1, help="MaskGIT steps")
    deprecated_alias(p, "--steps", "--maskgit-steps")
    p.add_argument("--unbatched", type=nonneg_int, default=16, help="players for the unbatched side-by-side run (0: skip)")
    p.add_argument("--threads", type=nonneg_int, default=0, help="server torch threads (default: half the CPUs)")
    p.add_argument("--browser", type=nonneg_float, default=0.0, metavar="SECONDS",
                   help="also play one player in headless Chromium this long, frames/s measured in the page")
    p.add_argument("--json", default=None, help="write the report here")
    p.set_defaults(func=_bench_serve)


def _bench_export(a):
    from wmfast.bench.export import run_export_benchmark

    run_export_benchmark(a.json, quick=a.quick, run_dir=a.run, threads=a.threads)


def _bench_vq(a):
    from wmfast.bench.vq import run_vq_benchmark

    grid = {dim: tuple(getattr(a, dim)) for dim in ("N", "K", "D") if getattr(a, dim) is not None}
    run_vq_benchmark(a.json, threads=tuple(a.threads), quick=a.quick, device=a.device,
                     max_baseline_gib=a.max_baseline_gib, grid=grid)


def _bench_rollout(a):
    from wmfast.bench.rollout import bench_rollout

    bench_rollout(a.json, a.run, a.data, a.quick, a.threads)


def _bench_attention(a):
    from wmfast.bench.attention import parse_shapes, run_attention_bench

    run_attention_bench(a.json, quick=a.quick, device=a.device, dtype=a.dtype, reps=a.reps,
                        shapes=parse_shapes(a.shapes) if a.shapes else None, max_seconds=a.max_seconds)


def _bench_train(a):
    from wmfast.bench.train import run_train_bench

    run_train_bench(a.json, a.nproc, preset=a.preset, steps=a.steps, skip=a.skip, batch_size=a.batch_size,
                    data=a.data, device=a.device, out_dir=a.out, threads=a.threads)


def _bench_viz(a):
    from wmfast.bench.viz import run_viz_benchmark

    run_viz_benchmark(a.json, preset=a.preset, reps=a.reps, batch=a.batch, frames=a.frames, device=a.device,
                      threads=a.threads)


def _bench_policy(a):
    from wmfast.bench.policy import run_policy_bench

    run_policy_bench(a.json, run_dir=a.run, kind=a.kind, quick=a.quick, backends=a.backends)


def _bench_serve(a):
    from wmfast.cli.serve import default_run
    from wmfast.serve.bench import bench_serve

    report = bench_serve(a.run or default_run(), a.players, a.frames, a.mode, a.maskgit_steps, a.unbatched, a.warmup,
                         a.threads, a.data, a.json, a.browser)
    errors = sum(r["errors"] for r in report["results"]) + (report["unbatched"] or {}).get("errors", 0)
    errors += (report.get("browser") or {}).get("errors", 0)
    return 1 if errors else 0
