"""Pair-window attention in Triton: forward and backward, pooled and unpooled.

q, k, v [B, T, P, H, D] are read in place: window t is the token range of frames t and t+1,
addressed by pointer arithmetic (no concatenated copy). Each program owns one block of rows of
one frame of one (batch, head):

  _forward      query rows of frame t. The three score blocks against the keys of frames
                t-1, t, t+1 are computed once each (online softmax per block) and merged by
                log-sum-exp into the two windows the frame belongs to: window t-1 ("left":
                blocks 0, 1) and window t ("right": blocks 1, 2). Writes the output rows and
                lse, or with POOL the row sums of the block (never the rows themselves).
  _backward_dq  query rows of frame t: dQ, and with POOL r_i = sum_j A_ij u_j (u_j = g . v_j / 2P,
                dO being the same vector g / 2P for every query of a window), which the dK/dV
                kernel needs. dQ_i = sum_j A_ij (u_j - r_i) k_j = X_i - r_i Y_i in one pass.
  _backward_dkv key rows of frame f: loops over the (query frame, window) pairs that see them
                and writes dK, dV once. With POOL, dV_j = (g / 2P) * sum_i A_ij (no matmul).
Every output element has one writer and partial sums are reduced in a fixed order, so the
backward is deterministic without atomics. Head dims up to 64 are zero-padded to a power of
two >= 16 (tl.dot needs K >= 16); any P works (masked tails).

GPU only in production (registered as the CUDA implementation of torch.ops.wmfast.pair_attention);
the tests run the same kernels on CPU tensors under TRITON_INTERPRET=1.
"""
import torch
import triton
import triton.language as tl

MAX_HEAD_DIM = 64
NUM_WARPS = 4


