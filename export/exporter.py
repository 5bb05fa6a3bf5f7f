"""`export_run`: a wmfast run directory -> one ONNX graph per piece + manifest.json.

torch.onnx.export(dynamo=True) on the plain (never compiled) modules, opset 20 by default,
custom ops through `translations.translation_table()`, then onnx.checker (full check), a check
that the dims we asked to be dynamic are symbolic in the graph, and a sha256 per file.

Beside each standard (portable) graph, fp32 exports also write NAME.ort.onnx: the same graph
rewritten for onnxruntime (fusions.fuse_for_onnxruntime), which OnnxBackend runs on the CPU. Its
sha256 and the rewrites applied are in the graph's manifest entry under "onnxruntime".
"""
import contextlib
import copy
import logging
import os
import time
import warnings
from collections import Counter

import torch
import torch.nn as nn
from tqdm import tqdm

from wmfast.errors import WmfastError
from wmfast.export.fusions import fuse_for_onnxruntime
from wmfast.export.graphs import GRAPH_NAMES, STAGE_OF, dynamic_shapes, example_inputs, graph_specs, wrapper_for
from wmfast.export.manifest import (FORMAT, FORMAT_VERSION, run_fingerprint, sha256_file, versions,
                                    write_manifest)
from wmfast.export.translations import translation_table

DTYPES = ("fp32", "fp16")
STANDARD_DOMAINS = ("", "ai.onnx")


class HalfPrecision(nn.Module):
    """Runs the wrapped graph in float16 behind float32 inputs and outputs, so fp16 and fp32
    exports share one interface (and one runtime)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = copy.deepcopy(inner).half()

    def forward(self, *inputs):
        out = self.inner(*(x.half() if x.is_floating_point() else x for x in inputs))
        out = out if isinstance(out, tuple) else (out,)
        return tuple(o.float() if o.is_floating_point() else o for o in out)


def parse_batch(batch):
    """'dynamic' or a positive int (or its string) -> 'dynamic' | int."""
    if batch in (None, "dynamic"):
        return "dynamic"
    try:
        value = int(batch)
    except (TypeError, ValueError):
        raise WmfastError(f"batch must be 'dynamic' or a positive integer, got {batch!r}") from None
    if value < 1:
        raise WmfastError(f"batch must be 'dynamic' or a positive integer, got {batch!r}")
    return value


@contextlib.contextmanager
def quiet_exporter():
    """The exporter logs optional-package notices (torchvision) and deprecation warnings that are
    not ours to fix; keep them out of the user's terminal."""
    log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = log.level
    log.setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", message=".*axis name.*will not be used.*")
        warnings.filterwarnings("ignore", message=".*Exporting a model while it is in training mode.*")
        try:
            yield
        finally:
            log.setLevel(level)


def export_graph(module: nn.Module, spec, path, opset: int, batch, table: dict, report_dir=None) -> dict:
    """Export one wrapper module to `path` and check it; returns its manifest entry."""
    args = example_inputs(spec, batch, generator=torch.Generator().manual_seed(0))
    shapes = dynamic_shapes(spec, batch)
    if isinstance(module, HalfPrecision):
        shapes = (shapes,)          # forward(*inputs) takes them as one tuple
    t0 = time.perf_counter()
    with quiet_exporter(), torch.no_grad():
        try:
            program = torch.onnx.export(
                module.eval(), args, dynamo=True, opset_version=opset, external_data=False, optimize=True,
                input_names=[t.name for t in spec.inputs], output_names=[t.name for t in spec.outputs],
                dynamic_shapes=shapes, custom_translation_table=table,
                report=report_dir is not None, artifacts_dir=report_dir or ".", verbose=False)
        except Exception as e:
            hint = "" if report_dir else " (rerun with --debug for the exporter's report)"
            cause = str(e.__cause__ or e).strip().splitlines()[0]
            raise WmfastError(f"exporting graph {spec.name!r} failed: {cause}{hint}") from e
    tmp = f"{path}.tmp"
    program.save(tmp, external_data=False)
    os.replace(tmp, path)
    seconds = time.perf_counter() - t0
    proto = check_graph(path, spec, batch, opset)
    return {
        "file": os.path.basename(path), "stage": spec.stage, "doc": spec.doc,
        "inputs": [io_entry(t, batch) for t in spec.inputs], "outputs": [io_entry(t, batch) for t in spec.outputs],
        "sha256": sha256_file(path), "bytes": os.path.getsize(path), "nodes": len(proto.graph.node),
        "ops": dict(Counter(n.op_type for n in proto.graph.node).most_common()), "export_s": round(seconds, 2),
    }


def io_entry(tensor, batch) -> dict:
    """Manifest entry of one input/output: a static batch is written as its number."""
    d = tensor.to_dict()
    d["shape"] = [batch if dim == "batch" and isinstance(batch, int) else dim for dim in d["shape"]]
    return d


