"""The runs a server plays: each loaded once, with its action map and its held-out episodes."""
import dataclasses
import os

import numpy as np

from wmfast.config import Config, load_json
from wmfast.errors import WmfastError

MODES = ("fast", "compat")
MAX_STEPS = 16              # MaskGIT steps a player may ask for
IDLE_NAMES = ("NOOP", "IDLE", "NONE")


@dataclasses.dataclass
class ServeConfig(Config):
    """What `wmfast serve` runs with (saved beside benchmark results as JSON)."""
    host: str = "127.0.0.1"
    port: int = 8000
    mode: str = "fast"                  # default mode of a new session (players may switch)
    # default MaskGIT steps of a new session: 1 shared step plus the fast mode's confidence-gated extra
    # steps holds the maze as well as compat's 10 (eval --long-play) at 3.4x its speed (bench rollout)
    steps: int = 1
    device: str = "cpu"
    threads: int = 0                    # torch intra-op threads (0: half the CPUs, leaving the rest to the
                                        # event loop: OpenMP threads spin-waiting on a busy CPU cost 10x)
    max_sessions: int = 32
    max_batch: int = 32                 # rows per World.step
    gather_ms: float = 10.0             # how long a tick waits at least for active players still to ask
    batching: bool = True               # False: one World per player (the unbatched baseline)
    max_message_bytes: int = 4096       # larger text messages get an error reply
    max_frame_bytes: int = 1 << 20      # larger websocket frames close the connection (1009)
    max_upload_bytes: int = 8 << 20
    max_upload_frames: int = 256        # frames decoded from an upload at most (its last C are used)
    max_upload_side: int = 1024         # pixels, per side
    idle_timeout_s: float = 300.0
    max_gif_frames: int = 1800          # frames kept per session for the GIF download
    val_fraction: float = 0.1           # the evaluator's held-out split
    seed: int = 0

    def compute_threads(self) -> int:
        return self.threads if self.threads > 0 else max(1, (os.cpu_count() or 2) // 2)

    def check(self) -> "ServeConfig":
        if self.mode not in MODES:
            raise WmfastError(f"mode must be one of {MODES}, got {self.mode!r}")
        if not 1 <= self.steps <= MAX_STEPS:
            raise WmfastError(f"steps must be in [1, {MAX_STEPS}], got {self.steps}")
        for name in ("max_sessions", "max_batch", "max_message_bytes", "max_frame_bytes", "max_upload_bytes",
                     "max_upload_frames", "max_upload_side", "max_gif_frames"):
            if getattr(self, name) < 1:
                raise WmfastError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.idle_timeout_s <= 0 or self.gather_ms < 0:
            raise WmfastError("idle_timeout_s must be > 0 and gather_ms >= 0")
        if not 0 <= self.port < 65536:
            raise WmfastError(f"port must be in [0, 65535], got {self.port}")
        return self


def run_data(run: str):
    """The dataset a run was trained on, from its recipe.json (None when it does not say)."""
    path = os.path.join(run, "recipe.json")
    if os.path.isfile(path):
        data = load_json(path).get("data")
        return data if isinstance(data, str) and data else None
    return None


class ServedModel:
    """A run loaded for serving: model, action space, held-out context clips."""

    def __init__(self, name: str, run: str, data: str = None, device: str = "cpu", val_fraction: float = 0.1,
                 seed: int = 0):
        import wmfast
        from wmfast.checkpoint import load_action_map
        from wmfast.models.action_map import ACTION_MAP

        self.name, self.run, self.device = name, run, device
        self.model = wmfast.load(run)
        self.model.require("tokenizer", "actions", "dynamics")
        self.frame_size = self.model.frame_size
        self.context = int(self.model.dynamics.config.context_length)
        has_map = os.path.isfile(os.path.join(run, ACTION_MAP))
        self.action_map = load_action_map(run) if has_map else None
        if self.action_map is not None:
            self.action_space, self.action_names = "game", list(self.action_map.action_names)
        else:
            self.action_space = "latent"
            self.action_names = [f"code {k}" for k in range(self.model.lam.num_actions)]
        self.idle_action = next((i for i, n in enumerate(self.action_names) if n.upper() in IDLE_NAMES), 0)
        self.data = data or run_data(run)
        self.dataset, self.episodes = None, []
        if self.data:
            from wmfast.data import load_dataset

            self.dataset = load_dataset(self.data)
            _, self.episodes = self.dataset.split(val_fraction, seed=seed)
        self.keys = self.direction_keys()

    def direction_keys(self) -> dict:
        """UP / DOWN / LEFT / RIGHT / FIRE -> the game action id the page binds to the arrow keys, W A S D
        and space (none in the latent action space)."""
        from wmfast.data.atari import key_actions

        if self.action_space != "game":
            return {}
        meta = (self.dataset.meta or {}) if self.dataset is not None else {}
        return key_actions(self.action_names, meta.get("game") if meta.get("source") == "atari" else None)

    @property
    def num_actions(self) -> int:
        return len(self.action_names)

    def describe(self) -> dict:
        return {"name": self.name, "frame_size": self.frame_size, "context": self.context,
                "action_space": self.action_space, "actions": self.action_names, "idle_action": self.idle_action,
                "keys": self.keys,
                "data": self.data, "episodes": self.episodes}

    def episode_frames(self, episode: int) -> np.ndarray:
        """The first C frames of a held-out episode -> uint8 [T, S, S, 3] (T <= C)."""
        from wmfast.data import ClipSampler
        from wmfast.rollout.world import frames_to_uint8

        if episode not in self.episodes:
            shown = self.episodes[:12] if self.episodes else "none: this model has no dataset"
            raise WmfastError(f"episode {episode!r} is not a held-out episode of {self.name} (choose from {shown})")
        s, e = self.dataset.episodes[episode]
        length = max(1, min(self.context, e - s))
        sampler = ClipSampler(self.dataset, clip_len=length, frame_size=self.frame_size, episodes=[episode])
        return frames_to_uint8(sampler.episode_clip(episode, 0)[0])[0].numpy()

    def make_world(self, mode: str, steps: int):
        from wmfast.rollout.world import World

        return World(self.model, device=self.device, mode=mode, steps=steps,
                     actions="game" if self.action_map is not None else "latent")


def parse_runs(runs) -> dict:
    """['maze=runs/maze', 'runs/pong'] -> {'maze': 'runs/maze', 'pong': 'runs/pong'} (names unique)."""
    out = {}
    for spec in runs:
        name, path = spec.split("=", 1) if "=" in spec and not os.path.exists(spec) else (None, spec)
        path = os.path.normpath(path)
        name = name or os.path.basename(path) or "model"
        if not os.path.isdir(path):
            raise WmfastError(f"--run {spec}: no such run directory")
        if name in out:
            raise WmfastError(f"two runs are called {name!r}; name them with --run NAME=DIR")
        out[name] = path
    if not out:
        raise WmfastError("give at least one --run DIR")
    return out
