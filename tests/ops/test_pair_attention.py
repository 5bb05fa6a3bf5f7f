"""pair_attention against the float64 reference: the CPU op (C++ kernel, both instruction-set
builds, and the pure-Python fallback), its autograd, torch.compile and opcheck, and the Triton
kernels under TRITON_INTERPRET=1 (fp32/fp16) with poisoned output buffers."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import wmfast.ops as ops
from wmfast.errors import WmfastError
from wmfast.ops import pair_attention
from wmfast.ops.reference import pair_attention_reference

REPO = Path(__file__).resolve().parents[2]
# (B, T, P, H, D): T = 2 (one window), P not a power of two, D = 4, several windows and heads
SHAPES = [(2, 2, 3, 1, 4), (1, 3, 7, 3, 16), (2, 4, 5, 2, 4), (1, 5, 12, 2, 8), (3, 3, 1, 1, 5)]


def qkv(shape, dtype=torch.float64, gen=None, requires_grad=False):
    gen = gen or torch.Generator().manual_seed(0)
    return [torch.randn(*shape, generator=gen, dtype=torch.float64).mul(1.5).to(dtype).requires_grad_(requires_grad)
            for _ in range(3)]


def reference_with_grads(q, k, v, pool, grad, scale=None):
    leaves = [x.detach().double().requires_grad_() for x in (q, k, v)]
    out, lse = pair_attention_reference(*leaves, pool=pool, scale=scale, return_lse=True)
    return out, lse, torch.autograd.grad(out, leaves, grad.double())


def assert_matches_reference(q, k, v, pool, atol, scale=None):
    out, lse = torch.ops.wmfast.pair_attention(q, k, v, pool, scale)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(out.dtype)
    ref, ref_lse, ref_grads = reference_with_grads(q, k, v, pool, grad, scale)
    torch.testing.assert_close(out.double(), ref, atol=atol, rtol=0)
    torch.testing.assert_close(lse.double(), ref_lse, atol=atol, rtol=0)
    leaves = [x.detach().requires_grad_() for x in (q, k, v)]
    grads = torch.autograd.grad(pair_attention(*leaves, pool=pool, scale=scale), leaves, grad)
    for name, g, r in zip("qkv", grads, ref_grads):
        assert g.shape == r.shape and g.dtype == q.dtype
        torch.testing.assert_close(g.double(), r, atol=atol, rtol=0, msg=lambda m: f"d{name}: {m}")


@pytest.mark.parametrize("pool", [False, True], ids=["unpooled", "pooled"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_cpu_op_matches_float64_reference(shape, pool):
    assert_matches_reference(*qkv(shape), pool, atol=1e-12)                      # float64: exact math
    assert_matches_reference(*qkv(shape, torch.float32), pool, atol=2e-5)        # float32 kernel


def test_default_lam_shape_and_custom_scale():
    # P = 256 = the LAM's 64 px / patch 4 grid, 8 heads of 16; and a non-default softmax scale
    assert_matches_reference(*qkv((1, 4, 256, 2, 16), torch.float32), True, atol=2e-5)
    assert_matches_reference(*qkv((1, 3, 9, 2, 8)), False, atol=1e-12, scale=0.7)


def test_half_inputs_compute_in_float32():
    q, k, v = qkv((2, 3, 6, 2, 8), torch.bfloat16)
    out = pair_attention(q, k, v)
    assert out.dtype == torch.bfloat16
    ref = pair_attention_reference(q.double(), k.double(), v.double())
    torch.testing.assert_close(out.double(), ref, atol=2e-2, rtol=0)


@pytest.mark.parametrize("pool", [False, True], ids=["unpooled", "pooled"])
def test_non_contiguous_inputs(pool):
    gen = torch.Generator().manual_seed(3)
    B, T, P, H, D = 2, 3, 5, 2, 4
    q = torch.randn(B, T, P, D, H, generator=gen, dtype=torch.float64).transpose(-1, -2)   # head dim strided
    k = torch.randn(B, T, P, H, 2 * D, generator=gen, dtype=torch.float64)[..., 1::2]      # every other channel
    v = torch.randn(T, B, P, H, D, generator=gen, dtype=torch.float64).transpose(0, 1)     # frames outermost
    assert not any(x.is_contiguous() for x in (q, k, v))
    assert_matches_reference(q, k, v, pool, atol=1e-12)


@pytest.mark.parametrize("pool", [False, True], ids=["unpooled", "pooled"])
def test_gradcheck_float64(pool):
    q, k, v = qkv((2, 3, 3, 2, 4), requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: pair_attention(a, b, c, pool=pool), (q, k, v), atol=1e-8)


def test_backward_is_deterministic():
    q, k, v = qkv((2, 4, 16, 2, 8), torch.float32, requires_grad=True)
    first = torch.autograd.grad(pair_attention(q, k, v, pool=True).square().sum(), (q, k, v))
    second = torch.autograd.grad(pair_attention(q, k, v, pool=True).square().sum(), (q, k, v))
    assert all(torch.equal(a, b) for a, b in zip(first, second))


@pytest.mark.parametrize("pool", [False, True], ids=["unpooled", "pooled"])
def test_opcheck(pool):
    q, k, v = qkv((2, 3, 5, 2, 4), requires_grad=True)
    torch.library.opcheck(torch.ops.wmfast.pair_attention.default, (q, k, v, pool, None))
    out, lse = torch.ops.wmfast.pair_attention(q.detach(), k.detach(), v.detach(), pool, 0.5)
    torch.library.opcheck(torch.ops.wmfast.pair_attention_backward.default,
                          (torch.randn_like(out), q.detach(), k.detach(), v.detach(), out, lse, pool, 0.5))


def test_compiled_matches_eager_without_recompiling():
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    counter = CompileCounterWithBackend("aot_eager")

    def loss_fn(q, k, v):
        return pair_attention(q, k, v, pool=True).square().sum() + pair_attention(q, k, v).mean()

    compiled = torch.compile(loss_fn, backend=counter, fullgraph=True, dynamic=True)
    # B and T change and one graph serves them all (sizes avoid 0/1 and the other dims' sizes,
    # which dynamo would specialise or duck-size on)
    for B, T in [(3, 5), (5, 7), (7, 3)]:
        q, k, v = qkv((B, T, 6, 2, 4), torch.float32, requires_grad=True)
        eager = loss_fn(q, k, v)
        got = compiled(q, k, v)
        torch.testing.assert_close(got, eager, rtol=1e-6, atol=1e-6)
        for a, b in zip(torch.autograd.grad(got, (q, k, v)), torch.autograd.grad(eager, (q, k, v))):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    assert counter.frame_count == 1, f"recompiled: {counter.frame_count} frames"


@pytest.mark.parametrize("args,match", [
    (((2, 1, 4, 2, 4),), "at least 2 frames"),
    (((2, 3, 4, 8),), r"\[B, T, P, H, D\]"),
])
def test_bad_shapes_raise_one_line_errors(args, match):
    q = torch.randn(*args[0])
    with pytest.raises(WmfastError, match=match):
        pair_attention(q, q, q)


def test_mismatched_inputs_raise():
    q = torch.randn(1, 3, 4, 2, 4)
    with pytest.raises(WmfastError, match="one shape"):
        pair_attention(q, q[:, :2], q)
    with pytest.raises(WmfastError, match="dtype"):
        pair_attention(q, q.double(), q)
    with pytest.raises(WmfastError, match="float"):
        pair_attention(q.long(), q.long(), q.long())


# -- the portable C++ build and the no-extension fallback, in fresh processes -------------------------
CHECK_SCRIPT = r"""
import json, torch
import wmfast.ops as ops
from wmfast.ops import pair_attention
from wmfast.ops.reference import pair_attention_reference
errs = []
for shape in [(2, 3, 5, 2, 4), (1, 4, 17, 1, 8)]:
    for pool in (False, True):
        q, k, v = [torch.randn(*shape, dtype=torch.float64, requires_grad=True) for _ in range(3)]
        out = pair_attention(q, k, v, pool=pool)
        ref = pair_attention_reference(q, k, v, pool=pool)
        g = torch.randn_like(ref)
        grads = torch.autograd.grad(out, (q, k, v), g) + torch.autograd.grad(ref, (q, k, v), g)
        errs.append(float((out - ref).abs().max()))
        errs += [float((a - b).abs().max()) for a, b in zip(grads[:3], grads[3:])]
