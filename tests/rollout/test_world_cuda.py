"""The World engine on a CUDA device (`make gpu-check`): eager, torch.compile (CUDA graphs) and the
CPU reference give the same tokens at temperature 0."""
import pytest
import torch

from wmfast import World
from wmfast.rollout.reference import reference_rollout
from wmfast.rollout.shapes import random_world_model

pytestmark = pytest.mark.gpu
SIZES = dict(frame_size=32, patch_size=4, embed_dim=32, num_heads=4, hidden_dim=64, num_blocks=2, latent_dim=3,
             num_bins=4, n_actions=8, context_length=3)


def test_cuda_world_eager_and_compiled_match_the_reference():
    model = random_world_model(**SIZES)
    g = torch.Generator().manual_seed(0)
    context = torch.rand(2, 3, 3, 32, 32, generator=g) * 2 - 1
    ids = torch.randint(0, 8, (2, 4), generator=g)
    want = reference_rollout(model, context, ids, steps=6)
    eager = World(model, device="cuda", steps=6).reset(context.cuda())
    compiled = World(model, device="cuda", backend="compile", steps=6).reset(context.cuda())
    for i in range(ids.shape[1]):
        a, b = eager.step(ids[:, i].cuda()), compiled.step(ids[:, i].cuda())
        assert torch.equal(eager.tokens, compiled.tokens), f"frame {i}"
        assert (a.cpu() - want[:, i]).abs().max() <= 1e-3 and (b - a).abs().max() <= 1e-4
