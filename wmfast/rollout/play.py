"""What `wmfast rollout` and `wmfast play` run: a rollout written as a GIF/MP4 (beside the true
frames when the data has them), and an interactive terminal loop (keys -> actions -> frames)."""
import os
import sys
import time

import numpy as np
import torch

from wmfast.errors import WmfastError
from wmfast.rollout.media import side_by_side, write_video
from wmfast.rollout.world import World, frames_to_uint8


def episode_frames(data, episode: int, count: int, frame_size: int):
    """Up to `count` frames from the start of an episode -> float [1, T, 3, S, S] (T >= 1)."""
    from wmfast.data import DEFAULT_GAME, ClipSampler, load_dataset

    ds = load_dataset(data or f"game:{DEFAULT_GAME}")
    if not 0 <= episode < ds.n_episodes:
        raise WmfastError(f"episode {episode} out of range [0, {ds.n_episodes}) in {ds.source}")
    s, e = ds.episodes[episode]
    length = max(1, min(count, e - s))
    return ClipSampler(ds, clip_len=length, frame_size=frame_size, episodes=[episode]).episode_clip(episode, 0)[0]


def parse_actions(text: str, num_actions: int) -> list:
    """'0,1,1,3' -> [0, 1, 1, 3] latent action ids (each checked against the model's action count)."""
    if "" in text.replace(" ", "").split(","):
        raise WmfastError(f"--actions has an empty item in {text!r}; write ids separated by single commas, e.g. 0,1,1,3")
    try:
        ids = [int(a) for a in text.replace(" ", "").split(",")]
    except ValueError:
        raise WmfastError(f"--actions must be comma-separated integers or 'infer', got {text!r}") from None
    bad = [a for a in ids if not 0 <= a < num_actions]
    if not ids or bad:
        raise WmfastError(f"--actions must be ids in [0, {num_actions}), got {text!r}")
    return ids


ACTION_SPACES = ("auto", "latent", "game")


def action_space_of(text: str, action_space: str = "auto") -> str:
    """Which ids --actions holds: 'game' (names like UP,LEFT, or --action-space game) or 'latent'
    (numbers alone, the default: latent action ids)."""
    if action_space not in ACTION_SPACES:
        raise WmfastError(f"--action-space must be one of {ACTION_SPACES}, got {action_space!r}")
    if action_space != "auto":
        return action_space
    tokens = [t.strip() for t in text.split(",") if t.strip()]
    return "game" if any(not t.lstrip("-").isdigit() for t in tokens) else "latent"


def parse_game_actions(text: str, run) -> tuple:
    """'UP,UP,LEFT' (names, case-insensitive, or game ids) -> (game action ids, action names), read
    through RUN/action_map.json (written by `wmfast train action-map`)."""
    from wmfast.checkpoint import load_action_map

    amap = load_action_map(run)
    return amap.parse(text), amap.action_names


def render_rollout(run, actions: str, out, steps: int = 10, mode: str = "compat", data=None, episode: int = 0,
                   backend: str = "eager", device="auto", temperature: float = 0.0, seed: int = None,
                   fps: int = 4, action_space: str = "auto") -> dict:
    """Roll a run out from an episode's first C frames and write context + generated frames to out
    (GIF or MP4), beside the episode's true frames when it has them. actions: latent ids '0,1,1,3',
    game actions 'UP,UP,LEFT' (names, or ids with action_space='game', through the run's
    action_map.json), or 'infer' (the latent actions the model infers from the true frames)."""
    from wmfast.run_data import resolve_run_data
    from wmfast.validate import check_output_path

    check_output_path(out, (".gif", ".mp4"), "--out")
    data = resolve_run_data(run, data)   # default: the data the run was trained on
    space = "latent" if actions == "infer" else action_space_of(actions, action_space)
    wanted, names = (None, None)
    if space == "game":
        wanted, names = parse_game_actions(actions, run)
    world = World.load(run, device=device, backend=backend, mode=mode, steps=steps, temperature=temperature,
                       seed=seed, actions=space)
    C = world.C
    if space == "latent" and actions != "infer":
        wanted = parse_actions(actions, world.num_actions)
    n = 64 if wanted is None else len(wanted)
    clip = episode_frames(data, episode, C + n, world.frame_size)                       # [1, T, 3, S, S]
    context, truth = clip[:, :C], clip[:, C:]
    if wanted is None:
        if truth.shape[1] == 0:
            raise WmfastError("--actions infer needs an episode longer than the context")
        ids = world.model.lam.indices(world.model.lam.encode(clip))[:, C - 1:]           # [1, N]
    else:
        ids = torch.tensor([wanted])
    t0 = time.perf_counter()
    generated = world.reset(context).rollout(ids, progress=True)                        # [1, N, 3, S, S]
    seconds = time.perf_counter() - t0
    video = frames_to_uint8(torch.cat([context, generated.cpu()], 1))[0].numpy()
    if truth.shape[1]:
        real = frames_to_uint8(torch.cat([context, truth], 1))[0].numpy()
        k = min(len(real), len(video))
        video = side_by_side(real[:k], video[:k])
    write_video(video, out, fps=fps)
    result = {"out": os.fspath(out), "frames": int(ids.shape[1]), "actions": ids[0].tolist(), "action_space": space,
              "side_by_side": bool(truth.shape[1]), "ms_per_frame": 1e3 * seconds / ids.shape[1], "world": repr(world)}
    if names is not None:
        result["action_names"] = [names[i] for i in result["actions"]]
    return result


