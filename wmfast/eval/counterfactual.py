"""The counterfactual check: from the same emulator state, does the World's paddle do what the real
game's does when the player holds each move?

    report = counterfactual_check(world, ds, episodes, starts=16, horizon=8)

From held-out frames t of an Atari recording (wmfast.data.atari, version 2), the emulator is put in
frame t's state (emulator_at: the episode's actions replayed) and each move class's action
(Pong: stay / up / down, Breakout: stay / right / left) is held for `horizon` steps, in the real game
(the state restored before each class) and in the World, which is given frames t-C+1..t and the same
game action ids (World(actions="game") plays them through the run's action map). The objects are read
from both with wmfast.eval.atari_objects.detect_objects. Per class and step k = 1..horizon:
  - paddle direction agreement: the sign of the paddle's displacement from frame t (under DEADZONE
    pixels it counts as still), World against game, over the starts where the game shows the
    paddle (a World frame without one disagrees);
  - paddle displacement error in pixels, |d_world - d_game|, and the mean displacement of each;
  - the ball: position error where both show one, the share of the game's balls the World shows
    (kept) and the share of ball-less game frames where the World shows one anyway (false);
  - frame PSNR (MSE pooled over the starts, pixels in [-1, 1]);
each beside copy-last-frame (frame t held: it never moves the paddle).
"""
import os

import numpy as np
import torch

from wmfast.errors import WmfastError

DEADZONE = 0.5            # pixels at 32 px (scaled with the frame size); a paddle step is 1-1.6 px
SUMMARY_STEPS = 4         # the direction target is over k = 1..4
CLASS_NAMES = {"pong": ("stay", "up", "down"), "breakout": ("stay", "right", "left")}


# -- move classes --------------------------------------------------------------------------------
def move_class(action_name: str) -> int:
    """An ALE action name -> 0 stay (NOOP, FIRE), 1 up / right, 2 down / left. In ALE's Pong,
    RIGHT moves the paddle up and LEFT down."""
    if "UP" in action_name or "RIGHT" in action_name:
        return 1
    if "DOWN" in action_name or "LEFT" in action_name:
        return 2
    return 0


def move_classes(action_names) -> np.ndarray:
    """ALE action id -> move class."""
    return np.array([move_class(n) for n in action_names])


def class_actions(action_names) -> list:
    """The action id that stands for each move class: the first without FIRE (NOOP, RIGHT, LEFT)."""
    classes = move_classes(action_names)
    chosen = []
    for c in range(3):
        ids = [i for i, n in enumerate(action_names) if classes[i] == c]
        if not ids:
            raise WmfastError(f"the game's actions {list(action_names)} have no move of class {c}")
        chosen.append(next((i for i in ids if "FIRE" not in action_names[i]), ids[0]))
    return chosen


# -- the real game -------------------------------------------------------------------------------
def hold_each_action(ale, actions, horizon: int, frameskip: int, size) -> np.ndarray:
    """From the emulator's current state, hold each action for `horizon` steps, restoring the state
    before each -> observed frames uint8 [len(actions), horizon, H, W, 3]. The emulator is left in
    the state it was given."""
    from wmfast.data.atari import ale_step, observed_frame

    state = ale.cloneState(include_rng=True)
    out = []
    for a in actions:
        ale.restoreState(state)
        out.append(np.stack([observed_frame(ale_step(ale, a, frameskip)[1], size) for _ in range(horizon)]))
    ale.restoreState(state)
    return np.stack(out)


def choose_starts(ds, episodes, context: int, count: int, seed: int = 0) -> list:
    """`count` frames t of the given episodes with `context` frames of their own episode up to t."""
    candidates = [t for e in episodes for t in range(ds.episodes[e][0] + context - 1, ds.episodes[e][1])]
    if not candidates:
        raise WmfastError(f"{ds.source}: no held-out frame has {context} context frames in its episode")
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(candidates, size=min(count, len(candidates)), replace=False).tolist())


# -- scoring -------------------------------------------------------------------------------------
def direction(displacement, deadzone: float) -> np.ndarray:
    """-1 / 0 / +1 per displacement (nan where there is none)."""
    d = np.asarray(displacement, np.float64)
    return np.where(np.isnan(d), np.nan, np.sign(d) * (np.abs(d) >= deadzone))


def _mean(x, keep) -> float:
    return float(np.mean(x[keep])) if keep.any() else float("nan")


