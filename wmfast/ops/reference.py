"""Plain PyTorch references for every wmfast op: the oracle every kernel is tested against."""
import torch  # noqa: F401
