"""Embedded procedural games: numpy only, rendered crisply at any size, deterministic by seed.

Each game keeps its state in normalized coordinates and draws into a square RGB frame, so the same
episode renders at 32, 64 or 256 pixels. `step(action)` applies one action and returns the reward;
`policy()` is the scripted data-collection policy (its own random stream, so a seed fixes both the
game and the actions). Frame t, then action t, then frame t+1: the action stored at t leads from
frame t to frame t+1.
"""
import numpy as np
from tqdm import tqdm

from wmfast.data.frames import check_size
from wmfast.errors import WmfastError

# ---------------------------------------------------------------- drawing in normalized coordinates


def _px(v: float, size: int) -> int:
    return int(round(min(max(v, 0.0), 1.0) * size))


def fill_rect(img: np.ndarray, x0: float, y0: float, x1: float, y1: float, color) -> None:
    """Fill the box [x0, x1) x [y0, y1) given in [0, 1] coordinates (at least one pixel wide)."""
    s = img.shape[0]
    c0, r0 = _px(x0, s), _px(y0, s)
    c1, r1 = max(_px(x1, s), c0 + 1), max(_px(y1, s), r0 + 1)
    img[min(r0, s - 1):r1, min(c0, s - 1):c1] = color


def fill_disc(img: np.ndarray, cx: float, cy: float, r: float, color) -> None:
    s = img.shape[0]
    centers = (np.arange(s) + 0.5) / s
    inside = (centers[None, :] - cx) ** 2 + (centers[:, None] - cy) ** 2 <= r * r
    if not inside.any():  # tiny frames: keep the object visible as one pixel
        inside[min(int(cy * s), s - 1), min(int(cx * s), s - 1)] = True
    img[inside] = color


class Game:
    """Base class: subclasses set `name`, `action_names`, `version` and implement the four methods."""

    name = ""
    action_names: list = []
    version = 1  # bump when dynamics or rendering change: it is part of the dataset cache key

    def __init__(self, seed: int = 0):
        seq = np.random.SeedSequence(seed)
        game_seed, policy_seed = seq.spawn(2)
        self.rng = np.random.default_rng(game_seed)
        self.policy_rng = np.random.default_rng(policy_seed)
        self.prev_action = 0
        self.reset()

    @property
    def n_actions(self) -> int:
        return len(self.action_names)

    def reset(self) -> None:
        raise NotImplementedError

    def step(self, action: int) -> float:
        raise NotImplementedError

    def render(self, size: int = 64) -> np.ndarray:
        raise NotImplementedError

    def policy(self) -> int:
        raise NotImplementedError

    def sticky(self, action: int, repeat: float) -> int:
        """Repeat the previous action with probability `repeat`: runs of one action, like a player."""
        if self.policy_rng.random() < repeat:
            action = self.prev_action
        self.prev_action = int(action)
        return self.prev_action


