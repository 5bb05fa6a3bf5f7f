"""Atari episodes with the true action per step, through the Arcade Learning Environment (ale-py).

The ROMs ship inside the ale-py wheel, so nothing is downloaded. One step = one policy action
repeated for `frameskip` (default 4) emulator frames; the frame stored at t is what the player saw
before step t: the pixel-wise max of the step's last two emulator frames (Atari sprites flicker
between frames; DQN, IRIS and DIAMOND observe the same max). The action stored at t is the one that
leads to the frame at t+1 (-1 on each episode's last frame). Beside the frames: the reward of each
step, `terminals` (the frame where the game ended, as opposed to an episode cut at max_steps) and
`ram` (the console's 128 bytes at each frame: object positions to check a detector against).

Emulator sticky actions (`sticky`, ALE's repeat_action_probability) default to 0 so that the
stored action is the action executed. The default data policy draws every action independently
(`repeat` 0): Atari paddles lag and coast, so with held actions past motion predicts the next move
and the action adds little (experiments/atari_identifiability.py: on Pong the action adds R^2 0.41
over past motion and position with i.i.d. actions, 0.20 with repeat 0.5 and 0.26 with the tracker;
Breakout 0.41 against 0.21).

Recording is deterministic: from the file's seed, `emulator_at(ds, t)` replays an episode's actions
in a fresh emulator and returns it in the state of frame t (the counterfactual checks start there).
"""
import difflib
import re

import numpy as np
from tqdm import tqdm

from wmfast.data.frames import check_size, resize_uint8
from wmfast.errors import WmfastError

ATARI_VERSION = 2  # bump when recording changes: part of the dataset cache key (2: max-pooled frames, RAM, i.i.d.)
NATIVE_SIZE = (210, 160)
POLICIES = ("random", "tracker")


def _ale():
    try:
        import ale_py
    except ImportError:
        raise WmfastError("Atari data needs ale-py: pip install 'wmfast[atari]'") from None
    return ale_py


def rom_ids() -> list:
    return sorted(_ale().roms.get_all_rom_ids())