def score_against_game(start_u8, game_u8, world_u8, game_name: str) -> dict:
    """start_u8 [N, H, W, 3] (frame t), game_u8 / world_u8 [N, K, H, W, 3] (frames t+1..t+K) ->
    per step k: paddle direction agreement and displacement error, mean displacements, ball error,
    kept and false balls, PSNR. Lists of length K; nan where nothing could be scored."""
    from wmfast.eval.atari_objects import detect_objects

    N, K, H = game_u8.shape[:3]
    deadzone = DEADZONE * H / 32
    start = detect_objects(start_u8, game_name)
    game = detect_objects(game_u8.reshape(N * K, *game_u8.shape[2:]), game_name)
    world = detect_objects(world_u8.reshape(N * K, *world_u8.shape[2:]), game_name)
    paddle0 = start["paddle"][:, None]
    d_game = game["paddle"].reshape(N, K) - paddle0
    d_world = world["paddle"].reshape(N, K) - paddle0
    seen = ~np.isnan(d_game)
    agree = direction(d_world, deadzone) == direction(d_game, deadzone)       # nan (no paddle) disagrees
    ball_game, ball_world = game["balls"].reshape(N, K), world["balls"].reshape(N, K)
    ball_err = np.linalg.norm(world["ball_xy"] - game["ball_xy"], axis=-1).reshape(N, K)
    mse = ((world_u8.astype(np.float64) - game_u8.astype(np.float64)) / 127.5) ** 2
    mse = np.maximum(mse.reshape(N, K, -1).mean((0, 2)), 1e-10)
    psnr = 10 * np.log10(4.0 / mse)       # the evaluator's PSNR of the pooled MSE (pixels span 2)
    out = {k: [] for k in ("paddle_direction_agreement", "paddle_displacement_error_px",
                           "paddle_displacement_px", "game_paddle_displacement_px", "ball_error_px", "ball_kept",
                           "false_ball", "psnr")}
    for k in range(K):
        both = seen[:, k] & ~np.isnan(d_world[:, k])
        out["paddle_direction_agreement"].append(_mean(agree[:, k].astype(float), seen[:, k]))
        out["paddle_displacement_error_px"].append(_mean(np.abs(d_world[:, k] - d_game[:, k]), both))
        out["paddle_displacement_px"].append(_mean(d_world[:, k], both))
        out["game_paddle_displacement_px"].append(_mean(d_game[:, k], seen[:, k]))
        out["ball_error_px"].append(_mean(ball_err[:, k], ball_game[:, k] & ball_world[:, k]))
        out["ball_kept"].append(_mean(ball_world[:, k].astype(float), ball_game[:, k]))
        out["false_ball"].append(_mean(ball_world[:, k].astype(float), ~ball_game[:, k]))
        out["psnr"].append(float(psnr[k]))
    out["paddle_scored"] = int(seen.sum())
    return out


def _nanmean(values) -> float:
    x = np.asarray(values, np.float64)
    return float(np.mean(x[~np.isnan(x)])) if (~np.isnan(x)).any() else float("nan")


def summarize(classes: dict, steps: int) -> dict:
    """Direction agreement over the first `steps` steps and the ball kept over all steps, pooled over
    the classes (each class has the same starts, so a plain mean pools them), for the World and
    copy-last-frame."""
    out = {}
    for side in ("world", "copy_last"):
        rows = [c[side] for c in classes.values()]
        moves = [c[side] for name, c in classes.items() if name != "stay"]
        out[side] = {f"paddle_direction_agreement_k1_{steps}":
                     _nanmean([r["paddle_direction_agreement"][:steps] for r in rows]),
                     f"moves_paddle_direction_agreement_k1_{steps}":
                     _nanmean([r["paddle_direction_agreement"][:steps] for r in moves]),
                     "ball_kept": _nanmean([r["ball_kept"] for r in rows]),
                     "false_ball": _nanmean([r["false_ball"] for r in rows]),
                     "psnr_mean": float(np.mean([r["psnr"] for r in rows]))}
    return out


# -- the check -----------------------------------------------------------------------------------
@torch.no_grad()
def counterfactual_check(world, ds, episodes, starts: int = 16, horizon: int = 8, seed: int = 0,
                         progress: bool = False) -> dict:
    """The check on `starts` frames of `episodes` (ids into ds.episodes) of an Atari recording.

    world: anything with the World protocol driven by game action ids (reset(frames [B, C, 3, S, S]),
    step(ids [B]) -> frames [B, 3, S, S], attributes C and frame_size), e.g. World(model, actions="game").
    Returns the report; `_game`, `_world` and `_start` hold the frames (uint8 [starts, classes,
    horizon, S, S, 3] and [starts, S, S, 3]) for pictures."""
    from tqdm import tqdm

    from wmfast.data.atari import emulator_at
    from wmfast.data.frames import to_model_frames
    from wmfast.eval.atari_objects import game_spec
    from wmfast.rollout.world import frames_to_uint8

    meta = ds.meta or {}
    game_name = meta.get("game")
    game_spec(game_name)                                  # a detector for this game, or a one-line error
    if horizon < 1 or starts < 1:
        raise WmfastError(f"starts and horizon must be >= 1, got {starts} and {horizon}")
    names = CLASS_NAMES[game_name]
    actions = class_actions(ds.action_names)
    C, S, frameskip = int(world.C), int(world.frame_size), int(meta["frameskip"])
    ts = choose_starts(ds, episodes, C, starts, seed)
    game = []
    for t in tqdm(ts, desc="counterfactual: emulator", unit="start", disable=not progress):
        ale, acts = emulator_at(ds, t)
        game.append(hold_each_action(ale, [acts[a] for a in actions], horizon, frameskip, meta.get("size")))
    game = np.stack(game)                                                     # [N, M, K, h, w, 3] as recorded
    N, M = len(ts), len(actions)
    # The game's frames take the context's path to the World's frame size.
    game = frames_to_uint8(to_model_frames(game.reshape(-1, *game.shape[3:]), S)).numpy()
    game = game.reshape(N, M, horizon, S, S, 3)
    context = torch.stack([to_model_frames(ds.frames[t - C + 1:t + 1], S) for t in ts])    # [N, C, 3, S, S]
    context = context.repeat_interleave(M, 0)                                              # [N*M, C, 3, S, S]
    ids = torch.tensor(actions).repeat(N)                                                 # [N*M]
    world.reset(context)
    made = torch.stack([world.step(ids) for _ in tqdm(range(horizon), desc="counterfactual: World", unit="frame",
                                                      disable=not progress)], 1)             # [N*M, K, 3, S, S]
    made = frames_to_uint8(made).cpu().numpy().reshape(N, M, horizon, S, S, 3)
    start = frames_to_uint8(context[::M, -1]).cpu().numpy()                                # [N, S, S, 3]
    held = np.broadcast_to(start[:, None], (N, horizon, S, S, 3))
    classes = {}
    for m, name in enumerate(names):
        classes[name] = {"action": ds.action_names[actions[m]], "action_id": int(actions[m]),
                         "world": score_against_game(start, game[:, m], made[:, m], game_name),
                         "copy_last": score_against_game(start, game[:, m], held, game_name)}
    return {"game": game_name, "starts": ts, "horizon": horizon, "deadzone_px": DEADZONE * S / 32,
            "frame_size": S, "classes": classes, "summary": summarize(classes, min(SUMMARY_STEPS, horizon)),
            "_start": start, "_game": game, "_world": made}


