"""The Triton kernels compiled for real on a CUDA device (`make gpu-check`), against float64 references."""
import pytest
import torch

import wmfast.ops as ops
from wmfast.ops.reference import pair_attention_reference, vq_lookup_exact

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("N,K,D", [(1, 1, 4), (1000, 37, 5), (4096, 1024, 32), (513, 300, 128)])
def test_vq_lookup_triton_matches_the_exact_nearest_code(N, K, D):
    g = torch.Generator().manual_seed(N + K + D)
    z, cb = torch.randn(N, D, generator=g), torch.randn(K, D, generator=g)
    idx, q, dist = ops.vq_lookup(z.cuda(), cb.cuda())
    exact = vq_lookup_exact(z, cb)                                           # [N, K] float64
    best = exact.min(-1).values
    chosen = exact.gather(1, idx.cpu()[:, None])[:, 0]
    assert torch.allclose(chosen, best, rtol=1e-5, atol=1e-5)               # the nearest code, up to fp32 ties
    assert torch.equal(q.cpu(), cb[idx.cpu()])
    assert torch.allclose(dist.cpu().double(), chosen, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("N,K,D,splits", [(300, 1024, 32, 4), (4096, 8192, 128, None), (70000, 1000, 64, None)])
@pytest.mark.parametrize("precision", ["tf32x3", "ieee"])
def test_vq_lookup_precisions_and_codebook_splits(N, K, D, splits, precision):
    from wmfast.kernels.vq_lookup import vq_lookup_triton

    g = torch.Generator().manual_seed(N + K)
    z, cb = torch.randn(N, D, generator=g), torch.randn(K, D, generator=g)
    idx, q, dist = vq_lookup_triton(z.cuda(), cb.cuda(), precision=precision, splits=splits)
    exact = float64_distances(z, cb)
    chosen = exact.gather(1, idx[:, None])[:, 0]
    assert torch.allclose(chosen, exact.min(-1).values, rtol=1e-5, atol=1e-5)
    assert torch.equal(q.cpu(), cb[idx.cpu()])
    assert torch.allclose(dist.double(), chosen, rtol=1e-4, atol=1e-4)


def float64_distances(z, cb):
    """[N, K] squared distances in float64 on the GPU (the expansion loses nothing at fp64 for
    these magnitudes, and the [N, K, D] brute force would not fit)."""
    z, cb = z.cuda().double(), cb.cuda().double()
    return (z.pow(2).sum(-1, keepdim=True) + cb.pow(2).sum(-1) - 2 * z @ cb.T).clamp_min(0)


def test_vq_lookup_bf16_finds_the_nearest_code_of_the_rounded_inputs():
    g = torch.Generator().manual_seed(7)
    z, cb = torch.randn(8192, 64, generator=g).bfloat16(), torch.randn(2048, 64, generator=g).bfloat16()
    idx, q, _ = ops.vq_lookup(z.cuda(), cb.cuda())
    exact = float64_distances(z, cb)
    chosen = exact.gather(1, idx[:, None])[:, 0]
    assert torch.allclose(chosen, exact.min(-1).values, rtol=2e-3, atol=2e-3)
    assert torch.equal(q.cpu(), cb[idx.cpu()])


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-5), (torch.float16, 3e-3), (torch.bfloat16, 3e-2)])
@pytest.mark.parametrize("pool", [False, True])
def test_pair_attention_triton_forward_and_backward(dtype, tol, pool):
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 4, 64, 4, 32, generator=g) for _ in range(3))
    args = [x.cuda().to(dtype).requires_grad_() for x in (q, k, v)]
    out = ops.pair_attention(*args, pool=pool)
    ref_args = [x.detach().double().cpu().requires_grad_() for x in args]
    want = pair_attention_reference(*ref_args, pool=pool)
    assert (out.double().cpu() - want).abs().max() <= tol * max(1.0, float(want.abs().max()))
    grad = torch.randn(want.shape, generator=g, dtype=torch.float64)
    out.backward(grad.to(out.device, out.dtype))
    want.backward(grad)
    for got, ref in zip(args, ref_args):
        assert (got.grad.double().cpu() - ref.grad).abs().max() <= 10 * tol * max(1.0, float(ref.grad.abs().max()))