class Pong(Game):
    """Pong: the left (green) paddle is the player's; the right one tracks the ball by itself.

    Actions: NOOP, UP, DOWN. A point scored gives +1, a point lost -1, then the ball is served toward the
    side that lost the point. The opponent moves slower than the steepest return, so aimed shots win points.
    """

    name = "pong"
    version = 2  # v2: slower opponent (0.035 -> 0.02), serve toward the side that conceded, data
                 # policy rarely presses into a wall
    action_names = ["NOOP", "UP", "DOWN"]
    PADDLE_H, PADDLE_W, BALL = 0.22, 0.05, 0.07
    PLAYER_X, OPPONENT_X = 0.05, 0.90
    PLAYER_SPEED, OPPONENT_SPEED = 0.07, 0.02
    BG, LINE = (16, 20, 40), (70, 80, 120)
    PLAYER, OPPONENT, BALL_COLOR = (60, 220, 90), (235, 90, 70), (250, 240, 120)

    def reset(self) -> None:
        self.player_y = self.rng.uniform(0.2, 0.8)  # paddle centres
        self.opponent_y = self.rng.uniform(0.2, 0.8)
        self.serve(direction=self.rng.choice([-1.0, 1.0]))

    def serve(self, direction: float) -> None:
        self.bx, self.by = 0.5 - self.BALL / 2, self.rng.uniform(0.25, 0.75 - self.BALL)
        self.vx = direction * self.rng.uniform(0.03, 0.045)
        self.vy = self.rng.choice([-1.0, 1.0]) * self.rng.uniform(0.01, 0.035)

    def step(self, action: int) -> float:
        move = (0.0, -self.PLAYER_SPEED, self.PLAYER_SPEED)[action]
        half = self.PADDLE_H / 2
        self.player_y = float(np.clip(self.player_y + move, half, 1 - half))
        target = self.by + self.BALL / 2 - self.opponent_y
        self.opponent_y = float(np.clip(self.opponent_y + np.clip(target, -self.OPPONENT_SPEED, self.OPPONENT_SPEED),
                                        half, 1 - half))
        self.bx += self.vx
        self.by += self.vy
        if self.by < 0 or self.by + self.BALL > 1:  # top / bottom walls
            self.vy = -self.vy
            self.by = float(np.clip(self.by, 0, 1 - self.BALL))
        reward = 0.0
        if self.vx < 0 and self.bx <= self.PLAYER_X + self.PADDLE_W:
            if self.bx >= self.PLAYER_X - self.BALL and self._hits(self.player_y):
                self._bounce(self.player_y, self.PLAYER_X + self.PADDLE_W)
            elif self.bx + self.BALL < 0:
                reward = -1.0
                self.serve(direction=-1.0)
        elif self.vx > 0 and self.bx + self.BALL >= self.OPPONENT_X:
            if self.bx <= self.OPPONENT_X + self.PADDLE_W and self._hits(self.opponent_y):
                self._bounce(self.opponent_y, self.OPPONENT_X - self.BALL)
            elif self.bx > 1:
                reward = 1.0
                self.serve(direction=1.0)
        return reward

    def _hits(self, paddle_y: float) -> bool:
        half = self.PADDLE_H / 2
        return self.by + self.BALL >= paddle_y - half and self.by <= paddle_y + half

    def _bounce(self, paddle_y: float, x: float) -> None:
        # Where the ball meets the paddle sets its new vertical speed, as in the arcade game.
        offset = (self.by + self.BALL / 2 - paddle_y) / (self.PADDLE_H / 2)
        self.vx = -self.vx
        self.vy = float(np.clip(0.035 * offset, -0.04, 0.04))
        self.bx = x

    def render(self, size: int = 64) -> np.ndarray:
        img = self._field(size).copy()
        half = self.PADDLE_H / 2
        fill_rect(img, self.PLAYER_X, self.player_y - half, self.PLAYER_X + self.PADDLE_W, self.player_y + half,
                  self.PLAYER)
        fill_rect(img, self.OPPONENT_X, self.opponent_y - half, self.OPPONENT_X + self.PADDLE_W,
                  self.opponent_y + half, self.OPPONENT)
        fill_rect(img, self.bx, self.by, self.bx + self.BALL, self.by + self.BALL, self.BALL_COLOR)
        return img

    @classmethod
    def _field(cls, size: int) -> np.ndarray:
        """The static background with its dashed centre line, drawn once per size."""
        cache = cls.__dict__.get("_fields")
        if cache is None:
            cache = cls._fields = {}
        if size not in cache:
            img = np.empty((size, size, 3), np.uint8)
            img[:] = cls.BG
            for y in np.arange(0.0, 1.0, 0.1):
                fill_rect(img, 0.495, y + 0.025, 0.505, y + 0.075, cls.LINE)
            cache[size] = img
        return cache[size]

    def policy(self) -> int:
        """Track the ball 60% of the time, press a random button otherwise; actions come in runs, and
        rarely push into a wall."""
        if self.policy_rng.random() < 0.6:
            gap = self.by + self.BALL / 2 - self.player_y + self.policy_rng.normal(0, 0.05)
            action = 0 if abs(gap) < 0.04 else (1 if gap < 0 else 2)
        else:
            action = int(self.policy_rng.integers(self.n_actions))
        action = self.sticky(action, repeat=0.4)
        if self.pushes_wall(action) and self.policy_rng.random() < 0.8:
            action = self.prev_action = 0   # like the maze's player, rarely press into a wall
        return action

    def pushes_wall(self, action: int) -> bool:
        """UP at the top or DOWN at the bottom: the frame shows the same as NOOP."""
        half = self.PADDLE_H / 2
        return (action == 1 and self.player_y <= half + 1e-9) or (action == 2 and self.player_y >= 1 - half - 1e-9)


