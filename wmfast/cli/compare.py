"""`wmfast compare lam|dynamics`: controlled comparisons of model variants (wmfast.compare)."""
from wmfast.cli.common import device_name, nonneg_int_list, positive_float, positive_int


def _names(text: str) -> list:
    return [v.strip() for v in text.split(",") if v.strip()]


def add_commands(sub):
    compare = sub.add_parser("compare", help="controlled comparisons of model variants",
                             epilog="examples:\n  wmfast compare lam --data game:maze --steps 300")
    compare_sub = compare.add_subparsers(dest="compare", required=True)
    p = compare_sub.add_parser(
        "lam", help="latent action model variants (legacy transformer, windowed-attention encoder, conv LAM; "
                    "then a dynamics model on each): same data, seeds and steps, scored by `wmfast eval`'s "
                    "evaluator; markdown + JSON report (mean ± std over seeds) with plots",
        epilog="examples:\n  wmfast compare lam --data game:maze --steps 300 --seeds 0,1,2")
    p.add_argument("--data", default=None, help="game:NAME or a dataset path (default: the embedded default game)")
    p.add_argument("--steps", type=positive_int, default=300, help="training steps per stage")
    p.add_argument("--out", default="compare-lam", help="output folder")
    p.add_argument("--preset", default="tiny", choices=["tiny", "small", "tinyworlds"],
                   help="model size preset (wmfast.train.PRESETS)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="clips per optimizer step")
    p.add_argument("--seeds", type=nonneg_int_list, default="0", help="comma-separated seeds, e.g. 0,1,2")
    p.add_argument("--variants", default="legacy,windowed,conv", help="comma-separated, from legacy,windowed,conv")
    p.add_argument("--eval-clips", type=positive_int, default=16, help="held-out clips per evaluation")
    p.add_argument("--horizon", type=positive_int, default=4, help="frames generated per held-out clip")
    p.add_argument("--device", type=device_name, default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    p.set_defaults(func=_compare_lam)
    p = compare_sub.add_parser(
        "dynamics", help="dynamics variants (how the action enters: FiLM only, local window, relative-position "
                         "bias, the action-set bias) trained on one run's tokenizer and LAM, scored by the evaluator",
        epilog="examples:\n  wmfast compare dynamics --run wmfast/assets/pretrained/maze --seeds 0,1")
    p.add_argument("--run", required=True, help="run folder with trained tokenizer/ and actions/ (left unchanged)")
    p.add_argument("--data", default=None, help="dataset spec (default: the data the run was trained on)")
    p.add_argument("--steps", type=positive_int, default=1000, help="dynamics training steps per variant")
    p.add_argument("--out", default="compare-dynamics", help="output folder")
    p.add_argument("--preset", default="small", choices=["tiny", "small", "tinyworlds"], help="model size preset")
    p.add_argument("--batch-size", type=positive_int, default=16, help="clips per optimizer step")
    p.add_argument("--lr", type=positive_float, default=None, help="learning rate (default: the demo recipe's)")
    p.add_argument("--device", type=device_name, default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    p.add_argument("--seeds", type=nonneg_int_list, default="0", help="comma-separated seeds, e.g. 0,1")
    p.add_argument("--variants", default="film,recipe,action-bias",
                   help="comma-separated, from film,film-future,action-bias-global,action-bias,recipe")
    p.add_argument("--eval-clips", type=positive_int, default=16, help="held-out clips per evaluation")
    p.set_defaults(func=_compare_dynamics)


def _compare_lam(a):
    from wmfast.compare import compare_lam

    report = compare_lam(a.data, a.steps, a.out, preset=a.preset, batch_size=a.batch_size, seeds=a.seeds,
                         variants=_names(a.variants), device=a.device, eval_clips=a.eval_clips, horizon=a.horizon)
    print(f"{report['markdown']}: {', '.join(report['variants'])} LAM report")


def _compare_dynamics(a):
    from wmfast.compare import compare_dynamics

    report = compare_dynamics(a.run, a.data, a.steps, a.out, preset=a.preset, batch_size=a.batch_size, seeds=a.seeds,
                              variants=_names(a.variants), eval_clips=a.eval_clips, lr=a.lr, device=a.device)
    print(f"{report['markdown']}: dynamics variants report")
