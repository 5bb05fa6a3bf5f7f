"""Behaviour cloning: CNN -> flatten -> MLP -> one action.

    frames [B, 3, S, S] -> ConvTokens [B, C, S/8, S/8] -> flatten [B, C*S*S/64]
    -> Linear + ReLU (hidden) -> Linear -> [B, 1, out]   (a chunk of one, so every policy returns [B, K, out])
"""
import torch.nn as nn

from wmfast.policy.cnn import ConvTokens, PolicyConfig, check_input, flat_mlp


class BCPolicy(nn.Module):
    def __init__(self, cfg: PolicyConfig):
        super().__init__()
        self.config = cfg
        self.cnn = ConvTokens(cfg.channels)
        self.mlp = flat_mlp(cfg, cfg.out_dim)

    def forward(self, x):
        """x float [B, 3, S, S] in [-1, 1] -> actions [B, 1, out]."""
        check_input(x, self.config)
        return self.mlp(self.cnn(x)).unsqueeze(1)
