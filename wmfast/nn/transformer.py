"""The space-time transformer (STT) shared by all three models.

Each block: spatial attention (within a frame, over P patches), temporal attention (per
patch, over T frames, causal), SwiGLU feed-forward; each a post-norm residual
x = norm(x + f(x)). Norms are RMSNorm, or FiLM-conditioned LayerNorm when the transformer
is conditioned on actions. Attention runs through SDPA on 4-D tensors (exportable to ONNX).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from wmfast.errors import WmfastError
from wmfast.nn.pe import temporal_pe
from wmfast.nn import capture_flag as _capture


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class PlainNorm(nn.Module):
    """Unconditioned sublayer norm; kept as `norm.rms` for tinyworlds key names."""

    def __init__(self, dim: int):
        super().__init__()
        self.rms = RMSNorm(dim)

    def forward(self, x, film=None):
        return self.rms(x)


class FiLMNorm(nn.Module):
    """Affine-free LayerNorm, then x * (1 + gamma) + beta from the conditioning."""

    def __init__(self, dim: int, cond_dim: int):
        super().__init__()
        self.dim = dim
        self.to_gamma_beta = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 2 * dim))

    def forward(self, x, cond=None):
        # x [B, T, P, E]; cond [B, T, C] or [B, T-1, C] or None
        x = F.layer_norm(x, (self.dim,), eps=1e-5)
        if cond is None:
            return x
        film = prepend_identity_step(self.to_gamma_beta(cond), x.shape[1])      # [B, T, 2E]
        gamma, beta = film.unsqueeze(2).chunk(2, dim=-1)                         # [B, T, 1, E] each
        return x * (1 + gamma) + beta


def prepend_identity_step(film, num_frames: int):
    """FiLM parameters [B, T-1, 2E] for T frames get a zero (identity) step in front: the action
    between frames t-1 and t modulates frame t, and frame 0 is left unmodulated (as tinyworlds,
    which pads gamma/beta, not the actions). Parameters with T steps pass through."""
    if film.shape[1] == num_frames:
        return film
    if film.shape[1] != num_frames - 1:
        raise WmfastError(f"conditioning has {film.shape[1]} steps for {num_frames} frames "
                         f"(expected {num_frames - 1} or {num_frames})")
    return torch.cat([film.new_zeros(film.shape[0], 1, film.shape[2]), film], dim=1)


def make_norm(dim: int, cond_dim):
    return FiLMNorm(dim, cond_dim) if cond_dim else PlainNorm(dim)


class Attention(nn.Module):
    """Multi-head self-attention over one axis of [B, T, P, E]: 'space' (P) or 'time' (T, causal)."""

    def __init__(self, dim: int, num_heads: int, axis: str, cond_dim=None):
        super().__init__()
        if dim % num_heads:
            raise WmfastError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.axis = num_heads, axis
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.norm = make_norm(dim, cond_dim)

    def forward(self, x, cond=None):
        B, T, P, E = x.shape
        H = self.num_heads
        if self.axis == "space":
            seq = x.reshape(B * T, P, E)                                       # [B*T, P, E]
        else:
            seq = x.transpose(1, 2).reshape(B * P, T, E)                       # [B*P, T, E]
        N, L, _ = seq.shape
        q = self.q_proj(seq).reshape(N, L, H, E // H).transpose(1, 2)          # [N, H, L, Dh]
        k = self.k_proj(seq).reshape(N, L, H, E // H).transpose(1, 2)
        v = self.v_proj(seq).reshape(N, L, H, E // H).transpose(1, 2)
        window = getattr(self, "window_mask", None)                             # [P, P] bool or None
        bias = self.position_bias(cond, T) if hasattr(self, "rel_bias") else None   # [H or B*T, H, P, P] or None
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=window if bias is None else bias,
                                           is_causal=self.axis == "time")
        if _capture.active:  # wmfast.viz.capture_attention is open: recompute this call's probabilities
            _capture.record(self, q, k, causal=self.axis == "time", shape=(B, T, P), mask=window, bias=bias)
        o = self.out_proj(o.transpose(1, 2).reshape(N, L, E))                  # [N, L, E]
        if self.axis == "space":
            o = o.reshape(B, T, P, E)
        else:
            o = o.reshape(B, P, T, E).transpose(1, 2)
        return self.norm(x + o, cond)

    def restrict_to_window(self, grid: int, radius: int):
        """Spatial attention only between patches at most `radius` rows and columns apart
        (a local inductive bias: what moves one patch is found among the neighbours)."""
        rows, cols = torch.arange(grid).repeat_interleave(grid), torch.arange(grid).repeat(grid)
        near = ((rows[:, None] - rows[None]).abs() <= radius) & ((cols[:, None] - cols[None]).abs() <= radius)
        self.register_buffer("window_mask", near, persistent=False)             # [P, P]

    def add_position_bias(self, grid: int, cond_dim: int = 0):
        """A learned bias per head and relative (row, column) offset added to the spatial scores, as
        T5 and Swin do: a head can then attend to 'the patch left of me' whatever the content. With
        cond_dim, the action adds its own bias per head and offset, so a head can look where the
        action says a moved object comes from. Both start at zero (no change)."""
        rows, cols = torch.arange(grid).repeat_interleave(grid), torch.arange(grid).repeat(grid)
        offset = (rows[:, None] - rows[None] + grid - 1) * (2 * grid - 1) + (cols[:, None] - cols[None] + grid - 1)
        self.register_buffer("rel_index", offset, persistent=False)                  # [P, P] in [0, (2g-1)^2)
        self.rel_bias = nn.Parameter(torch.zeros(self.num_heads, (2 * grid - 1) ** 2))
        if cond_dim:
            self.action_bias = nn.Linear(cond_dim, self.num_heads * (2 * grid - 1) ** 2)
            nn.init.zeros_(self.action_bias.weight)
            nn.init.zeros_(self.action_bias.bias)

    def position_bias(self, cond=None, num_frames: int = 1):
        """Float attention bias: [H, P, P] from the relative offsets, or [B*T, H, P, P] when the
        action adds its own (cond [B, T or T-1, C]); -inf outside the window if any."""
        bias = self.rel_bias[:, self.rel_index]                                      # [H, P, P]
        if hasattr(self, "action_bias") and cond is not None:
            per_frame = prepend_identity_step(self.action_bias(cond), num_frames)    # [B, T, H*O]
            per_frame = per_frame.reshape(-1, self.num_heads, self.rel_bias.shape[1])   # [B*T, H, O]
            bias = bias + per_frame[:, :, self.rel_index]                             # [B*T, H, P, P]
        window = getattr(self, "window_mask", None)
        return bias if window is None else bias.masked_fill(~window, float("-inf"))

    # -- cached inference (rollout engines) ----------------------------------------------------
    def split_heads(self, proj, seq):
        """[N, L, E] through one of q_proj / k_proj / v_proj -> [N, H, L, Dh]."""
        N, L, E = seq.shape
        return proj(seq).reshape(N, L, self.num_heads, E // self.num_heads).transpose(1, 2)

    def forward_cached(self, x, cond=None, past=None, past_valid=None):
        """Temporal attention of new frames x [B, Tn, P, E] over cached keys/values of earlier frames.

        past: (k, v) [B*P, H, Tc, Dh] of the earlier frames at this layer, or None for no earlier
        frames (then this is forward() on x); past_valid: [Tc] bool marking the cache slots that hold
        a frame (None: all). Returns (out [B, Tn, P, E], (k, v) [B*P, H, Tn, Dh] of the new frames).
        Exact because the temporal mask is causal: earlier frames never attend to later ones, and
        softmax attention does not depend on the order of the keys, so a cache may be a ring."""
        B, Tn, P, E = x.shape
        seq = x.transpose(1, 2).reshape(B * P, Tn, E)                          # [B*P, Tn, E]
        q, k, v = (self.split_heads(proj, seq) for proj in (self.q_proj, self.k_proj, self.v_proj))
        if past is None:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            keys, values = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)   # [B*P, H, Tc+Tn, Dh]
            mask = None
            if Tn > 1 or past_valid is not None:
                mask = past_and_causal_mask(past[0].shape[2], Tn, past_valid, x.device)   # [Tn, Tc+Tn]
            o = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        if _capture.active:  # wmfast.viz.capture_attention is open: recompute this call's probabilities
            _capture.record(self, q, k if past is None else keys, causal=past is None, shape=(B, Tn, P),
                            mask=None if past is None else mask)
        o = self.out_proj(o.transpose(1, 2).reshape(B * P, Tn, E))             # [B*P, Tn, E]
        o = o.reshape(B, P, Tn, E).transpose(1, 2)                             # [B, Tn, P, E]
        return self.norm(x + o, cond), (k, v)


def past_and_causal_mask(num_past: int, num_new: int, past_valid, device):
    """Boolean [Tn, Tc+Tn]: new frame i sees every valid cached frame and new frames 0..i."""
    past = torch.ones(num_new, num_past, dtype=torch.bool, device=device)
    if past_valid is not None:
        past = past & past_valid[None, :]
    new = torch.ones(num_new, num_new, dtype=torch.bool, device=device).tril()
    return torch.cat([past, new], dim=1)


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden_dim: int, cond_dim=None):
        super().__init__()
        h = (2 * hidden_dim) // 3
        self.w_v = nn.Linear(dim, h)
        self.w_g = nn.Linear(dim, h)
        self.w_o = nn.Linear(h, dim)
        self.norm = make_norm(dim, cond_dim)

    def forward(self, x, cond=None):
        return self.norm(x + self.w_o(F.silu(self.w_v(x)) * self.w_g(x)), cond)


class STBlock(nn.Module):
    """Spatial attention, temporal attention (temporal=False: none, each frame on its own), SwiGLU."""

    def __init__(self, dim: int, num_heads: int, hidden_dim: int, cond_dim=None, temporal: bool = True):
        super().__init__()
        self.spatial_attn = Attention(dim, num_heads, "space", cond_dim)
        if temporal:
            self.temporal_attn = Attention(dim, num_heads, "time", cond_dim)
        self.ffn = SwiGLU(dim, hidden_dim, cond_dim)

    @property
    def temporal(self) -> bool:
        return hasattr(self, "temporal_attn")

    def forward(self, x, cond=None):
        x = self.spatial_attn(x, cond)
        if self.temporal:
            x = self.temporal_attn(x, cond)
        return self.ffn(x, cond)

    def forward_cached(self, x, cond=None, past=None, past_valid=None):
        """New frames x [B, Tn, P, E] against cached temporal K/V -> (x, (k, v) of the new frames; None
        without temporal attention)."""
        x = self.spatial_attn(x, cond)
        kv = None
        if self.temporal:
            x, kv = self.temporal_attn.forward_cached(x, cond, past, past_valid)
        return self.ffn(x, cond), kv


class STTransformer(nn.Module):
    """Blocks of space-time attention. temporal=False: no attention across frames and no temporal
    position encoding, so each frame's output depends on that frame alone (wherever it sits in a clip)."""

    def __init__(self, dim: int, num_heads: int, hidden_dim: int, num_blocks: int, cond_dim=None,
                 temporal: bool = True):
        super().__init__()
        self.dim, self.temporal = dim, temporal
        self.blocks = nn.ModuleList(STBlock(dim, num_heads, hidden_dim, cond_dim, temporal) for _ in range(num_blocks))

    def forward(self, x, cond=None):
        # x [B, T, P, E]; cond [B, T-1 or T, C] or None
        T = x.shape[1]
        if self.temporal:
            x = x + temporal_pe(T, self.dim).to(x)[None, :, None, :]
        for block in self.blocks:
            x = block(x, cond)
        return x

    def forward_cached(self, x, pe, cond=None, past=None, past_valid=None):
        """Run only new frames, attending to cached keys/values of earlier frames in time.

        x [B, Tn, P, E]; pe [Tn, E]: the new frames' rows of temporal_pe (positions are absolute);
        cond: FiLM conditioning for the new frames ([B, Tn, C], or [B, Tn-1, C] when they start at
        frame 0); past: one (k, v) [B*P, H, Tc, Dh] per block, or None; past_valid [Tc] bool or None.
        Returns (x [B, Tn, P, E], one (k, v) [B*P, H, Tn, Dh] per block for the new frames)."""
        if not self.temporal:
            raise WmfastError("forward_cached needs temporal attention (this transformer treats each frame alone)")
        x = x + pe.to(x)[None, :, None, :]
        kvs = []
        for i, block in enumerate(self.blocks):
            x, kv = block.forward_cached(x, cond, None if past is None else past[i], past_valid)
            kvs.append(kv)
        return x, kvs
