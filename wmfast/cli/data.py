"""`wmfast data game|atari|convert|info`: make and inspect datasets (wmfast.data)."""
from wmfast.cli.common import deprecated_alias, nonneg_int, output_file, positive_int, unit_float

EXAMPLES = {
    "data": "examples:\n  wmfast data game --game pong --episodes 100 --out pong.h5\n"
            "  wmfast data info pong.h5 --preview pong.png",
    "game": "examples:\n  wmfast data game --game pong --episodes 100 --out pong.h5",
    "atari": "examples:\n  wmfast data atari --game Pong --episodes 20 --out pong.h5",
    "convert": "examples:\n  wmfast data convert videos/ --size 64 --out mine.h5\n"
               "  wmfast data convert tinyworlds_pong.h5 --out pong.h5",
    "info": "examples:\n  wmfast data info pong.h5 --preview pong.png\n  wmfast data info game:maze",
}


def add_commands(sub):
    data = sub.add_parser("data", help="make and inspect datasets", epilog=EXAMPLES["data"]) \
        .add_subparsers(dest="data_command", required=True)
    p = data.add_parser("game", help="record an embedded game (frames + true actions) to a wmfast .h5",
                        epilog=EXAMPLES["game"])
    p.add_argument("--game", default=None, help="embedded game name (default: the demo's game)")
    p.add_argument("--episodes", type=positive_int, default=100, help="episodes to record")
    p.add_argument("--episode-steps", type=positive_int, default=100, help="actions per episode (frames = steps + 1)")
    deprecated_alias(p, "--steps", "--episode-steps")
    p.add_argument("--size", type=positive_int, default=64, help="square frame size in pixels")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed for the game and its random policy")
    p.add_argument("--out", required=True, type=output_file(".h5", ".hdf5"), help="wmfast .h5 file to write")
    p.set_defaults(func=_data_game)
    p = data.add_parser("atari", help="record Atari episodes through ale-py to a wmfast .h5", epilog=EXAMPLES["atari"])
    p.add_argument("--game", required=True, help="ALE game, e.g. Pong, Breakout, SpaceInvaders")
    p.add_argument("--episodes", type=positive_int, default=20, help="episodes to record")
    p.add_argument("--size", type=nonneg_int, default=64, help="square frame size (area resize); 0 keeps 210x160")
    p.add_argument("--frameskip", type=positive_int, default=4, help="emulator frames per action")
    p.add_argument("--policy", choices=["random", "tracker"], default=None,
                   help="random (the default): every action drawn independently, unless --repeat; tracker (Pong) "
                        "follows the ball, which makes the action a function of the frame")
    p.add_argument("--repeat", type=unit_float, default=0.0,
                   help="random policy: probability of repeating the previous action (0: i.i.d., the most "
                        "identifiable actions; 0.5: runs like a player holding a button)")
    p.add_argument("--sticky", type=unit_float, default=0.0, help="ALE repeat_action_probability (emulator side)")
    p.add_argument("--max-steps", type=positive_int, default=500, help="cap on steps per episode")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed for the emulator and the policy")
    p.add_argument("--out", required=True, type=output_file(".h5", ".hdf5"), help="wmfast .h5 file to write")
    p.set_defaults(func=_data_atari)
    p = data.add_parser("convert", help="a video/PNG folder or tinyworlds .h5 -> a wmfast .h5",
                        epilog=EXAMPLES["convert"])
    p.add_argument("source", help="a tinyworlds .h5, a folder of videos or PNG frames, or a video file")
    p.add_argument("--size", type=positive_int, default=None, help="square frame size (area resize; default: keep)")
    p.add_argument("--out", required=True, type=output_file(".h5", ".hdf5"), help="wmfast .h5 file to write")
    p.set_defaults(func=_data_convert)
    p = data.add_parser("info", help="summarize a dataset (file, folder, game:NAME, atari:GAME)", epilog=EXAMPLES["info"])
    p.add_argument("source", help="a dataset: .h5 file, folder, game:NAME[:EPISODES] or atari:GAME")
    p.add_argument("--preview", default=None, type=output_file(".png"),
                   help="also draw the first frames of a few episodes to this PNG")
    p.set_defaults(func=_data_info)


def _data_game(a):
    from wmfast.data import DEFAULT_GAME, generate_game_dataset

    print(generate_game_dataset(a.game or DEFAULT_GAME, a.episodes, a.episode_steps, a.size, a.seed, a.out))


def _data_atari(a):
    from wmfast.data import generate_atari_dataset

    print(generate_atari_dataset(a.game, a.episodes, a.size, a.frameskip, a.policy, a.seed, a.max_steps,
                                 a.sticky, a.repeat, out=a.out))


def _data_convert(a):
    from wmfast.data import convert_dataset

    print(convert_dataset(a.source, a.out, a.size))


def _data_info(a):
    import json

    from wmfast.data import dataset_info

    print(json.dumps(dataset_info(a.source, a.preview), indent=1, default=str))