def write_counterfactual_sheet(report: dict, path: str, examples: int = 2, scale: int = 3) -> str:
    """One row per move class (and start): frame t | the game's frames t+1.. | the World's."""
    from PIL import Image, ImageDraw

    from wmfast.rollout.media import upscale

    start, game, made = report["_start"], report["_game"], report["_world"]
    names = list(report["classes"])
    gap, label_w = 2, 120

    def pad(img):
        return np.pad(upscale(img[None], scale)[0], ((gap, gap), (gap, gap), (0, 0)), constant_values=255)

    def divider(height):
        return np.full((height, 4 * gap, 3), 160, np.uint8)

    rows = []
    for i in range(min(examples, len(start))):
        for m, name in enumerate(names):
            first = pad(start[i])
            parts = [first, divider(first.shape[0])] + [pad(f) for f in game[i, m]] + [divider(first.shape[0])] + \
                    [pad(f) for f in made[i, m]]
            row = np.concatenate(parts, 1)
            canvas = Image.fromarray(np.concatenate([np.full((row.shape[0], label_w, 3), 255, np.uint8), row], 1))
            label = f"t={report['starts'][i]} {name} ({report['classes'][name]['action']})"
            ImageDraw.Draw(canvas).text((4, row.shape[0] // 2 - 6), label, fill=(0, 0, 0))
            rows.append(np.asarray(canvas))
    header = Image.new("RGB", (rows[0].shape[1], 14), "white")
    tile = (rows[0].shape[1] - label_w) // (2 * report["horizon"] + 1)
    ImageDraw.Draw(header).text((label_w + 2, 1), "frame t", fill=(0, 0, 0))
    ImageDraw.Draw(header).text((label_w + tile + 10, 1), f"game: the move held {report['horizon']} steps",
                                fill=(0, 0, 0))
    ImageDraw.Draw(header).text((label_w + (report["horizon"] + 1) * tile + 18, 1), "World: the same game actions",
                                fill=(0, 0, 0))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(np.concatenate([np.asarray(header)] + rows, 0)).save(path)
    return path


def format_counterfactual(report: dict) -> str:
    """Per class: direction agreement per step, World / copy-last, then the summary."""
    f = lambda v: "  n/a" if v is None or not np.isfinite(v) else f"{v:5.2f}"  # noqa: E731
    K = report["horizon"]
    head = "counterfactual (vs the emulator)".ljust(34) + "".join(f"{f'+{k + 1}':>6}" for k in range(K))
    lines = [head, "-" * len(head)]
    for name, c in report["classes"].items():
        for key, label in (("paddle_direction_agreement", "direction"), ("psnr", "PSNR dB")):
            for side, tag in (("world", "World"), ("copy_last", "copy-last")):
                lines.append(f"{name} ({c['action']}) {label}, {tag}".ljust(34)
                             + "".join(f" {f(v)}" for v in c[side][key]))
    s = report["summary"]
    steps = min(SUMMARY_STEPS, K)
    lines.append(f"paddle direction agreement k=1..{steps}: World "
                 f"{s['world'][f'paddle_direction_agreement_k1_{steps}']:.3f} (moves only "
                 f"{s['world'][f'moves_paddle_direction_agreement_k1_{steps}']:.3f}), copy-last "
                 f"{s['copy_last'][f'paddle_direction_agreement_k1_{steps}']:.3f}; ball kept {s['world']['ball_kept']:.3f}, "
                 f"false ball {s['world']['false_ball']:.3f}")
    return "\n".join(lines)
