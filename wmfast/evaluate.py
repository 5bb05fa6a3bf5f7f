"""THE evaluator: how good a world model is on held-out episodes. `wmfast eval`, `wmfast demo`,
experiments/compare.py and `wmfast bench rollout` all call it.

    report = evaluate_run("runs/maze", "game:maze", out="eval/")     # -> dict (also JSON-able)

Held-out episodes are split exactly as the trainer split them (`ds.split(val_fraction, seed)` with
the run's own train_config.json / recipe.json settings), so nothing here was trained on.

Latent actions (all held-out transitions, the LAM run over windows of its training clip length):
  - NMI and purity of the inferred codes against the true game actions, on all transitions and on
    those where the frame changed: max |x_{t+1} - x_t| > CHANGE_THRESHOLD (pixels in [-1, 1]; 0.05
    is 6.4 of 255 grey levels: above resize/rounding noise, below any sprite moving);
  - a confusion matrix (true game action x latent code, counts) as PNG;
  - codebook usage (% of codes used), perplexity exp(H(codes)) and the encoder's variance;
  - the held-out table: for each game action the code it produces most often on changed
    transitions (actions that never change the frame, e.g. NOOP: on all transitions), and how well
    the run's saved action map (fitted by `wmfast train action-map`) agrees with the LAM there.
The evaluator only reads the run: it writes nothing but the pictures and JSON asked for.
World model (batched held-out clips: C context frames, then `horizon` generated frames, the World
engine in compat mode at temperature 0):
  - PSNR from the MSE pooled over all clips at each horizon step (pixels in [-1, 1]:
    PSNR = 10 log10(4 / MSE)), never a mean of per-frame PSNRs (unchanged frames would dominate);
  - teacher-forced (true context every step), autoregressive with the inferred latent actions,
    autoregressive with the TRUE game actions through the action map, with random latent actions,
    and the copy-the-last-context-frame baseline, per step;
  - Genie's controllability ΔtPSNR at t=4: PSNR(inferred actions) - PSNR(random actions);
  - a controls sheet (PNG + GIF): one held-out context, each latent action repeated for `horizon`
    frames, one row per latent action, labelled with its game action when the map exists.
Atari recordings (wmfast.data.atari), for a run with an action map of the game's actions, also get
the counterfactual check (wmfast.eval.counterfactual): from held-out emulator states each move is
held in the real game and in the World, scored by paddle direction, ball and PSNR beside copy-last-frame, drawn as
counterfactual.png (one row per move: game | World).
"""
import math
import os

import numpy as np
import torch

from wmfast.errors import WmfastError
from wmfast.latent_actions import CHANGE_THRESHOLD, ENCODE_BATCH, build_action_map, episode_codes, \
    held_out_episodes, infer_codes, lam_window

CONTROLLABILITY_T = 4          # Genie's ΔtPSNR horizon step
DEFAULT_CLIPS = 16
COUNTERFACTUAL_STARTS = 16     # held-out emulator states of the counterfactual check (Atari)


# -- numbers ---------------------------------------------------------------------------------
def psnr_from_mse(mse):
    """MSE of pixels in [-1, 1] -> PSNR in dB (float or array)."""
    mse = np.maximum(np.asarray(mse, dtype=np.float64), 1e-10)
    out = 10 * np.log10(4.0 / mse)
    return float(out) if out.ndim == 0 else out.tolist()


def pooled_mse_per_step(pred, truth) -> torch.Tensor:
    """pred, truth [N, H, 3, S, S] -> MSE pooled over clips, channels and pixels at each step [H] (float64)."""
    return (pred.double() - truth.double()).pow(2).mean(dim=(0, 2, 3, 4))


def psnr(pred, truth) -> torch.Tensor:
    """Per-frame PSNR over the last three dims: [..., 3, H, W] -> [...] (for pictures, not for reports)."""
    mse = (pred.float() - truth.float()).pow(2).mean(dim=(-3, -2, -1)).clamp(min=1e-10)
    return 10 * torch.log10(4.0 / mse)


