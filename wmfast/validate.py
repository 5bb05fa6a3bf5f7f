"""Input checks for the public API: each failure is one line naming the problem."""
import torch

from wmfast.errors import WmfastError


def check_tensor(x, name: str, ndim: int = None, dtypes=None, last_dims: tuple = None):
    if not isinstance(x, torch.Tensor):
        raise WmfastError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if ndim is not None and x.dim() != ndim:
        raise WmfastError(f"{name} must have {ndim} dims, got shape {tuple(x.shape)}")
    if dtypes is not None and x.dtype not in dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise WmfastError(f"{name} must have dtype in ({names}), got {str(x.dtype).replace('torch.', '')}")
    if last_dims is not None:
        got = tuple(x.shape[x.dim() - len(last_dims):])
        if any(want is not None and want != g for want, g in zip(last_dims, got)):
            want_s = ", ".join("*" if w is None else str(w) for w in last_dims)
            raise WmfastError(f"{name} must end in [{want_s}], got shape {tuple(x.shape)}")
    return x


FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
INTS = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def check_finite(x, name: str):
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise WmfastError(f"{name} contains NaN or Inf")
    return x


def check_frames(frames, frame_size: int, name: str = "frames", min_frames: int = 1):
    """frames: float [B, T, 3, H, W] in [-1, 1] with H = W = frame_size."""
    check_tensor(frames, name, ndim=5, dtypes=FLOATS, last_dims=(3, frame_size, frame_size))
    if frames.shape[1] < min_frames:
        raise WmfastError(f"{name} needs at least {min_frames} frames, got {frames.shape[1]}")
    check_finite(frames, name)
    if frames.numel() and (frames.min() < -1.001 or frames.max() > 1.001):
        raise WmfastError(f"{name} must be in [-1, 1] (got values in [{float(frames.min()):.3g}, "
                          f"{float(frames.max()):.3g}]); convert uint8 with x / 127.5 - 1")
    return frames


def check_indices(idx, name: str, num_codes: int, ndim: int = None):
    check_tensor(idx, name, ndim=ndim, dtypes=INTS)
    if idx.numel() and (idx.min() < 0 or idx.max() >= num_codes):
        raise WmfastError(f"{name} must be in [0, {num_codes}), got values in [{int(idx.min())}, {int(idx.max())}]")
    return idx
