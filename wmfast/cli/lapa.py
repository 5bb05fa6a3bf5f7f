"""`wmfast lapa train | eval | extract | classifier`: thin wrappers over wmfast.lapa."""
import json

from wmfast.cli.common import deprecated_alias, device_name, nonneg_int, number, parse_overrides, positive_float, \
    positive_int
from wmfast.errors import WmfastError


def add_commands(sub):
    lapa = sub.add_parser("lapa", help="LAPA-style latent-action VQ-VAE on frame pairs (Atari Breakout)")
    cmds = lapa.add_subparsers(dest="lapa_command", required=True)

    p = cmds.add_parser("train", help="train the LAPA model into RUN/lapa/ (then the code -> action classifier)")
    p.add_argument("--data", required=True, help="dataset: .h5 (e.g. `wmfast data atari --game Breakout --size 0`), "
                                                 "a folder DIR/<episode>/0.png,1.png,..., or atari:Breakout:N")
    p.add_argument("--run", required=True, help="run directory (the model goes to RUN/lapa/)")
    p.add_argument("--config", default="lapa-breakout", help="lapa-breakout (full width) or lapa-breakout-small (CPU)")
    p.add_argument("--steps", dest="iterations", type=nonneg_int, default=None,
                   help="optimizer steps (default: the config's recipe, 100,000 full width)")
    deprecated_alias(p, "--iterations", "--steps")
    p.add_argument("--batch-size", type=positive_int, default=None, help="frame pairs per step (default: the config's)")
    p.add_argument("--grad-accum", type=positive_int, default=None,
                   help="batches per optimizer step (default: the config's)")
    p.add_argument("--lr", type=positive_float, default=None)
    p.add_argument("--device", type=device_name, default=None)
    p.add_argument("--seed", type=nonneg_int, default=None)
    p.add_argument("--split-seed", type=nonneg_int, default=0, help="seed of the 80/10/10 episode split")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.add_argument("--no-classifier", action="store_true", help="skip the code -> action classifier at the end")
    p.add_argument("--wandb", action="store_true", help="also log to Weights & Biases in offline mode")
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE",
                   help="LapaConfig or LapaTrainConfig overrides, e.g. grayscale=false val_every=500")
    p.set_defaults(func=_train)

    p = cmds.add_parser("eval", help="PSNR/SSIM/L1/L2 vs copy-last-frame and shuffled codes, code usage, figures")
    p.add_argument("--run", required=True)
    p.add_argument("--data", default=None, help="default: the data the run was trained on")
    p.add_argument("--split", default="test", choices=["train", "val", "test", "all"], help="which episodes to score")
    p.add_argument("--max-pairs", type=positive_int, default=None,
                   help="score at most this many frame pairs (default: all)")
    p.add_argument("--best", action="store_true", help="score best/ (best val loss) instead of the last weights")
    p.add_argument("--out", default=None, help="default: RUN/lapa/eval_<split>/")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_eval)

    p = cmds.add_parser("extract", help="codes for every frame pair -> HDF5, plus the code -> game-event table")
    p.add_argument("--run", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True, help="output .h5")
    p.add_argument("--frames", action="store_true", help="also store frames t and t+1 (default: indices)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_extract)

    p = cmds.add_parser("classifier", help="(re)train the code -> true action classifier; test accuracy vs majority")
    p.add_argument("--run", required=True)
    p.add_argument("--data", default=None)
    p.add_argument("--labelled-fraction", type=number(float, 0, lo_open=True, hi=1), default=1.0,
                   help="share of training pairs whose true action is used")
    p.add_argument("--epochs", type=positive_int, default=60, help="classifier training epochs")
    p.set_defaults(func=_classifier)


def _train(a):
    import dataclasses

    from wmfast.lapa.train import TRAIN_RECIPES, LapaTrainConfig, train_lapa
    from wmfast.models.lapa import LapaConfig

    sets = parse_overrides(a.set)
    train_keys = {f.name for f in dataclasses.fields(LapaTrainConfig)}
    model_keys = {f.name for f in dataclasses.fields(LapaConfig)}
    unknown = sorted(set(sets) - train_keys - model_keys)
    if unknown:
        raise WmfastError(f"--set: unknown keys {unknown}")
    train = LapaTrainConfig(**{**TRAIN_RECIPES.get(a.config, {}), **{k: v for k, v in sets.items() if k in train_keys}})
    flags = {"iterations": a.iterations, "batch_size": a.batch_size, "grad_accum": a.grad_accum, "lr": a.lr,
             "device": a.device, "seed": a.seed}
    train = dataclasses.replace(train, wandb=a.wandb, **{k: v for k, v in flags.items() if v is not None})
    final = train_lapa(a.run, a.data, config=a.config, train=train, resume=a.resume, split_seed=a.split_seed,
                       model_overrides={k: v for k, v in sets.items() if k in model_keys})
    print(json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in final.items()}))
    if not a.no_classifier:
        from wmfast.data import load_dataset
        from wmfast.lapa.classifier import train_classifier

        ds = load_dataset(a.data)
        if ds.actions is not None:
            print(json.dumps(train_classifier(a.run, ds)))


def _eval(a):
    from wmfast.lapa.evaluate import evaluate_lapa

    report = evaluate_lapa(a.run, a.data, split=a.split, out=a.out, max_pairs=a.max_pairs, device=a.device,
                           best=a.best)
    print(json.dumps(report, indent=1))


def _extract(a):
    from wmfast.lapa.extract import extract_codes

    print(json.dumps(extract_codes(a.run, a.data, a.out, frames=a.frames, device=a.device), indent=1))


def _classifier(a):
    from wmfast.lapa.classifier import train_classifier

    print(json.dumps(train_classifier(a.run, a.data, labelled_fraction=a.labelled_fraction, epochs=a.epochs),
                     indent=1))
