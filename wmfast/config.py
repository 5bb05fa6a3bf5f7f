"""Configs are dataclasses saved as JSON (never pickled)."""
import dataclasses
import json
import os

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


class Config:
    """Mixin for config dataclasses: to_dict / from_dict with unknown keys reported."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = "config"):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names - {"kind"})
        if unknown:
            raise WmfastError(f"{source}: unknown {cls.__name__} keys {unknown}")
        try:
            return cls(**{k: v for k, v in d.items() if k in names})
        except TypeError as e:
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
