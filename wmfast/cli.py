"""The `wmfast` command: a thin layer over the library. Each subcommand parses its flags and
calls one library function; bad input prints one line and exits with code 2."""
import argparse
import sys

from wmfast.errors import WmfastError


def build_parser() -> argparse.ArgumentParser:
    import importlib

    for module in COMMAND_MODULES:
        importlib.import_module(module)
    parser = argparse.ArgumentParser(prog="wmfast", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("bench", help="benchmarks (JSON with --json)").add_subparsers(dest="bench", required=True)
    for register in COMMANDS:
        register(sub, bench)
    return parser


# Each entry adds its subparser(s) and sets `func`; see the add_* functions below.
COMMANDS = []
# Command groups that live beside their library code: each module decorates its add_* functions
# with wmfast.cli.command (one line per module here, one module per feature).
COMMAND_MODULES = []


def command(fn):
    COMMANDS.append(fn)
    return fn


def _parse_overrides(pairs):
    """--set key=value pairs -> dict with ints / floats / bools parsed."""
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise WmfastError(f"--set expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        for parse in (int, float):
            try:
                value = parse(value)
                break
            except ValueError:
                pass
        else:
            value = {"true": True, "false": False}.get(value.lower(), value)
        out[key] = value
    return out


@command
def add_train(sub, bench):
    p = sub.add_parser("train", help="train one stage: tokenizer, then actions, then dynamics")
    p.add_argument("stage", choices=["tokenizer", "actions", "dynamics"])
    p.add_argument("--run", required=True, help="run directory (stages live in its subfolders)")
    p.add_argument("--data", default=None, help="dataset: .h5 file, video/PNG folder, game:NAME or atari:GAME "
                                                "(default: the embedded default game)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--clip-len", type=int, default=4)
    p.add_argument("--stride", type=int, default=1)
    p.add_argument("--preset", default="small", help="model size: tiny, small or tinyworlds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true", help="torch.compile the training step")
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--save-every", type=int, default=250)
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="model config overrides, e.g. embed_dim=64")
    p.set_defaults(func=_train)


def _train(a):
    from wmfast.demo import default_data
    from wmfast.train import TrainConfig, train_stage

    cfg = TrainConfig(steps=a.steps, batch_size=a.batch_size, lr=a.lr, warmup_steps=a.warmup_steps,
                      clip_len=a.clip_len, stride=a.stride, preset=a.preset, seed=a.seed, device=a.device,
                      compile=a.compile, log_every=a.log_every, save_every=a.save_every)
    metrics = train_stage(a.stage, a.run, a.data or default_data(), cfg, model=_parse_overrides(a.set),
                          resume=a.resume)
    print(" ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float)))


@command
def add_demo(sub, bench):
    p = sub.add_parser("demo", help="the main job: a world model on the default game, a rollout GIF and metrics")
    p.add_argument("--out", default="demo", help="output folder (rollout.gif, metrics.json, run/ when trained)")
    p.add_argument("--data", default=None, help="game:NAME, atari:GAME or a dataset path (default: the default game)")
    p.add_argument("--train", action="store_true", help="train from scratch instead of loading the shipped model")
    p.add_argument("--scale", type=float, default=1.0, help="multiply the recipe's training steps")
    p.add_argument("--episodes", type=int, default=8, help="held-out clips to evaluate")
    p.add_argument("--horizon", type=int, default=8, help="frames to generate per clip")
    p.add_argument("--steps", type=int, default=8, help="MaskGIT steps per frame")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_demo)


def _demo(a):
    from wmfast.demo import run_demo

    run_demo(a.out, a.data, a.train, a.scale, a.episodes, a.horizon, a.steps, a.seed)


@command
def add_import(sub, bench):
    p = sub.add_parser("import", help="convert checkpoints from other projects into a wmfast run")
    sources = p.add_subparsers(dest="source", required=True)
    t = sources.add_parser("tinyworlds", help="a tinyworlds run -> a wmfast run (safetensors + config.json); "
                                              "state.pt is read without running its code")
    t.add_argument("run_dir", metavar="RUN_DIR",
                   help="results/<run>, its parent, a stage folder or one checkpoint folder")
    t.add_argument("--out", required=True, help="wmfast run directory to write")
    t.add_argument("--step", default=None, help="N for every stage, or stage=N[,stage=N] (default: latest per stage)")
    t.add_argument("--stages", default=None, help="subset to import, e.g. tokenizer,dynamics (default: all found)")
    t.add_argument("--set", nargs="*", default=None, metavar="KEY=INT",
                   help="config values that fill or replace the saved ones, e.g. frame_size=64")
    t.add_argument("--overwrite", action="store_true", help="replace stage folders already in --out")
    t.set_defaults(func=_import_tinyworlds)


def _import_tinyworlds(a):
    from wmfast.compat.tinyworlds import import_tinyworlds

    print(import_tinyworlds(a.run_dir, a.out, step=a.step, stages=a.stages, overrides=a.set, overwrite=a.overwrite))


@command
def add_data(sub, bench):
    data = sub.add_parser("data", help="make and inspect datasets").add_subparsers(dest="data_command", required=True)
    p = data.add_parser("game", help="record an embedded game (frames + true actions) to a wmfast .h5")
    p.add_argument("--game", default=None, help="embedded game name (default: the demo's game)")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--steps", type=int, default=100, help="actions per episode (frames = steps + 1)")
    p.add_argument("--size", type=int, default=64, help="square frame size in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_data_game)
    p = data.add_parser("atari", help="record Atari episodes through ale-py to a wmfast .h5")
    p.add_argument("--game", required=True, help="ALE game, e.g. Pong, Breakout, SpaceInvaders")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--size", type=int, default=64, help="square frame size (area resize); 0 keeps 210x160")
    p.add_argument("--frameskip", type=int, default=4)
    p.add_argument("--policy", choices=["random", "tracker"], default=None,
                   help="tracker follows the ball (Pong; its default), random presses with repeats")
    p.add_argument("--sticky", type=float, default=0.0, help="ALE repeat_action_probability (emulator side)")
    p.add_argument("--max-steps", type=int, default=500, help="cap on steps per episode")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_data_atari)
    p = data.add_parser("convert", help="a video/PNG folder or tinyworlds .h5 -> a wmfast .h5")
    p.add_argument("source")
    p.add_argument("--size", type=int, default=None, help="square frame size (area resize)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_data_convert)
    p = data.add_parser("info", help="summarize a dataset (file, folder, game:NAME, atari:GAME)")
    p.add_argument("source")
    p.add_argument("--preview", default=None, help="also draw the first frames of a few episodes to this PNG")
    p.set_defaults(func=_data_info)


def _data_game(a):
    from wmfast.data import DEFAULT_GAME, generate_game_dataset

    print(generate_game_dataset(a.game or DEFAULT_GAME, a.episodes, a.steps, a.size, a.seed, a.out))


def _data_atari(a):
    from wmfast.data import generate_atari_dataset

    print(generate_atari_dataset(a.game, a.episodes, a.size, a.frameskip, a.policy, a.seed, a.max_steps,
                                 a.sticky, out=a.out))


def _data_convert(a):
    from wmfast.data import convert_dataset

    print(convert_dataset(a.source, a.out, a.size))


def _data_info(a):
    import json

    from wmfast.data import dataset_info

    print(json.dumps(dataset_info(a.source, a.preview), indent=1, default=str))


@command
def add_export(sub, bench):
    p = sub.add_parser("export", help="export a run to ONNX (one graph per piece + manifest.json), then check parity")
    p.add_argument("--run", required=True, help="run directory")
    p.add_argument("--out", default=None, help="output folder (default: RUN/onnx)")
    p.add_argument("--opset", type=int, default=20)
    p.add_argument("--dtype", choices=["fp32", "fp16"], default="fp32")
    p.add_argument("--batch", default="dynamic", help="'dynamic' or a fixed batch size")
    p.add_argument("--graphs", nargs="*", default=None, help="only these graphs (default: all the run has)")
    p.add_argument("--no-parity", action="store_true", help="skip the onnxruntime vs eager check")
    p.add_argument("--debug", action="store_true", help="write the exporter's reports to OUT/reports/")
    p.set_defaults(func=_export)
    p = sub.add_parser("parity", help="compare an ONNX export with eager PyTorch (exit 1 above tolerance)")
    p.add_argument("--run", required=True, help="run directory")
    p.add_argument("--onnx", default=None, help="ONNX folder (default: RUN/onnx)")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--strict", action="store_true", help="fail if any node falls back to the CPU EP")
    p.add_argument("--reps", type=int, default=5, help="timed calls per graph for the ms columns (0: no timing)")
    p.add_argument("--json", default=None, help="write the report here")
    p.set_defaults(func=_parity)
    p = bench.add_parser("export", help="onnxruntime vs eager vs torch.compile per graph and rollout step")
    p.add_argument("--json", default=None)
    p.add_argument("--quick", action="store_true", help="fewer repetitions")
    p.add_argument("--run", default=None, help="benchmark this run (default: random tinyworlds-shape models)")
    p.set_defaults(func=_bench_export)


def _export(a):
    from wmfast.export import export_run
    from wmfast.export.parity import print_report

    manifest = export_run(a.run, a.out, opset=a.opset, dtype=a.dtype, batch=a.batch, check=not a.no_parity,
                          graphs=a.graphs, debug=a.debug)
    for name, g in manifest["graphs"].items():
        print(f"{g['file']}: {g['nodes']} nodes, {g['bytes'] / 1e6:.2f} MB, exported in {g['export_s']:.1f} s")
    if "parity" in manifest:
        print_report(manifest["parity"])
        return 0 if manifest["parity"]["passed"] else 1
    return 0


def _parity(a):
    from wmfast.export.parity import check_parity, print_report, write_report

    report = check_parity(a.run, a.onnx, batch=a.batch, device=a.device, strict=a.strict, reps=a.reps)
    print_report(report)
    write_report(report, a.json)
    return 0 if report["passed"] else 1


def _bench_export(a):
    from wmfast.bench.export import run_export_benchmark

    run_export_benchmark(a.json, quick=a.quick, run_dir=a.run)


@command
def add_bench_vq(sub, bench):
    p = bench.add_parser("vq", help="fused VQ lookup vs matmul expansion, cdist and FAISS (fp32)")
    p.add_argument("--json", default=None, help="write the report here (and a PNG of the speedups beside it)")
    p.add_argument("--threads", default="1,2", help="comma-separated CPU thread counts (default 1,2)")
    p.add_argument("--quick", action="store_true", help="a few small shapes: a smoke test in seconds")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--max-baseline-gib", type=float, default=2.0,
                   help="skip expand/cdist where their N x K fp32 scores exceed this (default 2)")
    for dim in ("N", "K", "D"):
        p.add_argument(f"--{dim}", default=None, help=f"comma-separated {dim} values replacing the grid's")
    p.set_defaults(func=_bench_vq)


def _bench_vq(a):
    from wmfast.bench.vq import run_vq_benchmark

    try:
        threads = tuple(int(t) for t in a.threads.split(",") if t.strip())
    except ValueError:
        raise WmfastError(f"--threads must be comma-separated integers, got {a.threads!r}") from None
    if not threads or min(threads) < 1:
        raise WmfastError(f"--threads needs counts >= 1, got {a.threads!r}")
    grid = {}
    for dim in ("N", "K", "D"):
        text = getattr(a, dim)
        if text is not None:
            try:
                grid[dim] = tuple(int(v) for v in text.split(",") if v.strip())
            except ValueError:
                raise WmfastError(f"--{dim} must be comma-separated integers, got {text!r}") from None
            if not grid[dim] or min(grid[dim]) < 1:
                raise WmfastError(f"--{dim} needs values >= 1, got {text!r}")
    run_vq_benchmark(a.json, threads=threads, quick=a.quick, device=a.device, max_baseline_gib=a.max_baseline_gib,
                     grid=grid)


@command
def add_rollout(sub, bench):
    p = sub.add_parser("rollout", help="roll a trained world model out from an episode; write a GIF/MP4")
    p.add_argument("--run", required=True, help="run directory")
    p.add_argument("--actions", required=True, help="action ids, e.g. 0,1,1,3, or 'infer' (the latent actions "
                                                    "of the episode's true frames)")
    p.add_argument("--out", default="rollout.gif", help="GIF or MP4 (beside the true frames when the data has them)")
    p.add_argument("--steps", type=int, default=10, help="MaskGIT steps per frame")
    p.add_argument("--mode", choices=["compat", "fast"], default="compat")
    p.add_argument("--data", default=None, help="dataset for the context frames (default: the embedded default game)")
    p.add_argument("--episode", type=int, default=0)
    p.add_argument("--backend", choices=["eager", "compile", "onnx"], default="eager")
    p.add_argument("--device", default="auto")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=None)
    p.set_defaults(func=_rollout)
    p = sub.add_parser("play", help="play a world model in the terminal: keys 0-9 are actions, q quits")
    p.add_argument("--run", required=True, help="run directory")
    p.add_argument("--out", default=None, help="frames written live: .png (latest frame) or .gif/.mp4 (on exit)")
    p.add_argument("--ansi", action="store_true", help="also draw frames in the terminal (default without --out)")
    p.add_argument("--mode", choices=["compat", "fast"], default="fast")
    p.add_argument("--steps", type=int, default=4, help="MaskGIT steps per frame")
    p.add_argument("--data", default=None, help="dataset for the first frames (default: the embedded default game)")
    p.add_argument("--episode", type=int, default=0)
    p.add_argument("--backend", choices=["eager", "compile", "onnx"], default="eager")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_play)
    p = bench.add_parser("rollout", help="World engine (compat, fast) vs the reference rollout loop: speed and quality")
    p.add_argument("--json", default=None, help="write the report here")
    p.add_argument("--run", default=None, help="trained run for the quality table (default: the shipped demo model)")
    p.add_argument("--data", default=None, help="held-out episodes for quality (default: the embedded default game)")
    p.add_argument("--quick", action="store_true", help="fewer batch sizes, frames and episodes")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.set_defaults(func=_bench_rollout)


