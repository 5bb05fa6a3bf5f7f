"""Packaging: the compiled extension is present (or its absence is declared), a torch mismatch is
refused, the wheel installs into a fresh environment with compiled kernels, `make gpu-check` survives
failing parts, and the README's speed table is the one generated from the committed results."""
import glob
import importlib.util
import json
import os
import subprocess
import sys

import pytest

import wmfast.ops as ops
from wmfast.errors import WmfastError
from wmfast.ops._extension import check_torch_version

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_script(name):
    spec = importlib.util.spec_from_file_location(name.replace("/", "_"), os.path.join(REPO, name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_compiled_extension_is_loaded():
    if os.environ.get("WMFAST_ALLOW_NO_EXTENSION") == "1":
        pytest.skip("WMFAST_ALLOW_NO_EXTENSION=1: a pure-Python install was asked for")
    assert ops.HAS_EXTENSION, (f"wmfast._C is missing ({ops.EXTENSION_ERROR}); build it with "
                               "`pip install --no-build-isolation -e .` or set WMFAST_ALLOW_NO_EXTENSION=1")


def test_a_torch_mismatch_is_refused_naming_both_versions():
    check_torch_version("2.13.0", "2.13.0")
    check_torch_version(None, "2.13.0")                       # no record (an older build): allowed
    with pytest.raises(WmfastError, match=r"built against torch 2\.12\.1\+cpu but torch 2\.13\.0 is installed"):
        check_torch_version("2.12.1+cpu", "2.13.0")


def test_gpu_check_records_failures_and_timeouts_and_goes_on(tmp_path, monkeypatch):
    gpu_check = load_script("benchmarks/gpu_check.py")
    py = sys.executable
    monkeypatch.setattr(gpu_check, "PARTS", [
        ("fails", lambda out: [py, "-c", "raise SystemExit('boom')"], 30),
        ("hangs", lambda out: [py, "-c", "import time; time.sleep(30)"], 1),
        ("missing", lambda out: ["/nonexistent/binary"], 5),
        ("works", lambda out: [py, "-c", f"import json; json.dump({{'x': 1}}, open({out!r}, 'w'))"], 30),
    ])
    assert gpu_check.main(["--out", str(tmp_path)]) == 1
    summary = json.load(open(tmp_path / "gpu-check.json"))
    parts = {p["name"]: p for p in summary["parts"]}
    assert [p["name"] for p in summary["parts"]] == ["fails", "hangs", "missing", "works"]
    assert parts["fails"]["returncode"] == 1 and "boom" in parts["fails"]["tail"]
    assert parts["hangs"]["error"] == "timed out after 1 s" and parts["hangs"]["seconds"] < 10
    assert parts["missing"]["error"].startswith("FileNotFoundError")
    assert parts["works"]["ok"] and json.load(open(tmp_path / "gpu-works.json")) == {"x": 1}


def test_readme_speed_table_is_generated_from_the_committed_results():
    table = load_script("benchmarks/speed_table.py")
    assert table.main(["--check"]) == 0, "run python benchmarks/speed_table.py"
    for name, _ in table.SOURCES:                                 # every row names a committed file
        if f"benchmarks/results/{name}" in open(os.path.join(REPO, "README.md")).read():
            assert os.path.exists(os.path.join(REPO, "benchmarks", "results", name))


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("WMFAST_WHEEL_TEST") != "1",
                    reason="compiles the extension from scratch (minutes on 2 cores): `make wheel` runs the same "
                           "check (tools/check_wheel.py); WMFAST_WHEEL_TEST=1 runs it here")
def test_wheel_installs_into_a_fresh_environment_and_runs_the_compiled_ops(tmp_path):
    if not ops.HAS_EXTENSION:
        pytest.skip("this install has no compiler-built extension to compare with")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps", "-w",
                    str(tmp_path), REPO], check=True, cwd=REPO, timeout=900)
    wheel = glob.glob(str(tmp_path / "wmfast-*.whl"))[0]
    result = load_script("tools/check_wheel.py").check_wheel(wheel)
    assert result["ops"]["vq_equal"] and result["ops"]["attention_err"] <= 1e-12
    assert "torch 0.0.1" in result["mismatch_error"]


def test_setup_lists_every_package_of_the_source_tree():
    """A subpackage missing from setup.py's PACKAGES is left out of the wheel (an editable install
    hides it): every folder with an __init__.py under wmfast/ must be listed."""
    import ast

    with open(os.path.join(REPO, "setup.py")) as f:
        tree = ast.parse(f.read())
    listed = next(set(ast.literal_eval(n.value)) for n in tree.body if isinstance(n, ast.Assign)
                  and any(getattr(t, "id", None) == "PACKAGES" for t in n.targets))
    found = {os.path.relpath(d, REPO).replace(os.sep, ".")
             for d, _, files in os.walk(os.path.join(REPO, "wmfast")) if "__init__.py" in files}
    assert found <= listed, f"missing from setup.py PACKAGES: {sorted(found - listed)}"
    assert {"wmfast.cli", "wmfast.eval"} <= listed
