"""Loads the C++ extension `wmfast._C` once.

When it is absent (a pure-Python install) the op modules define the same schemas from
Python over the reference implementations, and we warn once so the slower path is visible.
"""
import os
import warnings

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
