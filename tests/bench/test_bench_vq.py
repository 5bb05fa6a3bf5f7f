"""`wmfast bench vq` end to end on a tiny grid: every method runs, agrees with ours, and the
JSON report (with machine facts, sgemm rate, ratios, memory) and its PNG are written."""
import json

import torch

import wmfast.bench.vq as bench_vq
from wmfast.cli import main


def test_bench_vq_tiny_grid_writes_json_and_png(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_vq, "QUICK_GRID", {"N": (300,), "K": (40,), "D": (12,)})
    out = tmp_path / "vq.json"
    assert main(["bench", "vq", "--quick", "--threads", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["machine"]["torch"] == torch.__version__
    assert report["sgemm_gflops"]["1"] > 0
    (row,) = report["rows"]
    assert (row["N"], row["K"], row["D"], row["threads"]) == (300, 40, 12, 1)
    for name in ("expand", "cdist"):
        assert row[f"x_{name}"] > 0
        assert row[f"{name}_index_agreement"] > 0.99
    if "faiss_skipped" not in row:
        assert row["faiss_index_agreement"] > 0.99
    assert row["ours_frac_sgemm"] > 0
    assert (tmp_path / "vq.png").read_bytes()[:4] == b"\x89PNG"
    assert "1" in report["targets"]


def test_bench_vq_skips_baselines_too_big_to_materialize():
    row = bench_vq.bench_shape(64, 32, 4, 1, "cpu", max_baseline_gib=1e-6, budget_s=0.01)
    assert "ours_ms" in row and "expand_ms" not in row
    assert "GiB" in row["expand_skipped"] and "GiB" in row["cdist_skipped"]


def test_bench_vq_rejects_bad_thread_list(capsys):
    assert main(["bench", "vq", "--threads", "two"]) == 2
    assert "--threads" in capsys.readouterr().err
