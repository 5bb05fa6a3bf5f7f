"""Triton kernel of wmfast::vq_lookup: nearest codebook row by squared L2, fused.

One program owns BLOCK_N whole rows of z. It keeps their z tile in registers, streams the
codebook in BLOCK_K-code tiles, scores each tile with one tl.dot (fp32 accumulation;
IEEE fp32 for fp32 inputs, tensor cores for fp16/bf16), and merges the tile's minimum into a
running (score, index) pair: the N x K matrix never leaves registers. Because a program owns
its rows, the index is never raced (no atomics). Finally it gathers the winning code, writes
quantized, and recomputes the distance directly as sum((z - c)^2).

Search score: ||c||^2 - 2 z.c (||z||^2 is a row constant; ||c||^2 is precomputed in fp32).
Ties go to the lowest index: tl.min breaks ties to the left inside a tile, and tiles are
merged in increasing code order with a strict <.

Import-safe without a GPU; tests run it under TRITON_INTERPRET=1 on CPU tensors and compile
every autotune config ahead of time for sm_90 (see aot_compile below).
"""
import torch
import triton
import triton.language as tl

# (BLOCK_N, BLOCK_K, num_warps, num_stages): rows per program, codes per tile.
CONFIGS = [
    (64, 64, 4, 2),
    (64, 128, 4, 2),
    (128, 64, 8, 2),
    (128, 128, 8, 2),
    (128, 128, 8, 3),
    (32, 64, 4, 2),
    (64, 256, 8, 2),
    (256, 64, 8, 2),
]
MAX_BLOCK_D = 128  # wider codes are reduced over in chunks of 128 (the z tile is then reloaded)


@triton.jit
def _vq_lookup_kernel(
    z_ptr, c_ptr, cnorm_ptr, idx_ptr, q_ptr, dist_ptr,
    N, K, D, stride_z, stride_c, stride_q,
    D_PAD: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)                          # [BN]
    row_ok = rows < N
    rows64 = rows.to(tl.int64)
    offs_d = tl.arange(0, BLOCK_D)                                        # [BD]
    best = tl.full([BLOCK_N], float("inf"), tl.float32)
    best_idx = tl.zeros([BLOCK_N], tl.int32)
    if D_PAD == BLOCK_D:
        # The whole z tile fits: load it once for every codebook tile.
        z_tile = tl.load(z_ptr + rows64[:, None] * stride_z + offs_d[None, :],
                         mask=row_ok[:, None] & (offs_d[None, :] < D), other=0.0)     # [BN, BD]
    for k0 in range(0, K, BLOCK_K):
        codes = k0 + tl.arange(0, BLOCK_K)                                # [BK]
        code_ok = codes < K
        codes64 = codes.to(tl.int64)
        if D_PAD == BLOCK_D:
            c_tile = tl.load(c_ptr + codes64[None, :] * stride_c + offs_d[:, None],
                             mask=(offs_d[:, None] < D) & code_ok[None, :], other=0.0)  # [BD, BK]
            dot = tl.dot(z_tile, c_tile, input_precision=DOT_PRECISION)  # [BN, BK] fp32
        else:
            dot = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
            for d0 in range(0, D_PAD, BLOCK_D):
                dd = d0 + offs_d
                z_part = tl.load(z_ptr + rows64[:, None] * stride_z + dd[None, :],
                                 mask=row_ok[:, None] & (dd[None, :] < D), other=0.0)
                c_part = tl.load(c_ptr + codes64[None, :] * stride_c + dd[:, None],
                                 mask=(dd[:, None] < D) & code_ok[None, :], other=0.0)
                dot = tl.dot(z_part, c_part, dot, input_precision=DOT_PRECISION)
        cnorm = tl.load(cnorm_ptr + codes, mask=code_ok, other=float("inf"))  # [BK], +inf past K
        score = cnorm[None, :] - 2.0 * dot                                # [BN, BK]
        tile_best, tile_arg = tl.min(score, axis=1, return_indices=True, return_indices_tie_break_left=True)
        better = tile_best < best
        best = tl.where(better, tile_best, best)
        best_idx = tl.where(better, tile_arg + k0, best_idx)

    tl.store(idx_ptr + rows64, best_idx.to(tl.int64), mask=row_ok)
    win = best_idx.to(tl.int64)
    dist = tl.zeros([BLOCK_N], tl.float32)
    for d0 in range(0, D_PAD, BLOCK_D):
        dd = d0 + offs_d
        m = row_ok[:, None] & (dd[None, :] < D)
        code = tl.load(c_ptr + win[:, None] * stride_c + dd[None, :], mask=m, other=0.0)     # [BN, BD]
        zz = tl.load(z_ptr + rows64[:, None] * stride_z + dd[None, :], mask=m, other=0.0)
        tl.store(q_ptr + rows64[:, None] * stride_q + dd[None, :], code, mask=m)
        diff = zz.to(tl.float32) - code.to(tl.float32)
        dist += tl.sum(diff * diff, axis=1)
    tl.store(dist_ptr + rows64, dist, mask=row_ok)


