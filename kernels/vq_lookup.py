"""Triton kernel of wmfast::vq_lookup: nearest codebook row by squared L2, fused.

One program owns BLOCK_N whole rows of z. It keeps their z tile in registers, streams the
codebook in BLOCK_K-code tiles (software-pipelined over num_stages), scores each tile with one
tl.dot (fp32 accumulation) and merges the tile's minimum into a running (score, index) pair: the
N x K matrix never leaves registers. Finally it gathers the winning code, writes quantized, and
recomputes the distance directly as sum((z - c)^2).

Precision classes of the dot:
  fp32   "tf32x3" by default: each operand split into a tf32 high part and a tf32 low part, three
         tensor-core products (hi.hi + hi.lo + lo.hi), fp32-accurate to about 2^-22 relative,
         at tensor-core speed; "ieee" (plain FMAs) is kept as the oracle for tests.
  fp16 / bf16   native tensor-core products with fp32 accumulation.

Search score: ||c||^2 - 2 z.c (||z||^2 is a row constant). ||c||^2 is computed in fp32 once per
codebook version and cached (a codebook updated in place bumps its version).
Ties go to the lowest index: tl.min breaks ties to the left inside a tile, tiles are merged in
increasing code order with a strict <, and so are the splits below.

Too few row blocks for the chip (small N): the codebook is split over a second grid axis; each
split writes its (score, index) winner and a finalize kernel merges the splits in order (strict <,
so deterministic and lowest index on ties), then gathers and writes as above.

Import-safe without a GPU; tests run it under TRITON_INTERPRET=1 on CPU tensors and compile
every autotune config ahead of time for sm_90 (see aot_compile below).
"""
import torch
import triton
import triton.language as tl

# (BLOCK_N, BLOCK_K, num_warps, num_stages): rows per program, codes per tile.
CONFIGS = [
    (64, 64, 4, 3),
    (64, 128, 4, 3),
    (128, 64, 8, 3),
    (128, 128, 8, 3),
    (32, 64, 4, 2),
    (64, 256, 8, 3),
]
MAX_BLOCK_D = 128      # wider codes are reduced over in chunks of 128 (the z tile is then reloaded)
SPLIT_CODES = 256      # a codebook split is a multiple of every BLOCK_K
NOMINAL_BLOCK_N = 64   # rows per program assumed when deciding whether to split the codebook
FINALIZE_BLOCK_N = 64


