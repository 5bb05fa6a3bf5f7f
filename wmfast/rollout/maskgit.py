"""MaskGIT unmasking with static shapes: no host syncs, no per-item Python loops.

The rule is tinyworlds' (see DynamicsModel.generate): each step every still-masked position gets a
token (argmax, or a sample at temperature > 0) and a confidence (its max probability); each batch
item unmasks its n most confident masked positions, n = max(P // 16, 1) at least, up to the
schedule's cumulative target. The reference stops early once nothing is masked; here every step
runs and an item with nothing masked chooses nothing, which gives the same result without asking
the device whether anything is left.
"""
import torch
import torch.nn.functional as F

from wmfast.models.dynamics import unmask_targets


def schedule_targets(num_tokens: int, steps: int, schedule_k: float, device) -> list:
    """The cumulative unmask target of each step as 0-d int64 tensors on the device (a tensor, not a
    Python int, so one compiled step serves every step)."""
    return [torch.tensor(t, dtype=torch.int64, device=device) for t in unmask_targets(num_tokens, steps, schedule_k)]


def sampling_noise(shape, device, generator=None):
    """Exp(1) noise: argmax(probs / noise) draws from probs (the exponential race; no multinomial)."""
    return torch.empty(shape, device=device).exponential_(generator=generator)


def choose_tokens(logits, masked, target, min_per_step: int, temperature: float = 0.0, noise=None):
    """logits [B, N, K], masked [B, N] bool, target 0-d int64 -> (tokens [B, N], chosen [B, N] bool)."""
    B, N, _ = logits.shape
    probs = F.softmax(logits.float() / temperature if temperature > 0 else logits.float(), dim=-1)   # [B, N, K]
    confidence = probs.max(dim=-1).values                                                        # [B, N]
    tokens = (probs / noise).argmax(dim=-1) if temperature > 0 else probs.argmax(dim=-1)        # [B, N]
    still = masked.sum(dim=1)                                                                    # [B]
    n = (target - (N - still)).clamp(min=0).minimum(still).clamp(min=min_per_step)               # [B]
    # Rank masked positions by confidence (stable: equal confidences keep position order).
    conf = confidence.masked_fill(~masked, float("-inf"))
    order = torch.sort(conf, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(N, device=logits.device).expand(B, N))
    return tokens, masked & (rank < n[:, None])
