"""The recorded recipe that trains the demo's world model, and where the shipped one lives.

`wmfast demo --train` runs exactly this. The model under wmfast/assets/pretrained/ was made by
`wmfast demo --train --out <dir>` with this recipe and copied there (without train_state.pt); its
action map was then refit (by the evaluator of that time; now `wmfast train action-map`) once the
map's fitting balanced its (game action, frame changed) groups, which `demo --train` now does itself."""
import os
from dataclasses import replace

from wmfast.train.trainer import TrainConfig, stage_train_config

PRETRAINED_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "pretrained")

# stage -> (training config overrides, model config overrides); the dynamics' clip settings
# (future_mask_prob, pause_clip_prob) are the small preset's (presets.DYNAMICS_TRAINING).
DEMO_RECIPE = {
    "tokenizer": (dict(steps=800, batch_size=16, lr=2e-3, warmup_steps=50), {}),
    "actions": (dict(steps=1500, batch_size=16, lr=1e-3, warmup_steps=50), {}),
    "dynamics": (dict(steps=1500, batch_size=16, lr=2e-3, warmup_steps=50), {}),
}
DEMO_BASE = TrainConfig(preset="small", clip_len=4, seed=0, log_every=25, save_every=250)


def demo_recipe(scale: float = 1.0):
    """stage -> (the stage's training config, model overrides); scale multiplies the step counts."""
    out = {}
    for stage, (train_over, model_over) in DEMO_RECIPE.items():
        cfg = stage_train_config(stage, replace(DEMO_BASE, **train_over))
        out[stage] = (replace(cfg, steps=max(1, int(round(cfg.steps * scale))),
                              warmup_steps=max(1, int(round(cfg.warmup_steps * min(1.0, scale))))), model_over)
    return out


def pretrained_run(name: str = None):
    """Path of a shipped pretrained run (default: the one for the default embedded game), or None."""
    from wmfast.data import DEFAULT_GAME

    path = os.path.join(PRETRAINED_DIR, name or DEFAULT_GAME)
    return path if os.path.isfile(os.path.join(path, "dynamics", "model.safetensors")) else None
