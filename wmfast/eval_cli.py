"""`wmfast eval`: the one evaluator (wmfast.evaluate.evaluate_run) from the command line."""
from wmfast.cli import command


@command
def add_eval(sub, bench):
    p = sub.add_parser("eval", help="evaluate a run on held-out episodes: action NMI/purity, code usage, PSNR per "
                                    "step vs copy-last-frame, ΔtPSNR, controls sheet; writes RUN/action_map.json")
    p.add_argument("--run", required=True, help="run directory (tokenizer/, actions/, dynamics/)")
    p.add_argument("--data", default=None, help="dataset: .h5 file, video/PNG folder, game:NAME or atari:GAME "
                                                "(held out exactly as the trainer split it; default: the data "
                                                "the run was trained on)")
    p.add_argument("--episodes", type=int, default=16, help="held-out clips for the rollout metrics (action "
                                                            "metrics use every held-out transition)")
    p.add_argument("--horizon", type=int, default=8, help="frames generated per clip")
    p.add_argument("--steps", type=int, default=8, help="MaskGIT steps per frame")
    p.add_argument("--seed", type=int, default=0, help="clip sampling and random-action seed")
    p.add_argument("--json", default=None, help="write the numbers here (default: OUT/metrics.json)")
    p.add_argument("--out", default=None, help="folder for confusion.png, psnr.png, controls.png/.gif, rollout.gif "
                                               "(default: RUN/eval)")
    p.add_argument("--no-map", action="store_true", help="do not write RUN/action_map.json")
    p.set_defaults(func=_eval)


def _eval(a):
    import os

    from wmfast.evaluate import evaluate_run, format_table

    out = a.out or os.path.join(a.run, "eval")
    json_path = a.json or os.path.join(out, "metrics.json")
    report = evaluate_run(a.run, a.data, episodes=a.episodes, horizon=a.horizon, steps=a.steps, seed=a.seed,
                          out=out, json_path=json_path, write_map=not a.no_map)
    print(format_table(report))
    if report.get("action_map_file"):
        print(f"action map: {report['action_map_file']}")
    print(f"metrics: {json_path}  pictures: {out}")
