"""The World engine on a CUDA device (`make gpu-check`): eager and torch.compile (CUDA graphs) give
the reference loop's tokens and frames at temperature 0.

The reference runs on the same device with TF32 off (cuDNN allows TF32 convolutions by default:
the tokenizer decoder's 1x1 conv then rounds to 10 mantissa bits, which moves frames by ~1e-3 and,
through re-encoding, can flip FSQ tokens). Like the CPU test (test_world.py), compat mode must give
the reference's frames exactly, since it decodes the same tokens with the same kernels; the
compiled step may sum in another order, so its tokens must match and its frames agree to float
rounding. The CPU comparison is one step (no feedback of generated frames into the context), so a
device difference cannot compound."""
import copy

import pytest
import torch

from wmfast import World
from wmfast.rollout.reference import reference_rollout
from wmfast.rollout.shapes import random_world_model

pytestmark = pytest.mark.gpu
SIZES = dict(frame_size=32, patch_size=4, embed_dim=32, num_heads=4, hidden_dim=64, num_blocks=2, latent_dim=3,
             num_bins=4, n_actions=8, context_length=3)


@pytest.fixture
def no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def test_cuda_world_eager_and_compiled_match_the_reference(no_tf32):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    cpu_model = random_world_model(**SIZES)
    model = copy.deepcopy(cpu_model).to("cuda")
    g = torch.Generator().manual_seed(0)
    context = (torch.rand(2, 3, 3, 32, 32, generator=g) * 2 - 1)
    ids = torch.randint(0, 8, (2, 4), generator=g)
    want = reference_rollout(model, context.cuda(), ids.cuda(), steps=6)                # [B, N, 3, H, W] on cuda
    # one step from the same context on the CPU: the device changes nothing but float rounding
    first_cpu = reference_rollout(cpu_model, context, ids[:, :1], steps=6)[:, 0]
    assert (want[:, 0].cpu() - first_cpu).abs().max() <= 1e-4
    eager = World(model, device="cuda", steps=6).reset(context.cuda())
    compiled = World(copy.deepcopy(model), device="cuda", backend="compile", steps=6).reset(context.cuda())
    for i in range(ids.shape[1]):
        a, b = eager.step(ids[:, i].cuda()), compiled.step(ids[:, i].cuda())
        assert torch.equal(a, want[:, i]), f"frame {i}: eager World differs from the reference"
        assert torch.equal(eager.tokens, compiled.tokens), f"frame {i}: compiled tokens differ"
        assert (b - a).abs().max() <= 1e-4, f"frame {i}"
