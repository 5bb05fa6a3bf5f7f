"""`wmfast.load`: a world model from a run directory of any kind.

Above the models in the layers: it knows the run formats (wmfast stage folders, tinyworlds runs
through wmfast.compat, LAPA models), which the models package itself does not import.
"""
import os

from wmfast.checkpoint import STAGES, load_model
from wmfast.compat.tinyworlds import is_tinyworlds_path, load_tinyworlds
from wmfast.errors import WmfastError
from wmfast.models import WorldModel


def load(path, device="cpu") -> WorldModel:
    """Load a wmfast run directory (tokenizer/, actions/, dynamics/ stage folders), or a
    tinyworlds run, imported in memory (latest step per stage; see wmfast.compat.tinyworlds)."""
    if is_tinyworlds_path(path):
        return load_tinyworlds(path, device=device)
    if not os.path.isdir(path):
        raise WmfastError(f"no such run directory: {path}")
    found = {s: load_model(os.path.join(path, s), s, device)
             for s in STAGES if os.path.isdir(os.path.join(path, s))}
    lapa = None
    if os.path.isdir(os.path.join(path, "lapa")):   # a LAPA latent-action VQ-VAE (wmfast.lapa)
        from wmfast.checkpoint import load_lapa
        lapa = load_lapa(path, device)
    if not found and lapa is None:
        raise WmfastError(f"{path}: not a wmfast run (no tokenizer/, actions/, dynamics/ or lapa/ folder)")
    m = WorldModel(found.get("tokenizer"), found.get("actions"), found.get("dynamics"), path=path)
    m.lapa = lapa
    return m
