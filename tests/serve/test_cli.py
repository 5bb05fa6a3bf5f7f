"""`wmfast serve` / `wmfast bench serve` from the command line (the bench runs real server processes)."""
import json

from wmfast.cli import main


def test_serve_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["serve", "--run", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "no such run directory" in err and len(err.strip().splitlines()) == 1
    assert main(["serve", "--run", str(tmp_path), "--steps", "0"]) == 2
    assert "steps" in capsys.readouterr().err


def test_bench_serve_writes_the_report(tiny_run, tmp_path):
    out = tmp_path / "bench.json"
    assert main(["bench", "serve", "--run", tiny_run, "--players", "1,3", "--frames", "4", "--warmup", "1",
                 "--steps", "2", "--unbatched", "3", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [row["players"] for row in report["results"]] == [1, 3]
    for row in report["results"] + [report["unbatched"]]:
        assert row["errors"] == 0 and row["fps_per_player"] > 0 and row["p99_ms"] >= row["p50_ms"] > 0
        assert row["total_fps"] > 0 and row["server_rss_mb"] > 0
    assert report["unbatched"]["server_mean_batch"] == 1.0          # one World per player, batch 1
    assert report["batched_vs_unbatched_throughput"] > 0 and report["machine"]["cpu_count"] >= 1