@triton.jit
def _block_forward(q, K, b, f, h, T, P, stride_kb, stride_kt, stride_kp, stride_kh, V, stride_vb, stride_vt,
                   stride_vp, stride_vh, scale, offs_d, mask_d,
                   D_PAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """Online softmax of q against the keys of frame f: (row max, row sum, unnormalised P V).
    A frame outside [0, T) gives (-inf, 0, 0)."""
    m = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, D_PAD], tl.float32)
    n_end = tl.where((f >= 0) & (f < T), P, 0)
    for n0 in range(0, n_end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        mask_n = offs_n < P
        kv_mask = mask_n[:, None] & mask_d[None, :]
        k = tl.load(K + b * stride_kb + f * stride_kt + offs_n[:, None] * stride_kp + h * stride_kh + offs_d[None, :],
                    mask=kv_mask, other=0.0)
        v = tl.load(V + b * stride_vb + f * stride_vt + offs_n[:, None] * stride_vp + h * stride_vh + offs_d[None, :],
                    mask=kv_mask, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * scale          # [M, N] fp32
        s = tl.where(mask_n[None, :], s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, axis=1))
        alpha = tl.exp(m - m_new)
        p = tl.exp(s - m_new[:, None])
        l = l * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
        m = m_new
    return m, l, acc


@triton.jit
def _merge(m_a, l_a, acc_a, m_b, l_b, acc_b):
    """Two blocks of one window -> (normalised output rows, lse)."""
    m = tl.maximum(m_a, m_b)
    w_a = tl.exp(m_a - m)
    w_b = tl.exp(m_b - m)
    l = l_a * w_a + l_b * w_b
    out = (acc_a * w_a[:, None] + acc_b * w_b[:, None]) / l[:, None]
    return out, m + tl.log(l)


@triton.jit
def _query_block(H, P, BLOCK_M: tl.constexpr):
    """This program's query rows: (block index, frame t, batch*head bh, b, h, row offsets, row mask)."""
    pid_m = tl.program_id(0)
    t = tl.program_id(1)
    bh = tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    return pid_m, t, bh, bh // H, bh % H, offs_m, offs_m < P


@triton.jit
def _forward(Q, K, V, Out, Lse, Part,
             stride_qb, stride_qt, stride_qp, stride_qh,
             stride_kb, stride_kt, stride_kp, stride_kh,
             stride_vb, stride_vt, stride_vp, stride_vh,
             T, P, H, D, scale, N_MBLOCKS,
             D_PAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, POOL: tl.constexpr,
             DOT_PRECISION: tl.constexpr):
    pid_m, t, bh, b, h, offs_m, mask_m = _query_block(H, P, BLOCK_M)
    W = T - 1
    offs_d = tl.arange(0, D_PAD)
    mask_d = offs_d < D
    q = tl.load(Q + b * stride_qb + t * stride_qt + offs_m[:, None] * stride_qp + h * stride_qh + offs_d[None, :],
                mask=mask_m[:, None] & mask_d[None, :], other=0.0)
    m0, l0, acc0 = _block_forward(q, K, b, t - 1, h, T, P, stride_kb, stride_kt, stride_kp, stride_kh, V, stride_vb,
                                  stride_vt, stride_vp, stride_vh, scale, offs_d, mask_d, D_PAD, BLOCK_M, BLOCK_N,
                                  DOT_PRECISION)
    m1, l1, acc1 = _block_forward(q, K, b, t, h, T, P, stride_kb, stride_kt, stride_kp, stride_kh, V, stride_vb,
                                  stride_vt, stride_vp, stride_vh, scale, offs_d, mask_d, D_PAD, BLOCK_M, BLOCK_N,
                                  DOT_PRECISION)
    m2, l2, acc2 = _block_forward(q, K, b, t + 1, h, T, P, stride_kb, stride_kt, stride_kp, stride_kh, V, stride_vb,
                                  stride_vt, stride_vp, stride_vh, scale, offs_d, mask_d, D_PAD, BLOCK_M, BLOCK_N,
                                  DOT_PRECISION)
    # Window existence as vectors (the interpreter rejects scalar masks combined with vectors)
    left_m = mask_m & ((offs_m * 0 + t) > 0)
    right_m = mask_m & ((offs_m * 0 + t) < T - 1)
    left_d = (offs_d * 0 + t) > 0
    right_d = (offs_d * 0 + t) < T - 1
    out_l, lse_l = _merge(m0, l0, acc0, m1, l1, acc1)    # window t-1, rows P + i
    out_r, lse_r = _merge(m1, l1, acc1, m2, l2, acc2)    # window t, rows i
    lse_l_ptr = Lse + (bh * W + t - 1) * 2 * P + P + offs_m
    lse_r_ptr = Lse + (bh * W + t) * 2 * P + offs_m
    tl.store(lse_l_ptr, lse_l, mask=left_m)
    tl.store(lse_r_ptr, lse_r, mask=right_m)
    if POOL:
        # Row sums of this block of queries; Part [B*H, T, N_MBLOCKS, 2, D_PAD] (0: right, 1: left)
        part = Part + ((bh * T + t) * N_MBLOCKS + pid_m) * 2 * D_PAD + offs_d
        tl.store(part, tl.sum(tl.where(mask_m[:, None], out_r, 0.0), axis=0), mask=right_d)
        tl.store(part + D_PAD, tl.sum(tl.where(mask_m[:, None], out_l, 0.0), axis=0), mask=left_d)
    else:
        # Out [B, W, 2P, H, D] contiguous
        row_l = ((b * W + t - 1) * 2 * P + P + offs_m) * H + h
        row_r = ((b * W + t) * 2 * P + offs_m) * H + h
        tl.store(Out + row_l[:, None] * D + offs_d[None, :], out_l.to(Out.dtype.element_ty),
                 mask=left_m[:, None] & mask_d[None, :])
        tl.store(Out + row_r[:, None] * D + offs_d[None, :], out_r.to(Out.dtype.element_ty),
                 mask=right_m[:, None] & mask_d[None, :])


@triton.jit
def _load_rows(X, b, f, h, offs, mask_rows, offs_d, mask_d, T, P, H, D):
    """Rows offs of frame f, head h from a contiguous X [B, T, P, H, D] (the backward's q, k, v)."""
    return tl.load(X + (((b * T + f) * P + offs[:, None]) * H + h) * D + offs_d[None, :],
                   mask=mask_rows[:, None] & mask_d[None, :], other=0.0)


@triton.jit
def _window_dq(s, lse, do, delta, v, k, DOT_PRECISION: tl.constexpr):
    """One window's share of dq for scores s of a key block: sum_j A_ij (dO_i . v_j - delta_i) k_j."""
    a = tl.exp(s - lse[:, None])
    dp = tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION)
    ds = a * (dp - delta[:, None])
    return tl.dot(ds.to(k.dtype), k, input_precision=DOT_PRECISION)


