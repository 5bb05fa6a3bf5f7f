"""Vector quantization (van den Oord et al. 2017) on the fused wmfast.ops.vq_lookup op.

    vq = VectorQuantizer(codebook_size=K, dim=D)
    q, aux_loss = vq(z)           # z [..., D] -> straight-through q [..., D], scalar loss
    idx = vq.indices(q)           # [...] int64;  vq.latents(idx) -> [..., D]

Losses (named, because taming-transformers' legacy VQ applied beta to the wrong term):
  commitment = beta * ||z - sg(q)||^2   pulls the encoder towards its code
  codebook   =        ||sg(z) - q||^2   pulls the code towards the encoder (absent with EMA)
  entropy    = entropy_weight * (mean per-row entropy - entropy of the mean assignment),
               on a random subsample of `entropy_rows` rows (their [S, K] soft assignment is
               the only place a row-by-code matrix is ever formed)
Options: EMA codebook updates (counts and sums by index_add_, never a one-hot matrix), and
dead-code reset: every `dead_code_every` training steps, codes chosen fewer than
`dead_code_threshold` times since the last check are replaced by recent encoder outputs.
The codebook (and the EMA statistics) are in the state dict, so they are saved with the
model's safetensors.
Multi-process training (wmfast.train.distributed): usage counts and EMA sums are summed over
processes, the recent-output buffer holds every process's outputs, the entropy term uses the
global mean assignment, and reset codes are broadcast from rank 0, so every process holds the
same codebook. In one process (or with `distributed_sync = False`) none of this runs. Metrics: code_usage() -> usage %, perplexity, per-code counts;
plot_code_usage() writes their histogram as a PNG.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from wmfast.errors import WmfastError
from wmfast.nn import collectives
from wmfast.ops.vq_lookup import vq_lookup


class VectorQuantizer(nn.Module):
    def __init__(self, codebook_size: int, dim: int, beta: float = 0.25, ema: bool = False, decay: float = 0.99,
                 eps: float = 1e-5, entropy_weight: float = 0.0, entropy_temperature: float = 1.0,
                 entropy_rows: int = 1024, dead_code_every: int = 0, dead_code_threshold: float = 1.0,
                 recent_size: int = 4096):
        super().__init__()
        if codebook_size < 1 or dim < 1:
            raise WmfastError(f"VectorQuantizer needs codebook_size >= 1 and dim >= 1, got {codebook_size}, {dim}")
        if not 0.0 < decay < 1.0:
            raise WmfastError(f"VectorQuantizer decay must be in (0, 1), got {decay}")
        self.num_codes, self.dim = codebook_size, dim
        self.beta, self.ema, self.decay, self.eps = beta, ema, decay, eps
        self.entropy_weight, self.entropy_temperature, self.entropy_rows = entropy_weight, entropy_temperature, entropy_rows
        self.dead_code_every, self.dead_code_threshold = dead_code_every, dead_code_threshold
        codebook = torch.randn(codebook_size, dim)                               # [K, D], unit scale like z
        if ema:
            # Updated by running averages, not by the optimizer.
            self.register_buffer("codebook", codebook)
            self.register_buffer("ema_count", torch.ones(codebook_size))        # [K]
            self.register_buffer("ema_sum", codebook.clone())                   # [K, D]
        else:
            self.codebook = nn.Parameter(codebook)
        # Training-time bookkeeping, not part of a checkpoint.
        self.register_buffer("counts", torch.zeros(codebook_size), persistent=False)          # since reset_usage()
        self.register_buffer("recent_counts", torch.zeros(codebook_size), persistent=False)   # since the last dead-code check
        self.register_buffer("recent", torch.zeros(0, dim), persistent=False)                 # [<=R, D] recent encoder outputs
        self.recent_size, self.recent_pos, self.steps = recent_size, 0, 0
        self.last_losses = {}
        self.distributed_sync = True    # set False to keep a copy trained on one process out of collectives

    @property
    def codebook_size(self) -> int:
        return self.num_codes

    # -- training ---------------------------------------------------------------------------
    def forward(self, z):
        """z [..., D] -> (straight-through quantized [..., D], aux loss scalar)."""
        zc = z.to(self.codebook.dtype)
        idx, q, _ = vq_lookup(zc, self.codebook, check_finite=False)            # [...], [..., D]
        commitment = self.beta * F.mse_loss(zc, q.detach())
        losses = {"commitment": commitment}
        if not self.ema:
            losses["codebook"] = F.mse_loss(zc.detach(), q)
        if self.training and self.entropy_weight > 0:
            losses["entropy"] = self.entropy_weight * self.entropy_loss(zc.reshape(-1, self.dim))
        if self.training:
            self.update_statistics(zc.detach().reshape(-1, self.dim), idx.reshape(-1))
        self.last_losses = {k: v.detach() for k, v in losses.items()}
        q_ste = zc + (q - zc).detach()                                          # value of q, gradient of z
        return q_ste.to(z.dtype), sum(losses.values())

    def _dist(self):
        """wmfast.nn.collectives when this module trains in a multi-process group, else None."""
        if not self.distributed_sync:
            return None
        return collectives if collectives.is_distributed() else None

    def entropy_loss(self, z_flat):
        """Mean per-row assignment entropy minus the entropy of the mean assignment, on a random
        subsample of rows: low when each row is confident and the codes are used evenly.
        Across processes: entropy_rows in all, and the mean assignment is the global one."""
        dist = self._dist()
        rows = self.entropy_rows if dist is None else max(1, self.entropy_rows // dist.world_size())
        if z_flat.shape[0] > rows:
            z_flat = z_flat[torch.randperm(z_flat.shape[0], device=z_flat.device)[:rows]]
        # An EMA codebook is updated in place after this forward: autograd needs its own copy.
        codebook = self.codebook.clone() if self.ema else self.codebook
        d = (z_flat.pow(2).sum(-1, keepdim=True) - 2 * z_flat @ codebook.T
             + codebook.pow(2).sum(-1))                                         # [S, K]
        p = F.softmax(-d / self.entropy_temperature, dim=-1)                    # [S, K]
        row_entropy = -(p * torch.log(p + 1e-10)).sum(-1).mean()
        mean_p = p.mean(0)
        if dist is not None:  # equal rows per process: the mean of the means is the global mean
            mean_p = dist.all_reduce_sum_grad(mean_p) / dist.world_size()
        return row_entropy + (mean_p * torch.log(mean_p + 1e-10)).sum()

    @torch.no_grad()
    def update_statistics(self, z_flat, idx):
        """Usage counts, the recent-output buffer, the EMA codebook and the dead-code reset."""
        ones = torch.ones_like(idx, dtype=self.counts.dtype)
        batch_counts = torch.zeros_like(self.counts).index_add_(0, idx, ones)   # [K], no one-hot
        if self.ema:
            sums = torch.zeros_like(self.ema_sum).index_add_(0, idx, z_flat.to(self.ema_sum.dtype))  # [K, D]
        dist = self._dist()
        if dist is not None:
            # One all-reduce for the counts (and EMA sums); the ring buffer gets every process's rows.
            packed = torch.cat([batch_counts, sums.flatten().to(batch_counts)]) if self.ema else batch_counts
            dist.all_reduce_sum(packed)
            batch_counts = packed[: self.num_codes]
            if self.ema:
                sums = packed[self.num_codes:].view_as(sums).to(sums.dtype)
            if self.dead_code_every > 0:
                z_flat = dist.all_gather_cat(z_flat)
        self.counts += batch_counts
        self.recent_counts += batch_counts
        self.remember(z_flat)
        if self.ema:
            self.ema_count.mul_(self.decay).add_(batch_counts, alpha=1 - self.decay)
            self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
            # Laplace smoothing keeps unused codes from dividing by ~0.
            n = self.ema_count.sum()
            smoothed = (self.ema_count + self.eps) / (n + self.num_codes * self.eps) * n
            self.codebook.copy_(self.ema_sum / smoothed[:, None])
        self.steps += 1
        if self.dead_code_every > 0 and self.steps % self.dead_code_every == 0:
            self.reset_dead_codes()

    @torch.no_grad()
    def remember(self, z_flat):
        """Keep up to recent_size recent encoder outputs (a ring buffer) for dead-code resets."""
        if self.dead_code_every <= 0 or z_flat.shape[0] == 0:
            return
        R = self.recent_size
        if z_flat.shape[0] > R:
            z_flat = z_flat[torch.randperm(z_flat.shape[0], device=z_flat.device)[:R]]
        if self.recent.shape[0] < R:
            self.recent = torch.cat([self.recent.to(z_flat), z_flat])[:R]
            self.recent_pos = self.recent.shape[0] % R
            return
        n = z_flat.shape[0]
        slots = (self.recent_pos + torch.arange(n, device=z_flat.device)) % R
        self.recent[slots] = z_flat
        self.recent_pos = (self.recent_pos + n) % R

    @torch.no_grad()
    def reset_dead_codes(self) -> int:
        """Replace codes used fewer than dead_code_threshold times since the last check by
        random recent encoder outputs. Returns how many were replaced."""
        dead = (self.recent_counts < self.dead_code_threshold).nonzero().flatten()
        self.recent_counts.zero_()
        if dead.numel() == 0 or self.recent.shape[0] == 0:
            return 0
        pick = torch.randint(0, self.recent.shape[0], (dead.numel(),), device=dead.device)
        new_codes = self.recent[pick].to(self.codebook.dtype)                   # [n_dead, D]
        dist = self._dist()
        if dist is not None:  # the decision is global (summed counts); rank 0's picks win
            dist.broadcast(new_codes, src=0)
        self.codebook.data[dead] = new_codes
        if self.ema:
            # A revived code restarts its running averages, or the stale ones would pull it back.
            self.ema_count[dead] = 1.0
            self.ema_sum[dead] = new_codes
        return int(dead.numel())

    # -- inference interface (same as FSQ) ----------------------------------------------------
    def quantize(self, z):
        """z [..., D] -> nearest codes [..., D] (straight-through gradient to z)."""
        zc = z.to(self.codebook.dtype)
        q = vq_lookup(zc, self.codebook, check_finite=False)[1]
        return (zc + (q - zc).detach()).to(z.dtype)

    def indices(self, q):
        """Latents [..., D] -> int64 code indices [...] (the nearest code)."""
        return vq_lookup(q.to(self.codebook.dtype), self.codebook, check_finite=False)[0]

    def latents(self, idx):
        """int64 indices [...] -> codes [..., D]."""
        return F.embedding(idx.long(), self.codebook)

    # -- metrics ------------------------------------------------------------------------------
    def code_usage(self) -> dict:
        """Usage since reset_usage(): fraction of codes used (%), perplexity of the code
        distribution (K for perfectly even use, 1 for collapse) and the per-code counts."""
        counts = self.counts.detach().cpu()
        total = float(counts.sum())
        if total == 0:
            return {"usage_pct": 0.0, "perplexity": 0.0, "counts": counts}
        p = counts / total
        entropy = float(-(p[p > 0] * p[p > 0].log()).sum())
        return {"usage_pct": 100.0 * float((counts > 0).float().mean()), "perplexity": math.exp(entropy),
                "counts": counts}

    def reset_usage(self):
        self.counts.zero_()

    def extra_repr(self) -> str:
        return (f"codebook_size={self.num_codes}, dim={self.dim}, beta={self.beta}, ema={self.ema}, "
                f"entropy_weight={self.entropy_weight}, dead_code_every={self.dead_code_every}")


def plot_code_usage(counts, path, title: str = "code usage"):
    """Per-code counts [K] -> a bar chart PNG at path (codes sorted by index)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = torch.as_tensor(counts).detach().cpu().float()
    used = int((counts > 0).sum())
    fig, ax = plt.subplots(figsize=(8, 3), dpi=100)
    ax.bar(range(counts.numel()), counts.numpy(), width=1.0, color="tab:blue")
    ax.set_xlabel("code index")
    ax.set_ylabel("count")
    ax.set_title(f"{title}: {used}/{counts.numel()} codes used")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