def code_statistics(codes, num_codes: int) -> dict:
    """Codebook usage (% of codes used at least once) and perplexity exp(H) of the code histogram."""
    codes = np.asarray(codes).ravel()
    counts = np.bincount(codes, minlength=num_codes)[:num_codes] if codes.size else np.zeros(num_codes, np.int64)
    p = counts[counts > 0] / max(counts.sum(), 1)
    return {"codebook_usage": 100.0 * float((counts > 0).sum()) / num_codes,
            "perplexity": float(np.exp(-(p * np.log(p)).sum())) if p.size else float("nan"),
            "code_counts": counts.tolist()}


def confusion_counts(true_actions, codes, num_game_actions: int, num_codes: int) -> np.ndarray:
    """[G, K] counts of game action g coded as k (pairs with an unknown true action, -1, skipped)."""
    t, z = np.asarray(true_actions).ravel(), np.asarray(codes).ravel()
    keep = t >= 0
    table = np.zeros((num_game_actions, num_codes), np.int64)
    np.add.at(table, (t[keep], z[keep]), 1)
    return table


def action_metrics(true_actions, codes, changed, num_game_actions: int, num_codes: int) -> dict:
    """NMI / purity on all transitions and on changed ones, plus both confusion tables."""
    from wmfast.data import action_agreement

    t, z, ch = np.asarray(true_actions).ravel(), np.asarray(codes).ravel(), np.asarray(changed).ravel()
    every, moved = action_agreement(t, z), action_agreement(t[ch], z[ch])
    return {"action_nmi": every["nmi"], "action_purity": every["purity"], "transitions": every["n"],
            "action_nmi_changed": moved["nmi"], "action_purity_changed": moved["purity"],
            "changed_transitions": moved["n"],
            "confusion": confusion_counts(t, z, num_game_actions, num_codes).tolist(),
            "confusion_changed": confusion_counts(t[ch], z[ch], num_game_actions, num_codes).tolist()}


def saved_action_map(run, spec, ds):
    """The run's action map (with its frame-conditioned model) when it was fitted on this data or on
    other footage of the same game actions (the same action names: new episodes of the game the run
    plays), else None."""
    from wmfast.checkpoint import load_action_map
    from wmfast.models.action_map import ACTION_MAP

    if run is None or ds.actions is None or not os.path.isfile(os.path.join(run, ACTION_MAP)):
        return None
    saved = load_action_map(run)
    same_actions = saved.data == os.fspath(spec) or list(saved.action_names) == list(ds.action_names)
    fits = saved.frame_map is not None and saved.num_game_actions == ds.n_actions and same_actions
    return saved if fits else None


def saved_map_agreement(action_map, held_codes) -> dict:
    """How often a saved action map gives the LAM's own code on the held-out transitions with a known
    game action: the frame-conditioned map and its table alone."""
    true, codes = torch.as_tensor(held_codes["true"]), torch.as_tensor(held_codes["codes"])
    known = true >= 0
    true, codes, frames = true[known], codes[known], held_codes["frames"][known]
    pred = torch.cat([action_map.to_latent(true[i:i + ENCODE_BATCH], frames[i:i + ENCODE_BATCH])
                      for i in range(0, len(true), ENCODE_BATCH)])
    return {"game_to_latent": action_map.game_to_latent, **action_map.frame_map_info,
            "held_out_agreement": float((pred == codes).float().mean()),
            "table_held_out_agreement": float((action_map.to_latent(true) == codes).float().mean())}


# -- rollouts ------------------------------------------------------------------------------------
def compat_rollout(model, context, action_ids, steps, actions: str = "latent", progress: bool = False):
    """The World engine (compat mode, temperature 0: the reference loop's frames) -> [B, N, 3, S, S]."""
    from wmfast.rollout.world import World

    world = World(model, device=context.device, mode="compat", steps=steps, actions=actions)
    return world.reset(context).rollout(action_ids, progress=progress)