@triton.jit
def _pooled_window_dq(s, lse, g, v, k, r, x, y, DOT_PRECISION: tl.constexpr):
    """One window's pooled-output terms for a key block, added to the accumulators:
    r += sum_j A_ij u_j, x += sum_j A_ij u_j k_j, y += sum_j A_ij k_j, with u_j = g . v_j."""
    a = tl.exp(s - lse[:, None])
    u = tl.sum(v.to(tl.float32) * g[None, :], axis=1)
    au = a * u[None, :]
    return (r + tl.sum(au, axis=1), x + tl.dot(au.to(k.dtype), k, input_precision=DOT_PRECISION),
            y + tl.dot(a.to(k.dtype), k, input_precision=DOT_PRECISION))


@triton.jit
def _backward_dq(Q, K, V, G, Delta, Lse, R, DQ, T, P, H, D, scale,
                 D_PAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, POOL: tl.constexpr,
                 DOT_PRECISION: tl.constexpr):
    """Q, K, V [B, T, P, H, D] contiguous. G: POOL -> [B, W, H, D] (dL/dpooled); else [B, W, 2P, H, D]
    (dL/dout), contiguous.
    Delta [B*H, W, 2P] = rowwise dO . O (unpooled only). Writes DQ [B, T, P, H, D] and, with
    POOL, R [B*H, W, 2P] = sum_j A_ij u_j."""
    pid_m, t, bh, b, h, offs_m, mask_m = _query_block(H, P, BLOCK_M)
    W = T - 1
    N2 = 2 * P
    offs_d = tl.arange(0, D_PAD)
    mask_d = offs_d < D
    left_m = mask_m & ((offs_m * 0 + t) > 0)          # vector masks, see _forward
    right_m = mask_m & ((offs_m * 0 + t) < T - 1)
    left_d = mask_d & ((offs_d * 0 + t) > 0)
    right_d = mask_d & ((offs_d * 0 + t) < T - 1)
    q = _load_rows(Q, b, t, h, offs_m, mask_m, offs_d, mask_d, T, P, H, D)
    # lse of the left (window t-1) and right (window t) rows; +inf where the window does not exist -> A = 0
    lse_l = tl.load(Lse + (bh * W + t - 1) * N2 + P + offs_m, mask=left_m, other=float("inf"))
    lse_r = tl.load(Lse + (bh * W + t) * N2 + offs_m, mask=right_m, other=float("inf"))
    if POOL:
        g_l = tl.load(G + ((b * W + t - 1) * H + h) * D + offs_d, mask=left_d, other=0.0).to(tl.float32) / N2
        g_r = tl.load(G + ((b * W + t) * H + h) * D + offs_d, mask=right_d, other=0.0).to(tl.float32) / N2
        x = tl.zeros([BLOCK_M, D_PAD], tl.float32)   # sum_j A_ij u_j k_j (both windows)
        y_l = tl.zeros([BLOCK_M, D_PAD], tl.float32)  # sum_j A_ij k_j per window
        y_r = tl.zeros([BLOCK_M, D_PAD], tl.float32)
        r_l = tl.zeros([BLOCK_M], tl.float32)
        r_r = tl.zeros([BLOCK_M], tl.float32)
    else:
        row_l = ((b * W + t - 1) * N2 + P + offs_m) * H + h
        row_r = ((b * W + t) * N2 + offs_m) * H + h
        do_l = tl.load(G + row_l[:, None] * D + offs_d[None, :], mask=left_m[:, None] & mask_d[None, :],
                       other=0.0)
        do_r = tl.load(G + row_r[:, None] * D + offs_d[None, :], mask=right_m[:, None] & mask_d[None, :],
                       other=0.0)
        delta_l = tl.load(Delta + (bh * W + t - 1) * N2 + P + offs_m, mask=left_m, other=0.0)
        delta_r = tl.load(Delta + (bh * W + t) * N2 + offs_m, mask=right_m, other=0.0)
        dq = tl.zeros([BLOCK_M, D_PAD], tl.float32)
    for blk in tl.static_range(3):
        f = t - 1 + blk
        n_end = tl.where((f >= 0) & (f < T), P, 0)
        for n0 in range(0, n_end, BLOCK_N):
            offs_n = n0 + tl.arange(0, BLOCK_N)
            mask_n = offs_n < P
            k = _load_rows(K, b, f, h, offs_n, mask_n, offs_d, mask_d, T, P, H, D)
            v = _load_rows(V, b, f, h, offs_n, mask_n, offs_d, mask_d, T, P, H, D)
            s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * scale
            s = tl.where(mask_n[None, :], s, float("-inf"))
            if blk < 2:  # left window: blocks 0, 1
                if POOL:
                    r_l, x, y_l = _pooled_window_dq(s, lse_l, g_l, v, k, r_l, x, y_l, DOT_PRECISION)
                else:
                    dq += _window_dq(s, lse_l, do_l, delta_l, v, k, DOT_PRECISION)
            if blk > 0:  # right window: blocks 1, 2
                if POOL:
                    r_r, x, y_r = _pooled_window_dq(s, lse_r, g_r, v, k, r_r, x, y_r, DOT_PRECISION)
                else:
                    dq += _window_dq(s, lse_r, do_r, delta_r, v, k, DOT_PRECISION)
    if POOL:
        dq = x - r_l[:, None] * y_l - r_r[:, None] * y_r
        tl.store(R + (bh * W + t - 1) * N2 + P + offs_m, r_l, mask=left_m)
        tl.store(R + (bh * W + t) * N2 + offs_m, r_r, mask=right_m)
    dq_ptr = DQ + (((b * T + t) * P + offs_m[:, None]) * H + h) * D + offs_d[None, :]
    tl.store(dq_ptr, (dq * scale).to(DQ.dtype.element_ty), mask=mask_m[:, None] & mask_d[None, :])


