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