@torch.no_grad()
def evaluate_world_model(model, frames, true_actions=None, horizon: int = 8, steps: int = 8, rollout_fn=None,
                         seed: int = 0, window: int = None, action_map=None, game_world: bool = False,
                         progress: bool = False) -> dict:
    """frames [N, C+horizon, 3, S, S] held-out clips (true_actions [N, C+horizon-1], -1 unknown) ->
    pooled-MSE PSNRs per horizon step and over all steps (floats / lists; `_`-keys hold tensors).

    rollout_fn(model, context, latent_ids, steps) -> frames; default: the World engine in compat mode.
    action_map: drive one more rollout with the TRUE game actions mapped to latent codes
    (game_world=True: through World(actions="game"), reading the run's saved action_map.json)."""
    from tqdm.auto import tqdm

    rollout_fn = rollout_fn or compat_rollout
    C = model.dynamics.config.context_length
    if frames.shape[1] < C + 1:
        raise WmfastError(f"clips of {frames.shape[1]} frames: need the {C} context frames and at least one more")
    H = min(horizon, frames.shape[1] - C)
    ctx, future = frames[:, :C], frames[:, C:C + H]                              # [N, C, ...], [N, H, ...]
    N = frames.shape[0]
    out = {"clips": int(N), "horizon": int(H), "maskgit_steps": int(steps)}
    game_possible = action_map is not None and true_actions is not None
    bar = tqdm(total=3 + game_possible, desc="rollouts (teacher-forced, inferred, random, game)", unit="rollout",
               disable=not progress)
    rec = model.tokenizer.decode(model.tokenizer.latents(model.tokenizer.encode(frames)))
    out["tokenizer_psnr"] = psnr_from_mse(float(pooled_mse_per_step(rec, frames).mean()))
    codes, _ = infer_codes(model.lam, frames, window or C)                       # [N, C+H-1]
    act = codes[:, C - 1:C - 1 + H]                                              # code into each future frame
    mse = {}
    # teacher forcing: future frame i from the TRUE frames i..i+C-1, all clips and steps in one batch
    windows = torch.stack([frames[:, i:i + C] for i in range(H)], 1).flatten(0, 1)   # [N*H, C, ...]
    tf = rollout_fn(model, windows, act.reshape(-1, 1), steps)[:, 0].view_as(future)
    mse["teacher_forced"] = pooled_mse_per_step(tf, future)
    bar.update(1)
    ar = rollout_fn(model, ctx, act, steps)                                      # [N, H, 3, S, S]
    mse["autoregressive"] = pooled_mse_per_step(ar, future)
    bar.update(1)
    g = torch.Generator().manual_seed(seed)
    random_ids = torch.randint(0, model.lam.num_actions, act.shape, generator=g).to(act.device)
    rnd = rollout_fn(model, ctx, random_ids, steps)
    mse["random_actions"] = pooled_mse_per_step(rnd, future)
    bar.update(1)
    mse["copy_last_frame"] = pooled_mse_per_step(ctx[:, -1:].expand_as(future), future)
    game = None
    if game_possible:
        true_ids = true_actions[:, C - 1:C - 1 + H]
        if bool((true_ids >= 0).all()):
            if game_world:
                game = compat_rollout(model, ctx, true_ids, steps, actions="game")
            else:
                game = rollout_fn(model, ctx, action_map.to_latent(true_ids).to(act.device), steps)
            mse["game_actions"] = pooled_mse_per_step(game, future)
        else:
            out["note_game_actions"] = "some clips have unknown true actions (-1): no game-action rollout"
        bar.update(1)
    for name, m in mse.items():
        out[f"mse_{name}_per_step"] = m.tolist()
        out[f"psnr_{name}_per_step"] = psnr_from_mse(m.cpu().numpy())
        out[f"mse_{name}"] = float(m.mean())
        out[f"psnr_{name}"] = psnr_from_mse(float(m.mean()))
    t = min(CONTROLLABILITY_T, H)
    out["controllability_t"] = t
    out["psnr_inferred_t"] = out["psnr_autoregressive_per_step"][t - 1]
    out["psnr_random_t"] = out["psnr_random_actions_per_step"][t - 1]
    out["controllability_gap"] = out["psnr_inferred_t"] - out["psnr_random_t"]
    out["psnr_copy_last_frame_t"] = out["psnr_copy_last_frame_per_step"][t - 1]
    out.update(_rollout=ar, _truth=future, _context=ctx, _game_rollout=game, _codes=act)
    bar.close()
    return out