_vq_lookup_autotuned = triton.autotune(
    configs=[triton.Config({"BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s) for bn, bk, w, s in CONFIGS],
    key=["K", "D_PAD"],
)(_vq_lookup_kernel)


def block_d(D: int) -> tuple:
    """(D_PAD, BLOCK_D): tl.dot needs an inner size >= 16 and tl.arange a power of two."""
    d_pad = max(16, triton.next_power_of_2(D))
    return d_pad, min(d_pad, MAX_BLOCK_D)


def dot_precision(dtype) -> str:
    # tl.dot on fp32 would default to TF32 (10-bit mantissa) on tensor-core GPUs.
    return "ieee" if dtype == torch.float32 else "tf32"


def vq_lookup_triton(z, codebook, config: tuple = None):
    """z [..., D], codebook [K, D] on one device -> (indices int64 [...], quantized [..., D],
    distances fp32 [...]). `config` = (BLOCK_N, BLOCK_K, num_warps, num_stages) skips the
    autotuner (the tests use it under TRITON_INTERPRET=1). fp64 searches in fp32."""
    K, D = codebook.shape
    lead = z.shape[:-1]
    if codebook.dtype == torch.float64:
        idx, _, dist = vq_lookup_triton(z.float(), codebook.float(), config)
        return idx, codebook.index_select(0, idx.reshape(-1)).reshape(*lead, D), dist
    z2 = z.reshape(-1, D)
    if z2.stride(-1) != 1:
        z2 = z2.contiguous()
    cb = codebook if codebook.stride(-1) == 1 else codebook.contiguous()
    N = z2.shape[0]
    idx = torch.empty(N, dtype=torch.long, device=z.device)
    quantized = torch.empty(N, D, dtype=codebook.dtype, device=z.device)
    dist = torch.empty(N, dtype=torch.float32, device=z.device)
    if N > 0:
        cnorm = torch.linalg.vector_norm(cb, dim=-1, dtype=torch.float32).square()    # [K]
        d_pad, bd = block_d(D)
        args = (z2, cb, cnorm, idx, quantized, dist, N, K, D, z2.stride(0), cb.stride(0), quantized.stride(0))
        meta = dict(D_PAD=d_pad, BLOCK_D=bd, DOT_PRECISION=dot_precision(cb.dtype))
        if config is None:
            grid = lambda m: (triton.cdiv(N, m["BLOCK_N"]),)  # noqa: E731
            _vq_lookup_autotuned[grid](*args, **meta)
        else:
            bn, bk, warps, stages = config
            _vq_lookup_kernel[(triton.cdiv(N, bn),)](*args, **meta, BLOCK_N=bn, BLOCK_K=bk,
                                                      num_warps=warps, num_stages=stages)
    return idx.reshape(lead), quantized.reshape(*lead, D), dist.reshape(lead)


TRITON_TYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def aot_compile(config: tuple, dtype=torch.float32, D: int = 32, arch: int = 90):
    """Compile the kernel for one autotune config ahead of time for CUDA sm_`arch`, with no
    GPU present: shape, layout and shared-memory errors show up here. -> CompiledKernel."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    bn, bk, warps, stages = config
    d_pad, bd = block_d(D)
    t = TRITON_TYPES[dtype]
    signature = {
        "z_ptr": f"*{t}", "c_ptr": f"*{t}", "cnorm_ptr": "*fp32", "idx_ptr": "*i64", "q_ptr": f"*{t}",
        "dist_ptr": "*fp32", "N": "i32", "K": "i32", "D": "i32", "stride_z": "i32", "stride_c": "i32",
        "stride_q": "i32", "D_PAD": "constexpr", "BLOCK_D": "constexpr", "BLOCK_N": "constexpr",
        "BLOCK_K": "constexpr", "DOT_PRECISION": "constexpr",
    }
    constexprs = {"D_PAD": d_pad, "BLOCK_D": bd, "BLOCK_N": bn, "BLOCK_K": bk, "DOT_PRECISION": dot_precision(dtype)}
    src = ASTSource(fn=_vq_lookup_kernel, signature=signature, constexprs=constexprs)
    return triton.compile(src, target=GPUTarget("cuda", arch, 32), options={"num_warps": warps, "num_stages": stages})
