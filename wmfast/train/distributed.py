"""Multi-process training with torchrun + DistributedDataParallel.

    device = setup("auto")        # under torchrun: joins the process group (gloo on CPU, NCCL on GPU)
    net = wrap(net, device)       # BatchNorm -> synchronized BatchNorm, then DDP
    ...                           # rank(), world_size(), is_main(), all_reduce_sum(t), broadcast(t) ...
    teardown()

Everything here is a no-op in a plain single process (no torchrun, or WORLD_SIZE=1), so the
same training code runs both ways. `launch(argv, nproc)` starts `python -m wmfast <argv>` on
`nproc` local processes through torch.distributed's own launcher (what `torchrun` runs).

Why the helpers with gradients (all_reduce_sum_grad, batch_var): a loss that is not a mean of
per-sample terms (a batch variance, the entropy of the mean code assignment) must see the
global batch, or N processes would optimize something else than one process does.

The collectives the models use live in wmfast.nn.collectives (re-exported here).
"""
import contextlib
import datetime
import os
import uuid

import torch
import torch.distributed as dist
import torch.nn as nn

from wmfast.errors import WmfastError
from wmfast.nn.collectives import (all_gather_cat, all_reduce_mean, all_reduce_sum, all_reduce_sum_grad,  # noqa: F401
                                   batch_var, broadcast, is_distributed, world_size)

# How long a collective may wait for a peer before failing (a dead peer on gloo fails at once).
TIMEOUT = datetime.timedelta(minutes=int(os.environ.get("WMFAST_DIST_TIMEOUT_MIN", "30")))


# -- who am I ----------------------------------------------------------------------------------

def env_world_size() -> int:
    """WORLD_SIZE as torchrun sets it (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0")) if is_distributed() else 0


def is_main() -> bool:
    """Rank 0: the only process that writes metrics, plots and checkpoints."""
    return rank() == 0


def backend_for(device: torch.device) -> str:
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


# -- init / teardown ---------------------------------------------------------------------------

def setup(device: str = "auto") -> torch.device:
    """This process's device; under torchrun (WORLD_SIZE > 1) also join the process group.

    device "auto" / "cuda" picks cuda:LOCAL_RANK when CUDA is there (backend NCCL), else the CPU
    (backend gloo). Returns the device. Safe to call twice."""
    world = env_world_size()
    want_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise WmfastError(f"device {device!r} asked for, but CUDA is not available")
    if want_cuda:
        index = int(os.environ.get("LOCAL_RANK", "0")) if world > 1 else (torch.device(device).index or 0)
        if index >= torch.cuda.device_count():
            raise WmfastError(f"local rank {index} has no GPU: {torch.cuda.device_count()} visible; "
                              f"start at most that many processes per machine")
        dev = torch.device("cuda", index)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device(device if device != "auto" else "cpu")
    if world > 1 and not (dist.is_available() and dist.is_initialized()):
        if not dist.is_available():
            raise WmfastError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
        for key in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
            if key not in os.environ:
                raise WmfastError(f"WORLD_SIZE={world} but ${key} is not set: start with torchrun or --nproc")
        kwargs = {"device_id": dev} if dev.type == "cuda" else {}
        dist.init_process_group(backend_for(dev), timeout=TIMEOUT, **kwargs)
    return dev


def teardown():
    """Leave the process group (if any)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier():
    if is_distributed():
        dist.barrier()


@contextlib.contextmanager
def main_first():
    """Rank 0 runs the block first (e.g. writes a cache), then the others."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


# -- models ------------------------------------------------------------------------------------

class CPUSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose batch statistics span every process, for gloo/CPU (torch's SyncBatchNorm
    is GPU-only). Two autograd-aware all-reduces (mean, then centred squares), so gradients
    equal those of one BatchNorm over the global batch."""

    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise WmfastError(f"BatchNorm expects [N, C, ...] input, got {tuple(x.shape)}")

    def forward(self, x):
        if not (self.training and is_distributed()):
            return super().forward(x)
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        n_local = x.numel() // x.shape[1]
        n = all_reduce_sum(torch.tensor(float(n_local), device=x.device))                     # global count
        mean = all_reduce_sum_grad(x.sum(dims)) / n                                            # [C]
        var = all_reduce_sum_grad((x - mean.view(shape)).pow(2).sum(dims)) / n                 # [C], biased
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                momentum = self.momentum
                if self.num_batches_tracked is not None:
                    self.num_batches_tracked += 1
                    if momentum is None:  # cumulative moving average
                        momentum = 1.0 / float(self.num_batches_tracked)
                unbiased = var.detach() * (n / (n - 1).clamp(min=1))
                self.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
                self.running_var.mul_(1 - momentum).add_(unbiased, alpha=momentum)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


