"""Attention visualisation: per-head capture (free when off), heatmaps, entropy charts, an HTML page.

    with wmfast.viz.capture_attention(model) as rec:
        model(...)
    rec.maps["dynamics.blocks.0.spatial"]     # [B, H, Q, K] probabilities
    rec.entropy["dynamics.blocks.0.spatial"]  # [H] nats

Plots and the report (`wmfast viz attention`) live in wmfast.viz.plots / wmfast.viz.report and are
imported on use (matplotlib is not loaded with the models).
"""
from wmfast.nn import capture_flag as flag  # noqa: F401  (the switch, below the models)
from wmfast.viz.capture import AttentionRecord, attention_modules, capture_attention  # noqa: F401
