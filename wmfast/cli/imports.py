"""`wmfast import tinyworlds`: checkpoints of other projects -> a wmfast run (wmfast.compat)."""

EXAMPLES = ("examples:\n  wmfast import tinyworlds results/my_run --out runs/imported\n"
            "  wmfast import tinyworlds results/my_run --out runs/imported --stages tokenizer,dynamics")


def add_commands(sub):
    p = sub.add_parser("import", help="convert checkpoints from other projects into a wmfast run",
                       epilog="examples:\n  wmfast import tinyworlds results/my_run --out runs/imported")
    sources = p.add_subparsers(dest="source", required=True)
    t = sources.add_parser("tinyworlds", help="a tinyworlds run -> a wmfast run (safetensors + config.json); "
                                              "state.pt is read without running its code", epilog=EXAMPLES)
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
