"""wmfast's custom ops, registered with torch.library as torch.ops.wmfast.*.

Each op has one plain-PyTorch reference (reference.py), one registration, and its kernels
(C++ in csrc/, Triton in wmfast.kernels) beside it.
"""
from wmfast.ops._extension import HAS_EXTENSION  # noqa: F401
from wmfast.ops.pair_attention import pair_attention  # noqa: E402,F401
from wmfast.ops.vq_lookup import vq_lookup  # noqa: E402,F401
