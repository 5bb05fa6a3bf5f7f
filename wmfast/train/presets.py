"""Model size presets: dicts of overrides applied to every stage's config."""

PRESETS = {
    # for tests: trains in seconds
    "tiny": dict(frame_size=32, patch_size=8, embed_dim=32, num_heads=4, hidden_dim=64, num_blocks=1,
                 latent_dim=3, num_bins=4, n_actions=4),
    # the demo: under a MB, trains on 2 CPU cores in minutes (32 px, 8x8 patches of 4 px)
    "small": dict(frame_size=32, patch_size=4, embed_dim=64, num_heads=4, hidden_dim=128, num_blocks=2,
                  latent_dim=5, num_bins=4, n_actions=8),
    # tinyworlds' defaults (64 px, patch 4 -> 256 tokens a frame)
    "tinyworlds": dict(frame_size=64, patch_size=4, embed_dim=128, num_heads=8, hidden_dim=256, num_blocks=4,
                       latent_dim=5, num_bins=4, n_actions=8),
}

# The latent action model the measurements favour (issue 12: held-out maze NMI 0.95 on changed
# transitions where the tinyworlds LAM collapsed to one code): a conv inverse-dynamics encoder, an
# 8-code VQ with dead-code reset and a conv decoder that sees x_t-1 and x_t. "tinyworlds" keeps
# tinyworlds' own LAM.
CONV_LAM = dict(architecture="conv", quantizer="vq", vq_dead_code_every=100, conv_context=2, onehot_actions=True)
# Dynamics: half the clips trained as rollouts use the model (complete context, only the last frame
# masked); the rest keep tinyworlds' masking. On maze, FiLM-only dynamics like this do not follow the
# action's direction (ΔtPSNR 0.0 dB in 2 seeds) but roll out stably (+0.3 to +2.3 dB over copy-last
# at each of 8 steps). The opt-in action-set attention bias (action_position_bias, spatial_window=1,
# future_mask_prob=1: `wmfast compare dynamics` variants action-bias, action-bias-weighted) follows
# it (ΔtPSNR +0.7 to +3.1 dB, +3 to +7 dB over copy-last on the first frame), but its maze rollouts
# drift within 8 frames in 3 of 4 runs (agents multiply or vanish), so it is not the recipe yet.
DYNAMICS = dict(future_mask_prob=0.5)

# Per-stage settings, which a flat preset cannot hold (`quantizer` means one thing to the
# tokenizer and another to the LAM).
STAGE_PRESETS = {
    "tiny": {"actions": CONV_LAM, "dynamics": DYNAMICS},
    "small": {"actions": CONV_LAM, "dynamics": DYNAMICS},
}


def preset_values(preset: str, stage: str, fields: set) -> dict:
    """The preset's values for one stage's config fields: flat values first, then per-stage ones."""
    values = {k: v for k, v in PRESETS[preset].items() if k in fields}
    values.update(STAGE_PRESETS.get(preset, {}).get(stage, {}))
    return values
