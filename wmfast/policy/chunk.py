"""Action chunking with an MLP head: CNN -> flatten -> MLP -> a chunk of K actions at once.

    frames [B, 3, S, S] -> ConvTokens [B, C, S/8, S/8] -> flatten [B, C*S*S/64]
    -> Linear + ReLU (hidden) -> Linear(hidden, K*out) -> [B, K, out]
"""
import torch.nn as nn

from wmfast.policy.cnn import ConvTokens, PolicyConfig, check_input, flat_mlp


class ChunkPolicy(nn.Module):
    def __init__(self, cfg: PolicyConfig):
        super().__init__()
        self.config = cfg
        self.cnn = ConvTokens(cfg.channels)
        self.mlp = flat_mlp(cfg, cfg.chunk * cfg.out_dim)

    def forward(self, x):
        """x float [B, 3, S, S] in [-1, 1] -> actions [B, K, out]."""
        check_input(x, self.config)
        return self.mlp(self.cnn(x)).view(x.shape[0], self.config.chunk, self.config.out_dim)