@triton.jit
def _dkv_window(k, v, dk, dv, Q, G, Delta, Lse, R, b, h, bh, t, w, first_half, T, P, H, D, scale, offs_d, mask_d,
                D_PAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, POOL: tl.constexpr,
                DOT_PRECISION: tl.constexpr):
    """Add to dk, dv [BLOCK_N, D_PAD] what the queries of frame t contribute through window w.
    first_half: frame t is the first frame of window w (its rows are 0..P-1 of the window)."""
    W = T - 1
    N2 = 2 * P
    row0 = tl.where(first_half, 0, P)
    m_end = tl.where((w >= 0) & (w < W) & (t >= 0) & (t < T), P, 0)
    if POOL:
        g = tl.load(G + ((b * W + w) * H + h) * D + offs_d, mask=mask_d & ((offs_d * 0 + m_end) > 0), other=0.0).to(tl.float32) / N2
        u = tl.sum(v.to(tl.float32) * g[None, :], axis=1)                        # [N]
        colsum = tl.zeros([BLOCK_N], tl.float32)
    for m0 in range(0, m_end, BLOCK_M):
        offs_m = m0 + tl.arange(0, BLOCK_M)
        mask_m = offs_m < P
        q = _load_rows(Q, b, t, h, offs_m, mask_m, offs_d, mask_d, T, P, H, D)
        lse = tl.load(Lse + (bh * W + w) * N2 + row0 + offs_m, mask=mask_m, other=float("inf"))
        st = tl.dot(k, tl.trans(q), input_precision=DOT_PRECISION) * scale       # [N, M]
        at = tl.exp(st - lse[None, :])                                           # A^T, 0 for masked queries
        if POOL:
            r = tl.load(R + (bh * W + w) * N2 + row0 + offs_m, mask=mask_m, other=0.0)
            dst = at * (u[:, None] - r[None, :])
            colsum += tl.sum(at, axis=1)
        else:
            rows = ((b * W + w) * N2 + row0 + offs_m) * H + h
            do = tl.load(G + rows[:, None] * D + offs_d[None, :], mask=mask_m[:, None] & mask_d[None, :], other=0.0)
            delta = tl.load(Delta + (bh * W + w) * N2 + row0 + offs_m, mask=mask_m, other=0.0)
            dv += tl.dot(at.to(do.dtype), do, input_precision=DOT_PRECISION)
            dpt = tl.dot(v, tl.trans(do), input_precision=DOT_PRECISION)
            dst = at * (dpt - delta[None, :])
        dk += tl.dot(dst.to(q.dtype), q, input_precision=DOT_PRECISION)
    if POOL:
        dv += colsum[:, None] * g[None, :]
    return dk, dv


