"""`wmfast demo`: the shipped (or freshly trained) world model on the default game (wmfast.demo)."""
from wmfast.cli.common import deprecated_alias, nonneg_int, positive_float, positive_int

EXAMPLES = ("examples:\n  wmfast demo                      # the shipped maze model, seconds\n"
            "  wmfast demo --train --scale 0.1  # train it from scratch, a tenth of the recipe's steps\n"
            "  wmfast demo --data game:pong     # no shipped model: trains one")


def add_commands(sub):
    p = sub.add_parser("demo", help="the main job: a world model on the default game, a rollout GIF and metrics",
                       epilog=EXAMPLES)
    p.add_argument("--out", default="demo", help="output folder (rollout.gif, metrics.json, run/ when trained)")
    p.add_argument("--data", default=None, help="game:NAME, atari:GAME or a dataset path (default: the default game)")
    p.add_argument("--train", action="store_true", help="train from scratch instead of loading the shipped model")
    p.add_argument("--scale", type=positive_float, default=1.0, help="with --train: multiply the recipe's training steps")
    p.add_argument("--episodes", type=positive_int, default=8, help="held-out clips to evaluate")
    p.add_argument("--horizon", type=positive_int, default=8, help="frames to generate per clip")
    p.add_argument("--maskgit-steps", type=positive_int, default=8, help="MaskGIT steps per frame")
    deprecated_alias(p, "--steps", "--maskgit-steps")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed for the held-out clips and sampling")
    p.set_defaults(func=_demo)


def _demo(a):
    from wmfast.demo import run_demo

    run_demo(a.out, a.data, a.train, a.scale, a.episodes, a.horizon, a.maskgit_steps, a.seed)
