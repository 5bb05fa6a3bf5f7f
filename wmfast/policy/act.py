"""ACT-style policy: learned action queries attend to image tokens through a transformer decoder.

    frames [B, 3, 128, 128]
    -> ConvTokens: [B, 32, 16, 16] -> tokens [B, 256, 32] + learned 2-D positional embedding [1, 256, 32]
    -> 8 learned queries [1, 8, 32] (zeros at init, as specified) -> nn.TransformerDecoder
       (d_model 32, 2 heads, dim_feedforward 256, 2 layers, post-norm, no causal mask: every query sees
       every other query and every token)                                            -> [B, 8, 32]
    -> one shared Linear(32, out) per query                                          -> [B, 8, out]

The parameter count of the specified model is exactly 69,282:
    conv 3->32 3x3                              896
    conv 32->32 3x3                           9,248
    positional embedding 16 x 16 x 32         8,192   one learned vector per token (a row + column
                                                      factorisation would give 1,024 and miss the count)
    action queries 8 x 32                       256
    2 decoder layers x 25,312                50,624   self-attn 4,224 + cross-attn 4,224 + FFN 16,672
                                                      + 3 LayerNorms 192
    head Linear(32, 2)                           66
                                             ------
                                             69,282
so the decoder has no final LayerNorm (nn.TransformerDecoder(norm=None)) and the CNN's 32 channels are
the tokens directly (no input projection).

Zero queries: at initialisation all 8 queries are equal, and with no positional signal on the queries
they would stay equal in the first self-attention; they become different through training, because
each gets a different target (action t + k). That is the specified design (ACT adds nothing else).

ACT's reference code looped over its decoder layers but fed the original queries into each one, so
only the last (or first) layer's work reached the output; here nn.TransformerDecoder chains them, and a
test checks that changing either layer changes the output.
"""
import torch
import torch.nn as nn

from wmfast.policy.cnn import ConvTokens, PolicyConfig, check_input


class ACTPolicy(nn.Module):
    def __init__(self, cfg: PolicyConfig):
        super().__init__()
        self.config = cfg
        self.cnn = ConvTokens(cfg.channels)
        self.pos = nn.Parameter(torch.zeros(1, cfg.grid * cfg.grid, cfg.d_model))
        nn.init.normal_(self.pos, std=0.02)
        self.queries = nn.Parameter(torch.zeros(1, cfg.chunk, cfg.d_model))
        layer = nn.TransformerDecoderLayer(cfg.d_model, cfg.nhead, cfg.dim_feedforward, cfg.dropout,
                                           batch_first=True)
        self.decoder = nn.TransformerDecoder(layer, cfg.num_layers, norm=None)
        self.head = nn.Linear(cfg.d_model, cfg.out_dim)

    def forward(self, x):
        """x float [B, 3, S, S] in [-1, 1] -> actions [B, chunk, out] (velocities or class logits)."""
        check_input(x, self.config)
        B = x.shape[0]
        f = self.cnn(x)                                                   # [B, C, G, G]
        tokens = f.flatten(2).transpose(1, 2) + self.pos                  # [B, G*G, C]
        q = self.queries.expand(B, -1, -1)                                # [B, K, C]
        h = self.decoder(q, tokens)                                       # [B, K, C], no masks
        return self.head(h)                                               # [B, K, out]