_PLAIN_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def convert_sync_batchnorm(model: nn.Module, device) -> nn.Module:
    """Every plain BatchNorm -> one whose statistics span all processes (torch's SyncBatchNorm on
    GPU, CPUSyncBatchNorm on CPU), keeping parameters and running statistics. Already converted
    layers are left alone, so converting twice does not replace parameters an optimizer holds."""
    sync_cls = CPUSyncBatchNorm if torch.device(device).type == "cpu" else nn.SyncBatchNorm
    if type(model) in _PLAIN_BATCHNORMS:
        new = sync_cls(model.num_features, model.eps, model.momentum, model.affine, model.track_running_stats)
        if model.affine:
            with torch.no_grad():
                new.weight, new.bias = model.weight, model.bias   # the same Parameter objects
        new.running_mean, new.running_var = model.running_mean, model.running_var
        new.num_batches_tracked = model.num_batches_tracked
        new.train(model.training)
        return new
    for name, child in model.named_children():
        new = convert_sync_batchnorm(child, device)
        if new is not child:
            setattr(model, name, new)
    return model


def wrap(model: nn.Module, device, find_unused_parameters: bool = False) -> nn.Module:
    """DDP around `model` (BatchNorm converted first); the model itself when not distributed.

    forward_sync_buffers=False: buffers that change outside autograd (VQ statistics, BatchNorm
    running stats) are synchronized by their owners, and re-broadcasting rank 0's every step
    would hide a rank that drifted (they are still broadcast once, at construction)."""
    if not is_distributed():
        return model
    model = convert_sync_batchnorm(model, device)
    device = torch.device(device)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, forward_sync_buffers=False,
                                               find_unused_parameters=find_unused_parameters)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def check_divisible(batch_size: int, what: str = "--batch-size") -> int:
    """The per-process share of a global batch; a clear error when it does not divide."""
    world = world_size()
    if batch_size < 1 or batch_size % world:
        raise WmfastError(f"{what} {batch_size} is the global batch and must split evenly over "
                          f"{world} processes (use a multiple of {world})")
    return batch_size // world


# -- collectives (identity in one process): in wmfast.nn.collectives, which nn and models use ------

# -- launching ---------------------------------------------------------------------------------

def launch(args: list, nproc: int, nnodes: str = "1", rdzv_endpoint: str = None, rdzv_id: str = None,
           max_restarts: int = 0) -> None:
    """Run `python <args>` (e.g. ["-m", "wmfast", "train", ...]) on `nproc` processes per machine
    with torch.distributed's launcher (elastic_launch, the engine behind torchrun). One machine by
    default (a private
    rendezvous on a free local port); for several, pass nnodes (e.g. "2") and the same
    rdzv_endpoint "host:port" and rdzv_id on every machine. A failed worker stops the others;
    raises WmfastError naming the first failed rank."""
    import sys

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch
    from torch.distributed.run import parse_min_max_nnodes

    if nproc < 1:
        raise WmfastError(f"--nproc must be >= 1, got {nproc}")
    min_nodes, max_nodes = parse_min_max_nnodes(str(nnodes))
    if max_nodes > 1 and not (rdzv_endpoint and rdzv_id):
        raise WmfastError("training on several machines needs the same rdzv_endpoint host:port and rdzv_id "
                          "on every machine")
    if nproc > 1 and "OMP_NUM_THREADS" not in os.environ:
        # as torchrun does: processes sharing a machine should not each use every core
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    config = LaunchConfig(min_nodes=min_nodes, max_nodes=max_nodes, nproc_per_node=nproc,
                          run_id=rdzv_id or str(uuid.uuid4()), rdzv_backend="c10d",
                          rdzv_endpoint=rdzv_endpoint or "localhost:0", max_restarts=max_restarts,
                          monitor_interval=0.1, start_method="spawn")
    try:
        elastic_launch(config, sys.executable)(*[str(a) for a in args])
    except SignalException:   # Ctrl-C / SIGTERM: the workers got it too, saved their step and stopped
        raise KeyboardInterrupt from None
    except ChildFailedError as e:
        failed_rank, failure = e.get_first_failure()
        raise WmfastError(f"training process rank {failed_rank} failed (exit code {failure.exitcode}); "
                          f"its error is printed above") from None