def held_out_clips(ds, length: int, count: int, frame_size: int, seed: int = 0, episodes=None,
                   val_fraction: float = 0.1):
    """`count` clips of `length` frames from held-out episodes (default: ds.split(val_fraction, seed)'s)
    -> frames [N, T, 3, S, S], actions [N, T-1]."""
    from wmfast.data import ClipSampler

    if episodes is None:
        _, episodes = ds.split(val_fraction, seed=seed)
    if not episodes:
        raise WmfastError(f"{ds.source}: no held-out episode to evaluate on")
    sampler = ClipSampler(ds, clip_len=length, frame_size=frame_size, episodes=episodes, seed=seed + 1)
    return sampler.sample(count)


@torch.no_grad()
def controls_rollout(model, context, horizon: int = 8, steps: int = 8, progress: bool = False):
    """One context [1, C, 3, S, S]; every latent action k repeated `horizon` times -> [K, horizon, 3, S, S]."""
    K = model.lam.num_actions
    ids = torch.arange(K)[:, None].expand(K, horizon).to(context.device)
    return compat_rollout(model, context.expand(K, *context.shape[1:]), ids, steps, progress=progress)


# -- the one entry point ------------------------------------------------------------------------
def evaluate_run(run_or_model, data, episodes: int = DEFAULT_CLIPS, horizon: int = 8, steps: int = 8, seed: int = 0,
                 out: str = None, json_path: str = None, progress: bool = True,
                 counterfactual_starts: int = COUNTERFACTUAL_STARTS, footage=()) -> dict:
    """Evaluate a run (or a loaded WorldModel) on the held-out episodes of `data` (any dataset spec).

    episodes: number of held-out clips for the rollout metrics (action metrics use every held-out
    transition). out: folder for the pictures (confusion.png, psnr.png, controls.png/.gif,
    rollout.gif). json_path: the report as JSON. The game-action rollout plays the run's saved action
    map (RUN/action_map.json, `wmfast train action-map`) when it was fitted on this data, else the
    held-out table. counterfactual_starts: held-out emulator states of the counterfactual check
    (Atari recordings, runs with an action map of the game's actions; 0 skips it). footage: wmfast.data.footage variants to
    score the held-out clips re-encoded as (e.g. ("jpeg40", "h264", "shift1")).
    Returns the report (numbers, lists and file paths; `_`-keys hold tensors for callers)."""
    import wmfast
    from wmfast.data import load_dataset

    if episodes < 1 or horizon < 1 or steps < 1:
        raise WmfastError(f"episodes, horizon and steps must be >= 1, got {episodes}, {horizon}, {steps}")
    if isinstance(counterfactual_starts, bool) or not isinstance(counterfactual_starts, int) or counterfactual_starts < 0:
        raise WmfastError(f"counterfactual_starts must be an integer >= 0, got {counterfactual_starts!r}")
    model = wmfast.load(run_or_model) if isinstance(run_or_model, (str, os.PathLike)) else run_or_model
    model.require("tokenizer", "actions", "dynamics")
    for m in model.modules():
        m.eval()
    run = os.fspath(model.path) if model.path else None
    if run is not None and (data is None or isinstance(data, (str, os.PathLike))):
        from wmfast.run_data import resolve_run_data

        data = resolve_run_data(run, data)   # default: the data the run was trained on
    ds = load_dataset(data, progress=progress)
    spec = data if isinstance(data, (str, os.PathLike)) else ds.source
    held, settings = held_out_episodes(ds, run)
    C, K = model.dynamics.config.context_length, model.lam.num_actions
    window = lam_window(run, model)
    report = {"run": path_for_report(run), "data": os.fspath(spec), "held_out_episodes": held, "split": settings,
              "lam_window": window, "change_threshold": CHANGE_THRESHOLD, "num_latent_actions": K,
              "seed": seed, "notes": []}

    # latent actions on every held-out transition
    saved_map = saved_action_map(run, spec, ds)
    map_saved = saved_map is not None
    every = episode_codes(model, ds, held, window, progress, keep_frames=map_saved)
    report.update({k: v for k, v in code_statistics(every["codes"], K).items()})
    z = every["z"]
    report["encoder_variance"] = float(z.reshape(-1, z.shape[-1]).var(dim=0).mean()) if z.shape[0] > 1 else 0.0
    report["changed_fraction"] = float(every["changed"].mean())
    action_map = None
    has_actions = every["true"] is not None and bool((every["true"] >= 0).any())
    if has_actions:
        report["action_names"] = list(ds.action_names)
        report.update(action_metrics(every["true"], every["codes"], every["changed"], ds.n_actions, K))
        action_map = build_action_map(every["true"], every["codes"], every["changed"], ds.n_actions, K,
                                      ds.action_names, data=os.fspath(spec))
        report["action_map"] = {"game_to_latent": action_map.game_to_latent,
                                "latent_to_game": action_map.latent_to_game,
                                "counts": "changed transitions (game actions that never change the frame: "
                                          "all transitions)"}
    else:
        report["notes"].append(f"{ds.source} has no true actions: action NMI/purity, the confusion matrix, "
                               "action_map.json and the game-action rollout are skipped")
    if action_map is not None and map_saved:
        report["action_map"]["saved"] = saved_map_agreement(saved_map, every)
        report["notes"].append("game actions through the run's saved action map (World(actions=\"game\"))")
    elif action_map is not None:
        fit = f"wmfast train action-map --run {path_for_report(run) or 'RUN'}"
        report["notes"].append(f"no action map for these game actions in the run: the game-action rollout uses "
                               f"the held-out table (`{fit}` fits one)")

    # the world model on held-out clips
    frames, true_actions = held_out_clips(ds, C + horizon, episodes, model.frame_size, seed=seed, episodes=held)
    wm = evaluate_world_model(model, frames, true_actions if has_actions else None, horizon, steps, seed=seed,
                              window=window, action_map=action_map, game_world=map_saved, progress=progress)
    report.update(wm)
    if "note_game_actions" in wm:
        report["notes"].append(wm.pop("note_game_actions"))
        report.pop("note_game_actions", None)
    if footage:
        report["footage"] = footage_robustness(model, frames, true_actions if has_actions else None, footage, horizon,
                                               steps, wm, seed=seed, window=window, action_map=action_map,
                                               game_world=map_saved, progress=progress)
    report["_controls"] = controls_rollout(model, frames[:1, :C], horizon, steps, progress)         # [K, H, 3, S, S]
    if counterfactual_starts:
        checked = counterfactual_against_emulator(model, ds, held, counterfactual_starts, horizon, steps, seed,
                                                  progress, device=frames.device)
        if isinstance(checked, str):
            report["notes"].append(checked)
        elif checked is not None:
            report["counterfactual"] = checked
    if out:
        report["files"] = write_pictures(report, out, action_map)
    if json_path:
        write_json(report, json_path)
    return report