@triton.jit
def _backward_dkv(Q, K, V, G, Delta, Lse, R, DK, DV, T, P, H, D, scale,
                  D_PAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, POOL: tl.constexpr,
                  DOT_PRECISION: tl.constexpr):
    """Key rows of frame f: windows f-1 (frame f second) and f (frame f first), each with its
    two query frames. Q, K, V and DK, DV [B, T, P, H, D], contiguous."""
    pid_n = tl.program_id(0)
    f = tl.program_id(1)
    bh = tl.program_id(2)
    b = bh // H
    h = bh % H
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D_PAD)
    mask_n = offs_n < P
    mask_d = offs_d < D
    k = _load_rows(K, b, f, h, offs_n, mask_n, offs_d, mask_d, T, P, H, D)
    v = _load_rows(V, b, f, h, offs_n, mask_n, offs_d, mask_d, T, P, H, D)
    dk = tl.zeros([BLOCK_N, D_PAD], tl.float32)
    dv = tl.zeros([BLOCK_N, D_PAD], tl.float32)
    # window f-1: query frames f-1 (first half) and f (second half)
    dk, dv = _dkv_window(k, v, dk, dv, Q, G, Delta, Lse, R, b, h, bh, f - 1, f - 1, True, T, P, H, D, scale,
                         offs_d, mask_d, D_PAD, BLOCK_M, BLOCK_N, POOL, DOT_PRECISION)
    dk, dv = _dkv_window(k, v, dk, dv, Q, G, Delta, Lse, R, b, h, bh, f, f - 1, False, T, P, H, D, scale,
                         offs_d, mask_d, D_PAD, BLOCK_M, BLOCK_N, POOL, DOT_PRECISION)
    # window f: query frames f (first half) and f+1 (second half)
    dk, dv = _dkv_window(k, v, dk, dv, Q, G, Delta, Lse, R, b, h, bh, f, f, True, T, P, H, D, scale,
                         offs_d, mask_d, D_PAD, BLOCK_M, BLOCK_N, POOL, DOT_PRECISION)
    dk, dv = _dkv_window(k, v, dk, dv, Q, G, Delta, Lse, R, b, h, bh, f + 1, f, False, T, P, H, D, scale,
                         offs_d, mask_d, D_PAD, BLOCK_M, BLOCK_N, POOL, DOT_PRECISION)
    ptr = (((b * T + f) * P + offs_n[:, None]) * H + h) * D + offs_d[None, :]
    mask = mask_n[:, None] & mask_d[None, :]
    tl.store(DK + ptr, (dk * scale).to(DK.dtype.element_ty), mask=mask)
    tl.store(DV + ptr, dv.to(DV.dtype.element_ty), mask=mask)


