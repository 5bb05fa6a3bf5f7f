"""The recipe's dynamics options (local spatial window, action-set position bias) through ONNX:
the onnxruntime World gives the eager World's tokens."""
import os

import torch

from wmfast.checkpoint import save_model
from wmfast.export import export_run
from wmfast.models import (DynamicsConfig, DynamicsModel, LatentActionConfig, LatentActionModel, TokenizerConfig,
                           VideoTokenizer)
from wmfast.rollout import World

BODY = dict(frame_size=16, patch_size=4, embed_dim=16, num_heads=2, hidden_dim=32, num_blocks=1)


def test_window_and_action_bias_export_with_eager_tokens(tmp_path):
    torch.manual_seed(0)
    run = str(tmp_path / "run")
    save_model(VideoTokenizer(TokenizerConfig(latent_dim=3, num_bins=4, **BODY)), os.path.join(run, "tokenizer"))
    lam = LatentActionModel(LatentActionConfig(architecture="conv", quantizer="vq", n_actions=4, onehot_actions=True,
                                               conv_channels=8, **BODY))
    save_model(lam, os.path.join(run, "actions"))
    dyn = DynamicsModel(DynamicsConfig(latent_dim=3, num_bins=4, conditioning_dim=lam.config.action_dim, context_length=3,
                                       spatial_window=1, action_position_bias=True, **BODY))
    with torch.no_grad():   # biases start at zero: give them values so the test can see them
        for block in dyn.transformer.blocks:
            block.spatial_attn.rel_bias.normal_()
            block.spatial_attn.action_bias.weight.normal_()
    save_model(dyn, os.path.join(run, "dynamics"))
    export_run(run, check=False, progress=False)
    g = torch.Generator().manual_seed(3)
    context = torch.rand(2, 3, 3, 16, 16, generator=g) * 2 - 1
    ids = torch.randint(0, 4, (2, 4), generator=g)
    for mode in ("compat", "fast"):
        kwargs = dict(device="cpu", mode=mode, steps=4, seed=5)
        eager = World.load(run, backend="eager", **kwargs).reset(context)
        onnx_world = World.load(run, backend="onnx", **kwargs).reset(context)
        for i in range(ids.shape[1]):
            want, got = eager.step(ids[:, i]), onnx_world.step(ids[:, i])
            assert torch.equal(onnx_world.tokens, eager.tokens), f"{mode} frame {i}"
            assert (got - want).abs().max() <= 1e-4
