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


def check_float_input(x, name: str, ndim: int = None, last_dims: tuple = None, dtype=torch.float32):
    """A float model input: shape checked, NaN/Inf refused, float64 (or half) promoted to the
    model's dtype (a float64 tensor would otherwise fail deep inside a matmul). Returns the
    tensor to use."""
    check_tensor(x, name, ndim=ndim, dtypes=FLOATS, last_dims=last_dims)
    check_finite(x, name)
    return x.to(dtype) if x.dtype != dtype else x


def check_same_batch(**tensors):
    """Every tensor has the same batch size (dim 0): no silent broadcasting of a batch of 1."""
    sizes = {name: int(t.shape[0]) for name, t in tensors.items() if isinstance(t, torch.Tensor) and t.dim()}
    if len(set(sizes.values())) > 1:
        got = ", ".join(f"{n} {s}" for n, s in sizes.items())
        raise WmfastError(f"batch sizes must match, got {got}")


def dtype_of(module) -> torch.dtype:
    """The floating dtype a module's parameters use (float32 for a fresh model)."""
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def check_output_path(path, extensions: tuple, name: str = "out"):
    """An output file whose extension the writer supports, checked before the work is done."""
    if path is not None and not str(path).lower().endswith(tuple(extensions)):
        raise WmfastError(f"{name} must end in {' or '.join(extensions)}, got {str(path)!r}")
    return path


def check_number(value, name: str, lo=None, integer: bool = False, lo_open: bool = False):
    """A finite int (or float) argument of the public API, optionally bounded below."""
    kind = (int,) if integer else (int, float)
    ok = isinstance(value, kind) and not isinstance(value, bool) and value == value and abs(value) != float("inf")
    if ok and lo is not None:
        ok = value > lo if lo_open else value >= lo
    if not ok:
        bound = "" if lo is None else f" {'>' if lo_open else '>='} {lo}"
        raise WmfastError(f"{name} must be {'an integer' if integer else 'a number'}{bound}, got {value!r}")
    return value
