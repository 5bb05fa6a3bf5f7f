"""One worker of tests/train/test_distributed.py, started on 2 processes by wmfast.train.distributed.launch.

    python ddp_worker.py OUT PHASE[,PHASE...]

Phases (the test runs the same work in one process and compares):
  stages  train tokenizer, actions, dynamics (the tiny preset) into OUT/run2, then an actions model with
          BatchNorm and an EMA VQ with dead-code resets every 2 steps into OUT/run3; each rank saves its
          final parameters and buffers
  units   a VQ (EMA, dead-code resets, entropy loss), CPUSyncBatchNorm and batch_var on each rank's
          half of a global batch
  resume  resume OUT/resume/tokenizer (started by the test in one process) on 2 processes
  stop    rank 1 gets SIGTERM during step 3: every rank stops after the same step, rank 0 saves it
  kill    rank 1 dies (os._exit) after step 3: rank 0 saves step 3 and fails
"""
import os
import signal
import sys

import torch

from wmfast.train import TrainConfig, train_stage
from wmfast.train import distributed as D

DATA = "game:pong:6"
LAM = dict(architecture="conv", conv_norm="batch", quantizer="vq", vq_ema=True, vq_dead_code_every=2,
           vq_entropy_weight=0.1)


def config(steps=20, **kw):
    return TrainConfig(steps=steps, batch_size=4, preset="tiny", log_every=1, save_every=1000, warmup_steps=2,
                       seed=1, progress=False, **kw)


def snapshot(path):
    """A callback saving the model's parameters and every buffer (VQ statistics included) at the end."""
    def callback(step, net):
        if step == callback.last:
            state = {**{f"p:{k}": v.detach().clone() for k, v in net.named_parameters()},
                     **{f"b:{k}": v.detach().clone() for k, v in net.named_buffers()}}
            torch.save(state, path)
    return callback


RUNS = (("run2", "tokenizer", {}), ("run2", "actions", {}), ("run2", "dynamics", {}), ("run3", "actions", LAM))


def train_runs(out, tag):
    """Every run of the stages phase; snapshots OUT/<run>-<stage>-<tag>.pt."""
    for run, stage, overrides in RUNS:
        cb = snapshot(os.path.join(out, f"{run}-{stage}-{tag}.pt"))
        cb.last = 20
        train_stage(stage, os.path.join(out, run), DATA, config(), model=overrides, callback=cb)


def vq_units(rank, world):
    """The global batch is generated identically everywhere; each rank trains on its half."""
    from wmfast.nn.vq import VectorQuantizer

    torch.manual_seed(0)
    vq = VectorQuantizer(8, 3, ema=True, dead_code_every=2, entropy_weight=0.1).train()
    g = torch.Generator().manual_seed(5)
    grads = []
    for _ in range(5):
        z_all = (torch.randn(12, 3, generator=g) * 0.5 + 2.0)   # far from most codes: dead codes get reset
        n = z_all.shape[0] // world
        z = z_all[rank * n:(rank + 1) * n].clone().requires_grad_(True)
        _, loss = vq(z)
        (loss * 1.0).backward()
        grads.append(z.grad)
    bn = D.convert_sync_batchnorm(torch.nn.Sequential(torch.nn.BatchNorm2d(4)), "cpu").train()
    x_all = torch.randn(8, 4, 3, 3, generator=g)
    n = 8 // world
    x = x_all[rank * n:(rank + 1) * n].clone().requires_grad_(True)
    y = bn(x)
    weights = torch.linspace(-1, 1, x_all.numel()).view_as(x_all)[rank * n:(rank + 1) * n]
    (y * weights).sum().backward()
    v = torch.randn(10, 3, generator=g)
    n = 10 // world
    vx = v[rank * n:(rank + 1) * n].clone().requires_grad_(True)
    D.batch_var(vx).pow(2).sum().backward()
    return {"codebook": vq.codebook, "ema_count": vq.ema_count, "ema_sum": vq.ema_sum, "counts": vq.counts,
            "z_grad": torch.cat(grads), "bn_y": y.detach(), "bn_x_grad": x.grad, "bn_w_grad": bn[0].weight.grad,
            "bn_running_var": bn[0].running_var, "var": D.batch_var(vx).detach(), "var_grad": vx.grad}


def main():
    out, phases = sys.argv[1], sys.argv[2].split(",")
    torch.set_num_threads(1)
    D.setup("cpu")
    rank, world = D.rank(), D.world_size()
    assert world == 2, world
    if "stages" in phases:
        train_runs(out, f"rank{rank}")
    if "units" in phases:
        torch.save(vq_units(rank, world), os.path.join(out, f"units-rank{rank}.pt"))
    if "resume" in phases:
        train_stage("tokenizer", os.path.join(out, "resume"), DATA, config(steps=6), resume=True)
    if "stop" in phases:
        def sigterm_rank1(step, net):
            if step == 3 and rank == 1:
                os.kill(os.getpid(), signal.SIGTERM)
        try:
            train_stage("tokenizer", os.path.join(out, "stop"), DATA, config(steps=10), callback=sigterm_rank1)
        except KeyboardInterrupt:
            with open(os.path.join(out, f"stopped-rank{rank}"), "w") as f:
                f.write("ok")
    if "kill" in phases:
        def die_rank1(step, net):
            if step == 3 and rank == 1:
                os._exit(3)
        train_stage("tokenizer", os.path.join(out, "kill"), DATA, config(steps=10), callback=die_rank1)
    D.teardown()


if __name__ == "__main__":
    main()
