"""The `reach` game: a 2-D end effector moves to a ball (the ACT policy task, issue 14).

numpy only and deterministic by seed, like the other embedded games, but with continuous actions:
an action is a 2-D velocity in units of the top speed, clipped to [-1, 1] per axis; the effector
moves by action * MAX_SPEED (in [0, 1] field coordinates) per step. The ball stays where it was put.
An episode succeeds, and ends, when the effector's centre comes within SUCCESS_DIST of the ball's.

The scripted expert is a proportional controller: full speed toward the ball, slowing down within
MAX_SPEED / GAIN of it, so its chunks of 8 actions end in a deceleration when the ball is near.

On disk (`wmfast data game --game reach --size 128`) a reach dataset is a wmfast dataset whose
discrete `actions` are all -1 (unknown: readers of discrete actions see none) plus a field
    continuous_actions  [N, 2] float32   action[t] leads from frame t to t+1; NaN on each episode's
                                         last frame (nothing follows it)
read back with `read_reach_dataset(path)`.
"""

import h5py
import numpy as np
from tqdm import tqdm

from wmfast.data.frames import check_size
from wmfast.data.games import Game, fill_disc
from wmfast.errors import WmfastError

CONTINUOUS = "continuous_actions"


class Reach(Game):
    """End effector (green) and ball (red) in the unit square; actions are velocities [2] in [-1, 1]."""

    name = "reach"
    action_names = ["VX", "VY"]  # continuous: the two components of the velocity
    action_dim = 2
    version = 1
    MAX_SPEED, GAIN = 0.05, 0.5            # field units per step; the expert's proportional gain
    SUCCESS_DIST, MIN_START_DIST = 0.05, 0.3
    BALL_R, EFFECTOR_R = 0.045, 0.03
    BG, BALL, EFFECTOR = (22, 26, 40), (235, 80, 70), (80, 220, 120)
    MAX_STEPS = 60                          # an episode's cap (the expert needs at most ~25 steps)

    def reset(self) -> None:
        self.ball = self.rng.uniform(0.1, 0.9, size=2)
        while True:  # start at least MIN_START_DIST away so every episode has something to do
            self.effector = self.rng.uniform(0.1, 0.9, size=2)
            if np.linalg.norm(self.effector - self.ball) >= self.MIN_START_DIST:
                break
        self.t = 0
        self.done = False

    # ---- state --------------------------------------------------------------------------------
    @property
    def distance(self) -> float:
        return float(np.linalg.norm(self.effector - self.ball))

    @property
    def reached(self) -> bool:
        return self.distance < self.SUCCESS_DIST

    def get_state(self) -> tuple:
        return self.effector.copy(), self.ball.copy(), self.t, self.done

    def set_state(self, state: tuple) -> None:
        effector, ball, self.t, self.done = state
        self.effector, self.ball = np.array(effector, float), np.array(ball, float)

    # ---- dynamics -----------------------------------------------------------------------------
    @staticmethod
    def clip_action(action) -> np.ndarray:
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (2,) or not np.isfinite(a).all():
            raise WmfastError(f"reach actions are 2 finite numbers (vx, vy), got {np.asarray(action).tolist()}")
        return np.clip(a, -1.0, 1.0)

    def step(self, action) -> float:
        """Move by the clipped velocity; reward 1 on the step that reaches the ball (which ends it)."""
        if self.done:
            return 0.0
        self.effector = np.clip(self.effector + self.clip_action(action) * self.MAX_SPEED, 0.0, 1.0)
        self.t += 1
        if self.reached:
            self.done = True
            return 1.0
        if self.t >= self.MAX_STEPS:
            self.done = True
        return 0.0

    def render(self, size: int = 128) -> np.ndarray:
        img = np.empty((size, size, 3), np.uint8)
        img[:] = self.BG
        fill_disc(img, self.ball[0], self.ball[1], self.BALL_R, self.BALL)
        fill_disc(img, self.effector[0], self.effector[1], self.EFFECTOR_R, self.EFFECTOR)
        return img

    # ---- the scripted expert ------------------------------------------------------------------
    def policy(self) -> np.ndarray:
        """The expert's velocity [2] for the current state (deterministic: no noise)."""
        v = self.GAIN * (self.ball - self.effector) / self.MAX_SPEED
        norm = np.linalg.norm(v)
        return (v / norm if norm > 1.0 else v).astype(np.float32)

    def expert_chunk(self, k: int):
        """The expert's next k actions from the current state, simulated on a copy of the state:
        actions [k, 2] float32 and valid [k] bool (False after the episode would have ended).
        This is how DAgger labels a state the learner drove to."""
        saved = self.get_state()
        actions = np.zeros((k, 2), np.float32)
        valid = np.zeros(k, bool)
        for i in range(k):
            if self.done:
                break
            actions[i], valid[i] = self.policy(), True
            self.step(actions[i])
        self.set_state(saved)
        return actions, valid