def _rollout(a):
    from wmfast.rollout.play import render_rollout

    r = render_rollout(a.run, a.actions, a.out, a.steps, a.mode, a.data, a.episode, a.backend, a.device,
                       a.temperature, a.seed)
    print(f"{r['out']}: {r['frames']} frames ({'true | generated' if r['side_by_side'] else 'generated'}), "
          f"{r['ms_per_frame']:.1f} ms/frame, {r['world']}")


def _play(a):
    from wmfast.rollout.play import play

    play(a.run, a.out, a.ansi or None, a.data, a.episode, a.mode, a.steps, a.backend, a.device)


def _bench_rollout(a):
    from wmfast.bench.rollout import bench_rollout

    bench_rollout(a.json, a.run, a.data, a.quick, a.threads)


@command
def add_pair_attention(sub, bench):
    p = bench.add_parser("attention", help="pair-window attention: ours vs cat+SDPA+mean (eager, compiled), "
                                           "strided SDPA, FlexAttention (CUDA)")
    p.add_argument("--json", default=None, help="write the report here (and a PNG of the speedups beside it)")
    p.add_argument("--quick", action="store_true", help="three small shapes: a smoke test")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--reps", type=int, default=5)
    p.set_defaults(func=_bench_attention)
    compare = sub.add_parser("compare", help="controlled comparisons of model variants")
    p = compare.add_subparsers(dest="compare", required=True).add_parser(
        "lam", help="legacy vs windowed-attention latent action encoder (then a dynamics model on each): "
                    "same data, seed and steps; markdown + JSON report with plots and rollout GIFs")
    p.add_argument("--data", default=None, help="game:NAME or a dataset path (default: the embedded default game)")
    p.add_argument("--steps", type=int, default=300, help="training steps per stage")
    p.add_argument("--out", default="compare-lam", help="output folder")
    p.add_argument("--preset", default="tiny", help="model size preset (wmfast.train.PRESETS)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_compare_lam)


def _bench_attention(a):
    from wmfast.bench.attention import run_attention_bench

    run_attention_bench(a.json, quick=a.quick, device=a.device, dtype=a.dtype, reps=a.reps)


def _compare_lam(a):
    from wmfast.compare import compare_lam

    report = compare_lam(a.data, a.steps, a.out, preset=a.preset, batch_size=a.batch_size, seed=a.seed,
                         device=a.device)
    print(f"{report['markdown']}: legacy vs windowed LAM report")


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except WmfastError as e:
        print(f"wmfast: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("wmfast: interrupted", file=sys.stderr)
        return 130
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
