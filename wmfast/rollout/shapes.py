"""Model shapes for rollout benchmarks and tests, and randomly initialised world models of them
(a random model is as fast as a trained one of the same shape, so speed needs no training)."""
import torch

from wmfast.models import WorldModel
from wmfast.models.dynamics import DynamicsConfig, DynamicsModel
from wmfast.models.lam import TransformerLam, TransformerLamConfig
from wmfast.models.tokenizer import TokenizerConfig, VideoTokenizer

# tinyworlds' defaults: 64 px, patch 4 (P = 256), embed 128, 8 heads, hidden 256, 4 blocks,
# latent 5 x 4 bins (K = 1024), 8 actions, context 4.
SHAPES = {
    "tinyworlds": dict(frame_size=64, patch_size=4, embed_dim=128, num_heads=8, hidden_dim=256, num_blocks=4,
                       latent_dim=5, num_bins=4, n_actions=8, context_length=4),
    "small": dict(frame_size=32, patch_size=4, embed_dim=64, num_heads=4, hidden_dim=128, num_blocks=2,
                  latent_dim=3, num_bins=4, n_actions=8, context_length=4),
}


def random_world_model(frame_size=32, patch_size=4, embed_dim=64, num_heads=4, hidden_dim=128, num_blocks=2,
                       latent_dim=3, num_bins=4, n_actions=8, context_length=4, seed: int = 0,
                       temporal_tokenizer: bool = True) -> WorldModel:
    """A randomly initialised WorldModel (eval mode, CPU) with consistent stage configs
    (temporal_tokenizer=False: a frame-wise tokenizer, TokenizerConfig.temporal_attention=False)."""
    torch.manual_seed(seed)
    body = dict(frame_size=frame_size, patch_size=patch_size, embed_dim=embed_dim, num_heads=num_heads,
                hidden_dim=hidden_dim, num_blocks=num_blocks)
    lam = TransformerLam(TransformerLamConfig(n_actions=n_actions, **body))
    tok = VideoTokenizer(TokenizerConfig(latent_dim=latent_dim, num_bins=num_bins,
                                         temporal_attention=temporal_tokenizer, **body))
    dyn = DynamicsModel(DynamicsConfig(latent_dim=latent_dim, num_bins=num_bins, context_length=context_length,
                                       conditioning_dim=lam.config.action_dim, **body))
    return WorldModel(tok.eval(), lam.eval(), dyn.eval())


def save_random_run(run_dir, shape: str = "tinyworlds", seed: int = 0) -> str:
    """A run directory holding random_world_model(**SHAPES[shape]) (for export benchmarks)."""
    import os

    from wmfast.checkpoint import save_model

    model = random_world_model(**SHAPES[shape], seed=seed)
    for stage, module in (("tokenizer", model.tokenizer), ("actions", model.lam), ("dynamics", model.dynamics)):
        save_model(module, os.path.join(run_dir, stage))
    return str(run_dir)
