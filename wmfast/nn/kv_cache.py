"""Temporal key/value cache of a space-time transformer (gpt-fast's shape: buffers allocated once,
written in place one frame at a time, static shapes for compilers and exported graphs).

k, v: [blocks, B, P, H, slots, Dh] (one temporal sequence per batch item and patch; the attention
sees [B*P, H, slots, Dh] views of them, without copies).
Softmax attention does not depend on the order of its keys, so the cache is a ring: the oldest
frame's slot is overwritten; `valid` [slots] marks slots that hold a frame while it fills up.
"""
import torch


class KVCache:
    def __init__(self, blocks: int, batch: int, patches: int, heads: int, slots: int, head_dim: int, device=None,
                 dtype=torch.float32):
        self.slots, self.count = slots, 0
        self.k = torch.zeros(blocks, batch, patches, heads, slots, head_dim, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)
        self.valid = torch.zeros(slots, dtype=torch.bool, device=device)

    @property
    def frames(self) -> int:
        """Frames held (at most `slots`)."""
        return min(self.count, self.slots)

    @property
    def batch(self) -> int:
        return self.k.shape[1]

    def clear(self) -> "KVCache":
        self.count = 0
        self.valid.zero_()
        return self

    def write(self, k, v):
        """Append the keys/values [blocks, B, P, H, Tn, Dh] of Tn new frames, overwriting the oldest slots."""
        for t in range(k.shape[4]):
            slot = self.count % self.slots
            self.k[..., slot, :] = k[..., t, :]
            self.v[..., slot, :] = v[..., t, :]
            self.valid[slot] = True
            self.count += 1


def stack_kv(kvs, batch: int) -> tuple:
    """One (k, v) [B*P, H, Tn, Dh] per block -> (k, v) [blocks, B, P, H, Tn, Dh]."""
    return tuple(torch.stack([kv[i] for kv in kvs]).unflatten(1, (batch, -1)) for i in (0, 1))


def cache_for(transformer, batch: int, patches: int, slots: int, device=None) -> KVCache:
    """A cache for an STTransformer's temporal attention over `slots` frames."""
    heads = transformer.blocks[0].temporal_attn.num_heads
    return KVCache(len(transformer.blocks), batch, patches, heads, slots, transformer.dim // heads, device)


def past_of(cache_k, cache_v) -> list:
    """Cache tensors [blocks, B, P, H, slots, Dh] -> one (k, v) [B*P, H, slots, Dh] view per block
    (None: no cached frames)."""
    if cache_k is None:
        return None
    return [(cache_k[i].flatten(0, 1), cache_v[i].flatten(0, 1)) for i in range(cache_k.shape[0])]