# -- launchers ---------------------------------------------------------------------------------------
def launch_config(P: int, D: int, dtype=torch.float16) -> dict:
    """Block sizes and padding for one (P, D, dtype): tiles of at least 16 rows (tl.dot) and at most
    64; fp32 (three tf32 products per dot) keeps 16-row tiles, the size it compiles without
    register spills on sm_90 (see compile_sm90 and the AOT test)."""
    if D > MAX_HEAD_DIM:
        raise ValueError(f"pair_attention: the Triton kernels support head dims up to {MAX_HEAD_DIM}, got {D}")
    d_pad = max(16, triton.next_power_of_2(D))
    block = min(64, max(16, triton.next_power_of_2(P)))
    if d_pad == 64:
        block = min(block, 32)   # three fp32 accumulators of [BLOCK_M, 64] must stay in registers
    if dtype == torch.float32:
        block = 16
    return {"D_PAD": d_pad, "BLOCK_M": block, "BLOCK_N": block}


def dot_precision(dtype) -> str:
    # fp32: three tf32 tensor-core products (~fp32 accuracy; plain tf32 would cost ~1e-3 relative
    # error, and "ieee" fp32 FMAs spill registers at these tile sizes); fp16/bf16: tensor cores.
    return "tf32x3" if dtype == torch.float32 else "tf32"


def _strides(x):
    return x.stride(0), x.stride(1), x.stride(2), x.stride(3)


def _last_dim_contiguous(x):
    return x if x.stride(-1) == 1 else x.contiguous()


def pair_attention_forward(q, k, v, pool: bool, scale: float):
    """q, k, v [B, T, P, H, D] -> (out [B, T-1, 2P, H, D] or pooled [B, T-1, H, D], lse fp32 [B, H, T-1, 2P])."""
    q, k, v = (_last_dim_contiguous(x) for x in (q, k, v))
    B, T, P, H, D = q.shape
    cfg = launch_config(P, D, q.dtype)
    n_mblocks = triton.cdiv(P, cfg["BLOCK_M"])
    lse = torch.empty(B, H, T - 1, 2 * P, device=q.device, dtype=torch.float32)
    if pool:
        part = torch.empty(B * H, T, n_mblocks, 2, cfg["D_PAD"], device=q.device, dtype=torch.float32)
        out = part  # not written in pooled mode; any tensor will do for the pointer
    else:
        out = torch.empty(B, T - 1, 2 * P, H, D, device=q.device, dtype=q.dtype)
        part = lse  # not written in unpooled mode
    grid = (n_mblocks, T, B * H)
    _forward[grid](q, k, v, out, lse, part, *_strides(q), *_strides(k), *_strides(v), T, P, H, D, scale, n_mblocks,
                   POOL=pool, DOT_PRECISION=dot_precision(q.dtype), num_warps=NUM_WARPS, **cfg)
    if pool:
        sums = part.sum(dim=2)                                              # [B*H, T, 2, D_PAD], fixed order
        pooled = (sums[:, :-1, 0, :D] + sums[:, 1:, 1, :D]) / (2 * P)       # [B*H, W, D]
        out = pooled.view(B, H, T - 1, D).transpose(1, 2).to(q.dtype).contiguous()
    return out, lse


