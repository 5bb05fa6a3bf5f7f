"""Helpers of tests/serve: a tiny random-weight run (action map, small dataset), a server on 127.0.0.1."""
import json
import os
import shutil

import numpy as np
import pytest

from wmfast.checkpoint import save_action_map
from wmfast.models.action_map import ActionMap
from wmfast.checkpoint import save_model
from wmfast.data import write_dataset
from wmfast.rollout.shapes import random_world_model

SIZES = dict(frame_size=16, patch_size=4, embed_dim=32, num_heads=2, hidden_dim=64, num_blocks=2,
             latent_dim=3, num_bins=4, n_actions=8, context_length=3)
GAME_ACTIONS = ["NOOP", "UP", "DOWN", "LEFT", "RIGHT"]


def browser_or_skip():
    """(chromium's path, playwright.sync_api) for the browser tests; skips the calling module when
    either is missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium on PATH: `make test` installs it with apt (apt-get install chromium); "
                    "it could not be installed here", allow_module_level=True)
    api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed "
                                                           "(pip install -e '.[test]')")
    return chromium, api


def moving_square_episodes(episodes: int = 10, length: int = 12, size: int = 16, seed: int = 0):
    """Frames [N, S, S, 3] of a square wandering over a tinted background, and episode bounds."""
    rng = np.random.default_rng(seed)
    frames, bounds = [], []
    for e in range(episodes):
        bg = rng.integers(0, 120, 3)
        y, x = rng.integers(0, size - 4, 2)
        bounds.append((len(frames), len(frames) + length))
        for _ in range(length):
            img = np.tile(bg, (size, size, 1)).astype(np.uint8)
            img[y:y + 4, x:x + 4] = 255
            frames.append(img)
            y, x = np.clip([y + rng.integers(-1, 2), x + rng.integers(-1, 2)], 0, size - 4)
    return np.stack(frames), bounds


def make_run(path, with_map: bool = True, seed: int = 0) -> str:
    model = random_world_model(**SIZES, seed=seed)
    for stage, m in (("tokenizer", model.tokenizer), ("actions", model.lam), ("dynamics", model.dynamics)):
        save_model(m, os.path.join(path, stage))
    if with_map:   # game action g -> latent code g
        save_action_map(ActionMap(np.eye(len(GAME_ACTIONS), SIZES["n_actions"], dtype=np.int64) * 10, GAME_ACTIONS), path)
    frames, bounds = moving_square_episodes()
    data = write_dataset(os.path.join(path, "data.h5"), frames, episodes=bounds)
    with open(os.path.join(path, "recipe.json"), "w") as f:
        json.dump({"data": data}, f)
    return os.fspath(path)


def start_server(runs: dict, **config):
    from wmfast.serve import ServeConfig, ServerThread, create_app, load_models

    cfg = ServeConfig(steps=2, **config)
    return ServerThread(create_app(load_models(runs, config=cfg), cfg), cfg)
