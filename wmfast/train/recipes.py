"""The recorded recipes that train the demo's world models, and where the shipped ones live.

`wmfast demo --train` runs exactly these (DEMO_RECIPE; ATARI_RECIPE for Atari footage). The models
under wmfast/assets/pretrained/ were made by `wmfast demo --train [--data atari:Pong] --out <dir>`
and copied there (without train_state.pt). The maze model's action map was then refit (by the
evaluator of that time; now `wmfast train action-map`) once the map's fitting balanced its (game
action, frame changed) groups, which `demo --train` now does itself."""
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
# Atari footage (wmfast.data.atari): the player's paddle is a few pixels among a big mover (the ball's
# and the opponent's motion), so the tokenizer trains three times longer (the paddle is sharp within
# 1 px only late) and the LAM reads x_t-1 .. x_t+2 (Atari paddles lag and coast: half of a_t's
# effect lands a step later), with amplified differences and changed pixels weighted up, the
# frames-only settings that learned the move class best in experiments/atari_lam_study.py.
ATARI_RECIPE = {
    "tokenizer": (dict(steps=2400, batch_size=16, lr=2e-3, warmup_steps=50), {}),
    "actions": (dict(steps=1500, batch_size=16, lr=1e-3, warmup_steps=50),
                {"encoder_frames": 4, "diff_gain": 20.0, "changed_weight": 100.0}),
    "dynamics": (dict(steps=1500, batch_size=16, lr=2e-3, warmup_steps=50), {}),
}
DEMO_BASE = TrainConfig(preset="small", clip_len=4, seed=0, log_every=25, save_every=250)


def is_atari(data) -> bool:
    """Whether a dataset spec names Atari footage: atari:GAME, or a file recorded by `wmfast data atari`."""
    if isinstance(data, str) and data.startswith("atari:"):
        return True
    if isinstance(data, str) and data.startswith("game:"):
        return False
    from wmfast.data import load_dataset

    return (load_dataset(data, progress=False).meta or {}).get("source") == "atari"


def demo_recipe(scale: float = 1.0, data=None):
    """stage -> (the stage's training config, model overrides) for `data` (Atari footage gets
    ATARI_RECIPE, anything else DEMO_RECIPE); scale multiplies the step counts."""
    out = {}
    recipe = ATARI_RECIPE if data is not None and is_atari(data) else DEMO_RECIPE
    for stage, (train_over, model_over) in recipe.items():
        cfg = stage_train_config(stage, replace(DEMO_BASE, **train_over))
        out[stage] = (replace(cfg, steps=max(1, int(round(cfg.steps * scale))),
                              warmup_steps=max(1, int(round(cfg.warmup_steps * min(1.0, scale))))), model_over)
    return out


def pretrained_name(data: str):
    """The name a shipped model for a dataset spec would have: game:NAME -> NAME, atari:GAME ->
    atari-GAME (lower case); None for anything else (files, folders, a spec with an episode count)."""
    kind, _, name = str(data).partition(":")
    if not name or ":" in name:
        return None
    return name if kind == "game" else f"atari-{name.lower()}" if kind == "atari" else None


def pretrained_run(name: str = None):
    """Path of a shipped pretrained run (default: the one for the default embedded game), or None."""
    from wmfast.data import DEFAULT_GAME

    path = os.path.join(PRETRAINED_DIR, name or DEFAULT_GAME)
    return path if os.path.isfile(os.path.join(path, "dynamics", "model.safetensors")) else None