def pair_attention_backward(grad, q, k, v, out, lse, pool: bool, scale: float):
    """-> (dq, dk, dv) [B, T, P, H, D] in q's dtype."""
    # The backward kernels read q, k, v contiguous, as they write dq, dk, dv: copying a strided view
    # (a fused qkv projection's) once costs little next to the kernels' 3 x 2P x P scores per block.
    q, k, v = (x.contiguous() for x in (q, k, v))
    B, T, P, H, D = q.shape
    cfg = launch_config(P, D, q.dtype)
    grad = grad.contiguous()
    lse = lse.contiguous()
    r = torch.empty(B * H, T - 1, 2 * P, device=q.device, dtype=torch.float32)
    if pool:
        delta = r  # unused
    else:
        delta = (grad.float() * out.float()).sum(-1).permute(0, 3, 1, 2).contiguous()   # [B, H, W, 2P]
    dq = torch.empty(B, T, P, H, D, device=q.device, dtype=q.dtype)
    dk = torch.empty_like(dq)
    dv = torch.empty_like(dq)
    common = dict(POOL=pool, DOT_PRECISION=dot_precision(q.dtype), num_warps=NUM_WARPS, **cfg)
    grid = (triton.cdiv(P, cfg["BLOCK_M"]), T, B * H)
    _backward_dq[grid](q, k, v, grad, delta, lse, r, dq, T, P, H, D, scale, **common)
    _backward_dkv[grid](q, k, v, grad, delta, lse, r, dk, dv, T, P, H, D, scale, **common)
    return dq, dk, dv


def kernel_variants():
    """Every (kernel, constexprs, dtype) the launchers can produce, for the ahead-of-time compile
    test: the three kernels x POOL x {fp32, fp16, bf16} x every (D_PAD, BLOCK) that launch_config
    gives for P in {16, 49, 64, 256} and head dims 4..64."""
    variants = []
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        configs = {tuple(sorted(launch_config(P, D, dtype).items())) for P in (16, 49, 64, 256)
                   for D in (4, 8, 16, 32, 48, 64)}
        variants += [(kernel, dict(POOL=pool, DOT_PRECISION=dot_precision(dtype), **dict(cfg)), dtype)
                     for cfg in sorted(configs) for pool in (False, True)
                     for kernel in (_forward, _backward_dq, _backward_dkv)]
    return variants


_POINTERS = {"Q", "K", "V", "Out", "G", "DQ", "DK", "DV"}      # in the input dtype
_FP32_POINTERS = {"Lse", "Part", "R", "Delta"}
_TRITON_TYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def compile_sm90(kernel, constexprs: dict, dtype) -> dict:
    """Compile one kernel variant ahead of time for sm_90 (no GPU needed) and read its resource
    usage from the cubin with Triton's bundled cuobjdump: {"registers", "spill_bytes", "shared"}.
    Raises on compile errors."""
    import os
    import re
    import subprocess
    import tempfile

    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature = {}
    for name in kernel.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name == "scale":
            signature[name] = "fp32"
        elif name in _FP32_POINTERS:
            signature[name] = "*fp32"
        elif name in _POINTERS:
            signature[name] = f"*{_TRITON_TYPES[dtype]}"
        else:
            signature[name] = "i32"
    compiled = triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=constexprs),
                              target=GPUTarget("cuda", 90, 32), options={"num_warps": NUM_WARPS})
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.cubin")
        with open(path, "wb") as f:
            f.write(compiled.asm["cubin"])
        usage = subprocess.run([tool, "--dump-resource-usage", path], capture_output=True, text=True,
                               check=True).stdout
    fields = dict(re.findall(r"(REG|LOCAL|STACK):(\d+)", usage))
    return {"registers": int(fields["REG"]), "spill_bytes": int(fields["LOCAL"]), "stack_bytes": int(fields["STACK"]),
            "shared": compiled.metadata.shared, "usage": usage.strip().splitlines()[-1].strip()}
