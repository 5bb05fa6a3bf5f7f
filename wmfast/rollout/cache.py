"""A ring of per-block temporal keys/values for the last few frames (gpt-fast's KV cache shape:
buffers allocated once, written in place one frame at a time).

Softmax attention does not depend on the order of its keys, so the oldest frame's slot is simply
overwritten; `valid` marks slots that hold a frame while the ring fills up.
"""
import torch


class FrameKVCache:
    def __init__(self, kvs, slots: int):
        """kvs: one (k, v) [N, H, T0, Dh] per block for T0 frames (the last `slots` are kept)."""
        N, H, _, Dh = kvs[0][0].shape
        self.slots, self.count = slots, 0
        self.k = [k.new_zeros(N, H, slots, Dh) for k, _ in kvs]
        self.v = [v.new_zeros(N, H, slots, Dh) for _, v in kvs]
        self.valid = torch.zeros(slots, dtype=torch.bool, device=kvs[0][0].device)
        self.write(kvs)

    @property
    def frames(self) -> int:
        """Frames held (at most `slots`)."""
        return min(self.count, self.slots)

    def past(self):
        return list(zip(self.k, self.v))

    def write(self, kvs):
        """Append the (k, v) [N, H, Tn, Dh] of Tn new frames, overwriting the oldest slots."""
        for t in range(kvs[0][0].shape[2]):
            slot = self.count % self.slots
            for buf_k, buf_v, (k, v) in zip(self.k, self.v, kvs):
                buf_k[:, :, slot] = k[:, :, t]
                buf_v[:, :, slot] = v[:, :, t]
            self.valid[slot] = True
            self.count += 1
