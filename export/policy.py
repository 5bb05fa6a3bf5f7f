"""ONNX export of a policy run (`wmfast export --policy RUN`) and its parity check (`wmfast parity --run RUN`).

One graph, RUN/onnx/policy.onnx: frames float [B, 3, S, S] in [-1, 1] -> actions [B, K, D]
(velocities, or class logits for a discrete policy), batch dynamic; parity runs onnxruntime (CPU EP)
and eager PyTorch on the same random frames at two batch sizes.
"""
import os
import time

import numpy as np
import torch

from wmfast.config import save_json
from wmfast.errors import WmfastError

FILE, REPORT = "policy.onnx", "policy_parity.json"
ATOL = 1e-4


def is_policy_run(run_dir) -> bool:
    from wmfast.checkpoint import load_config
    from wmfast.models.policy import POLICY_KINDS

    if not os.path.isfile(os.path.join(os.fspath(run_dir), "config.json")):
        return False
    try:
        return load_config(run_dir)[0] in POLICY_KINDS
    except WmfastError:
        return False


def export_policy(run_dir, out=None, opset: int = 20, check: bool = True) -> dict:
    """Export the policy to OUT/policy.onnx (default RUN/onnx); with check, run the parity check too.
    Returns {"file", "bytes", "export_s", "parity"?}."""
    from wmfast.checkpoint import load_policy

    model = load_policy(run_dir)
    S = model.config.frame_size
    out = out or os.path.join(run_dir, "onnx")
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, FILE)
    x = torch.zeros(2, 3, S, S)
    t0 = time.perf_counter()
    try:
        with torch.no_grad():
            program = torch.onnx.export(model, (x,), dynamo=True, opset_version=opset, external_data=False,
                                        input_names=["frames"], output_names=["actions"],
                                        dynamic_shapes={"x": {0: torch.export.Dim("batch", max=4096)}},
                                        verbose=False)
    except Exception as e:
        raise WmfastError(f"exporting the policy failed: {str(e.__cause__ or e).strip().splitlines()[0]}") from e
    tmp = path + ".tmp"
    program.save(tmp, external_data=False)
    os.replace(tmp, path)
    info = {"file": path, "bytes": os.path.getsize(path), "export_s": time.perf_counter() - t0, "opset": opset}
    if check:
        info["parity"] = policy_parity(run_dir, out)
    return info


def policy_parity(run_dir, onnx_dir=None, batches=(1, 5), seed: int = 0) -> dict:
    """Max |onnxruntime - eager| over random frames at each batch size; passed when <= ATOL."""
    import onnxruntime as ort

    from wmfast.checkpoint import load_policy

    model = load_policy(run_dir)
    path = os.path.join(onnx_dir or os.path.join(run_dir, "onnx"), FILE)
    if not os.path.isfile(path):
        raise WmfastError(f"no {FILE} in {os.path.dirname(path)}; run `wmfast export --policy {run_dir}` first")
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    S = model.config.frame_size
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for b in batches:
        x = torch.rand(b, 3, S, S, generator=gen) * 2 - 1
        with torch.no_grad():
            ref = model(x).numpy()
        got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
        rows.append({"batch": b, "max_abs_diff": float(np.abs(got - ref).max()), "shape": list(got.shape)})
    report = {"graph": path, "atol": ATOL, "results": rows, "passed": all(r["max_abs_diff"] <= ATOL for r in rows)}
    save_json(report, os.path.join(os.path.dirname(path), REPORT))
    return report


def print_policy_parity(report: dict) -> None:
    for r in report["results"]:
        print(f"policy batch {r['batch']}: max |onnx - eager| = {r['max_abs_diff']:.2e} (atol {report['atol']:.0e})")
    print("parity passed" if report["passed"] else "parity FAILED")