def episode_seed(seed: int, episode: int, stream: int = 0) -> int:
    """Seed of episode `episode` of stream `stream` (0: training data, 1: DAgger, 2: evaluation)."""
    return int(np.random.SeedSequence([seed, episode, stream]).generate_state(1)[0])


def play_expert_episode(seed: int, size: int = 128):
    """One expert episode until success or the cap -> frames [T+1, S, S, 3] uint8,
    actions [T+1, 2] float32 (action t leads from frame t to t+1; NaN on the last frame)."""
    game = Reach(seed)
    frames, actions = [game.render(size)], []
    while not game.done:
        a = game.policy()
        game.step(a)
        actions.append(a)
        frames.append(game.render(size))
    actions.append(np.full(2, np.nan, np.float32))
    return np.stack(frames), np.stack(actions).astype(np.float32)


def expert_episodes(n_samples: int, size: int = 128, seed: int = 0, progress: bool = True):
    """Expert episodes until they hold at least n_samples (frame, action) pairs -> list of (frames, actions)."""
    out, total, e = [], 0, 0
    with tqdm(total=n_samples, desc="reach expert", unit="sample", disable=not progress) as bar:
        while total < n_samples:
            frames, actions = play_expert_episode(episode_seed(seed, e, 0), size)
            out.append((frames, actions))
            total += len(frames) - 1
            bar.update(len(frames) - 1)
            e += 1
    return out


def generate_reach_dataset(episodes: int, size: int = 128, seed: int = 0, out=None, progress: bool = True) -> str:
    """Write `episodes` expert episodes as a wmfast dataset with a `continuous_actions` field (atomic)."""
    from wmfast.data.dataset import write_dataset

    size = check_size(size)
    if episodes < 1:
        raise WmfastError(f"need episodes >= 1, got {episodes}")
    if out is None:
        raise WmfastError("generate_reach_dataset needs an output path (out=...)")
    parts = [play_expert_episode(episode_seed(seed, e, 0), size)
             for e in tqdm(range(episodes), desc="game:reach", unit="ep", disable=not progress)]
    lengths = [len(f) for f, _ in parts]
    starts = np.cumsum([0] + lengths[:-1])
    frames = np.concatenate([f for f, _ in parts])
    actions = np.concatenate([a for _, a in parts])
    meta = {"source": "game", "game": "reach", "game_version": Reach.version, "seed": seed, "size": size,
            "episodes": episodes, "policy": "expert", "action_space": "continuous", "action_dim": 2,
            "max_speed": Reach.MAX_SPEED}
    # beside the discrete `actions` (all -1), so discrete readers see none
    return write_dataset(out, frames, None, [(int(s), int(s + n)) for s, n in zip(starts, lengths)], 0, [], meta,
                         extra={CONTINUOUS: actions})


def read_reach_dataset(path):
    """A reach dataset file -> list of (frames [T+1, S, S, 3] uint8, actions [T+1, 2] float32) episodes."""
    from wmfast.data.dataset import read_h5

    ds = read_h5(path)
    with h5py.File(ds.source, "r") as f:
        if CONTINUOUS not in f:
            raise WmfastError(f"{path}: no `{CONTINUOUS}` field (not a continuous-action dataset such as "
                              f"`wmfast data game --game reach`)")
        actions = np.asarray(f[CONTINUOUS][:], np.float32)
    if actions.shape != (len(ds), 2):
        raise WmfastError(f"{path}: `{CONTINUOUS}` must have shape [{len(ds)}, 2], got {list(actions.shape)}")
    frames = np.asarray(ds.frames[:])
    return [(frames[s:e], actions[s:e]) for s, e in ds.episodes]


def has_continuous_actions(path) -> bool:
    try:
        with h5py.File(path, "r") as f:
            return CONTINUOUS in f
    except OSError:
        return False