# -- play ------------------------------------------------------------------------------------
def ansi_frame(frame_u8: np.ndarray, width: int = 64) -> str:
    """uint8 [H, W, 3] -> terminal art: one '▀' per two pixel rows (foreground top, background bottom)."""
    step = max(1, frame_u8.shape[1] // width)
    img = frame_u8[::step, ::step]
    if img.shape[0] % 2:
        img = np.concatenate([img, img[-1:]], 0)
    lines = []
    for top, bottom in zip(img[0::2], img[1::2]):
        cells = (f"\x1b[38;2;{t[0]};{t[1]};{t[2]}m\x1b[48;2;{b[0]};{b[1]};{b[2]}m\u2580" for t, b in zip(top, bottom))
        lines.append("".join(cells) + "\x1b[0m")
    return "\n".join(lines)


def save_png(frame_u8: np.ndarray, path, scale: int = 4):
    """Write one frame atomically (a viewer watching the file never sees half of it)."""
    import imageio.v2 as imageio

    tmp = f"{path}.tmp.png"
    imageio.imwrite(tmp, frame_u8.repeat(scale, 0).repeat(scale, 1))
    os.replace(tmp, path)


def read_keys(stream):
    """Yield one key at a time; in a terminal without waiting for Enter. Ends on EOF."""
    if stream.isatty():
        import termios
        import tty

        fd = stream.fileno()
        old = termios.tcgetattr(fd)
        try:
            tty.setcbreak(fd)
            while True:
                key = os.read(fd, 1).decode(errors="ignore")
                if not key or key == "\x04":
                    return
                yield key
        finally:
            termios.tcsetattr(fd, termios.TCSADRAIN, old)
    else:
        while True:
            key = stream.read(1)
            if not key:
                return
            yield key


PLAY_HELP = "keys: 0-9 = action id, r = reset, q = quit"


def play_help(world) -> str:
    """The key help; with game actions (action_space='game') it names each key's game action."""
    if world.action_map is None:
        return PLAY_HELP
    keys = " ".join(f"{i}={n}" for i, n in enumerate(world.action_map.action_names[:10]))
    return f"keys: {keys} (game actions), r = reset, q = quit"


def play(run, out=None, ansi: bool = None, data=None, episode: int = 0, mode: str = "fast", steps: int = 4,
         backend: str = "eager", device="auto", seed: int = None, stdin=None, stdout=None,
         action_space: str = "latent") -> dict:
    """Keys -> actions -> frames. Each frame goes to `out` (PNG: the latest frame; GIF/MP4: the
    whole session, written on exit) and/or to the terminal as ANSI half-block art (default when
    no out is given), with the frame rate. Exits on 'q' or end of input. Digit keys are latent
    action ids, or with action_space='game' the game's own action ids (through RUN/action_map.json)."""
    if action_space not in ("latent", "game"):
        raise WmfastError(f"--action-space for play must be 'latent' or 'game', got {action_space!r}")
    from wmfast.run_data import resolve_run_data
    from wmfast.validate import check_output_path

    check_output_path(out, (".png", ".gif", ".mp4"), "--out")
    data = resolve_run_data(run, data)   # default: the data the run was trained on
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    ansi = (out is None) if ansi is None else ansi
    world = World.load(run, device=device, mode=mode, steps=steps, backend=backend, seed=seed, actions=action_space)
    keys_help = play_help(world)
    context = episode_frames(data, episode, world.C, world.frame_size)
    world.reset(context)
    shown = [frames_to_uint8(context[0, -1]).numpy()]
    live_png = out is not None and str(out).lower().endswith(".png")

    def show(frame, note):
        if live_png:
            save_png(frame, out)
        if ansi:
            stdout.write("\x1b[H\x1b[2J" + ansi_frame(frame) + "\n")
        stdout.write(note + "\n")
        stdout.flush()

    show(shown[0], f"{world!r}\n{keys_help}")
    times = []
    for key in read_keys(stdin):
        if key == "q":
            break
        if key == "r":
            world.reset(context)
            shown.append(shown[0])
            show(shown[0], "reset")
            continue
        if not key.isdigit() or int(key) >= world.num_actions:
            if not key.isspace():
                stdout.write(f"ignored {key!r} ({keys_help}; this model has {world.num_actions} actions)\n")
            continue
        t0 = time.perf_counter()
        frame = world.step(torch.tensor([int(key)]), as_uint8=True)[0].cpu().numpy()
        times.append(time.perf_counter() - t0)
        shown.append(frame)
        label = f"{key} {world.action_map.action_names[int(key)]}" if world.action_map else key
        show(frame, f"action {label}  frame {len(times)}  {1 / times[-1]:.1f} fps "
                    f"(mean {len(times) / sum(times):.1f} fps)")
    if out is not None and not live_png:
        write_video(np.stack(shown), out, fps=4)
    fps = len(times) / sum(times) if times else 0.0
    stdout.write(f"played {len(times)} frames, {fps:.1f} fps\n")
    return {"frames": len(times), "fps": fps, "out": None if out is None else os.fspath(out)}
