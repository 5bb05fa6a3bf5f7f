"""ONNX export of a policy (with parity) from the CLI, and the policy benchmark on the export (one
export for both: it is the slow part)."""
import json

from wmfast.cli import main
from wmfast.checkpoint import save_model
from wmfast.policy import PolicyConfig, build_policy


def test_export_policy_parity_and_bench_from_the_cli(tmp_path, capsys):
    run = save_model(build_policy(PolicyConfig(kind="act", frame_size=16, chunk=4)), tmp_path / "pol")
    assert main(["export", "--policy", str(run)]) == 0
    assert (tmp_path / "pol" / "onnx" / "policy.onnx").is_file()
    assert "parity passed" in capsys.readouterr().out
    assert main(["parity", "--run", str(run), "--json", str(tmp_path / "p.json")]) == 0
    report = json.loads((tmp_path / "p.json").read_text())
    assert report["passed"] and [r["batch"] for r in report["results"]] == [1, 5]
    assert all(r["max_abs_diff"] <= 1e-4 for r in report["results"])

    out = tmp_path / "bench.json"
    assert main(["bench", "policy", "--run", str(run), "--quick", "--backends", "eager,onnx", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert {(r["backend"], r["batch"]) for r in report["results"]} == {(b, n) for b in ("eager", "onnx") for n in (1, 64)}
    assert all(r["max_abs_diff_vs_eager"] < 1e-4 for r in report["results"])
    assert all(r["repeats"] >= 5 and r["cpu_median_ms"] > 0 for r in report["results"])
    assert set(report["targets"]) >= {"eager_batch1_under_2ms", "onnx_no_slower_than_eager"}
    assert main(["bench", "policy", "--backends", "tpu"]) == 2
