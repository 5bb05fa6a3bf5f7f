"""`wmfast export` and `wmfast parity`: ONNX export of a world-model run, a LAPA run or a policy run
(wmfast.export) and the onnxruntime vs eager check."""
import argparse
import os

from wmfast.cli.common import device_name, nonneg_int, number, positive_int
from wmfast.errors import WmfastError


def batch_option(text):
    """An argparse type: 'dynamic' or a fixed batch size >= 1."""
    if text == "dynamic":
        return text
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be 'dynamic' or an integer >= 1, got {text!r}") from None


def add_commands(sub):
    p = sub.add_parser("export", help="export a run to ONNX (one graph per piece + manifest.json), then check parity",
                       epilog="examples:\n  wmfast export --run runs/pong\n"
                              "  wmfast export --run runs/pong --dtype fp16 --batch 1")
    p.add_argument("--run", default=None, help="run directory")
    p.add_argument("--policy", default=None, help="export a policy run (`wmfast policy train`) instead: policy.onnx")
    p.add_argument("--out", default=None, help="output folder (default: RUN/onnx)")
    p.add_argument("--opset", type=number(int, 18), default=20, help="ONNX opset version")
    p.add_argument("--dtype", choices=["fp32", "fp16"], default="fp32", help="weights and activations dtype")
    p.add_argument("--batch", default="dynamic", type=batch_option, help="'dynamic' or a fixed batch size >= 1")
    p.add_argument("--graphs", nargs="*", default=None, help="only these graphs (default: all the run has)")
    p.add_argument("--no-parity", action="store_true", help="skip the onnxruntime vs eager check")
    p.add_argument("--debug", action="store_true", help="write the exporter's reports to OUT/reports/")
    p.set_defaults(func=_export)
    p = sub.add_parser("parity", help="compare an ONNX export with eager PyTorch (exit 1 above tolerance)",
                       epilog="examples:\n  wmfast parity --run runs/pong --json parity.json")
    p.add_argument("--run", required=True, help="run directory")
    p.add_argument("--onnx", default=None, help="ONNX folder (default: RUN/onnx)")
    p.add_argument("--batch", type=positive_int, default=None, help="batch size of the test inputs "
                   "(default: the export's fixed batch, else 2)")
    p.add_argument("--device", type=device_name, default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--strict", action="store_true", help="fail if any node falls back to the CPU EP")
    p.add_argument("--reps", type=nonneg_int, default=5, help="timed calls per graph for the ms columns (0: no timing)")
    p.add_argument("--json", default=None, help="write the report here")
    p.set_defaults(func=_parity)


def _check_complete_run(run, graphs):
    """A partial run exports only with --graphs named: a world model needs all three stages."""
    from wmfast.checkpoint import CONFIG, STAGES

    present = [s for s in STAGES if os.path.isfile(os.path.join(run, s, CONFIG))]
    if graphs or not present:
        return
    missing = [s for s in STAGES if s not in present]
    if missing:
        raise WmfastError(f"{run} has no {' or '.join(missing)} stage, so its export would not be a world model; "
                          f"train it (`wmfast train {missing[0]} --run {run}`) or name the graphs to export with --graphs")


def _export(a):
    from wmfast.export import export_run
    from wmfast.export.lapa import has_lapa, has_world_model
    from wmfast.export.parity import parity_exit_code

    if a.policy:   # a policy run: one graph
        return _export_policy(a.policy, a.out, a.opset, check=not a.no_parity)
    if a.run is None:
        raise WmfastError("wmfast export needs --run RUN (or --policy RUN)")
    if has_lapa(a.run):   # a run with a lapa/ folder: its own two graphs, and nothing else when it has no world model
        rc = _export_lapa(a.run, a.out, a.opset, a.batch, check=not a.no_parity)
        if rc or not has_world_model(a.run):
            return rc
    _check_complete_run(a.run, a.graphs)
    manifest = export_run(a.run, a.out, opset=a.opset, dtype=a.dtype, batch=a.batch, check=not a.no_parity,
                          graphs=a.graphs, debug=a.debug)
    for name, g in manifest["graphs"].items():
        print(f"{g['file']}: {g['nodes']} nodes, {g['bytes'] / 1e6:.2f} MB, exported in {g['export_s']:.1f} s")
    return parity_exit_code(manifest)


def _export_policy(run, out, opset, check) -> int:
    from wmfast.export.parity import parity_exit_code
    from wmfast.export.policy import export_policy, print_policy_parity

    info = export_policy(run, out, opset=opset, check=check)
    print(f"{info['file']}: {info['bytes'] / 1e6:.2f} MB, exported in {info['export_s']:.1f} s")
    return parity_exit_code(info, print_policy_parity)


def _export_lapa(run, out, opset, batch, check) -> int:
    from wmfast.export.lapa import export_lapa, print_lapa_report

    manifest = export_lapa(run, out, opset=opset, batch=batch, check=check)
    for name, g in manifest["graphs"].items():
        print(f"{name}: {g['nodes']} nodes, {g['bytes'] / 1e6:.2f} MB, exported in {g['export_s']:.1f} s")
    if "parity" not in manifest:
        return 0
    print_lapa_report(manifest["parity"])
    return 0 if manifest["parity"]["passed"] else 1


def _parity(a):
    from wmfast.config import save_json
    from wmfast.export.lapa import MANIFEST as LAPA_MANIFEST
    from wmfast.export.lapa import check_lapa_parity, print_lapa_report
    from wmfast.export.parity import check_parity, print_report, write_report
    from wmfast.export.policy import is_policy_run, policy_parity, print_policy_parity

    onnx_dir = a.onnx or os.path.join(a.run, "onnx")
    if os.path.isfile(os.path.join(onnx_dir, LAPA_MANIFEST)):   # an export with the LAPA graphs
        report = check_lapa_parity(a.run, onnx_dir)
        print_lapa_report(report)
        if not report["passed"]:
            return 1
        if not os.path.isfile(os.path.join(onnx_dir, "manifest.json")):   # only the LAPA graphs
            return 0
    if is_policy_run(a.run):   # a policy run: policy.onnx
        report = policy_parity(a.run, a.onnx)
        print_policy_parity(report)
        if a.json:
            save_json(report, a.json)
        return 0 if report["passed"] else 1
    report = check_parity(a.run, a.onnx, batch=a.batch, device=a.device, strict=a.strict, reps=a.reps)
    print_report(report)
    write_report(report, a.json)
    return 0 if report["passed"] else 1