class Maze(Game):
    """Maze runner: an agent moves one cell per step on an 8x8 grid with walls and collects coins.

    Actions: NOOP, UP, DOWN, LEFT, RIGHT (a move into a wall leaves the agent in place).
    Each coin gives +1; when all are collected a new set appears.
    """

    name = "maze"
    action_names = ["NOOP", "UP", "DOWN", "LEFT", "RIGHT"]
    MOVES = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))  # (row, col) per action
    GRID, WALL_DENSITY, COINS = 8, 0.18, 4
    FLOOR, WALL, COIN, AGENT = (30, 34, 52), (120, 126, 150), (250, 200, 40), (60, 200, 255)

    def reset(self) -> None:
        g = self.GRID
        self.walls = self.rng.random((g, g)) < self.WALL_DENSITY
        self.agent = tuple(int(v) for v in self.rng.integers(g, size=2))
        self.walls[self.agent] = False
        self.coins = np.zeros((g, g), bool)
        self.spawn_coins()

    def spawn_coins(self) -> None:
        free = np.argwhere(~self.walls & ~self.coins)
        free = free[(free != self.agent).any(axis=1)]
        picks = self.rng.choice(len(free), size=min(self.COINS, len(free)), replace=False)
        self.coins[tuple(free[picks].T)] = True

    def blocked(self, action: int) -> bool:
        r, c = self.agent[0] + self.MOVES[action][0], self.agent[1] + self.MOVES[action][1]
        return not (0 <= r < self.GRID and 0 <= c < self.GRID) or bool(self.walls[r, c])

    def step(self, action: int) -> float:
        if action and not self.blocked(action):
            self.agent = (self.agent[0] + self.MOVES[action][0], self.agent[1] + self.MOVES[action][1])
        if not self.coins[self.agent]:
            return 0.0
        self.coins[self.agent] = False
        if not self.coins.any():
            self.spawn_coins()
        return 1.0

    def render(self, size: int = 64) -> np.ndarray:
        img = self._board(size).copy()
        self.draw_items(img, self.coins, [self.agent])
        return img

    @classmethod
    def draw_items(cls, img: np.ndarray, coins: np.ndarray, agents) -> None:
        """Draw coins (bool [GRID, GRID]) and agents ((row, col) cells) onto a board image."""
        cell = 1.0 / cls.GRID
        for r, c in np.argwhere(coins):
            fill_disc(img, (c + 0.5) * cell, (r + 0.5) * cell, 0.25 * cell, cls.COIN)
        for r, c in agents:
            fill_rect(img, (c + 0.12) * cell, (r + 0.12) * cell, (c + 0.88) * cell, (r + 0.88) * cell, cls.AGENT)

    @classmethod
    def draw_board(cls, size: int, walls: np.ndarray) -> np.ndarray:
        """Floor and walls (bool [GRID, GRID]) as a [size, size, 3] uint8 image."""
        img = np.empty((size, size, 3), np.uint8)
        img[:] = cls.FLOOR
        cell = 1.0 / cls.GRID
        for r, c in np.argwhere(walls):
            fill_rect(img, c * cell, r * cell, (c + 1) * cell, (r + 1) * cell, cls.WALL)
        return img

    def _board(self, size: int) -> np.ndarray:
        """Floor and walls, which never change within an episode: drawn once per size."""
        if getattr(self, "_boards", None) is None or self._boards[0] is not self.walls:
            self._boards = (self.walls, {})
        boards = self._boards[1]
        if size not in boards:
            boards[size] = self.draw_board(size, self.walls)
        return boards[size]

    def policy(self) -> int:
        """Head for the nearest coin half the time, wander otherwise; rarely walk into walls."""
        u = self.policy_rng.random()
        if u < 0.08:
            return self.sticky(0, repeat=0.0)
        if u < 0.5 and self.coins.any():
            action = self._toward_nearest_coin()
        else:
            action = self.prev_action if self.prev_action and self.policy_rng.random() < 0.6 \
                else int(self.policy_rng.integers(1, self.n_actions))
        if self.blocked(action) and self.policy_rng.random() < 0.8:
            open_moves = [a for a in range(1, self.n_actions) if not self.blocked(a)]
            if open_moves:
                action = int(self.policy_rng.choice(open_moves))
        self.prev_action = int(action)
        return self.prev_action

    def _toward_nearest_coin(self) -> int:
        coins = np.argwhere(self.coins)
        dr, dc = (coins[np.abs(coins - self.agent).sum(1).argmin()] - self.agent)
        if dr and (not dc or self.policy_rng.random() < 0.5):
            return 1 if dr < 0 else 2
        return 3 if dc < 0 else 4


