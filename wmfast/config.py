"""Configs are dataclasses saved as JSON (never pickled), checked by one validation layer.

Every Config dataclass validates itself when it is built (constructor, from_dict, --set,
presets, dataclasses.replace): field types from the annotations, ranges from FIELD_RULES (by
field name, so a field means the same in every config) or a field's metadata["rule"], then
the class's cross-field rules in `check()`. Each failure is one WmfastError line naming the
field, the value and what is allowed.
"""
import dataclasses
import functools
import json
import math
import os
import typing

from wmfast.errors import WmfastError


def save_json(obj: dict, path):
    """Atomic JSON write: a killed process leaves the old file or the new one, never half."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_json(path) -> dict:
    if not os.path.exists(path):
        raise WmfastError(f"missing file: {path}")
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WmfastError(f"corrupt JSON in {path}: {e}") from None


# -- rules ---------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Range:
    """lo <= value <= hi (either end open with lo_open / hi_open, None for unbounded)."""
    lo: float = None
    hi: float = None
    lo_open: bool = False
    hi_open: bool = False

    def ok(self, v) -> bool:
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        return self.hi is None or (v < self.hi if self.hi_open else v <= self.hi)

    def describe(self) -> str:
        parts = []
        if self.lo is not None:
            parts.append(f"{'>' if self.lo_open else '>='} {self.lo}")
        if self.hi is not None:
            parts.append(f"{'<' if self.hi_open else '<='} {self.hi}")
        return " and ".join(parts)


def _device_rule(v):
    """None when v names a torch device (or "auto"), else what is allowed."""
    import torch

    if v == "auto":
        return None
    try:
        dev = torch.device(v)
    except (RuntimeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps", "xpu"):
        return "'auto', 'cpu', 'cuda' or 'cuda:N'"
    return None


POSITIVE, NON_NEGATIVE = Range(1), Range(0)
# Field name -> rule: a Range, a tuple of allowed values, or a callable returning None (ok) or
# what is allowed. A field's own metadata["rule"] takes precedence.
FIELD_RULES = {
    # model shape (SpaceTimeConfig and the three model configs)
    "frame_size": POSITIVE, "patch_size": POSITIVE, "embed_dim": POSITIVE, "num_heads": POSITIVE,
    "hidden_dim": POSITIVE, "num_blocks": POSITIVE, "latent_dim": POSITIVE, "num_bins": Range(2),
    "codebook_size": NON_NEGATIVE, "conditioning_dim": POSITIVE, "context_length": POSITIVE,
    "quantizer": ("fsq", "vq"), "n_actions": Range(2), "action_dim": NON_NEGATIVE,
    "variance_target": NON_NEGATIVE, "variance_weight": NON_NEGATIVE, "fsq_levels": Range(2),
    "vq_beta": NON_NEGATIVE, "vq_dead_code_every": NON_NEGATIVE, "vq_entropy_weight": NON_NEGATIVE,
    "film_init_scale": NON_NEGATIVE, "changed_pixel_weight": Range(0, lo_open=True), "conv_channels": POSITIVE,
    "code_dim": NON_NEGATIVE, "conv_context": Range(1, 2),
    # training (TrainConfig)
    "steps": POSITIVE, "batch_size": POSITIVE, "lr": Range(0, lo_open=True), "warmup_steps": NON_NEGATIVE,
    "weight_decay": NON_NEGATIVE, "grad_clip": Range(0, lo_open=True), "clip_len": Range(2), "stride": POSITIVE,
    "seed": NON_NEGATIVE, "log_every": POSITIVE, "save_every": POSITIVE, "val_fraction": Range(0, 1, hi_open=True),
    "device": _device_rule,  # "preset": registered by wmfast.train.presets (config sits below train)
}

_KIND = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _bad(label: str, value, allowed: str, show_type: bool = False):
    got = f"{value!r} ({type(value).__name__})" if show_type else repr(value)
    return WmfastError(f"{label} must be {allowed}, got {got}")


def check_value(label: str, value, hint, rule=None):
    """One field (label: "TokenizerConfig.embed_dim", or a CLI option such as "--lr"): its type
    from the annotation (ints stay ints: 1.5, "32" and true are refused; a float field takes an
    int), then its rule. Returns the value (an int given for a float field becomes a float)."""
    if typing.get_origin(hint) is typing.Union:            # Optional[X]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        hint = args[0] if len(args) == 1 else None
    if hint in _KIND:
        is_bool = isinstance(value, bool)
        ok = (is_bool if hint is bool else
              (isinstance(value, (int, float)) and not is_bool) if hint is float else
              (isinstance(value, hint) and not is_bool))
        if not ok:
            allowed = _KIND[hint] + (" " + rule.describe() if isinstance(rule, Range) else
                                     f" (one of {list(rule)})" if isinstance(rule, tuple) else "")
            raise _bad(label, value, allowed, show_type=True)
        if hint is float:
            value = float(value)
            if not math.isfinite(value):
                raise _bad(label, value, "a finite number")
    if rule is None:
        return value
    if isinstance(rule, Range):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not rule.ok(value):
            raise _bad(label, value, f"{_KIND.get(hint, 'a number')} {rule.describe()}")
    elif isinstance(rule, tuple):
        if value not in rule:
            raise _bad(label, value, f"one of {list(rule)}")
    else:
        allowed = rule(value)
        if allowed:
            raise _bad(label, value, allowed)
    return value


@functools.lru_cache(maxsize=None)
def _hints(cls) -> dict:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # an annotation we cannot resolve: check what we can
        return {}


class Config:
    """Mixin for config dataclasses: validation on construction, to_dict / from_dict with
    unknown keys and bad values reported in one line."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # A subclass's own __post_init__ (e.g. deriving codebook_size) runs between the type
        # checks (so its arithmetic never meets a string) and the range / cross-field checks.
        own = cls.__dict__.get("__post_init__")
        if own is not None and not getattr(own, "_wmfast_validates", False):
            @functools.wraps(own)
            def post_init(self):
                self._check_types()
                own(self)
                self.validate()
            post_init._wmfast_validates = True
            cls.__post_init__ = post_init

    def __post_init__(self):
        self.validate()

    def _check_types(self):
        owner, hints = type(self).__name__, _hints(type(self))
        for f in dataclasses.fields(self):
            if hints.get(f.name) in _KIND:
                rule = f.metadata.get("rule", FIELD_RULES.get(f.name))
                check_value(f"{owner}.{f.name}", getattr(self, f.name), hints[f.name],
                            rule if isinstance(rule, (Range, tuple)) else None)

    def validate(self):
        """Check every field (type, then rule) and the class's cross-field rules; raises WmfastError."""
        owner, hints = type(self).__name__, _hints(type(self))
        for f in dataclasses.fields(self):
            rule = f.metadata.get("rule", FIELD_RULES.get(f.name))
            value = check_value(f"{owner}.{f.name}", getattr(self, f.name), hints.get(f.name), rule)
            object.__setattr__(self, f.name, value)
        self.check()
        return self

    def check(self):
        """Cross-field rules (override; raise WmfastError)."""

    @classmethod
    def settable(cls) -> dict:
        """The keys `--set KEY=VALUE` takes for this config -> (type hint, rule)."""
        hints = _hints(cls)
        return {f.name: (hints.get(f.name), f.metadata.get("rule", FIELD_RULES.get(f.name)))
                for f in dataclasses.fields(cls)}

    def setting(self, key: str):
        """The value of a --set key in this config (None if it has no such field)."""
        return getattr(self, key, None)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = "config"):
        if not isinstance(d, dict):
            raise WmfastError(f"{source}: a {cls.__name__} must be a JSON object of fields, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names - {"kind"})
        if unknown:
            raise WmfastError(f"{source}: unknown {cls.__name__} keys {unknown} (known: {sorted(names)})")
        try:
            return cls(**{k: v for k, v in d.items() if k in names})
        except WmfastError as e:
            raise WmfastError(f"{source}: {e}") from None
        except (TypeError, ValueError, ArithmeticError) as e:
            raise WmfastError(f"{source}: bad {cls.__name__}: {e}") from None


@dataclasses.dataclass
class SpaceTimeConfig(Config):
    """Fields every model shares: the frames it sees and its space-time transformer."""
    frame_size: int = 64
    patch_size: int = 4
    embed_dim: int = 128
    num_heads: int = 8
    hidden_dim: int = 256
    num_blocks: int = 4

    @property
    def num_patches(self) -> int:
        return (self.frame_size // self.patch_size) ** 2

    def check(self):
        name = type(self).__name__
        if self.frame_size % self.patch_size:
            raise WmfastError(f"{name}: frame_size {self.frame_size} must be divisible by patch_size "
                              f"{self.patch_size} (e.g. patch_size in {divisors(self.frame_size)})")
        if self.embed_dim % self.num_heads:
            raise WmfastError(f"{name}: embed_dim {self.embed_dim} must be divisible by num_heads {self.num_heads}")
        if getattr(self, "quantizer", None) == "vq" and hasattr(self, "num_bins") and self.codebook_size < 1:
            raise WmfastError(f"{name}: quantizer 'vq' needs codebook_size >= 1, got {self.codebook_size}")
        if hasattr(self, "conditioning_dim") and self.codebook_size < 2:
            raise WmfastError(f"{name}: codebook_size must be >= 2 (or 0 for num_bins ** latent_dim), "
                              f"got {self.codebook_size}")


def divisors(n: int) -> list:
    return [d for d in range(1, n + 1) if n % d == 0]


def check_overrides(cls, overrides: dict, label: str = "--set", stage: str = None) -> dict:
    """Overrides for a config class (from --set KEY=VALUE), checked field by field before any
    work: unknown keys and bad values name the option, e.g. "--set embed_dim=abc"."""
    fields = cls.settable()
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise WmfastError(f"{label} {unknown[0]}=...: unknown {stage or cls.__name__} config keys {unknown} "
                          f"(known: {', '.join(sorted(fields))})")
    return {key: check_value(f"{label} {key}", value, *fields[key]) for key, value in overrides.items()}