@torch.no_grad()
def footage_robustness(model, frames, true_actions, variants, horizon: int, steps: int, clean: dict, seed: int = 0,
                       window: int = None, action_map=None, game_world: bool = False, progress: bool = False) -> dict:
    """The held-out clips frames [N, T, 3, S, S] re-encoded as users' footage (wmfast.data.footage) ->
    per variant: how far the re-encoding moved the frames (PSNR against the clean clips) and the
    world-model figures on the re-encoded clips (tokenizer, rollouts, copy-last-frame) beside the clean
    ones (clean: evaluate_world_model's report on `frames`, computed once by the caller)."""
    from wmfast.data.footage import check_variants, reencode
    from wmfast.data.frames import to_model_frames
    from wmfast.rollout.world import frames_to_uint8

    keys = ("tokenizer_psnr", "psnr_teacher_forced", "psnr_autoregressive", "psnr_game_actions",
            "psnr_copy_last_frame")
    clean_u8 = frames_to_uint8(frames).cpu().numpy()
    S = frames.shape[-1]
    out = {}
    for i, variant in enumerate(["clean"] + check_variants(variants)):
        moved, wm = None, clean
        if variant != "clean":
            x = to_model_frames(reencode(clean_u8, variant, np.random.default_rng([seed, i])), S).to(frames.device)
            wm = evaluate_world_model(model, x, true_actions, horizon, steps, seed=seed, window=window,
                                      action_map=action_map, game_world=game_world, progress=progress)
            moved = psnr_from_mse(float(((x - frames) ** 2).mean()))
        out[variant] = {"psnr_vs_clean": moved,
                        **{k: wm[k] for k in keys if k in wm},
                        "psnr_autoregressive_per_step": wm["psnr_autoregressive_per_step"],
                        "psnr_copy_last_frame_per_step": wm["psnr_copy_last_frame_per_step"]}
        if "psnr_game_actions_per_step" in wm:
            out[variant]["psnr_game_actions_per_step"] = wm["psnr_game_actions_per_step"]
    for variant, row in out.items():
        row["tokenizer_drop_db"] = out["clean"]["tokenizer_psnr"] - row["tokenizer_psnr"]
    return out


