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
