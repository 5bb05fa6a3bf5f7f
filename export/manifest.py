"""manifest.json of an exported world model: what each graph takes and returns, and what it was
exported from (stage configs, weight hashes, versions, opset), with a sha256 of every file.

Loading checks the manifest against the files (a changed or truncated .onnx is caught before
onnxruntime sees it) and, when a run directory is given, against the run (configs and weights).
"""
import hashlib
import os

from wmfast.checkpoint import CONFIG, STAGES, WEIGHTS, load_config
from wmfast.config import load_json, save_json
from wmfast.errors import WmfastError

MANIFEST = "manifest.json"
FORMAT, FORMAT_VERSION = "wmfast-onnx", 2     # 2: maskgit_step takes min_confidence


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def versions() -> dict:
    import onnx
    import onnxruntime
    import onnxscript
    import torch

    from wmfast.version import __version__

    return {"wmfast": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxscript": onnxscript.__version__, "onnxruntime": onnxruntime.__version__}


def run_fingerprint(run_dir, stages) -> dict:
    """{stage: {"config": dict, "weights_sha256": str}} for the run's stages."""
    out = {}
    for stage in stages:
        folder = os.path.join(run_dir, stage)
        _, cfg = load_config(folder, stage)
        weights = os.path.join(folder, WEIGHTS)
        if not os.path.exists(weights):
            raise WmfastError(f"missing file: {weights}")
        out[stage] = {"config": cfg.to_dict(), "weights_sha256": sha256_file(weights)}
    return out


def write_manifest(onnx_dir, manifest: dict):
    save_json(manifest, os.path.join(onnx_dir, MANIFEST))


def read_manifest(onnx_dir, verify_files: bool = True) -> dict:
    """Read DIR/manifest.json; with verify_files, every listed .onnx (fused forms too) must exist with
    its sha256."""
    path = os.path.join(onnx_dir, MANIFEST)
    if not os.path.isdir(onnx_dir):
        raise WmfastError(f"no such ONNX directory: {onnx_dir} (export one with `wmfast export --run RUN`)")
    if not os.path.exists(path):
        raise WmfastError(f"{onnx_dir}: no {MANIFEST}; not a wmfast ONNX export (run `wmfast export --run RUN`)")
    manifest = load_json(path)
    if manifest.get("format") != FORMAT or not isinstance(manifest.get("graphs"), dict):
        raise WmfastError(f"{path}: not a wmfast ONNX manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise WmfastError(f"{path}: manifest format version {manifest.get('format_version')} is not "
                          f"supported (expected {FORMAT_VERSION}); re-export the run")
    if verify_files:
        for name, graph in manifest["graphs"].items():
            check_graph_file(onnx_dir, name, graph)
            if "onnxruntime" in graph:      # the onnxruntime-fused form (exporter.fuse_for_onnxruntime)
                check_graph_file(onnx_dir, name, graph["onnxruntime"])
    return manifest


def check_graph_file(onnx_dir, name: str, graph: dict):
    path = os.path.join(onnx_dir, graph["file"])
    if not os.path.exists(path):
        raise WmfastError(f"{onnx_dir}: graph {name!r} is missing its file {graph['file']}")
    digest = sha256_file(path)
    if digest != graph["sha256"]:
        raise WmfastError(f"{path}: sha256 {digest[:12]}... does not match the manifest ({graph['sha256'][:12]}...); "
                          "the file was changed or corrupted after export; re-export the run")


def check_against_run(manifest: dict, run_dir, onnx_dir=None):
    """The export must come from this run: same stage configs and the same weights."""
    where = onnx_dir or "the ONNX export"
    fix = f"re-export with `wmfast export --run {run_dir}`"
    exported = manifest.get("run", {})
    for stage, info in exported.items():
        folder = os.path.join(run_dir, stage)
        if not os.path.isdir(folder):
            raise WmfastError(f"{where} holds the {stage} stage but {run_dir} has no {stage}/ folder")
        _, cfg = load_config(folder, stage)
        now = cfg.to_dict()
        diff = sorted(k for k in set(now) | set(info["config"]) if now.get(k) != info["config"].get(k))
        if diff:
            k = diff[0]
            raise WmfastError(f"{where} does not match {run_dir}: {stage} config {k}={info['config'].get(k)!r} "
                              f"in the export but {now.get(k)!r} in the run ({len(diff)} field(s) differ); {fix}")
        if sha256_file(os.path.join(folder, WEIGHTS)) != info["weights_sha256"]:
            raise WmfastError(f"{where} does not match {run_dir}: the {stage} weights changed since the export; {fix}")
    missing = [s for s in STAGES if os.path.exists(os.path.join(run_dir, s, CONFIG)) and s not in exported]
    if missing:
        raise WmfastError(f"{where} lacks stage(s) {missing} that {run_dir} has; {fix}")