f = torch.compile(lambda a: pair_attention(a, a, a, pool=True).sum(), fullgraph=True, backend="aot_eager")
x = torch.randn(2, 3, 4, 2, 4, dtype=torch.float64)
errs.append(float((f(x) - pair_attention_reference(x, x, x, pool=True).sum()).abs()))
print(json.dumps({"has_extension": ops.HAS_EXTENSION, "max_err": max(errs)}))
"""


@pytest.mark.parametrize("env,has_extension", [({"ATEN_CPU_CAPABILITY": "default"}, True),
                                               ({"WMFAST_DISABLE_EXTENSION": "1"}, False)],
                         ids=["portable-cpu-kernel", "no-extension"])
def test_other_cpu_paths(env, has_extension):
    if has_extension and not ops.HAS_EXTENSION:
        pytest.skip("needs the C++ extension")
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", CHECK_SCRIPT], env={**os.environ, **env}, cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["has_extension"] is has_extension
    assert result["max_err"] < 1e-12


# -- Triton kernels under the interpreter (CPU tensors) ------------------------------------------------
# TRITON_INTERPRET must be set before triton is first imported, so these run in a fresh pytest
# subprocess with the flag set. bf16 is left out: tl.dot on bf16 is wrong under the interpreter.
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
in_interpreter = pytest.mark.skipif(not INTERPRETED, reason="runs inside test_triton_kernels_under_interpreter")


@pytest.mark.skipif(INTERPRETED, reason="this is the launcher")
def test_triton_kernels_under_interpreter():
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    out = subprocess.run([sys.executable, "-m", "pytest", __file__, "-o", "addopts=", "-q", "-k", "interpreted",
                          "-p", "no:cacheprovider"], env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert re.search(r"\b5 passed", out.stdout), out.stdout[-1000:]


def poisoned_empty(monkeypatch):
    """Every buffer the launchers allocate starts as NaN, so an element a kernel fails to write
    shows up in the result."""
    import wmfast.kernels.pair_attention as kernels

    real_empty, real_empty_like = torch.empty, torch.empty_like

    class PoisonedTorch:
        def __getattr__(self, name):
            return getattr(torch, name)

        @staticmethod
        def empty(*args, **kwargs):
            return real_empty(*args, **kwargs).fill_(float("nan"))

        @staticmethod
        def empty_like(*args, **kwargs):
            return real_empty_like(*args, **kwargs).fill_(float("nan"))

    monkeypatch.setattr(kernels, "torch", PoisonedTorch())
    return kernels


# (B, T, P, H, D): P = 5 and P = 20 leave masked tails in the 16-row tiles, D = 4 is padded to 16,
# T = 2 is a single window, T = 4 has frames with both neighbours.
INTERPRETER_SHAPES = [(1, 2, 5, 1, 4), (1, 3, 20, 2, 16), (2, 4, 16, 1, 32)]


@in_interpreter
@pytest.mark.parametrize("dtype,atol", [(torch.float32, 2e-5), (torch.float16, 4e-3)], ids=["fp32", "fp16"])
@pytest.mark.parametrize("pool", [False, True], ids=["unpooled", "pooled"])
def test_interpreted_kernels_match_reference(pool, dtype, atol, monkeypatch):
    kernels = poisoned_empty(monkeypatch)
    for i, shape in enumerate(INTERPRETER_SHAPES):
        if dtype == torch.float16 and i == 1:
            continue  # keep the interpreter run short; fp16 still covers T = 2 and the D = 32 tiles
        q, k, v = qkv(shape, dtype, gen=torch.Generator().manual_seed(i))
        scale = shape[-1] ** -0.5
        out, lse = kernels.pair_attention_forward(q, k, v, pool, scale)
        grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64).to(dtype)
        ref, ref_lse, ref_grads = reference_with_grads(q, k, v, pool, grad)
        torch.testing.assert_close(out.double(), ref, atol=atol, rtol=0)
        torch.testing.assert_close(lse.double(), ref_lse, atol=2e-5, rtol=0)
        grads = kernels.pair_attention_backward(grad, q, k, v, out, lse, pool, scale)
        for name, g, r in zip("qkv", grads, ref_grads):
            torch.testing.assert_close(g.double(), r, atol=4 * atol, rtol=0, msg=lambda m: f"{shape} d{name}: {m}")


@in_interpreter
def test_interpreted_non_contiguous_inputs(monkeypatch):
    kernels = poisoned_empty(monkeypatch)
    gen = torch.Generator().manual_seed(5)
    q = torch.randn(1, 3, 6, 4, 2, generator=gen).transpose(-1, -2)[..., :4]   # [1, 3, 6, 2, 4], strided rows
    k = torch.randn(3, 1, 6, 2, 4, generator=gen).transpose(0, 1)
    v = torch.randn(1, 3, 6, 2, 8, generator=gen)[..., ::2]                     # last-dim stride 2: copied
    for pool in (False, True):
        out, lse = kernels.pair_attention_forward(q, k, v, pool, 0.5)
        torch.testing.assert_close(out.double(), pair_attention_reference(q.double(), k.double(), v.double(), pool,
                                                                          scale=0.5), atol=2e-5, rtol=0)