GAMES = {cls.name: cls for cls in (Pong, Maze)}
# The demo's game: its only action-driven object is the player's paddle, on a mostly static field,
# which a small tokenizer, LAM and dynamics model capture within minutes on a CPU.
DEFAULT_GAME = "maze"


def make_game(name: str, seed: int = 0) -> Game:
    if name == "reach":  # continuous actions (the policy task): its own module, not in GAMES
        from wmfast.data.reach import Reach

        return Reach(seed)
    if name not in GAMES:
        raise WmfastError(f"unknown game {name!r}; embedded games: {', '.join(sorted(GAMES) + ['reach'])}")
    return GAMES[name](seed)


def play_episode(name: str, steps: int, size: int = 64, seed: int = 0):
    """One episode of `steps` policy actions -> frames [steps+1, S, S, 3] uint8, actions [steps+1]
    (action[t] leads from frame t to t+1; -1 on the last frame), rewards [steps+1] float32."""
    game = make_game(name, seed)
    frames = np.empty((steps + 1, size, size, 3), np.uint8)
    actions = np.full(steps + 1, -1, np.int64)
    rewards = np.zeros(steps + 1, np.float32)
    frames[0] = game.render(size)
    for t in range(steps):
        actions[t] = game.policy()
        rewards[t] = game.step(int(actions[t]))
        frames[t + 1] = game.render(size)
    return frames, actions, rewards


def generate_game_dataset(name: str, episodes: int, steps_per_episode: int = 100, size: int = 64,
                          seed: int = 0, out=None, progress: bool = True) -> str:
    """Play `episodes` episodes of an embedded game and write a wmfast dataset to `out`.

    Episode e is seeded by (seed, e), so a dataset with more episodes extends a smaller one.
    Each episode holds steps_per_episode + 1 frames. Returns the path written.
    """
    from wmfast.data.dataset import write_dataset

    if name == "reach":  # expert episodes until success, continuous actions in their own field
        from wmfast.data.reach import generate_reach_dataset

        return generate_reach_dataset(episodes, size, seed, out, progress)
    game_cls = type(make_game(name))
    size = check_size(size)
    if episodes < 1 or steps_per_episode < 1:
        raise WmfastError(f"need episodes >= 1 and steps_per_episode >= 1, got {episodes} and {steps_per_episode}")
    if out is None:
        raise WmfastError("generate_game_dataset needs an output path (out=...)")
    parts = []
    for e in tqdm(range(episodes), desc=f"game:{name}", unit="ep", disable=not progress):
        parts.append(play_episode(name, steps_per_episode, size, seed=_episode_seed(seed, e)))
    lengths = [len(f) for f, _, _ in parts]
    starts = np.cumsum([0] + lengths[:-1])
    meta = {"source": "game", "game": name, "game_version": game_cls.version, "seed": seed, "size": size,
            "episodes": episodes, "steps_per_episode": steps_per_episode, "frameskip": 1, "sticky": 0.0,
            "policy": "scripted"}
    return write_dataset(out, np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                         [(int(s), int(s + n)) for s, n in zip(starts, lengths)], len(game_cls.action_names),
                         game_cls.action_names, meta, np.concatenate([p[2] for p in parts]))


def _episode_seed(seed: int, episode: int) -> int:
    return int(np.random.SeedSequence([seed, episode]).generate_state(1)[0])
