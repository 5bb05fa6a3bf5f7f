"""The `wmfast` command: a thin layer over the library. Each subcommand parses its flags and
calls one library function; bad input prints one line and exits with code 2."""
import argparse
import sys

from wmfast.errors import WmfastError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wmfast", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("bench", help="benchmarks (JSON with --json)").add_subparsers(dest="bench", required=True)
    for register in COMMANDS:
        register(sub, bench)
    return parser


# Each entry adds its subparser(s) and sets `func`; see the add_* functions below.
COMMANDS = []


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
    t.add_argument("run_dir", metavar="RUN_DIR", help="results/<run>, its parent, a stage folder or one checkpoint folder")
    t.add_argument("--out", required=True, help="wmfast run directory to write")
    t.add_argument("--step", default=None, help="N for every stage, or stage=N[,stage=N] (default: latest per stage)")
    t.add_argument("--stages", default=None, help="subset to import, e.g. tokenizer,dynamics (default: all found)")
    t.add_argument("--set", nargs="*", default=None, metavar="KEY=INT",
                   help="config values for keys the saved config lacks, e.g. frame_size=64")
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
