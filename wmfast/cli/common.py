"""What every command group shares: the parser (one-line errors, defaults in --help), typed option
values that check their range before any work starts, --set, deprecated option spellings, and the
command line of a parsed command (to relaunch it on several processes)."""
import argparse
import sys

from wmfast.errors import WmfastError


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each option's help (unless it states its own default or has none);
    epilogs keep their line breaks (examples)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS \
                or "default" in text.lower():
            return text
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2, no usage block), no abbreviated options, and the
    help formatter above; sub-commands inherit it."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args=None, namespace=None):
        return super().parse_known_args(split_set_options(sys.argv[1:] if args is None else list(args)), namespace)

    def error(self, message):
        if "unrecognized arguments" in message and "=" in message:
            message += " (give each --set its own KEY=VALUE: --set a=1 --set b=2)"
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


# -- --set KEY=VALUE ------------------------------------------------------------------------------

class SetOption(argparse.Action):
    """--set KEY=VALUE: one pair per --set, collected in a list. `--set a=1 b=2` still works: the
    command line is rewritten to `--set a=1 --set b=2` first (split_set_options), taking only
    the tokens that contain '=', so `--set a=1 tokenizer` leaves the stage positional alone."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, list(getattr(namespace, self.dest, None) or []) + [values])


def split_set_options(argv: list) -> list:
    out, i = [], 0
    while i < len(argv):
        tok = argv[i]
        out.append(tok)
        i += 1
        if tok == "--":
            out += argv[i:]
            break
        if tok == "--set":
            first = True
            while i < len(argv) and "=" in argv[i] and not argv[i].startswith("-"):
                out += ([] if first else ["--set"]) + [argv[i]]
                first, i = False, i + 1
    return out


def parse_overrides(pairs) -> dict:
    """--set key=value pairs -> dict with ints / floats / bools parsed."""
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise WmfastError(f"--set expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        for parse in (int, float):
            try:
                value = parse(value)
                break
            except ValueError:
                pass
        else:
            value = {"true": True, "false": False}.get(value.lower(), value)
        out[key] = value
    return out


# -- typed option values: every number is range-checked here (a bad one: one line, exit 2) --------

def number(kind, lo=None, lo_open=False, hi=None):
    """An argparse type: int or float within a range, with a message saying what is allowed."""
    from wmfast.config import Range

    rule = Range(lo, hi, lo_open=lo_open)
    allowed = f"{'an integer' if kind is int else 'a number'} {rule.describe()}".strip()

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}") from None
        if kind is float and value != value or not rule.ok(value) or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}")
        return value
    parse.__name__ = allowed
    return parse


positive_int, nonneg_int = number(int, 1), number(int, 0)
positive_float, nonneg_float = number(float, 0, lo_open=True), number(float, 0)
unit_float = number(float, 0, hi=1)                       # a probability or share in [0, 1]


def int_list(lo=None):
    """An argparse type: comma-separated integers >= lo ("1,2,4" -> [1, 2, 4])."""
    item = number(int, lo)

    def parse(text):
        items = [x for x in str(text).split(",") if x.strip()]
        try:
            if items:
                return [item(x.strip()) for x in items]
        except argparse.ArgumentTypeError:
            pass
        raise argparse.ArgumentTypeError(f"must be comma-separated integers{'' if lo is None else f' >= {lo}'}, "
                                         f"got {text!r}")
    parse.__name__ = "comma-separated integers"
    return parse


positive_int_list, nonneg_int_list = int_list(1), int_list(0)


def choice_list(*allowed):
    """An argparse type: a comma-separated subset of `allowed`."""
    def parse(text):
        values = [v.strip() for v in str(text).split(",") if v.strip()]
        bad = [v for v in values if v not in allowed]
        if bad or not values:
            raise argparse.ArgumentTypeError(f"must be comma-separated values from {list(allowed)}, got {text!r}")
        return values
    parse.__name__ = "comma-separated values"
    return parse


def device_name(text):
    """An argparse type: auto, cpu, cuda, cuda:N (checked before any work starts)."""
    from wmfast.config import _device_rule

    allowed = _device_rule(text)
    if allowed:
        raise argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}")
    return text


def output_file(*extensions):
    """An argparse type: a path whose extension the writer supports (checked before the work)."""
    def parse(text):
        if not text.lower().endswith(extensions):
            raise argparse.ArgumentTypeError(f"must end in {' or '.join(extensions)}, got {text!r}")
        return text
    parse.__name__ = "path"
    return parse


# -- renamed options ------------------------------------------------------------------------------

class _Deprecated(argparse.Action):
    """An option kept for one release: one warning line on stderr (`warning`), then the value is
    stored (a renamed option) or dropped (store=False: a retired one)."""

    def __init__(self, option_strings, dest, warning=None, store=True, **kwargs):
        self.warning, self.store = warning, store
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog}: warning: {option_string} is deprecated {self.warning}", file=sys.stderr)
        if self.store:
            setattr(namespace, self.dest, values)


def deprecated_alias(p, old: str, new: str):
    """Keep `old`, the former spelling of option `new` (added to p already), working: same dest and
    type, hidden from --help, one warning line on stderr when used. Call it after adding `new`."""
    action = next(a for a in p._actions if new in a.option_strings)
    p.add_argument(old, dest=action.dest, type=action.type, choices=action.choices, metavar=action.metavar,
                   default=argparse.SUPPRESS, help=argparse.SUPPRESS, action=_Deprecated, warning=f"here, use {new}")


def retired_option(p, name: str, why: str, takes_value: bool = True):
    """An option whose work moved elsewhere: still accepted for one release (hidden from --help), it
    warns on stderr with `why` (where the work went) and changes nothing."""
    p.add_argument(name, nargs=1 if takes_value else 0, default=argparse.SUPPRESS, help=argparse.SUPPRESS,
                   action=_Deprecated, warning=f"and does nothing: {why}", store=False,
                   dest="retired_" + name.strip("-").replace("-", "_"))


# -- help for everything, given options, relaunching ----------------------------------------------

# Help for options registered without any (filled in at build time, so every option has some).
OPTION_HELP = {
    "seed": "random seed", "device": "auto (CUDA when available), cpu, cuda or cuda:N",
    "json": "write the report here as JSON", "quick": "fewer repetitions and shapes: a smoke test",
    "out": "output path", "run": "run directory", "data": "dataset spec: .h5 file, folder, game:NAME or atari:GAME",
    "steps": "number of steps", "batch_size": "batch size", "lr": "learning rate", "reps": "timed repetitions",
    "threads": "torch CPU threads", "episode": "episode index in the dataset", "episodes": "number of episodes",
}


def finish_parser(parser):
    """Fill what sub-commands left out: a help line for every option; every --set takes one
    KEY=VALUE per --set."""
    stack = [parser]
    while stack:
        p = stack.pop()
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                stack.extend(action.choices.values())
            elif "--set" in action.option_strings:
                action.__class__, action.nargs = SetOption, None
                if action.help and "repeat" not in action.help:
                    action.help += " (one KEY=VALUE per --set; repeat it for several)"
            if action.help is None and action.option_strings:
                action.help = OPTION_HELP.get(action.dest, action.dest.replace("_", " "))
            elif action.help is None and not isinstance(action, argparse._SubParsersAction):
                action.help = action.dest.replace("_", " ")
    return parser


def given_options(parser, argv) -> set:
    """dest names of the options written on the command line (not left at their defaults)."""
    dests, stack = {}, [parser]
    while stack:
        p = stack.pop()
        for action in p._actions:
            for opt in action.option_strings:
                dests[opt] = action.dest
            if isinstance(action, argparse._SubParsersAction):
                stack.extend(action.choices.values())
    return {dests[tok.split("=", 1)[0]] for tok in argv if tok.split("=", 1)[0] in dests}


def command_line(parser, args, skip=()) -> list:
    """Parsed arguments -> the command line that gives them again (minus the dests in `skip`),
    for relaunching a command on several processes. Uses long option names (`--run-dir` rather than
    `--run`, which torchrun's own parser would take for its `--run-path`)."""
    out = []
    given = getattr(args, "_given", None)   # options written on the command line (see main)
    for action in parser._actions:
        if action.dest in skip or action.dest == "help" or not hasattr(args, action.dest) \
                or action.help == argparse.SUPPRESS:     # a deprecated spelling: its option says it
            continue
        if given is not None and action.option_strings and action.dest not in given:
            continue   # left at its default: --resume takes the saved run's value
        value = getattr(args, action.dest)
        if not action.option_strings:           # positional
            out += [str(v) for v in value] if isinstance(value, list) else [str(value)]
            continue
        flag = max(action.option_strings, key=len)
        if isinstance(action, argparse._StoreTrueAction):
            out += [flag] if value else []
        elif isinstance(action, argparse._StoreFalseAction):
            out += [] if value else [flag]
        elif isinstance(action, argparse._StoreConstAction):
            out += [flag] if value == action.const and value != action.default else []
        elif value is None:
            continue
        elif isinstance(value, list) and (isinstance(action, argparse._AppendAction) or action.nargs in (None, "?")):
            for v in value:   # one value per flag, repeated (append-style options such as --set)
                out += [flag] + ([str(x) for x in v] if isinstance(v, list) else [str(v)])
        elif isinstance(value, list):
            out += [flag] + [str(v) for v in value]
        else:
            out += [flag, str(value)]
    return out