def check_graph(path, spec, batch, opset: int):
    """onnx.checker (full), standard-domain ops only, the opset we asked for, and the graph's
    input/output dims as the spec says: symbolic where dynamic, the right value where static."""
    import onnx

    try:
        onnx.checker.check_model(path, full_check=True)
    except onnx.checker.ValidationError as e:
        raise WmfastError(f"{path}: exported graph fails onnx.checker: {str(e).splitlines()[0]}") from e
    proto = onnx.load(path)
    opsets = {o.domain: o.version for o in proto.opset_import}
    if opsets.get("", opsets.get("ai.onnx")) != opset:
        raise WmfastError(f"{path}: exported with opset {opsets} instead of {opset}")
    custom = sorted({n.domain for n in proto.graph.node if n.domain not in STANDARD_DOMAINS})
    if custom:
        raise WmfastError(f"{path}: graph uses non-standard op domains {custom}; plain onnxruntime cannot run it")
    for values, tensors in ((proto.graph.input, spec.inputs), (proto.graph.output, spec.outputs)):
        by_name = {v.name: v for v in values}
        for t in tensors:
            if t.name not in by_name:
                raise WmfastError(f"{path}: graph has no {t.name!r} (has {sorted(by_name)})")
            dims = by_name[t.name].type.tensor_type.shape.dim
            for i, want in enumerate(t.shape):
                static = isinstance(want, int) or (want == "batch" and isinstance(batch, int))
                got = dims[i]
                if static and got.dim_value != (batch if want == "batch" else want):
                    raise WmfastError(f"{path}: {t.name} dim {i} is {got.dim_param or got.dim_value}, expected "
                                      f"{batch if want == 'batch' else want}")
                if not static and not got.dim_param:
                    raise WmfastError(f"{path}: {t.name} dim {i} ({want}) was specialised to {got.dim_value} "
                                      "by the exporter instead of staying dynamic")
    return proto


def export_run(run_dir, out_dir=None, opset: int = 20, dtype: str = "fp32", batch="dynamic", check: bool = True,
               graphs=None, progress: bool = True, debug: bool = False, ort_fusions: bool = True) -> dict:
    """Export a run directory's stages as ONNX graphs into out_dir (default run_dir/onnx).
    ort_fusions (fp32): also write each graph's onnxruntime form (fusions.fuse_for_onnxruntime).

    Returns the manifest (also written to out_dir/manifest.json). With check=True the export is
    then run through onnxruntime against eager PyTorch (see parity.check_parity); the report is
    written to out_dir/parity.json and returned under manifest["parity"]."""
    from wmfast.loader import load

    if dtype not in DTYPES:
        raise WmfastError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if not isinstance(opset, int) or opset < 18:
        raise WmfastError(f"opset must be an integer >= 18 (the exporter's own opset), got {opset!r}")
    batch = parse_batch(batch)
    model = load(run_dir)
    stage_models = {"tokenizer": model.tokenizer, "actions": model.lam, "dynamics": model.dynamics}
    configs = {s: m.config for s, m in stage_models.items() if m is not None}
    specs = graph_specs(configs)
    wanted = list(graphs) if graphs else list(specs)
    unknown = [g for g in wanted if g not in GRAPH_NAMES]
    if unknown:
        raise WmfastError(f"unknown graph(s) {unknown}; choose from {list(GRAPH_NAMES)}")
    absent = [g for g in wanted if g not in specs]
    if absent:
        raise WmfastError(f"{run_dir} has no {STAGE_OF[absent[0]]} stage, needed for graph(s) {absent}")

    out_dir = out_dir or os.path.join(run_dir, "onnx")
    os.makedirs(out_dir, exist_ok=True)
    table = translation_table()
    entries = {}
    bar = tqdm(wanted, desc="export", unit="graph", disable=not progress)
    for name in bar:
        bar.set_postfix_str(name)
        module = wrapper_for(name, stage_models)
        if dtype == "fp16":
            module = HalfPrecision(module)
        report_dir = os.path.join(out_dir, "reports", name) if debug else None
        if report_dir:
            os.makedirs(report_dir, exist_ok=True)
        path = os.path.join(out_dir, f"{name}.onnx")
        entries[name] = export_graph(module, specs[name], path, opset, batch, table, report_dir)
        fused = os.path.join(out_dir, f"{name}.ort.onnx")
        if os.path.exists(fused):
            os.remove(fused)      # a stale one from an earlier export
        if ort_fusions and dtype == "fp32":
            entry = fuse_for_onnxruntime(path, fused)
            if entry is not None:
                entries[name]["onnxruntime"] = entry
    stages = sorted({STAGE_OF[g] for g in entries})
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "opset": opset, "dtype": dtype, "batch": batch,
        "versions": versions(), "run": run_fingerprint(run_dir, stages), "graphs": entries,
        "constants": constants(stage_models),
    }
    write_manifest(out_dir, manifest)
    if check:
        from wmfast.export.parity import check_parity, write_report

        report = check_parity(run_dir, out_dir, progress=progress)
        write_report(report, os.path.join(out_dir, "parity.json"))
        manifest = dict(manifest, parity=report)
    return manifest


def constants(stage_models: dict) -> dict:
    """Small values the Python rollout loop needs beside the graphs (exact: float32 -> JSON float)."""
    out = {}
    dyn = stage_models.get("dynamics")
    if dyn is not None:
        out["mask_token"] = [float(v) for v in dyn.mask_token.detach().float().flatten()]
    lam = stage_models.get("actions")
    if lam is not None:
        out["num_actions"] = int(lam.num_actions)
    return out
