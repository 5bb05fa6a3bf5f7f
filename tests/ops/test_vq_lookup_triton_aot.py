"""Every autotune config of the Triton vq_lookup kernel compiles ahead of time for sm_90
(H100) with no GPU present: ttir -> ttgir -> llir -> ptx -> cubin through the bundled ptxas.
Each config is compiled once, and the configs cycle through the code paths (fp32 tf32x3,
fp16/bf16 tensor cores, a D split into several 128-wide chunks)."""
import pytest
import torch

triton = pytest.importorskip("triton")
from wmfast.kernels.vq_lookup import CONFIGS, aot_compile  # noqa: E402

H100_MAX_SHARED = 232448  # bytes of shared memory per block on sm_90
# (dtype, D) compiled for config i: every path once.
VARIANTS = [(torch.float16, 512), (torch.bfloat16, 1000), (torch.float16, 64), (torch.float32, 32),
            (torch.float32, 256), (torch.float32, 5), (torch.bfloat16, 128), (torch.bfloat16, 32)]


@pytest.mark.parametrize("i", range(len(CONFIGS)), ids=[f"BN{c[0]}-BK{c[1]}-w{c[2]}-s{c[3]}" for c in CONFIGS])
def test_autotune_config_compiles_for_sm90(i):
    config = CONFIGS[i]
    dtype, D = VARIANTS[i % len(VARIANTS)]
    kernel = aot_compile(config, dtype=dtype, D=D, arch=90)
    assert kernel.asm["cubin"], "no cubin"
    assert kernel.metadata.num_warps == config[2]
    assert kernel.metadata.shared <= H100_MAX_SHARED, kernel.metadata.shared
    assert "mma" in kernel.asm["ptx"]    # tensor cores: tf32x3 for fp32, native for fp16/bf16


@pytest.mark.parametrize("split", [False, True])
def test_fp32_oracle_and_split_variants_compile_for_sm90(split):
    ieee = aot_compile(CONFIGS[0], dtype=torch.float32, D=32, arch=90, precision="ieee", split=split)
    assert "mma" not in ieee.asm["ptx"]  # the IEEE oracle: plain FMAs, no TF32 rounding
    fast = aot_compile(CONFIGS[0], dtype=torch.float32, D=128, arch=90, split=split)
    assert fast.metadata.shared <= H100_MAX_SHARED and "mma" in fast.asm["ptx"]


def test_every_config_is_covered():
    assert len(set(CONFIGS)) == len(CONFIGS) <= len(VARIANTS)
    assert {dtype for dtype, _ in VARIANTS} == {torch.float32, torch.float16, torch.bfloat16}
    assert any(D > 128 for dtype, D in VARIANTS if dtype == torch.float32)   # the split-D path

