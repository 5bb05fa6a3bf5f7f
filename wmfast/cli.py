"""The `wmfast` command: a thin layer over the library. Each subcommand parses its flags and
calls one library function; bad input prints one line and exits with code 2."""
import argparse
import os
import sys

from wmfast.errors import WmfastError


def build_parser() -> argparse.ArgumentParser:
    import importlib

    for module in COMMAND_MODULES:
        importlib.import_module(module)
    parser = Parser(prog="wmfast", description=__doc__, epilog="run `wmfast COMMAND --help` for a command's "
                    "options and examples; bad input prints one line and exits with code 2")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    bench = sub.add_parser("bench", help="benchmarks (JSON with --json)").add_subparsers(dest="bench", required=True)
    for register in COMMANDS:
        register(sub, bench)
    return finish_parser(parser)


def _version() -> str:
    import platform

    import torch

    import wmfast

    return f"wmfast {wmfast.__version__} (torch {torch.__version__}, Python {platform.python_version()})"


# Each entry adds its subparser(s) and sets `func`; see the add_* functions below.
COMMANDS = []
# Command groups that live beside their library code: each module decorates its add_* functions
# with wmfast.cli.command (one line per module here, one module per feature).
COMMAND_MODULES = [
    "wmfast.bench.train",
    "wmfast.lapa.cli",
    "wmfast.viz.cli",
    "wmfast.eval_cli",
    "wmfast.policy.cli",
    "wmfast.serve.cli",
]


def command(fn):
    COMMANDS.append(fn)
    return fn


# -- parsing: one-line errors, defaults in --help, option types that check ranges ----------------

class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each option's help (unless it states its own default or has none);
    epilogs keep their line breaks (examples)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS \
                or "default" in text.lower():
            return text
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2, no usage block), no abbreviated options, and the
    help formatter above; sub-commands inherit it."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args=None, namespace=None):
        return super().parse_known_args(split_set_options(sys.argv[1:] if args is None else list(args)), namespace)

    def error(self, message):
        if "unrecognized arguments" in message and "=" in message:
            message += " (give each --set its own KEY=VALUE: --set a=1 --set b=2)"
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


