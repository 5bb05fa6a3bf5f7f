"""`wmfast eval`: the evaluator (wmfast.evaluate.evaluate_run) and, with --long-play, the long-play
harness (wmfast.eval.long_play.long_play_run) from the command line."""
import argparse
import os

from wmfast.cli.common import choice_list, deprecated_alias, nonneg_int, positive_int, retired_option


def checked_list(check, what: str):
    """An argparse type: comma-separated names, each checked by check(names) (raises WmfastError)."""
    def parse(text):
        from wmfast.errors import WmfastError

        names = [m.strip() for m in str(text).split(",") if m.strip()]
        try:
            check(names)
        except WmfastError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        if not names:
            raise argparse.ArgumentTypeError(f"must name at least one of the {what}, got {text!r}")
        return names
    parse.__name__ = f"comma-separated {what}"
    return parse


def _check_modes(names):
    """World settings, e.g. compat:10,fast:4,fast:2:window."""
    from wmfast.eval.long_play import parse_mode

    for m in names:
        parse_mode(m)


def _check_footage(names):
    """wmfast.data.footage variants, or 'all'."""
    from wmfast.data.footage import check_variants

    if names != ["all"]:
        check_variants(names)


def add_commands(sub):
    p = sub.add_parser("eval", help="evaluate a run on held-out episodes: action NMI/purity, code usage, PSNR per "
                                    "step vs copy-last-frame, ΔtPSNR, controls sheet (reads the run, writes only OUT)",
                       epilog="examples:\n  wmfast eval --run runs/maze --episodes 32\n"
                              "  wmfast eval --run runs/maze --long-play 500 --modes compat:10,fast:2 --seed 3 --out lp/")
    p.add_argument("--run", required=True, help="run directory (tokenizer/, actions/, dynamics/)")
    p.add_argument("--data", default=None, help="dataset: .h5 file, video/PNG folder, game:NAME or atari:GAME "
                                                "(held out exactly as the trainer split it; default: the data "
                                                "the run was trained on)")
    p.add_argument("--episodes", type=positive_int, default=16, help="held-out clips for the rollout metrics (action "
                                                                     "metrics use every held-out transition)")
    p.add_argument("--horizon", type=positive_int, default=8, help="frames generated per clip")
    p.add_argument("--maskgit-steps", type=positive_int, default=8, help="MaskGIT steps per frame")
    deprecated_alias(p, "--steps", "--maskgit-steps")
    p.add_argument("--seed", type=nonneg_int, default=0, help="clip sampling and random-action seed")
    p.add_argument("--counterfactual", type=nonneg_int, default=None, metavar="STARTS",
                   help="Atari recordings (runs with an action map): held-out emulator states from which each move "
                        "is held for --horizon steps in the real game and in the World, scored by paddle direction, "
                        "ball and PSNR beside copy-last-frame; writes counterfactual.png (default: 16; 0 skips)")
    p.add_argument("--footage", type=checked_list(_check_footage, "footage variants"), default=None,
                   metavar="VARIANTS", nargs="?", const=["all"],
                   help="also score the held-out clips re-encoded as users' footage: comma-separated "
                        "jpeg75, jpeg40, h264, rescale, shift1 (no value: all of them)")
    p.add_argument("--json", default=None, help="write the numbers here (default: OUT/metrics.json)")
    p.add_argument("--out", default=None, help="folder for confusion.png, psnr.png, controls.png/.gif, rollout.gif, "
                                               "counterfactual.png "
                                               "(default: RUN/eval)")
    moved = "the evaluator only reads a run; `wmfast train action-map --run RUN --steps N` fits RUN/action_map.json"
    retired_option(p, "--no-map", moved, takes_value=False)
    retired_option(p, "--map-steps", moved)
    g = p.add_argument_group("long play (--long-play): the World against the real game (embedded, or the Atari "
                             "emulator) replaying its actions; writes OUT/long_play.json, .png and .gif")
    g.add_argument("--long-play", type=positive_int, default=None, metavar="FRAMES",
                   help="run only the long-play harness, FRAMES generated frames per game (the issue's default: 500)")
    g.add_argument("--modes", type=checked_list(_check_modes, "modes"), default=None,
                   help="World settings MODE[:MASKGIT_STEPS][:stream|window] (default: compat:10,fast:1,fast:2,"
                        "fast:4,fast:8,fast:10)")
    g.add_argument("--backends", type=choice_list("eager", "compile", "onnx"), default=["eager"],
                   help="comma-separated rollout backends (onnx needs `wmfast export` first)")
    g.add_argument("--actions", type=choice_list("random", "policy"), default=["random", "policy"],
                   help="action streams: random held actions (1-7 steps each) and the game's own policy")
    g.add_argument("--games", type=positive_int, default=8, help="games played side by side (one World batch)")
    p.set_defaults(func=_eval)


def _eval(a):
    if a.long_play:
        return _long_play(a)
    from wmfast.evaluate import evaluate_run, format_table

    out = a.out or os.path.join(a.run, "eval")
    json_path = a.json or os.path.join(out, "metrics.json")
    more = {} if a.counterfactual is None else {"counterfactual_starts": a.counterfactual}
    if a.footage:
        from wmfast.data.footage import VARIANTS

        more["footage"] = list(VARIANTS) if a.footage == ["all"] else a.footage
    report = evaluate_run(a.run, a.data, episodes=a.episodes, horizon=a.horizon, steps=a.maskgit_steps, seed=a.seed,
                          out=out, json_path=json_path, **more)
    print(format_table(report))
    print(f"metrics: {json_path}  pictures: {out}")


def _long_play(a):
    from wmfast.eval.long_play import DEFAULT_MODES, format_long_play, long_play_run

    out = a.out or os.path.join(a.run, "eval")
    report = long_play_run(a.run, a.modes or DEFAULT_MODES, a.backends, a.actions, games=a.games, steps=a.long_play,
                           seed=a.seed, out=out)
    print(format_long_play(report))
    print(f"long play: {os.path.join(out, 'long_play.json')}  pictures: {report['plot']}, {report['gif']}")
