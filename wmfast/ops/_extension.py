"""Loads the C++ extension `wmfast._C` once.

The build writes wmfast/_build_info.json (setup.py) with the torch version the extension was
compiled against; under any other torch the extension is refused with a one-line error naming
both (a C++ extension is tied to the torch ABI it was built for; loading it anyway can crash).

When it is absent (a pure-Python install) the op modules define the same schemas from Python over
the reference implementations, and we warn once so the slower path is visible. The test suite
fails on a missing extension unless WMFAST_ALLOW_NO_EXTENSION=1 says a pure-Python install is meant.
"""
import json
import os
import warnings

import torch

from wmfast.errors import WmfastError

BUILD_INFO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_build_info.json")


def built_torch_version(path=BUILD_INFO):
    """The torch version recorded by the build, or None (no record: a build from before the record)."""
    try:
        with open(path) as f:
            return json.load(f).get("torch")
    except (OSError, ValueError):
        return None


def check_torch_version(built, installed=None):
    """Raise WmfastError when the extension was built against another torch than the installed one."""
    installed = installed or torch.__version__
    if built is not None and built != installed:
        raise WmfastError(f"wmfast._C was built against torch {built} but torch {installed} is installed; "
                          "reinstall wmfast for this torch (pip install --no-build-isolation --force-reinstall .)")


check_torch_version(built_torch_version())

try:
    # WMFAST_DISABLE_EXTENSION=1 runs the pure-Python path of a built package (tests use it).
    if os.environ.get("WMFAST_DISABLE_EXTENSION") == "1":
        raise ImportError("disabled by WMFAST_DISABLE_EXTENSION=1")
    from wmfast import _C  # noqa: F401  (importing registers TORCH_LIBRARY(wmfast, ...))

    HAS_EXTENSION = True
    EXTENSION_ERROR = None
except ImportError as e:  # pragma: no cover - depends on the build
    HAS_EXTENSION = False
    EXTENSION_ERROR = e
    warnings.warn(
        f"wmfast: the C++ extension is not available ({e}); using the slower PyTorch fallbacks. "
        "Reinstall with `pip install --no-build-isolation .` to build it.",
        RuntimeWarning,
        stacklevel=2,
    )
