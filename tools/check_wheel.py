"""Check a built wmfast wheel: its contents, then a fresh virtual environment with it installed.

    python tools/check_wheel.py dist/wmfast-0.1.0-*.whl

The fresh environment reuses this interpreter's installed dependencies (torch, numpy, ...) through
a .pth file instead of downloading them, so wmfast itself comes only from the wheel. In it both ops
must run through the compiled extension (no fallback) and match their float64 references, and
an extension record naming another torch must be refused with one line naming both versions.
"""
import glob
import json
import os
import subprocess
import sys
import sysconfig
import tempfile
import zipfile

REQUIRED = ("wmfast/_build_info.json", "wmfast/kernels/vq_lookup.py", "wmfast/kernels/pair_attention.py",
            "wmfast/export/runtime.py", "wmfast/export/graphs.py", "wmfast/ops/_extension.py")

RUN_OPS = r"""
import json, torch
import wmfast.ops as ops
from wmfast.ops.reference import pair_attention_reference, vq_lookup_exact
assert ops.HAS_EXTENSION, f"the extension did not load: {ops.EXTENSION_ERROR}"
g = torch.Generator().manual_seed(0)
z, cb = torch.randn(37, 8, generator=g, dtype=torch.float64), torch.randn(19, 8, generator=g, dtype=torch.float64)
idx = torch.ops.wmfast.vq_lookup(z, cb)[0]
q, k, v = (torch.randn(1, 3, 5, 2, 4, generator=g, dtype=torch.float64) for _ in range(3))
err = float((ops.pair_attention(q, k, v) - pair_attention_reference(q, k, v)).abs().max())
print(json.dumps({"file": ops.__file__, "vq_equal": bool(torch.equal(idx, vq_lookup_exact(z, cb).argmin(-1))),
                  "attention_err": err}))
"""


def check_contents(wheel) -> list:
    names = zipfile.ZipFile(wheel).namelist()
    missing = [n for n in REQUIRED if n not in names]
    if not any(n.startswith("wmfast/_C") and n.endswith(".so") for n in names):
        missing.append("wmfast/_C*.so")
    return missing


def fresh_env(wheel, folder) -> str:
    """A venv in folder with only the wheel installed into it (dependencies seen through a .pth)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", folder], check=True)
    py = os.path.join(folder, "bin", "python")
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], check=True,
                          capture_output=True, text=True).stdout.strip()
    with open(os.path.join(site, "_deps.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    # pip of this interpreter installs into the new environment's site-packages, without deps.
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", site,
                    wheel], check=True)
    return py


def check_wheel(wheel) -> dict:
    missing = check_contents(wheel)
    if missing:
        raise SystemExit(f"{wheel}: missing {missing}")
    with tempfile.TemporaryDirectory() as tmp:
        py = fresh_env(wheel, os.path.join(tmp, "venv"))
        out = subprocess.run([py, "-W", "ignore", "-c", RUN_OPS], capture_output=True, text=True, cwd=tmp)
        if out.returncode != 0:
            raise SystemExit(f"ops in the fresh environment failed: {out.stderr.strip()[-1500:]}")
        result = json.loads(out.stdout.strip().splitlines()[-1])
        if not result["file"].startswith(tmp):
            raise SystemExit(f"wmfast was imported from {result['file']}, not from the wheel")
        if not result["vq_equal"] or result["attention_err"] > 1e-12:
            raise SystemExit(f"compiled ops disagree with the references: {result}")
        info = os.path.join(os.path.dirname(os.path.dirname(result["file"])), "_build_info.json")
        recorded = json.load(open(info))
        json.dump(dict(recorded, torch="0.0.1"), open(info, "w"))
        bad = subprocess.run([py, "-c", "import wmfast.ops"], capture_output=True, text=True, cwd=tmp)
        last = bad.stderr.strip().splitlines()[-1] if bad.stderr.strip() else ""
        if bad.returncode == 0 or "torch 0.0.1" not in last or recorded["torch"] not in last:
            raise SystemExit(f"a torch mismatch was not refused with one line naming both versions: {last!r}")
    return {"wheel": os.path.basename(wheel), "built_against": recorded["torch"], "ops": result,
            "mismatch_error": last}


if __name__ == "__main__":
    wheels = [w for pattern in sys.argv[1:] for w in glob.glob(pattern)]
    if len(wheels) != 1:
        raise SystemExit(f"expected one wheel, got {wheels}")
    print(json.dumps(check_wheel(wheels[0]), indent=2))
