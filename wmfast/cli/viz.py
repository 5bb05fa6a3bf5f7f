"""`wmfast viz attention`: per-head attention maps of a world model (wmfast.viz.report)."""
from wmfast.cli.common import device_name, nonneg_int, parse_overrides, positive_int
from wmfast.errors import WmfastError


def add_commands(sub):
    viz = sub.add_parser("viz", help="visualise a model's internals").add_subparsers(dest="viz", required=True)
    p = viz.add_parser("attention", help="per-head attention maps of every attention call, spatial attention over "
                                         "the frame, temporal frame x frame maps, an entropy chart and index.html")
    p.add_argument("--run", default=None, help="run directory (or a tinyworlds run)")
    p.add_argument("--preset", default=None, help="random weights of this size preset instead of a run "
                                                  "(tiny, small, tinyworlds), for checking shapes")
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE",
                   help="with --preset: config values, e.g. use_windowed_attention=true")
    p.add_argument("--data", default=None, help="dataset for the clip (default: the embedded default game)")
    p.add_argument("--episode", type=nonneg_int, default=0)
    p.add_argument("--start", type=nonneg_int, default=0, help="first frame of the clip inside the episode")
    p.add_argument("--frames", type=positive_int, default=None, help="clip length (default: the dynamics context length)")
    p.add_argument("--step", type=nonneg_int, default=None, help="frame whose spatial attention is drawn (default: last)")
    p.add_argument("--query", default=None, help="query patch: index or ROW,COL (default: the patch that changes most)")
    p.add_argument("--out", default="attention", help="output folder")
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.add_argument("--device", type=device_name, default="auto")
    p.set_defaults(func=_viz_attention)


def _viz_attention(a):
    from wmfast.viz.report import attention_report

    if a.set and a.preset is None:
        raise WmfastError("--set applies to --preset models only")
    r = attention_report(run=a.run, preset=a.preset, data=a.data, step=a.step, query=a.query, out=a.out,
                         frames=a.frames, episode=a.episode, start=a.start, overrides=parse_overrides(a.set),
                         seed=a.seed, device=a.device)
    for note in r["notes"]:
        print(f"note: {note}")
    low = sorted(r["min_entropy"].items(), key=lambda kv: kv[1])[:3]
    print(f"{r['index']}: {len(r['calls'])} attention calls, frame {r['step']}, query patch {r['query']}; "
          f"lowest head entropies: " + ", ".join(f"{n} {e:.2f} nats" for n, e in low))
