"""Presets: model size overrides applied to every stage's config, per-stage model settings and
per-stage training settings."""
from wmfast.config import FIELD_RULES

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
# 8-code VQ with dead-code reset and a conv decoder that sees x_t-1 and x_t. A small loss on each clip's
# first pair (no x_t-1) makes codes carry the direction, not just "moved" (pong: NMI 0.45 -> 0.78 on the
# seed that failed; docs/controllable-dynamics/). "tinyworlds" keeps tinyworlds' own LAM.
CONV_LAM = dict(architecture="conv", quantizer="vq", vq_dead_code_every=100, conv_context=2, onehot_actions=True,
                first_pair_weight=0.1)
# Dynamics: the action sets a learned attention bias per head and relative patch offset
# (action_position_bias) inside a 1-patch window. FiLM alone does not follow the action's direction on
# maze (ΔtPSNR 0.0-0.1 dB, the moved agent fades out); this, trained as DYNAMICS_TRAINING says, does
# (docs/controllable-dynamics/). It needs the demo recipe's lr 2e-3: at 1e-3, 1 of 3 seeds learns it
# within 1000 steps, at 2e-3, 3 of 3.
DYNAMICS = dict(action_position_bias=True, spatial_window=1)
# How the dynamics' training clips are drawn (DynamicsTrainConfig): every clip is trained as rollouts use
# the model (complete context, last frame masked), and 30% of the clips hold a pause (one frame repeated
# for a while, then the clip goes on, or to its end): without pauses a held NOOP made the maze agent
# vanish once the context was still, and with pauses only to the end of the clip the first move out of
# a still window lost the agent in 1 of 10 such moves (2.3% of all moves under random held actions; 0 of
# 798 with this recipe; docs/long-play/).
DYNAMICS_TRAINING = dict(future_mask_prob=1.0, pause_clip_prob=0.3)
# A frame-wise tokenizer (no attention across frames): a frame's tokens are the same wherever it sits in
# a window, so a World can keep its generated tokens as context and decode only the new frame. With
# tinyworlds' space-time tokenizer, generated tokens kept as context lost the maze agent within 4-19
# frames and even compat drifted (docs/long-play/); this one also reconstructs better (59.8 vs 48 dB).
TOKENIZER = dict(temporal_attention=False)

# Per-stage settings, which a flat preset cannot hold (`quantizer` means one thing to the
# tokenizer and another to the LAM).
STAGE_PRESETS = {
    "tiny": {"tokenizer": TOKENIZER, "actions": CONV_LAM, "dynamics": DYNAMICS},
    "small": {"tokenizer": TOKENIZER, "actions": CONV_LAM, "dynamics": DYNAMICS},
}


def preset_values(preset: str, stage: str, fields: set) -> dict:
    """The preset's values for one stage's config fields: flat values first, then per-stage ones."""
    values = {k: v for k, v in PRESETS[preset].items() if k in fields}
    values.update(STAGE_PRESETS.get(preset, {}).get(stage, {}))
    return values


# Per-stage training settings (the stage's training config fields), preset -> stage -> values; a
# preset without them trains as tinyworlds does.
STAGE_TRAINING = {
    "tiny": {"dynamics": DYNAMICS_TRAINING},
    "small": {"dynamics": DYNAMICS_TRAINING},
}


def preset_training(preset: str, stage: str) -> dict:
    """The preset's training settings for one stage ({} when it has none)."""
    return dict(STAGE_TRAINING.get(preset, {}).get(stage, {}))


FIELD_RULES["preset"] = tuple(PRESETS)   # TrainConfig.preset: one of these (config sits below train)
