"""The space-time transformer (STT) shared by all three models.

Each block: spatial attention (within a frame, over P patches), temporal attention (per
patch, over T frames, causal), SwiGLU feed-forward; each a post-norm residual
x = norm(x + f(x)). Norms are RMSNorm, or FiLM-conditioned LayerNorm when the transformer
is conditioned on actions. Attention runs through SDPA on 4-D tensors (exportable to ONNX).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from wmfast.nn.pe import temporal_pe


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
        raise ValueError(f"conditioning has {film.shape[1]} steps for {num_frames} frames "
                         f"(expected {num_frames - 1} or {num_frames})")
    return torch.cat([film.new_zeros(film.shape[0], 1, film.shape[2]), film], dim=1)


def make_norm(dim: int, cond_dim):
    return FiLMNorm(dim, cond_dim) if cond_dim else PlainNorm(dim)


class Attention(nn.Module):
    """Multi-head self-attention over one axis of [B, T, P, E]: 'space' (P) or 'time' (T, causal)."""

    def __init__(self, dim: int, num_heads: int, axis: str, cond_dim=None):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
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
        o = F.scaled_dot_product_attention(q, k, v, is_causal=self.axis == "time")
        o = self.out_proj(o.transpose(1, 2).reshape(N, L, E))                  # [N, L, E]
        if self.axis == "space":
            o = o.reshape(B, T, P, E)
        else:
            o = o.reshape(B, P, T, E).transpose(1, 2)
        return self.norm(x + o, cond)


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
    def __init__(self, dim: int, num_heads: int, hidden_dim: int, cond_dim=None):
        super().__init__()
        self.spatial_attn = Attention(dim, num_heads, "space", cond_dim)
        self.temporal_attn = Attention(dim, num_heads, "time", cond_dim)
        self.ffn = SwiGLU(dim, hidden_dim, cond_dim)

    def forward(self, x, cond=None):
        x = self.spatial_attn(x, cond)
        x = self.temporal_attn(x, cond)
        return self.ffn(x, cond)


class STTransformer(nn.Module):
    def __init__(self, dim: int, num_heads: int, hidden_dim: int, num_blocks: int, cond_dim=None):
        super().__init__()
        self.dim = dim
        self.blocks = nn.ModuleList(STBlock(dim, num_heads, hidden_dim, cond_dim) for _ in range(num_blocks))

    def forward(self, x, cond=None):
        # x [B, T, P, E]; cond [B, T-1 or T, C] or None
        T = x.shape[1]
        x = x + temporal_pe(T, self.dim).to(x)[None, :, None, :]
        for block in self.blocks:
            x = block(x, cond)
        return x
