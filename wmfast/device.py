"""The one place that turns a device name into a torch.device (training, the World, benchmarks)."""
import torch

from wmfast.errors import WmfastError


def resolve_device(device) -> torch.device:
    """"auto" (or None) -> cuda when available, else cpu; a named cuda device must exist."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise WmfastError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise WmfastError(f"device {str(device)!r} asked for, but no CUDA device is available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise WmfastError(f"device {str(device)!r} asked for, but there are {torch.cuda.device_count()} "
                              "CUDA device(s)")
    return device
