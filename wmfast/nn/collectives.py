"""Collectives over the training process group, for the losses of layers and models that must
see the global batch (a VQ codebook's statistics, a batch variance). Identity in one process.

They live here, below the models, so that nn and models never import the trainer
(wmfast.train.distributed re-exports them beside setup / wrap / launch). This module imports
only torch.
"""
import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True inside an initialized process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """In-place sum over processes (no gradient); returns t."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= dist.get_world_size()
    return t


def all_reduce_sum_grad(t: torch.Tensor) -> torch.Tensor:
    """Sum over processes that gradients flow back through (each process gets the summed gradient)."""
    if not is_distributed():
        return t
    import warnings

    from torch.distributed.nn.functional import all_reduce

    with warnings.catch_warnings():   # public and differentiable; its successor is still private API
        warnings.filterwarnings("ignore", "torch.distributed.nn.functional.all_reduce is deprecated")
        return all_reduce(t, op=dist.ReduceOp.SUM)


def broadcast(t: torch.Tensor, src: int = 0) -> torch.Tensor:
    """In place: every process gets rank `src`'s values; returns t."""
    if is_distributed():
        dist.broadcast(t, src)
    return t


def all_gather_cat(t: torch.Tensor) -> torch.Tensor:
    """Concatenate every process's t along dim 0, in rank order (sizes may differ per process)."""
    if not is_distributed():
        return t
    world = dist.get_world_size()
    n = torch.tensor([t.shape[0]], device=t.device, dtype=torch.long)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    sizes = [int(s) for s in sizes]
    biggest = max(sizes)
    padded = t
    if t.shape[0] < biggest:
        padded = torch.cat([t, t.new_zeros((biggest - t.shape[0],) + tuple(t.shape[1:]))])
    out = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(out, padded.contiguous())
    return torch.cat([o[:s] for o, s in zip(out, sizes)])


def batch_var(x: torch.Tensor) -> torch.Tensor:
    """x [N, D] -> unbiased variance over dim 0 of the global batch (all processes' rows), with
    gradients; exactly x.var(dim=0) in one process."""
    if not is_distributed():
        return x.var(dim=0)
    n = all_reduce_sum(torch.tensor(float(x.shape[0]), device=x.device, dtype=x.dtype))
    mean = all_reduce_sum_grad(x.sum(0)) / n                                  # [D]
    return all_reduce_sum_grad((x - mean).pow(2).sum(0)) / (n - 1).clamp(min=1)
