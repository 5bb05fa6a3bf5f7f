"""`wmfast demo`: the main job. Loads (or, with train=True, trains) a world model on the
embedded default game and scores it on held-out episodes with THE evaluator (wmfast.evaluate):
a rollout GIF (true | generated), the controls sheet (what each latent action does), a PSNR plot
with the copy-last-frame baseline, and metrics.json with a compact table."""
import os
import time

from wmfast.errors import WmfastError


def default_data() -> str:
    from wmfast.data import DEFAULT_GAME

    return f"game:{DEFAULT_GAME}"


def train_world_model(run_dir: str, data: str, scale: float = 1.0, progress: bool = True) -> dict:
    """Train tokenizer, actions and dynamics with the demo recipe, then fit the action map (when the data
    has game actions) and the reward head (when it has rewards); returns each stage's final metrics.
    scale shortens every stage alike."""
    from wmfast.models.action_map import FRAME_MAP_STEPS
    from wmfast.config import save_json
    from wmfast.data import load_dataset
    from wmfast.train import demo_recipe, train_stage
    from wmfast.train.action_map import train_action_map
    from wmfast.train.reward import REWARD_STEPS, train_reward

    results = {}
    os.makedirs(run_dir, exist_ok=True)
    recipe = demo_recipe(scale, data)
    save_json({"data": data, "scale": scale,
               "stages": {s: {"train": t.to_dict(), "model": m} for s, (t, m) in recipe.items()}},
              os.path.join(run_dir, "recipe.json"))
    for stage, (train_cfg, model_over) in recipe.items():
        train_cfg.progress = progress
        t0 = time.perf_counter()
        results[stage] = train_stage(stage, run_dir, data, train_cfg, model=model_over)
        results[stage]["seconds"] = time.perf_counter() - t0
    ds = load_dataset(data)
    if ds.actions is not None:
        t0 = time.perf_counter()
        steps = max(1, int(round(FRAME_MAP_STEPS * min(1.0, scale))))
        results["action_map"] = train_action_map(run_dir, data, steps=steps, progress=progress)
        results["action_map"]["seconds"] = time.perf_counter() - t0
    if ds.rewards is not None and len(set(ds.rewards.tolist())) > 1:   # a reward to learn
        t0 = time.perf_counter()
        results["reward"] = train_reward(run_dir, data, steps=max(1, int(round(REWARD_STEPS * min(1.0, scale)))),
                                         progress=progress)
        results["reward"]["seconds"] = time.perf_counter() - t0
    return results


def check_demo_inputs(data, scale, episodes, horizon, steps, seed):
    """One line naming the option for bad demo input; the dataset spec is resolved (an unknown
    game fails here, before a run folder or recipe.json exists)."""
    from wmfast.data import load_dataset

    for name, value, lo in (("--episodes", episodes, 1), ("--horizon", horizon, 1), ("--steps", steps, 1),
                            ("--seed", seed, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < lo:
            raise WmfastError(f"{name} must be an integer >= {lo}, got {value!r}")
    if not isinstance(scale, (int, float)) or not scale > 0 or scale == float("inf"):
        raise WmfastError(f"--scale must be a number > 0, got {scale!r}")
    load_dataset(data)


def run_demo(out_dir: str = "demo", data: str = None, train: bool = False, scale: float = 1.0,
             episodes: int = 8, horizon: int = 8, steps: int = 8, seed: int = 0, progress: bool = True) -> dict:
    """Load (or train) the demo world model and score it with THE evaluator (wmfast.evaluate): writes
    rollout.gif, controls.png/.gif, psnr.png, confusion.png and metrics.json into out_dir. scale (< 1)
    shortens the training and the action map's fit alike."""
    from wmfast.evaluate import evaluate_run, format_table, write_json
    from wmfast.train.recipes import pretrained_name, pretrained_run

    t_start = time.perf_counter()
    data = data or default_data()
    check_demo_inputs(data, scale, episodes, horizon, steps, seed)   # before anything is written
    name = pretrained_name(data)
    run = None if train else pretrained_run(name) if name else None
    training = None
    if run is None:
        if not train:
            print(f"wmfast demo: no pretrained model for {data}; training one with the demo recipe (it took about "
                  f"40 minutes on a shared 2-core machine; --scale 0.1 trains a tenth)")
        run = os.path.join(out_dir, "run")
        if os.path.exists(os.path.join(run, "dynamics", "model.safetensors")):
            raise WmfastError(f"{run} already holds a trained model; choose another --out")
        training = train_world_model(run, data, scale, progress)
    report = evaluate_run(run, data, episodes=episodes, horizon=horizon, steps=steps, seed=seed, out=out_dir,
                          progress=progress)
    report["wall_seconds"] = time.perf_counter() - t_start
    if training:
        report["training"] = training
    write_json(report, os.path.join(out_dir, "metrics.json"))
    print(format_table(report))
    files = report.get("files", {})
    print(f"model: {run}\nrollout (per clip: true | inferred actions | true game actions; the first "
          f"{model_context(report)} frames are context): {files.get('rollout_gif')}\n"
          f"controls: {files.get('controls_png')} / {files.get('controls_gif')}\n"
          f"metrics: {os.path.join(out_dir, 'metrics.json')}  ({report['wall_seconds']:.0f} s)")
    return {k: v for k, v in report.items() if not k.startswith("_")}


def model_context(report: dict) -> int:
    return int(report["_context"].shape[1])