def counterfactual_against_emulator(model, ds, held, starts, horizon, steps, seed, progress, device="cpu"):
    """The counterfactual check (wmfast.eval.counterfactual) when the data is an Atari recording the
    emulator can restore and the run has an action map for the game's actions -> its report, else a
    note why not (None for data that is not Atari)."""
    from wmfast.checkpoint import load_action_map
    from wmfast.eval.atari_objects import GAMES
    from wmfast.eval.counterfactual import counterfactual_check
    from wmfast.models.action_map import ACTION_MAP
    from wmfast.rollout.world import World

    meta = ds.meta or {}
    if meta.get("source") != "atari":
        return None
    if int(meta.get("atari_version", 1)) < 2 or meta.get("game") not in GAMES:
        return (f"no counterfactual check: {ds.source} is not a version-2 Atari recording of "
                f"{' or '.join(GAMES)} (`wmfast data atari` records one)")
    # Any recording of the same game shares its action set, so the map fitted on the training data plays it.
    if not model.path or not os.path.isfile(os.path.join(model.path, ACTION_MAP)) or \
            load_action_map(model.path).action_names != list(ds.action_names):
        return "no counterfactual check: it drives the World with the game's actions through the run's action " \
               "map (`wmfast train action-map` fits one)"
    world = World(model, device=device, mode="compat", steps=steps, actions="game")
    return counterfactual_check(world, ds, held, starts=starts, horizon=horizon, seed=seed, progress=progress)


# -- pictures and text ---------------------------------------------------------------------------
def latent_labels(num_codes: int, action_map=None, action_names=None) -> list:
    """'code 3: UP' per latent code (the game action it most often comes from), or 'code 3'."""
    if action_map is None:
        return [f"code {k}" for k in range(num_codes)]
    return [f"code {k}: {action_map.action_names[g]}" if g >= 0 else f"code {k}: unused"
            for k, g in enumerate(action_map.latent_to_game)]


def write_pictures(report: dict, out: str, action_map=None) -> dict:
    os.makedirs(out, exist_ok=True)
    files = {"psnr_plot": plot_psnr(report, os.path.join(out, "psnr.png")),
             "rollout_gif": write_rollout_gif(report, os.path.join(out, "rollout.gif"))}
    labels = latent_labels(report["num_latent_actions"], action_map)
    files["controls_png"], files["controls_gif"] = write_controls(
        report["_context"][0], report["_controls"], labels, os.path.join(out, "controls.png"),
        os.path.join(out, "controls.gif"))
    if "confusion" in report:
        files["confusion_png"] = plot_confusion(report, os.path.join(out, "confusion.png"))
    if "counterfactual" in report:
        from wmfast.eval.counterfactual import write_counterfactual_sheet

        files["counterfactual_png"] = write_counterfactual_sheet(report["counterfactual"],
                                                                 os.path.join(out, "counterfactual.png"))
    return files


def path_for_report(path) -> str:
    """A path under the working directory is recorded relative, so a shipped report names no machine."""
    path = os.fspath(path)
    relative = os.path.relpath(path)
    return path if relative.startswith(os.pardir) else relative


