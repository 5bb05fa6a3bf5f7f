"""`wmfast demo`: the main job. Loads (or, with train=True, trains) a world model on the
embedded default game, rolls it out on held-out episodes, and writes a GIF (true | generated)
and a metrics table."""
import json
import os
import time

import numpy as np
import torch

import wmfast
from wmfast.errors import WmfastError
from wmfast.evaluate import evaluate_world_model, format_table, held_out_clips, numbers_only
from wmfast.rollout.media import side_by_side, to_uint8, write_video


def default_data() -> str:
    from wmfast.data import DEFAULT_GAME

    return f"game:{DEFAULT_GAME}"


def train_world_model(run_dir: str, data: str, scale: float = 1.0, progress: bool = True) -> dict:
    """Train tokenizer, actions and dynamics with the demo recipe; returns each stage's final metrics."""
    from wmfast.train import demo_recipe, train_stage
    from wmfast.config import save_json

    results = {}
    os.makedirs(run_dir, exist_ok=True)
    recipe = demo_recipe(scale)
    save_json({"data": data, "scale": scale,
               "stages": {s: {"train": t.to_dict(), "model": m} for s, (t, m) in recipe.items()}},
              os.path.join(run_dir, "recipe.json"))
    for stage, (train_cfg, model_over) in recipe.items():
        train_cfg.progress = progress
        t0 = time.perf_counter()
        results[stage] = train_stage(stage, run_dir, data, train_cfg, model=model_over)
        results[stage]["seconds"] = time.perf_counter() - t0
    return results


def rollout_panel(metrics: dict, examples: int = 4) -> np.ndarray:
    """[context | true future] next to [context | generated future], examples stacked vertically."""
    ctx, truth, gen = metrics["_context"], metrics["_truth"], metrics["_rollout"]
    rows = []
    for i in range(min(examples, ctx.shape[0])):
        real = to_uint8(torch.cat([ctx[i], truth[i]]))
        fake = to_uint8(torch.cat([ctx[i], gen[i]]))
        rows.append(side_by_side(real, fake))
    return np.concatenate(rows, axis=1)


def run_demo(out_dir: str = "demo", data: str = None, train: bool = False, scale: float = 1.0,
             episodes: int = 8, horizon: int = 8, steps: int = 8, seed: int = 0, progress: bool = True) -> dict:
    from wmfast.data import load_dataset
    from wmfast.train import pretrained_run

    t_start = time.perf_counter()
    data = data or default_data()
    name = data.split(":", 1)[1] if data.startswith("game:") else None
    run = None if train else pretrained_run(name) if name else None
    training = None
    if run is None:
        if not train:
            print(f"wmfast demo: no pretrained model for {data}; training one (about 10 minutes on 2 CPU cores)")
        run = os.path.join(out_dir, "run")
        if os.path.exists(os.path.join(run, "dynamics", "model.safetensors")):
            raise WmfastError(f"{run} already holds a trained model; choose another --out")
        training = train_world_model(run, data, scale, progress)
    model = wmfast.load(run)
    ds = load_dataset(data)
    C = model.dynamics.config.context_length
    frames, actions = held_out_clips(ds, C + horizon, episodes, model.frame_size, seed=seed)
    metrics = evaluate_world_model(model, frames, actions, horizon=horizon, steps=steps, seed=seed)
    os.makedirs(out_dir, exist_ok=True)
    gif = write_video(rollout_panel(metrics), os.path.join(out_dir, "rollout.gif"), fps=4)
    summary = {"run": run, "data": data, "gif": gif, **numbers_only(metrics),
               "wall_seconds": time.perf_counter() - t_start}
    if training:
        summary["training"] = training
    with open(os.path.join(out_dir, "metrics.json"), "w") as f:
        json.dump(summary, f, indent=2, default=float)
    print(format_table(numbers_only(metrics)))
    print(f"model: {run}\nrollout (true | generated, first {C} frames are context): {gif}\n"
          f"metrics: {os.path.join(out_dir, 'metrics.json')}  ({summary['wall_seconds']:.0f} s)")
    return summary
