"""Every Triton pair-attention kernel variant compiles ahead of time for sm_90 (H100) with no GPU
present, through Triton's bundled ptxas, and uses no local memory (register spills), read from
the cubin with the bundled cuobjdump.

The full sweep (90 variants: 3 kernels x pooled/unpooled x fp32/fp16/bf16 x every tile config
that launch_config produces) takes ~10 minutes on 2 CPU cores, so the default run compiles the
three pooled kernels at the largest tiles (the LAM's path and the highest register pressure);
WMFAST_AOT=all runs every variant."""
import os

import pytest
import torch

pytest.importorskip("triton")
from wmfast.kernels.pair_attention import (_backward_dkv, _backward_dq, _forward, compile_sm90,  # noqa: E402
                                           kernel_variants)

H100_MAX_SHARED = 232448  # bytes of shared memory per block on sm_90
VARIANTS = kernel_variants()
DEFAULT = [i for i, (k, cx, dt) in enumerate(VARIANTS)
           if dt == torch.float16 and cx["POOL"] and cx["D_PAD"] == 64 and cx["BLOCK_M"] == 32]
SELECTED = range(len(VARIANTS)) if os.environ.get("WMFAST_AOT") == "all" else DEFAULT


def variant_id(i):
    kernel, cx, dtype = VARIANTS[i]
    return (f"{kernel.__name__}-{str(dtype).replace('torch.', '')}-{'pool' if cx['POOL'] else 'full'}"
            f"-D{cx['D_PAD']}-B{cx['BLOCK_M']}")


def test_variant_list_covers_every_path():
    assert len(DEFAULT) == 3
    kernels = {k for k, _, _ in VARIANTS}
    assert kernels == {_forward, _backward_dq, _backward_dkv}
    assert {dt for _, _, dt in VARIANTS} == {torch.float32, torch.float16, torch.bfloat16}
    assert {cx["D_PAD"] for _, cx, _ in VARIANTS} == {16, 32, 64}          # head dims 4..64 padded
    assert {cx["POOL"] for _, cx, _ in VARIANTS} == {False, True}


@pytest.mark.parametrize("i", SELECTED, ids=variant_id)
def test_variant_compiles_for_sm90_without_spills(i):
    kernel, constexprs, dtype = VARIANTS[i]
    usage = compile_sm90(kernel, constexprs, dtype)
    assert usage["spill_bytes"] == 0, usage
    assert usage["registers"] <= 255 and usage["shared"] <= H100_MAX_SHARED, usage