def plot_psnr(report: dict, path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = [("teacher_forced", "teacher-forced", "s--"), ("autoregressive", "autoregressive, inferred actions", "o-"),
              ("game_actions", "autoregressive, true game actions", "^-"),
              ("random_actions", "autoregressive, random actions", "x:"), ("copy_last_frame", "copy last frame", "k-")]
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for key, label, style in styles:
        values = report.get(f"psnr_{key}_per_step")
        if values:
            ax.plot(np.arange(1, len(values) + 1), values, style, label=label)
    ax.axvline(report["controllability_t"], color="0.8", lw=0.8)
    ax.set_xlabel("generated frame (horizon step)")
    ax.set_ylabel("PSNR (dB, MSE pooled over clips)")
    ax.set_title(f"held-out {report['data']}: {report['clips']} clips; ΔtPSNR(t={report['controllability_t']}) "
                 f"= {report['controllability_gap']:.2f} dB", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_confusion(report: dict, path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = report["action_names"]
    tables = [("all held-out transitions", report["confusion"], report["action_nmi"]),
              ("transitions where the frame changed", report["confusion_changed"], report["action_nmi_changed"])]
    K = report["num_latent_actions"]
    fig, axes = plt.subplots(1, 2, figsize=(2 + 1.1 * K, 0.6 + 0.45 * len(names)), squeeze=False)
    for ax, (title, table, nmi) in zip(axes[0], tables):
        table = np.asarray(table)
        ax.imshow(table, cmap="Blues", aspect="auto")
        for (g, k), v in np.ndenumerate(table):
            ax.text(k, g, str(v), ha="center", va="center", fontsize=7,
                    color="white" if v > 0.6 * max(table.max(), 1) else "black")
        ax.set_xticks(range(K))
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(names, fontsize=8)
        ax.set_xlabel("latent code")
        ax.set_title(f"{title}\nNMI {nmi:.2f}", fontsize=9)
    axes[0][0].set_ylabel("true game action")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_rollout_gif(report: dict, path: str, examples: int = 4) -> str:
    """Per example clip: [context | true future] | [context | inferred-action rollout]
    (| [context | game-action rollout]), examples stacked vertically."""
    from wmfast.rollout.media import side_by_side, to_uint8, write_video

    from PIL import Image, ImageDraw

    from wmfast.rollout.media import upscale

    ctx, truth, gen, game = report["_context"], report["_truth"], report["_rollout"], report.get("_game_rollout")
    panels = [truth, gen] + ([game] if game is not None else [])
    titles = ["true", "inferred actions", "game actions"][:len(panels)]
    rows = []
    for i in range(min(examples, ctx.shape[0])):
        rows.append(side_by_side(*(upscale(to_uint8(torch.cat([ctx[i], x[i]])), 4) for x in panels), gap=8))
    video = np.concatenate(rows, axis=1)                                          # [T, rows*H, W, 3]
    width = (video.shape[2] - 8 * (len(panels) - 1)) // len(panels)
    header = Image.new("RGB", (video.shape[2], 14), "white")
    for j, title in enumerate(titles):
        ImageDraw.Draw(header).text((j * (width + 8) + 2, 1), title, fill=(0, 0, 0))
    header = np.broadcast_to(np.asarray(header), (video.shape[0], 14, video.shape[2], 3))
    return write_video(np.concatenate([header, video], axis=1), path, fps=4, scale=1)


def write_controls(context, generated, labels, png_path: str, gif_path: str, scale: int = 3):
    """context [C, 3, S, S], generated [K, H, 3, S, S] -> a PNG sheet (row k: the context then action k
    repeated) and a GIF (all actions side by side, playing), each labelled."""
    from PIL import Image, ImageDraw

    from wmfast.rollout.media import to_uint8, upscale, write_video

    K, H = generated.shape[:2]
    ctx = to_uint8(context)                                                       # [C, S, S, 3]
    gen = to_uint8(generated)                                                     # [K, H, S, S, 3]
    S = ctx.shape[1] * scale
    label_w, gap = 112, 2

    def pad(img):                                                                 # white frame border
        return np.pad(upscale(img[None], scale)[0], ((gap, gap), (gap, gap), (0, 0)), constant_values=255)

    rows = []
    for k in range(K):
        tiles = [pad(f) for f in ctx] + [np.full((S + 2 * gap, 4 * gap, 3), 160, np.uint8)] + [pad(f) for f in gen[k]]
        row = np.concatenate(tiles, axis=1)
        canvas = Image.fromarray(np.concatenate([np.full((row.shape[0], label_w, 3), 255, np.uint8), row], 1))
        ImageDraw.Draw(canvas).text((4, row.shape[0] // 2 - 6), labels[k], fill=(0, 0, 0))
        rows.append(np.asarray(canvas))
    header = Image.new("RGB", (rows[0].shape[1], 14), "white")
    ImageDraw.Draw(header).text((label_w + 2, 1), f"{len(ctx)} context frames | each latent action repeated "
                                                   f"for {H} frames", fill=(0, 0, 0))
    os.makedirs(os.path.dirname(os.path.abspath(png_path)), exist_ok=True)
    Image.fromarray(np.concatenate([np.asarray(header)] + rows, 0)).save(png_path)

    cols = min(K, 8)
    frames = []
    for t in range(len(ctx) + H):
        tiles = []
        for k in range(K):
            img = ctx[t] if t < len(ctx) else gen[k, t - len(ctx)]
            tile = Image.fromarray(np.concatenate([np.full((12, S + 2 * gap, 3), 255, np.uint8), pad(img)], 0))
            ImageDraw.Draw(tile).text((2, 0), labels[k].replace("code ", ""), fill=(0, 0, 0))
            tiles.append(np.asarray(tile))
        tiles += [np.full_like(tiles[0], 255)] * (-K % cols)
        grid = np.concatenate([np.concatenate(tiles[r:r + cols], 1) for r in range(0, len(tiles), cols)], 0)
        frames.append(grid)
    write_video(np.stack(frames), gif_path, fps=3, scale=1)
    return png_path, gif_path


def numbers_only(report: dict) -> dict:
    """The report without tensors (what goes into JSON)."""
    return {k: v for k, v in report.items() if not k.startswith("_")}


def write_json(report: dict, path: str) -> str:
    from wmfast.config import save_json

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_json(_jsonable(numbers_only(report)), path)
    return path


def _jsonable(x):
    if isinstance(x, dict):   # `_`-keys hold tensors and frames, at any depth
        return {str(k): _jsonable(v) for k, v in x.items() if not str(k).startswith("_")}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, torch.Tensor):
        return x.tolist()
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def format_table(report: dict) -> str:
    """A compact text table: action agreement, codes, and PSNR per horizon step beside copy-last-frame."""
    f = lambda v: "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.2f}"  # noqa: E731
    lines = []
    if "action_nmi" in report:
        lines.append(f"action NMI     all {f(report['action_nmi'])}   changed {f(report['action_nmi_changed'])}"
                     f"   (purity {f(report['action_purity'])} / {f(report['action_purity_changed'])}; "
                     f"{report['transitions']} transitions, {report['changed_transitions']} changed)")
    if "codebook_usage" in report:
        lines.append(f"latent codes   {report['codebook_usage']:.0f}% of {report['num_latent_actions']} used, "
                     f"perplexity {f(report['perplexity'])}")
    lines.append(f"tokenizer      {f(report['tokenizer_psnr'])} dB")
    H = report["horizon"]
    head = "PSNR dB (pooled)".ljust(34) + "".join(f"{f'+{i + 1}':>7}" for i in range(H)) + "    mean"
    lines += [head, "-" * len(head)]
    for key, label in (("teacher_forced", "teacher-forced"), ("autoregressive", "autoregressive, inferred actions"),
                       ("game_actions", "autoregressive, true game actions"),
                       ("random_actions", "autoregressive, random actions"), ("copy_last_frame", "copy last frame")):
        if f"psnr_{key}_per_step" in report:
            lines.append(label.ljust(34) + "".join(f"{v:7.2f}" for v in report[f"psnr_{key}_per_step"])
                         + f"{report[f'psnr_{key}']:8.2f}")
    lines.append(f"controllability ΔtPSNR(t={report['controllability_t']}) {f(report['controllability_gap'])} dB "
                 f"(inferred {f(report['psnr_inferred_t'])} vs random {f(report['psnr_random_t'])})")
    if "footage" in report:
        lines.append("re-encoded footage (dB)".ljust(22) + "".join(f"{k:>10}" for k in (
            "vs clean", "tokenizer", "drop", "teacher", "inferred", "game", "copy-last")))
        for variant, row in report["footage"].items():
            lines.append(variant.ljust(22) + "".join(f"{f(row.get(k)):>10}" for k in (
                "psnr_vs_clean", "tokenizer_psnr", "tokenizer_drop_db", "psnr_teacher_forced", "psnr_autoregressive",
                "psnr_game_actions", "psnr_copy_last_frame")))
    if "counterfactual" in report:
        from wmfast.eval.counterfactual import format_counterfactual

        lines.append(format_counterfactual(report["counterfactual"]))
    for note in report.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)
