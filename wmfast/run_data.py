"""What a run was trained on. Each stage folder keeps data.json: the dataset spec (absolute for
paths) and, for a file or folder, a sha256 of its content. Later stages, rollout, play, eval and
demo use the run's data by default; a dataset that changed since is refused, and data given
explicitly that differs from the run's is used with a note naming both.

    record = data_record("pong.h5")              # {"data": "/abs/pong.h5", "sha256": ..., "bytes": ...}
    spec = resolve_run_data("runs/pong", None)   # the run's data (checked), else the default game
"""
import hashlib
import os
import sys

from wmfast.config import load_json, save_json
from wmfast.errors import WmfastError

DATA_FILE = "data.json"
# Newest first: the data the last-trained stage saw is the run's data.
STAGE_ORDER = ("dynamics", "actions", "tokenizer")


def normalize_spec(spec) -> str:
    """game:/atari: specs as given; paths made absolute (a run is used from other directories)."""
    spec = os.fspath(spec)
    if ":" in spec.split(os.sep)[0] and not os.path.exists(spec):
        return spec
    return os.path.abspath(os.path.expanduser(spec))


def _hash_path(path) -> tuple:
    """sha256 of a file, or of a folder's files (relative names + contents, sorted); total bytes."""
    h, total = hashlib.sha256(), 0
    files = [path] if os.path.isfile(path) else sorted(
        os.path.join(root, f) for root, _, names in os.walk(path) for f in names)
    for f in files:
        if os.path.isdir(path):
            h.update(os.path.relpath(f, path).encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
                total += len(block)
    return h.hexdigest(), total


def data_record(spec) -> dict:
    """The record saved with a stage: {"data": spec} plus sha256 and bytes for files / folders."""
    spec = normalize_spec(spec)
    rec = {"data": spec}
    if os.path.exists(spec):
        rec["sha256"], rec["bytes"] = _hash_path(spec)
    return rec


def describe(rec: dict) -> str:
    return rec["data"] + (f" (sha256 {rec['sha256'][:12]})" if rec.get("sha256") else "")


def same_data(a: dict, b: dict) -> bool:
    """Same content when both have a hash (a moved file is the same data), else the same spec."""
    if a.get("sha256") and b.get("sha256"):
        return a["sha256"] == b["sha256"]
    return a["data"] == b["data"]


def save_data_record(folder, rec: dict):
    save_json(rec, os.path.join(folder, DATA_FILE))


def load_data_record(folder):
    path = os.path.join(folder, DATA_FILE)
    if not os.path.exists(path):
        return None
    rec = load_json(path)
    if not isinstance(rec, dict) or not isinstance(rec.get("data"), str):
        raise WmfastError(f"{path}: not a wmfast data record (expected {{\"data\": SPEC, ...}})")
    return rec


def run_data_record(run_dir, stages=STAGE_ORDER):
    """(stage, record) of the newest of `stages` that has a record, or (None, None)."""
    for stage in stages:
        rec = load_data_record(os.path.join(run_dir, stage))
        if rec is not None:
            return stage, rec
    return None, None


def check_unchanged(rec: dict, where: str):
    """A recorded file or folder must still exist with the same content."""
    if not rec.get("sha256"):
        return
    if not os.path.exists(rec["data"]):
        raise WmfastError(f"{where} was trained on {describe(rec)}, which no longer exists; "
                          f"pass --data to use other data")
    now = data_record(rec["data"])
    if now["sha256"] != rec["sha256"]:
        raise WmfastError(f"{where} was trained on {describe(rec)}, which has changed since "
                          f"(now sha256 {now['sha256'][:12]}); pass --data explicitly to use it anyway")


def resolve_run_data(run_dir, data=None, stages=STAGE_ORDER, default=None, note=True):
    """The dataset spec to use with a run: `data` when given (with a note on stderr when it is
    not what the run was trained on), else the run's recorded data (checked unchanged), else
    `default` (the embedded default game when None)."""
    stage, rec = run_data_record(run_dir, stages) if run_dir and os.path.isdir(run_dir) else (None, None)
    if data is not None:
        if rec is not None and note and isinstance(data, (str, os.PathLike)):
            given = data_record(data)
            if not same_data(given, rec):
                print(f"wmfast: note: {run_dir} was trained on {describe(rec)}; using --data {describe(given)}",
                      file=sys.stderr)
        return data
    if rec is None:
        if default is not None:
            return default
        from wmfast.data import DEFAULT_GAME   # the demo's default (wmfast.demo.default_data)

        return f"game:{DEFAULT_GAME}"
    check_unchanged(rec, os.path.join(run_dir, stage))
    return rec["data"]
