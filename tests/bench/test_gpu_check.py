"""`make gpu-check`'s CPU-side logic (benchmarks/gpu_check.py, and the rollout benchmark it runs):
parts fit a time budget, parts left out say why, and the rollout benchmark without onnxruntime's
CUDA EP still measures the torch rows and records why the onnx rows are missing."""
import importlib.util
import json
import os
import sys

import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", os.path.join(REPO, "benchmarks", "gpu_check.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plan_cuts_limits_to_the_budget_and_names_what_is_left_out():
    gpu_check = load_gpu_check()
    parts = [("a", None, 100), ("b", None, 100), ("c", None, 100), ("d", None, 100)]
    planned = gpu_check.plan(parts, budget=230)
    assert [(n, limit) for n, _, limit, _ in planned[:3]] == [("a", 100), ("b", 100), ("c", 30)]
    assert planned[3][2] is None and "0 s of the 230 s budget left" in planned[3][3]
    assert [n for n, *_ in gpu_check.plan(parts, only=["b", "d"], budget=150)] == ["b", "d"]
    # the shipped parts fit the 8-minute check (with time left for `pip install -e .`)
    assert gpu_check.BUDGET_S <= 8 * 60 - 30


def test_main_stops_starting_parts_when_the_budget_is_spent(tmp_path, monkeypatch):
    gpu_check = load_gpu_check()
    py = sys.executable
    monkeypatch.setattr(gpu_check, "MIN_PART_S", 1)
    monkeypatch.setattr(gpu_check, "PARTS", [
        ("sleeps", lambda out: [py, "-c", "import time; time.sleep(1.5)"], 30),
        ("late", lambda out: [py, "-c", "pass"], 30),
    ])
    assert gpu_check.main(["--out", str(tmp_path), "--budget", "2"]) == 1
    summary = json.load(open(tmp_path / "gpu-check.json"))
    parts = {p["name"]: p for p in summary["parts"]}
    assert parts["sleeps"]["ok"] and parts["sleeps"]["limit_s"] == 2
    assert not parts["late"]["ok"] and parts["late"]["skipped"].startswith("not run:")


def test_rollout_benchmark_without_an_onnx_provider_keeps_the_torch_rows(tmp_path, monkeypatch):
    import wmfast.bench.export as bench_export
    from wmfast.rollout.shapes import SHAPES, save_random_run

    monkeypatch.setattr(bench_export, "onnx_unavailable", lambda device: "this onnxruntime has no CUDA EP")
    monkeypatch.setitem(SHAPES, "tiny-test", dict(frame_size=16, patch_size=4, embed_dim=16, num_heads=2,
                                                  hidden_dim=32, num_blocks=1, latent_dim=2, num_bins=4,
                                                  n_actions=4, context_length=2))
    run = save_random_run(tmp_path / "run", "tiny-test")
    out = tmp_path / "rollout.json"
    threads_before = torch.get_num_threads()
    report = bench_export.run_export_benchmark(str(out), quick=True, run_dir=run, batches=(2,), modes=("fast",),
                                               steps=2, reps=1, frames=1, compile=False, threads=1)
    assert report["onnx_skipped"] == "this onnxruntime has no CUDA EP" and report["providers"] is None
    (row,) = report["rows"]
    assert row["eager_ms_per_frame"] > 0 and not any(k.startswith("onnxruntime") for k in row)
    assert json.loads(out.read_text())["onnx_skipped"] == "this onnxruntime has no CUDA EP"
    assert not os.path.exists(os.path.join(run, "onnx"))        # nothing exported for rows that cannot run
    assert report["threads"] == 1 and torch.get_num_threads() == threads_before   # restored
    assert torch.is_grad_enabled()


def test_onnx_unavailable_names_the_missing_cuda_provider(monkeypatch):
    import onnxruntime

    from wmfast.bench.export import onnx_unavailable

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert onnx_unavailable("cpu") == ""
    why = onnx_unavailable("cuda")
    assert "CUDAExecutionProvider" in why and "onnxruntime-gpu" in why
