"""The `wmfast` command: a thin layer over the library. Each subcommand parses its flags and
calls one library function; bad input prints one line and exits with code 2."""
import sys

from wmfast.errors import WmfastError

# One module per command group, in the order `wmfast --help` lists them; each has add_commands(sub),
# which adds its sub-parsers and sets `func` (bench: its sub-commands under `wmfast bench`).
GROUPS = ("train", "demo", "imports", "data", "export", "rollout", "lapa", "viz", "eval", "policy",
          "serve")


def build_parser():
    import importlib

    from wmfast.cli import bench
    from wmfast.cli.common import Parser, finish_parser

    parser = Parser(prog="wmfast", description=__doc__, epilog="run `wmfast COMMAND --help` for a command's "
                    "options and examples; bad input prints one line and exits with code 2")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    bench.add_commands(sub.add_parser("bench", help="benchmarks (JSON with --json)")
                       .add_subparsers(dest="bench", required=True))
    for group in GROUPS:
        importlib.import_module(f"wmfast.cli.{group}").add_commands(sub)
    return finish_parser(parser)


def _version() -> str:
    import platform

    import torch

    import wmfast

    return f"wmfast {wmfast.__version__} (torch {torch.__version__}, Python {platform.python_version()})"


def main(argv=None):
    from wmfast.cli.common import given_options

    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:   # a bad option (its one-line error is printed): the exit code; --help, --version end here
        if e.code in (0, None):
            raise
        return e.code
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