def rom_id(game: str) -> str:
    """'Pong', 'pong', 'ALE/Pong-v5', 'SpaceInvaders' -> the ALE ROM id ('pong', 'space_invaders')."""
    name = re.sub(r"^ALE/|-v\d+$", "", str(game).strip())
    name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower().replace("-", "_")
    ids = rom_ids()
    if name in ids:
        return name
    if name.replace("_", "") in {i.replace("_", "") for i in ids}:
        return next(i for i in ids if i.replace("_", "") == name.replace("_", ""))
    close = difflib.get_close_matches(name, ids, n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; {len(ids)} games, e.g. {', '.join(ids[:5])}"
    raise WmfastError(f"unknown Atari game {game!r}{hint}")


# Which ALE action a player's direction key means, where the name says otherwise: in ALE's Pong the
# paddle moves vertically, RIGHT taking it up and LEFT down.
DIRECTION_ACTIONS = {"pong": {"UP": "RIGHT", "DOWN": "LEFT"}}


def key_actions(action_names, game: str = None) -> dict:
    """Direction / fire key names (UP, DOWN, LEFT, RIGHT, FIRE) -> the id of the game action each
    plays: the action of that name, or (Atari games whose names say otherwise) DIRECTION_ACTIONS'."""
    ids = {str(n).upper(): i for i, n in enumerate(action_names)}
    renamed = DIRECTION_ACTIONS.get(game, {})
    if renamed:
        return {key: ids[name] for key, name in {**renamed, "FIRE": "FIRE"}.items() if name in ids}
    return {key: ids[key] for key in ("UP", "DOWN", "LEFT", "RIGHT", "FIRE") if key in ids}


def default_policy(rom: str) -> str:
    return "random"


def make_ale(rom: str, seed: int = 0, sticky: float = 0.0):
    """A fresh ALEInterface running `rom`, seeded (the seed drives ALE's sticky-action draws)."""
    ale_py = _ale()
    if not 0.0 <= sticky < 1.0:
        raise WmfastError(f"sticky (repeat_action_probability) must be in [0, 1), got {sticky}")
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
    ale = ale_py.ALEInterface()
    ale.setInt("random_seed", int(seed) % (2 ** 31))
    ale.setFloat("repeat_action_probability", float(sticky))
    ale.setInt("frame_skip", 1)  # frame skipping is ours, so a step is exactly `frameskip` act() calls
    ale.loadROM(ale_py.roms.get_rom_path(rom))
    return ale


def ale_step(ale, action, frameskip: int) -> tuple:
    """Repeat an ALE action for `frameskip` frames (stopping at game over) -> (summed reward, the
    observed frame [210, 160, 3] uint8: the max of the last two emulator frames)."""
    reward, before, last = 0.0, None, None
    for _ in range(frameskip):
        reward += ale.act(action)
        before, last = last, ale.getScreenRGB()
        if ale.game_over():
            break
    return reward, last if before is None else np.maximum(before, last)


class RandomPolicy:
    """Uniform random actions that repeat the previous choice with probability `repeat`."""

    def __init__(self, n_actions: int, rng, repeat: float = 0.0):
        self.n, self.rng, self.repeat, self.prev = n_actions, rng, repeat, 0

    def __call__(self, screen: np.ndarray) -> int:
        if self.rng.random() >= self.repeat:
            self.prev = int(self.rng.integers(self.n))
        return self.prev


class PongTracker(RandomPolicy):
    """Pong: move the right (green) paddle toward the ball with noise; random presses 25% of the time.

    Reads the screen: the ball is the white pixel block inside the playfield, the player's paddle
    the green pixels in its column. In ALE's Pong, RIGHT moves the paddle up and LEFT down.
    """

    PLAYFIELD = slice(34, 194)
    BALL, PADDLE, PADDLE_COLS = (236, 236, 236), (92, 186, 92), slice(140, 144)
    NOOP, UP, DOWN = 0, 2, 3  # indices into Pong's minimal action set

    def __call__(self, screen: np.ndarray) -> int:
        if self.rng.random() < 0.25:
            return super().__call__(screen)
        field = screen[self.PLAYFIELD]
        # One channel tells each object apart inside the playfield (the walls and scores lie outside).
        ball_rows = np.nonzero((field[..., 0] == self.BALL[0]).any(-1))[0]
        paddle_rows = np.nonzero((field[:, self.PADDLE_COLS, 1] == self.PADDLE[1]).any(-1))[0]
        if len(ball_rows) == 0 or len(paddle_rows) == 0:  # between points
            return super().__call__(screen)
        gap = ball_rows.mean() - paddle_rows.mean() + self.rng.normal(0, 6)
        self.prev = self.NOOP if abs(gap) < 4 else (self.UP if gap < 0 else self.DOWN)
        return self.prev


def make_policy(kind: str, rom: str, n_actions: int, rng, repeat: float = 0.0):
    if kind not in POLICIES:
        raise WmfastError(f"unknown policy {kind!r}; choose from {', '.join(POLICIES)}")
    if kind == "tracker":
        if rom != "pong":
            raise WmfastError(f"the tracker policy plays Pong only (game {rom!r}); use --policy random")
        return PongTracker(n_actions, rng, repeat)
    return RandomPolicy(n_actions, rng, repeat)


def record_episode(ale, policy, frameskip: int, max_steps: int):
    """Play one episode from reset -> native frames [n+1, 210, 160, 3], actions [n+1], rewards [n+1],
    ram [n+1, 128] uint8 and whether the game ended (rather than max_steps)."""
    actions_set = ale.getMinimalActionSet()
    ale.reset_game()
    frames, actions, rewards, ram = [ale.getScreenRGB()], [], [], [ale.getRAM().copy()]
    while len(actions) < max_steps and not ale.game_over():
        a = policy(frames[-1])
        reward, frame = ale_step(ale, actions_set[a], frameskip)
        rewards.append(reward)
        actions.append(a)
        frames.append(frame)
        ram.append(ale.getRAM().copy())
    return (np.stack(frames), np.array(actions + [-1], np.int64), np.array(rewards + [0.0], np.float32),
            np.stack(ram), bool(ale.game_over()))


def observed_frame(frame, size) -> np.ndarray:
    """An emulator frame [210, 160, 3] as a recording of `size` (its metadata's: an int or the native
    [210, 160]) stores it."""
    return frame if size is None or list(np.atleast_1d(size)) == list(NATIVE_SIZE) else \
        resize_uint8(frame[None], int(size))[0]


def emulator_at(ds, t: int):
    """A fresh emulator in the state of frame t of an Atari dataset recorded by wmfast (version 2): its
    episode's recorded actions replayed from reset. -> (ALEInterface, its minimal action set). Checks
    that the replay reproduces the recorded frame t."""
    meta = ds.meta
    if meta.get("source") != "atari" or int(meta.get("atari_version", 1)) < 2:
        raise WmfastError(f"{ds.source}: not an Atari recording of wmfast's version 2 (re-record it with "
                          f"`wmfast data atari`) to restore its emulator states")
    start = next((s for s, e in ds.episodes if s <= t < e), None)
    if start is None:
        raise WmfastError(f"frame {t} is outside the dataset's {len(ds)} frames")
    ale = make_ale(meta["game"], int(meta["seed"]), float(meta["sticky"]))
    acts = ale.getMinimalActionSet()
    ale.reset_game()
    frame = ale.getScreenRGB()
    for i in range(start, t):
        _, frame = ale_step(ale, acts[int(ds.actions[i])], int(meta["frameskip"]))
    if not np.array_equal(observed_frame(frame, meta.get("size")), ds.frames[t]):
        raise WmfastError(f"{ds.source}: replaying the episode's actions did not reproduce frame {t}")
    return ale, acts


def generate_atari_dataset(game: str, episodes: int, size: int = 64, frameskip: int = 4, policy: str = None,
                           seed: int = 0, max_steps: int = 500, sticky: float = 0.0, repeat: float = 0.0,
                           out=None, progress: bool = True) -> str:
    """Record `episodes` ALE episodes of at most `max_steps` steps and write a wmfast dataset.

    size: square frame size (area-resized), or 0 to keep the native 210x160 screen.
    policy: 'random' (the default: every action drawn anew with probability 1 - repeat) or 'tracker'
    (Pong only: follows the ball, which makes the action a function of the frame).
    Deterministic for a seed. Returns the path written.
    """
    from wmfast.data.dataset import write_dataset

    rom = rom_id(game)
    size = check_size(size, allow_native=True)
    if isinstance(frameskip, bool) or not isinstance(frameskip, int) or not 1 <= frameskip <= 64:
        raise WmfastError(f"frameskip must be an integer in [1, 64], got {frameskip!r}")
    if episodes < 1 or max_steps < 1:
        raise WmfastError(f"need episodes >= 1 and max_steps >= 1, got {episodes} and {max_steps}")
    if not 0.0 <= repeat < 1.0:
        raise WmfastError(f"policy repeat probability must be in [0, 1), got {repeat}")
    if out is None:
        raise WmfastError("generate_atari_dataset needs an output path (out=...)")
    policy = policy or default_policy(rom)
    ale = make_ale(rom, seed, sticky)
    action_names = [a.name for a in ale.getMinimalActionSet()]
    make_policy(policy, rom, len(action_names), None)  # check the policy name before playing
    frames, actions, rewards, rams, terminals, lengths = [], [], [], [], [], []
    bar = tqdm(total=episodes * max_steps, desc=f"atari:{rom}", unit="step", disable=not progress)
    for e in range(episodes):
        rng = np.random.default_rng([seed, e])
        f, a, r, ram, ended = record_episode(ale, make_policy(policy, rom, len(action_names), rng, repeat), frameskip,
                                             max_steps)
        frames.append(resize_uint8(f, size) if size else f)
        actions.append(a)
        rewards.append(r)
        rams.append(ram)
        terminals.append(np.arange(len(f)) == len(f) - 1 if ended else np.zeros(len(f), bool))
        lengths.append(len(f))
        bar.total -= max_steps - (len(f) - 1)  # episodes that end early shrink the ETA
        bar.update(len(f) - 1)
    bar.close()
    ends = np.cumsum(lengths)
    meta = {"source": "atari", "game": rom, "seed": seed, "size": size or list(NATIVE_SIZE),
            "native_size": list(NATIVE_SIZE), "frameskip": frameskip, "frame": "max of the last 2 emulator frames",
            "sticky": sticky, "policy": policy,
            "policy_repeat": repeat, "max_steps": max_steps, "episodes": episodes,
            "ale_py": _ale().__version__, "atari_version": ATARI_VERSION}
    return write_dataset(out, np.concatenate(frames), np.concatenate(actions),
                         [(int(e - n), int(e)) for e, n in zip(ends, lengths)], len(action_names), action_names,
                         meta, np.concatenate(rewards),
                         extra={"terminals": np.concatenate(terminals), "ram": np.concatenate(rams)})