@triton.jit
def _write_winner(z_ptr, c_ptr, q_ptr, dist_ptr, idx_ptr, rows64, row_ok, best_idx, D, stride_z, stride_c,
                  stride_q, D_PAD: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
    """indices, quantized = codebook[index] and the direct distance ||z - code||^2 for one row block."""
    tl.store(idx_ptr + rows64, best_idx.to(tl.int64), mask=row_ok)
    win = best_idx.to(tl.int64)
    offs_d = tl.arange(0, BLOCK_D)
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


@triton.jit
def _vq_lookup_kernel(
    z_ptr, c_ptr, cnorm_ptr, idx_ptr, q_ptr, dist_ptr, part_score_ptr, part_idx_ptr,
    N, K, D, stride_z, stride_c, stride_q, codes_per_split, n_bucket,
    D_PAD: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr, SPLIT: tl.constexpr,
):
    # n_bucket only keys the autotuner (a power of two >= N): a config tuned at N = 4096 is not
    # reused at N = 262144.
    pid = tl.program_id(0)
    split = tl.program_id(1)
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
    k_start = split * codes_per_split
    k_end = tl.minimum(K, k_start + codes_per_split)
    for k0 in tl.range(k_start, k_end, BLOCK_K):
        codes = k0 + tl.arange(0, BLOCK_K)                                # [BK]
        code_ok = codes < k_end
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
        cnorm = tl.load(cnorm_ptr + codes, mask=code_ok, other=float("inf"))  # [BK], +inf past the split
        score = cnorm[None, :] - 2.0 * dot                                # [BN, BK]
        tile_best, tile_arg = tl.min(score, axis=1, return_indices=True, return_indices_tie_break_left=True)
        better = tile_best < best
        best = tl.where(better, tile_best, best)
        best_idx = tl.where(better, tile_arg + k0, best_idx)

    if SPLIT:
        part = split.to(tl.int64) * N + rows64
        tl.store(part_score_ptr + part, best, mask=row_ok)
        tl.store(part_idx_ptr + part, best_idx, mask=row_ok)
    else:
        _write_winner(z_ptr, c_ptr, q_ptr, dist_ptr, idx_ptr, rows64, row_ok, best_idx, D, stride_z, stride_c,
                      stride_q, D_PAD, BLOCK_D, BLOCK_N)


@triton.jit
def _vq_finalize_kernel(
    z_ptr, c_ptr, idx_ptr, q_ptr, dist_ptr, part_score_ptr, part_idx_ptr,
    N, D, stride_z, stride_c, stride_q, n_splits,
    D_PAD: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Merge the splits' winners in split order (strict <: lowest index on ties), then write."""
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    rows64 = rows.to(tl.int64)
    best = tl.full([BLOCK_N], float("inf"), tl.float32)
    best_idx = tl.zeros([BLOCK_N], tl.int32)
    for s in range(0, n_splits):
        part = s * N + rows64
        score = tl.load(part_score_ptr + part, mask=row_ok, other=float("inf"))
        idx = tl.load(part_idx_ptr + part, mask=row_ok, other=0)
        better = score < best
        best = tl.where(better, score, best)
        best_idx = tl.where(better, idx, best_idx)
    _write_winner(z_ptr, c_ptr, q_ptr, dist_ptr, idx_ptr, rows64, row_ok, best_idx, D, stride_z, stride_c,
                  stride_q, D_PAD, BLOCK_D, BLOCK_N)


# Configs whose pipelined tiles exceed shared memory (fp32 at D = 128 with big tiles) fail to compile
# on the device; Triton's autotuner records them as unusable and picks among the rest.
_vq_lookup_autotuned = triton.autotune(
    configs=[triton.Config({"BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s) for bn, bk, w, s in CONFIGS],
    key=["n_bucket", "K", "D_PAD", "DOT_PRECISION", "SPLIT"],
)(_vq_lookup_kernel)


def block_d(D: int) -> tuple:
    """(D_PAD, BLOCK_D): tl.dot needs an inner size >= 16 and tl.arange a power of two."""
    d_pad = max(16, triton.next_power_of_2(D))
    return d_pad, min(d_pad, MAX_BLOCK_D)


PRECISIONS = ("tf32x3", "ieee")


def dot_precision(dtype, precision: str = "tf32x3") -> str:
    """The tl.dot input precision: fp32 gets `precision` ("tf32x3" fast and fp32-accurate, "ieee"
    the FMA oracle); fp16/bf16 run natively on tensor cores (the setting is ignored for them)."""
    if precision not in PRECISIONS:
        raise ValueError(f"vq_lookup: precision must be one of {PRECISIONS}, got {precision!r}")
    return precision if dtype == torch.float32 else "tf32"


def codebook_splits(N: int, K: int, n_sms: int) -> int:
    """How many parts to split the codebook into so that about two programs run per SM: 1 when
    the row blocks alone fill the chip."""
    row_blocks = triton.cdiv(N, NOMINAL_BLOCK_N)
    if row_blocks >= n_sms:
        return 1
    want = min(triton.cdiv(2 * n_sms, row_blocks), triton.cdiv(K, SPLIT_CODES))
    codes_per_split = triton.cdiv(triton.cdiv(K, want), SPLIT_CODES) * SPLIT_CODES
    return triton.cdiv(K, codes_per_split)


_SM_COUNT = {}
_NORMS = {}     # (data_ptr, version, shape, dtype, device) -> ||c||^2 in fp32
_MAX_NORMS = 8


def sm_count(device) -> int:
    if device.type != "cuda":
        return 132                       # the interpreter on CPU: decide as an H100/H200 would
    if device not in _SM_COUNT:
        _SM_COUNT[device] = torch.cuda.get_device_properties(device).multi_processor_count
    return _SM_COUNT[device]


def code_norms(cb):
    """||c||^2 in fp32, cached per codebook version (not while a CUDA graph is being captured:
    a tensor made inside a capture belongs to the graph's memory pool)."""
    capturing = cb.is_cuda and torch.cuda.is_current_stream_capturing()
    if capturing:
        return torch.linalg.vector_norm(cb, dim=-1, dtype=torch.float32).square()
    key = (cb.data_ptr(), cb._version, tuple(cb.shape), cb.dtype, cb.device)
    norms = _NORMS.get(key)
    if norms is None:
        norms = torch.linalg.vector_norm(cb, dim=-1, dtype=torch.float32).square()
        if len(_NORMS) >= _MAX_NORMS:
            _NORMS.pop(next(iter(_NORMS)))
        _NORMS[key] = norms
    return norms


def vq_lookup_triton(z, codebook, config: tuple = None, precision: str = "tf32x3", splits: int = None):
    """z [..., D], codebook [K, D] on one device -> (indices int64 [...], quantized [..., D],
    distances fp32 [...]). `config` = (BLOCK_N, BLOCK_K, num_warps, num_stages) skips the
    autotuner (the tests use it under TRITON_INTERPRET=1); `precision` is the fp32 dot class;
    `splits` forces the number of codebook parts (default: codebook_splits). fp64 searches in fp32."""
    K, D = codebook.shape
    lead = z.shape[:-1]
    if codebook.dtype == torch.float64:
        idx, _, dist = vq_lookup_triton(z.float(), codebook.float(), config, precision, splits)
        return idx, codebook.index_select(0, idx.reshape(-1)).reshape(*lead, D), dist
    z2 = z.reshape(-1, D)
    if z2.stride(-1) != 1:
        z2 = z2.contiguous()
    cb = codebook if codebook.stride(-1) == 1 else codebook.contiguous()
    N = z2.shape[0]
    idx = torch.empty(N, dtype=torch.long, device=z.device)
    quantized = torch.empty(N, D, dtype=codebook.dtype, device=z.device)
    dist = torch.empty(N, dtype=torch.float32, device=z.device)
    if N == 0:
        return idx.reshape(lead), quantized.reshape(*lead, D), dist.reshape(lead)
    n_splits = splits or codebook_splits(N, K, sm_count(z.device))
    codes_per_split = triton.cdiv(triton.cdiv(K, n_splits), SPLIT_CODES) * SPLIT_CODES
    n_splits = triton.cdiv(K, codes_per_split)
    if n_splits > 1:
        part_score = torch.empty(n_splits, N, dtype=torch.float32, device=z.device)
        part_idx = torch.empty(n_splits, N, dtype=torch.int32, device=z.device)
    else:
        part_score = part_idx = dist                                      # not touched
    d_pad, bd = block_d(D)
    args = (z2, cb, code_norms(cb), idx, quantized, dist, part_score, part_idx, N, K, D, z2.stride(0),
            cb.stride(0), quantized.stride(0), codes_per_split, triton.next_power_of_2(N))
    meta = dict(D_PAD=d_pad, BLOCK_D=bd, DOT_PRECISION=dot_precision(cb.dtype, precision), SPLIT=n_splits > 1)
    if config is None:
        grid = lambda m: (triton.cdiv(N, m["BLOCK_N"]), n_splits)  # noqa: E731
        _vq_lookup_autotuned[grid](*args, **meta)
    else:
        bn, bk, warps, stages = config
        _vq_lookup_kernel[(triton.cdiv(N, bn), n_splits)](*args, **meta, BLOCK_N=bn, BLOCK_K=bk,
                                                          num_warps=warps, num_stages=stages)
    if n_splits > 1:
        _vq_finalize_kernel[(triton.cdiv(N, FINALIZE_BLOCK_N),)](
            z2, cb, idx, quantized, dist, part_score, part_idx, N, D, z2.stride(0), cb.stride(0),
            quantized.stride(0), n_splits, D_PAD=d_pad, BLOCK_D=bd, BLOCK_N=FINALIZE_BLOCK_N, num_warps=4)
    return idx.reshape(lead), quantized.reshape(*lead, D), dist.reshape(lead)


TRITON_TYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def aot_compile(config: tuple, dtype=torch.float32, D: int = 32, arch: int = 90, precision: str = "tf32x3",
                split: bool = False):
    """Compile the kernel for one autotune config ahead of time for CUDA sm_`arch`, with no
    GPU present: shape, layout and shared-memory errors show up here. -> CompiledKernel."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    bn, bk, warps, stages = config
    d_pad, bd = block_d(D)
    t = TRITON_TYPES[dtype]
    signature = {
        "z_ptr": f"*{t}", "c_ptr": f"*{t}", "cnorm_ptr": "*fp32", "idx_ptr": "*i64", "q_ptr": f"*{t}",
        "dist_ptr": "*fp32", "part_score_ptr": "*fp32", "part_idx_ptr": "*i32", "N": "i32", "K": "i32",
        "D": "i32", "stride_z": "i32", "stride_c": "i32", "stride_q": "i32", "codes_per_split": "i32",
        "n_bucket": "i32", "D_PAD": "constexpr", "BLOCK_D": "constexpr", "BLOCK_N": "constexpr",
        "BLOCK_K": "constexpr", "DOT_PRECISION": "constexpr", "SPLIT": "constexpr",
    }
    constexprs = {"D_PAD": d_pad, "BLOCK_D": bd, "BLOCK_N": bn, "BLOCK_K": bk,
                  "DOT_PRECISION": dot_precision(dtype, precision), "SPLIT": split}
    src = ASTSource(fn=_vq_lookup_kernel, signature=signature, constexprs=constexprs)
    return triton.compile(src, target=GPUTarget("cuda", arch, 32), options={"num_warps": warps, "num_stages": stages})
