"""Every autotune config of the Triton vq_lookup kernel compiles ahead of time for sm_90
(H100) with no GPU present: ttir -> ttgir -> llir -> ptx -> cubin through the bundled ptxas.
Each config is compiled once, and the configs cycle through the code paths (fp32 IEEE,
fp16/bf16 tensor cores, a D split into several 128-wide chunks)."""
import pytest
import torch

triton = pytest.importorskip("triton")
from wmfast.kernels.vq_lookup import CONFIGS, aot_compile  # noqa: E402

H100_MAX_SHARED = 232448  # bytes of shared memory per block on sm_90
# (dtype, D) compiled for config i: every path once, big fp32 tiles on small D (ieee fp32
# tl.dot unrolls to plain FMAs, which is slow to compile for 128 x 128 x 128).
VARIANTS = [(torch.float16, 512), (torch.bfloat16, 1000), (torch.float16, 64), (torch.float32, 32),
            (torch.bfloat16, 128), (torch.float32, 256), (torch.float32, 5), (torch.bfloat16, 32)]


@pytest.mark.parametrize("i", range(len(CONFIGS)), ids=[f"BN{c[0]}-BK{c[1]}-w{c[2]}-s{c[3]}" for c in CONFIGS])
def test_autotune_config_compiles_for_sm90(i):
    config = CONFIGS[i]
    dtype, D = VARIANTS[i % len(VARIANTS)]
    kernel = aot_compile(config, dtype=dtype, D=D, arch=90)
    assert kernel.asm["cubin"], "no cubin"
    assert kernel.metadata.num_warps == config[2]
    assert kernel.metadata.shared <= H100_MAX_SHARED, kernel.metadata.shared
    ptx = kernel.asm["ptx"]
    if dtype == torch.float32:
        assert "mma" not in ptx          # IEEE fp32: no TF32 tensor-core rounding
    else:
        assert "mma" in ptx              # fp16/bf16 scores on tensor cores


def test_every_config_is_covered():
    assert len(set(CONFIGS)) == len(CONFIGS) <= len(VARIANTS)
    assert {dtype for dtype, _ in VARIANTS} == {torch.float32, torch.float16, torch.bfloat16}
    assert any(D > 128 for dtype, D in VARIANTS if dtype == torch.float32)   # the split-D path