class SetOption(argparse.Action):
    """--set KEY=VALUE: one pair per --set, collected in a list. `--set a=1 b=2` still works: the
    command line is rewritten to `--set a=1 --set b=2` first (split_set_options), taking only
    the tokens that contain '=', so `--set a=1 tokenizer` leaves the stage positional alone."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, list(getattr(namespace, self.dest, None) or []) + [values])


def split_set_options(argv: list) -> list:
    out, i = [], 0
    while i < len(argv):
        tok = argv[i]
        out.append(tok)
        i += 1
        if tok == "--":
            out += argv[i:]
            break
        if tok == "--set":
            first = True
            while i < len(argv) and "=" in argv[i] and not argv[i].startswith("-"):
                out += ([] if first else ["--set"]) + [argv[i]]
                first, i = False, i + 1
    return out


def _number(kind, lo=None, lo_open=False, hi=None):
    """An argparse type: int or float within a range, with a message saying what is allowed."""
    from wmfast.config import Range

    rule = Range(lo, hi, lo_open=lo_open)
    allowed = f"{'an integer' if kind is int else 'a number'} {rule.describe()}".strip()

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}") from None
        if kind is float and value != value or not rule.ok(value) or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}")
        return value
    parse.__name__ = allowed
    return parse


positive_int, nonneg_int = _number(int, 1), _number(int, 0)
positive_float, nonneg_float = _number(float, 0, lo_open=True), _number(float, 0)


def int_list(text):
    """An argparse type: comma-separated integers ("1,2,4" -> [1, 2, 4])."""
    try:
        values = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        values = []
    if not values:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers, got {text!r}")
    return values


int_list.__name__ = "comma-separated integers"


def device_name(text):
    """An argparse type: auto, cpu, cuda, cuda:N (checked before any work starts)."""
    from wmfast.config import _device_rule

    allowed = _device_rule(text)
    if allowed:
        raise argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}")
    return text


def output_file(*extensions):
    """An argparse type: a path whose extension the writer supports (checked before the work)."""
    def parse(text):
        if not text.lower().endswith(extensions):
            raise argparse.ArgumentTypeError(f"must end in {' or '.join(extensions)}, got {text!r}")
        return text
    parse.__name__ = "path"
    return parse


def given_options(parser, argv) -> set:
    """dest names of the options written on the command line (not left at their defaults)."""
    dests, stack = {}, [parser]
    while stack:
        p = stack.pop()
        for action in p._actions:
            for opt in action.option_strings:
                dests[opt] = action.dest
            if isinstance(action, argparse._SubParsersAction):
                stack.extend(action.choices.values())
    return {dests[tok.split("=", 1)[0]] for tok in argv if tok.split("=", 1)[0] in dests}


# Examples shown at the end of each command's --help (`wmfast CMD --help`).
EXAMPLES = {
    "train": "examples:\n  wmfast train tokenizer --run runs/pong --data game:pong --preset tiny --steps 500\n"
             "  wmfast train actions --run runs/pong          # uses the tokenizer's data\n"
             "  wmfast train dynamics --run runs/pong --set num_blocks=4 --set embed_dim=128\n"
             "  wmfast train tokenizer --run runs/pong --resume   # after Ctrl-C",
    "demo": "examples:\n  wmfast demo                      # the shipped maze model, seconds\n"
            "  wmfast demo --train --scale 0.1  # train it from scratch, a tenth of the recipe's steps\n"
            "  wmfast demo --data game:pong     # no shipped model: trains one",
    "rollout": "examples:\n  wmfast rollout --run runs/pong --actions 0,1,1,2 --out rollout.gif\n"
               "  wmfast rollout --run runs/pong --actions infer --mode fast --steps 2",
    "play": "examples:\n  wmfast play --run runs/pong\n  wmfast play --run runs/pong --out live.png --mode fast",
    "export": "examples:\n  wmfast export --run runs/pong\n  wmfast export --run runs/pong --dtype fp16 --batch 1",
    "parity": "examples:\n  wmfast parity --run runs/pong --json parity.json",
    "data": "examples:\n  wmfast data game --game pong --episodes 100 --out pong.h5\n"
            "  wmfast data info pong.h5 --preview pong.png",
    "import": "examples:\n  wmfast import tinyworlds results/my_run --out runs/imported",
    "bench": "examples:\n  wmfast bench vq --quick --json vq.json\n  wmfast bench rollout --quick",
    "compare": "examples:\n  wmfast compare lam --data game:maze --steps 300",
    "compare lam": "examples:\n  wmfast compare lam --data game:maze --steps 300 --seeds 0,1,2",
    "compare dynamics": "examples:\n  wmfast compare dynamics --run wmfast/assets/pretrained/maze --seeds 0,1",
    "data game": "examples:\n  wmfast data game --game pong --episodes 100 --out pong.h5",
    "data atari": "examples:\n  wmfast data atari --game Pong --episodes 20 --policy tracker --out pong.h5",
    "data convert": "examples:\n  wmfast data convert videos/ --size 64 --out mine.h5\n"
                    "  wmfast data convert tinyworlds_pong.h5 --out pong.h5",
    "data info": "examples:\n  wmfast data info pong.h5 --preview pong.png\n  wmfast data info game:maze",
    "import tinyworlds": "examples:\n  wmfast import tinyworlds results/my_run --out runs/imported\n"
                         "  wmfast import tinyworlds results/my_run --out runs/imported --stages tokenizer,dynamics",
    "bench vq": "examples:\n  wmfast bench vq --quick\n  wmfast bench vq --json vq.json --threads 1,2",
    "bench attention": "examples:\n  wmfast bench attention --quick --json attention.json",
    "bench rollout": "examples:\n  wmfast bench rollout --quick --json rollout.json",
    "bench export": "examples:\n  wmfast bench export --quick --json export.json",
}
# Help for options registered without any (filled in at build time, so every option has some).
OPTION_HELP = {
    "seed": "random seed", "device": "auto (CUDA when available), cpu, cuda or cuda:N",
    "json": "write the report here as JSON", "quick": "fewer repetitions and shapes: a smoke test",
    "out": "output path", "run": "run directory", "data": "dataset spec: .h5 file, folder, game:NAME or atari:GAME",
    "steps": "number of steps", "batch_size": "batch size", "lr": "learning rate", "reps": "timed repetitions",
    "threads": "torch CPU threads", "episode": "episode index in the dataset", "episodes": "number of episodes",
}


def finish_parser(parser):
    """Fill what sub-commands left out: a help line for every option, examples in each epilog."""
    stack = [parser]
    while stack:
        p = stack.pop()
        name = p.prog.split(" ", 1)[-1]          # "train", "bench export", ...
        if not p.epilog and name in EXAMPLES:
            p.epilog = EXAMPLES[name]
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                stack.extend(action.choices.values())
            elif "--set" in action.option_strings:   # every command's --set: one KEY=VALUE per --set
                action.__class__, action.nargs = SetOption, None
                if action.help and "repeat" not in action.help:
                    action.help += " (one KEY=VALUE per --set; repeat it for several)"
            if action.help is None and action.option_strings:
                action.help = OPTION_HELP.get(action.dest, action.dest.replace("_", " "))
            elif action.help is None and not isinstance(action, argparse._SubParsersAction):
                action.help = action.dest.replace("_", " ")
    return parser


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
    p.add_argument("stage", choices=["tokenizer", "actions", "dynamics"], help="which stage to train (in this order)")
    p.add_argument("--run", "--run-dir", dest="run", required=True,
                   help="run directory (stages live in its subfolders); write --run-dir after `torchrun ... -m wmfast`")
    p.add_argument("--data", default=None, help="dataset: .h5 file, video/PNG folder, game:NAME[:EPISODES] or "
                   "atari:GAME (default: what the run's earlier stages were trained on, else game:maze)")
    p.add_argument("--steps", type=positive_int, default=2000, help="optimizer steps for this stage")
    p.add_argument("--batch-size", type=positive_int, default=16, help="clips per optimizer step")
    p.add_argument("--lr", type=positive_float, default=1e-3, help="peak learning rate (AdamW, warmup then cosine)")
    p.add_argument("--warmup-steps", type=nonneg_int, default=100, help="linear learning-rate warmup steps")
    p.add_argument("--clip-len", type=_number(int, 2), default=4,
                   help="frames per training clip (the dynamics' context length)")
    p.add_argument("--stride", type=positive_int, default=1, help="frames between consecutive clip frames")
    p.add_argument("--preset", default="small", choices=["tiny", "small", "tinyworlds"],
                   help="model size (tiny trains in seconds; small is the demo's)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed for weights, clip sampling and the split")
    p.add_argument("--device", type=device_name, default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    p.add_argument("--compile", action="store_true", help="torch.compile the training step")
    p.add_argument("--log-every", type=positive_int, default=25, help="steps between metrics.jsonl rows")
    p.add_argument("--save-every", type=positive_int, default=250, help="steps between checkpoints")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint; "
                   "preset, schedule, --set and data must match the saved run")
    p.add_argument("--force", action="store_true", help="with --resume: continue even though --steps, --lr, "
                   "--data, ... differ from the saved run (the new values win)")
    p.add_argument("--set", action=SetOption, metavar="KEY=VALUE", help="one model config field, e.g. --set "
                   "embed_dim=64; repeat for several (--set a=1 --set b=2)")
    p.add_argument("--nproc", type=positive_int, default=1, help="train on N local processes (DDP through torchrun's "
                                                        "launcher); --batch-size stays the global batch")
    p.set_defaults(func=_train, parser=p)


def _train(a):
    from wmfast.train import train_stage

    if a.nproc != 1:
        from wmfast.train.distributed import relaunch

        return relaunch(a.parser, a, a.nproc)

    cfg, overrides = _train_options(a)
    metrics = train_stage(a.stage, a.run, a.data, cfg, model=overrides, resume=a.resume, force=a.force)
    if os.environ.get("RANK", "0") == "0":   # one summary line, from rank 0, under torchrun
        print(" ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float)))


TRAIN_OPTIONS = ("steps", "batch_size", "lr", "warmup_steps", "clip_len", "stride", "preset", "seed", "device",
                 "compile", "log_every", "save_every")


def _train_options(a):
    """`wmfast train` options -> (TrainConfig, model overrides), all checked before any work. On
    --resume, options not written on the command line take the saved run's values, so only
    what the user changed is compared with the run."""
    import dataclasses

    from wmfast.checkpoint import STAGES
    from wmfast.config import check_overrides
    from wmfast.train import TrainConfig
    from wmfast.train.trainer import saved_train_config

    if a.force and not a.resume:
        raise WmfastError("--force only applies with --resume")
    if os.path.exists(a.run) and not os.path.isdir(a.run):
        raise WmfastError(f"--run {a.run} is a file; give a run directory")
    overrides = check_overrides(STAGES[a.stage][1], _parse_overrides(a.set), stage=a.stage)
    given = getattr(a, "_given", set(TRAIN_OPTIONS))
    saved = saved_train_config(a.run, a.stage) if a.resume else None
    values = {k: getattr(a, k) for k in TRAIN_OPTIONS if saved is None or k in given}
    return (dataclasses.replace(saved, **values) if saved else TrainConfig(**values)), overrides


@command
def add_demo(sub, bench):
    p = sub.add_parser("demo", help="the main job: a world model on the default game, a rollout GIF and metrics")
    p.add_argument("--out", default="demo", help="output folder (rollout.gif, metrics.json, run/ when trained)")
    p.add_argument("--data", default=None, help="game:NAME, atari:GAME or a dataset path (default: the default game)")
    p.add_argument("--train", action="store_true", help="train from scratch instead of loading the shipped model")
    p.add_argument("--scale", type=positive_float, default=1.0, help="with --train: multiply the recipe's training steps")
    p.add_argument("--episodes", type=positive_int, default=8, help="held-out clips to evaluate")
    p.add_argument("--horizon", type=positive_int, default=8, help="frames to generate per clip")
    p.add_argument("--steps", type=positive_int, default=8, help="MaskGIT steps per frame")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed for the held-out clips and sampling")
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
    p.add_argument("--episodes", type=positive_int, default=100, help="episodes to record")
    p.add_argument("--steps", type=positive_int, default=100, help="actions per episode (frames = steps + 1)")
    p.add_argument("--size", type=positive_int, default=64, help="square frame size in pixels")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed for the game and its random policy")
    p.add_argument("--out", required=True, type=output_file(".h5", ".hdf5"), help="wmfast .h5 file to write")
    p.set_defaults(func=_data_game)
    p = data.add_parser("atari", help="record Atari episodes through ale-py to a wmfast .h5")
    p.add_argument("--game", required=True, help="ALE game, e.g. Pong, Breakout, SpaceInvaders")
    p.add_argument("--episodes", type=positive_int, default=20, help="episodes to record")
    p.add_argument("--size", type=nonneg_int, default=64, help="square frame size (area resize); 0 keeps 210x160")
    p.add_argument("--frameskip", type=positive_int, default=4, help="emulator frames per action")
    p.add_argument("--policy", choices=["random", "tracker"], default=None,
                   help="tracker follows the ball (Pong; its default), random presses with repeats")
    p.add_argument("--sticky", type=_number(float, 0, hi=1), default=0.0,
                   help="ALE repeat_action_probability (emulator side)")
    p.add_argument("--max-steps", type=positive_int, default=500, help="cap on steps per episode")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed for the emulator and the policy")
    p.add_argument("--out", required=True, type=output_file(".h5", ".hdf5"), help="wmfast .h5 file to write")
    p.set_defaults(func=_data_atari)
    p = data.add_parser("convert", help="a video/PNG folder or tinyworlds .h5 -> a wmfast .h5")
    p.add_argument("source", help="a tinyworlds .h5, a folder of videos or PNG frames, or a video file")
    p.add_argument("--size", type=positive_int, default=None, help="square frame size (area resize; default: keep)")
    p.add_argument("--out", required=True, type=output_file(".h5", ".hdf5"), help="wmfast .h5 file to write")
    p.set_defaults(func=_data_convert)
    p = data.add_parser("info", help="summarize a dataset (file, folder, game:NAME, atari:GAME)")
    p.add_argument("source", help="a dataset: .h5 file, folder, game:NAME[:EPISODES] or atari:GAME")
    p.add_argument("--preview", default=None, type=output_file(".png"), help="also draw the first frames of a few episodes to this PNG")
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
    p.add_argument("--run", default=None, help="run directory")
    p.add_argument("--policy", default=None, help="export a policy run (`wmfast policy train`) instead: policy.onnx")
    p.add_argument("--out", default=None, help="output folder (default: RUN/onnx)")
    p.add_argument("--opset", type=_number(int, 18), default=20, help="ONNX opset version")
    p.add_argument("--dtype", choices=["fp32", "fp16"], default="fp32", help="weights and activations dtype")
    p.add_argument("--batch", default="dynamic", type=_batch_option, help="'dynamic' or a fixed batch size >= 1")
    p.add_argument("--graphs", nargs="*", default=None, help="only these graphs (default: all the run has)")
    p.add_argument("--no-parity", action="store_true", help="skip the onnxruntime vs eager check")
    p.add_argument("--debug", action="store_true", help="write the exporter's reports to OUT/reports/")
    p.set_defaults(func=_export)
    p = sub.add_parser("parity", help="compare an ONNX export with eager PyTorch (exit 1 above tolerance)")
    p.add_argument("--run", required=True, help="run directory")
    p.add_argument("--onnx", default=None, help="ONNX folder (default: RUN/onnx)")
    p.add_argument("--batch", type=positive_int, default=None, help="batch size of the test inputs "
                   "(default: the export's fixed batch, else 2)")
    p.add_argument("--device", type=device_name, default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--strict", action="store_true", help="fail if any node falls back to the CPU EP")
    p.add_argument("--reps", type=nonneg_int, default=5, help="timed calls per graph for the ms columns (0: no timing)")
    p.add_argument("--json", default=None, help="write the report here")
    p.set_defaults(func=_parity)
    p = bench.add_parser("export", help="onnxruntime vs eager vs torch.compile per graph and rollout step")
    p.add_argument("--json", default=None, help="write the report here")
    p.add_argument("--quick", action="store_true", help="fewer repetitions")
    p.add_argument("--run", default=None, help="benchmark this run (default: random tinyworlds-shape models)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads for torch and onnxruntime alike (default: torch's current setting)")
    p.set_defaults(func=_bench_export)


def _batch_option(text):
    if text == "dynamic":
        return text
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be 'dynamic' or an integer >= 1, got {text!r}") from None


def _check_complete_run(run, graphs):
    """A partial run exports only with --graphs named: a world model needs all three stages."""
    import os

    from wmfast.checkpoint import CONFIG, STAGES

    present = [s for s in STAGES if os.path.isfile(os.path.join(run, s, CONFIG))]
    if graphs or not present:
        return
    missing = [s for s in STAGES if s not in present]
    if missing:
        raise WmfastError(f"{run} has no {' or '.join(missing)} stage, so its export would not be a world model; "
                          f"train it (`wmfast train {missing[0]} --run {run}`) or name the graphs to export with --graphs")


def _export(a):
    from wmfast.export import export_run
    from wmfast.export.parity import parity_exit_code

    if a.policy:   # a policy run: one graph (wmfast/export/policy.py)
        from wmfast.export.policy import cli_export_policy

        return cli_export_policy(a)
    if a.run is None:
        raise WmfastError("wmfast export needs --run RUN (or --policy RUN)")

    from wmfast.export.lapa import cli_export_hook
    if (rc := cli_export_hook(a)) is not None:   # a run with only a LAPA model (lapa/): its own two graphs
        return rc
    _check_complete_run(a.run, a.graphs)
    manifest = export_run(a.run, a.out, opset=a.opset, dtype=a.dtype, batch=a.batch, check=not a.no_parity,
                          graphs=a.graphs, debug=a.debug)
    for name, g in manifest["graphs"].items():
        print(f"{g['file']}: {g['nodes']} nodes, {g['bytes'] / 1e6:.2f} MB, exported in {g['export_s']:.1f} s")
    return parity_exit_code(manifest)


def _parity(a):
    from wmfast.export.lapa import cli_parity_hook
    from wmfast.export.parity import check_parity, print_report, write_report

    if (rc := cli_parity_hook(a)) is not None:   # an export with only the LAPA graphs
        return rc
    from wmfast.export.policy import cli_parity_hook as policy_parity_hook

    if (rc := policy_parity_hook(a)) is not None:   # a policy run: policy.onnx
        return rc
    report = check_parity(a.run, a.onnx, batch=a.batch, device=a.device, strict=a.strict, reps=a.reps)
    print_report(report)
    write_report(report, a.json)
    return 0 if report["passed"] else 1


def _bench_export(a):
    from wmfast.bench.export import run_export_benchmark

    run_export_benchmark(a.json, quick=a.quick, run_dir=a.run, threads=a.threads)


@command
def add_bench_vq(sub, bench):
    p = bench.add_parser("vq", help="fused VQ lookup vs matmul expansion, cdist and FAISS (fp32)")
    p.add_argument("--json", default=None, help="write the report here (and a PNG of the speedups beside it)")
    p.add_argument("--threads", default="1,2", help="comma-separated CPU thread counts (default 1,2)")
    p.add_argument("--quick", action="store_true", help="a few small shapes: a smoke test in seconds")
    p.add_argument("--device", type=device_name, default="cpu", help="cpu or cuda")
    p.add_argument("--max-baseline-gib", type=positive_float, default=2.0,
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


def add_world_options(p, mode: str, steps: int):
    """The World options `rollout` and `play` share: engine mode, MaskGIT steps, start, backend, device."""
    p.add_argument("--steps", type=positive_int, default=steps, help="MaskGIT steps per frame")
    p.add_argument("--mode", choices=["compat", "fast"], default=mode,
                   help="compat: the reference's exact tokens; fast: named approximations, fastest")
    p.add_argument("--data", default=None, help="dataset for the context frames (default: the data the run was "
                                                "trained on, else the embedded default game)")
    p.add_argument("--episode", type=nonneg_int, default=0, help="episode of the dataset to start from")
    p.add_argument("--backend", choices=["eager", "compile", "onnx"], default="eager",
                   help="onnx needs `wmfast export --run RUN` first")
    p.add_argument("--device", type=device_name, default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")


@command
def add_rollout(sub, bench):
    p = sub.add_parser("rollout", help="roll a trained world model out from an episode; write a GIF/MP4")
    p.add_argument("--run", required=True, help="run directory")
    p.add_argument("--actions", required=True, help="latent action ids, e.g. 0,1,1,3; game actions by name, e.g. "
                                                    "UP,UP,LEFT (through RUN/action_map.json from `wmfast eval`); "
                                                    "or 'infer' (the latent actions of the episode's true frames)")
    p.add_argument("--action-space", choices=["auto", "latent", "game"], default="auto",
                   help="what --actions holds: auto = names are game actions, numbers latent ids; game = game "
                        "action names or ids")
    p.add_argument("--out", default="rollout.gif", type=output_file(".gif", ".mp4"),
                   help="GIF or MP4 (beside the true frames when the data has them)")
    add_world_options(p, mode="compat", steps=10)
    p.add_argument("--temperature", type=nonneg_float, default=0.0, help="MaskGIT sampling temperature (0: argmax)")
    p.add_argument("--seed", type=nonneg_int, default=None, help="sampling seed (with --temperature > 0)")
    p.set_defaults(func=_rollout)
    p = sub.add_parser("play", help="play a world model in the terminal: keys 0-9 are actions (latent ids, or the "
                                    "game's actions with --action-space game), q quits")
    p.add_argument("--run", required=True, help="run directory")
    p.add_argument("--out", default=None, type=output_file(".png", ".gif", ".mp4"),
                   help="frames written live: .png (latest frame) or .gif/.mp4 (on exit)")
    p.add_argument("--ansi", action="store_true", help="also draw frames in the terminal (default without --out)")
    add_world_options(p, mode="fast", steps=4)
    p.add_argument("--action-space", choices=["latent", "game"], default="latent",
                   help="keys are latent action ids, or game action ids through RUN/action_map.json")
    p.set_defaults(func=_play)
    p = bench.add_parser("rollout", help="World engine (compat, fast) vs the reference rollout loop: speed and quality")
    p.add_argument("--json", default=None, help="write the report here")
    p.add_argument("--run", default=None, help="trained run for the quality table (default: the shipped demo model)")
    p.add_argument("--data", default=None, help="held-out episodes for quality (default: the embedded default game)")
    p.add_argument("--quick", action="store_true", help="fewer batch sizes, frames and episodes")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's choice)")
    p.set_defaults(func=_bench_rollout)


def _rollout(a):
    from wmfast.rollout.play import render_rollout

    r = render_rollout(a.run, a.actions, a.out, a.steps, a.mode, a.data, a.episode, a.backend, a.device,
                       a.temperature, a.seed, action_space=a.action_space)
    print(f"{r['out']}: {r['frames']} frames ({'true | generated' if r['side_by_side'] else 'generated'}), "
          f"{r['ms_per_frame']:.1f} ms/frame, {r['world']}")


def _play(a):
    from wmfast.rollout.play import play

    play(a.run, a.out, a.ansi or None, a.data, a.episode, a.mode, a.steps, a.backend, a.device,
         action_space=a.action_space)


def _bench_rollout(a):
    from wmfast.bench.rollout import bench_rollout

    bench_rollout(a.json, a.run, a.data, a.quick, a.threads)


@command
def add_pair_attention(sub, bench):
    p = bench.add_parser("attention", help="pair-window attention: ours vs cat+SDPA+mean (eager, compiled), "
                                           "strided SDPA, FlexAttention (CUDA)")
    p.add_argument("--json", default=None, help="write the report here (and a PNG of the speedups beside it)")
    p.add_argument("--quick", action="store_true", help="three small shapes: a smoke test")
    p.add_argument("--device", type=device_name, default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"], help="q, k, v dtype")
    p.add_argument("--reps", type=positive_int, default=5, help="timed repetitions per shape")
    p.add_argument("--shapes", default=None, help="PxDxT items replacing the grid, e.g. 256x16x4,64x32x8")
    p.add_argument("--max-seconds", type=positive_float, default=None,
                   help="start no new shape after this many seconds (the rest are noted as not measured)")
    p.set_defaults(func=_bench_attention)
    compare = sub.add_parser("compare", help="controlled comparisons of model variants")
    compare_sub = compare.add_subparsers(dest="compare", required=True)
    p = compare_sub.add_parser(
        "lam", help="latent action model variants (legacy transformer, windowed-attention encoder, conv LAM; "
                    "then a dynamics model on each): same data, seeds and steps, scored by `wmfast eval`'s "
                    "evaluator; markdown + JSON report (mean ± std over seeds) with plots")
    p.add_argument("--data", default=None, help="game:NAME or a dataset path (default: the embedded default game)")
    p.add_argument("--steps", type=positive_int, default=300, help="training steps per stage")
    p.add_argument("--out", default="compare-lam", help="output folder")
    p.add_argument("--preset", default="tiny", choices=["tiny", "small", "tinyworlds"],
                   help="model size preset (wmfast.train.PRESETS)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="clips per optimizer step")
    p.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2")
    p.add_argument("--variants", default="legacy,windowed,conv", help="comma-separated, from legacy,windowed,conv")
    p.add_argument("--eval-clips", type=positive_int, default=16, help="held-out clips per evaluation")
    p.add_argument("--horizon", type=positive_int, default=4, help="frames generated per held-out clip")
    p.add_argument("--device", type=device_name, default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    p.set_defaults(func=_compare_lam)
    p = compare_sub.add_parser(
        "dynamics", help="dynamics variants (how the action enters: FiLM only, local window, relative-position "
                         "bias, the action-set bias) trained on one run's tokenizer and LAM, scored by the evaluator")
    p.add_argument("--run", required=True, help="run folder with trained tokenizer/ and actions/ (left unchanged)")
    p.add_argument("--data", default=None, help="dataset spec (default: the data the run was trained on)")
    p.add_argument("--steps", type=positive_int, default=1000, help="dynamics training steps per variant")
    p.add_argument("--out", default="compare-dynamics", help="output folder")
    p.add_argument("--preset", default="small", choices=["tiny", "small", "tinyworlds"], help="model size preset")
    p.add_argument("--batch-size", type=positive_int, default=16, help="clips per optimizer step")
    p.add_argument("--lr", type=positive_float, default=None, help="learning rate (default: the demo recipe's)")
    p.add_argument("--device", type=device_name, default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    p.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1")
    p.add_argument("--variants", default="film,recipe,action-bias-weighted",
                   help="comma-separated, from film,film-future,window-bias,action-bias-global,action-bias,"
                        "action-bias-weighted,recipe")
    p.add_argument("--eval-clips", type=positive_int, default=16, help="held-out clips per evaluation")
    p.set_defaults(func=_compare_dynamics)


def _bench_attention(a):
    from wmfast.bench.attention import parse_shapes, run_attention_bench

    run_attention_bench(a.json, quick=a.quick, device=a.device, dtype=a.dtype, reps=a.reps,
                        shapes=parse_shapes(a.shapes) if a.shapes else None, max_seconds=a.max_seconds)


def seed_list(text: str) -> list:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise WmfastError(f"--seeds must be comma-separated integers, got {text!r}") from None


def _compare_lam(a):
    from wmfast.compare import compare_lam

    seeds = seed_list(a.seeds)
    variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    report = compare_lam(a.data, a.steps, a.out, preset=a.preset, batch_size=a.batch_size, seeds=seeds,
                         variants=variants, device=a.device, eval_clips=a.eval_clips, horizon=a.horizon)
    print(f"{report['markdown']}: {', '.join(report['variants'])} LAM report")


def _compare_dynamics(a):
    from wmfast.compare import compare_dynamics

    seeds = seed_list(a.seeds)
    report = compare_dynamics(a.run, a.data, a.steps, a.out, preset=a.preset, batch_size=a.batch_size, seeds=seeds,
                              variants=[v.strip() for v in a.variants.split(",") if v.strip()],
                              eval_clips=a.eval_clips, lr=a.lr, device=a.device)
    print(f"{report['markdown']}: dynamics variants report")


def main(argv=None):
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args._given = given_options(parser, argv)
    try:
        result = args.func(args)
    except WmfastError as e:
        print(f"wmfast: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:   # a path that cannot be read or written (not a folder, no permission, disk full)
        print(f"wmfast: error: {e.strerror or e}{': ' + repr(e.filename) if e.filename else ''}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"wmfast: interrupted{': ' + str(e) if str(e) else ''}", file=sys.stderr)
        return 130
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
