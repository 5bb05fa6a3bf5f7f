"""Long play: a World driven for hundreds of frames while the real game replays the same actions.

    report = long_play(world, "maze", games=8, steps=500, actions="random", seed=1)

The embedded games are deterministic given their state, so every generated frame has a ground truth:
the real game, started from the same frames and given the same actions. At each step the objects
are read from both frames (not pixels compared), per game:
  - maze: the agent in the game's cell, exactly one agent, the walls and the coins as the game has them;
  - pong: the player's paddle within `tolerance` pixels (at 32 px; scaled with the frame size) of
    the real one, exactly one ball, and the ball within 2 x tolerance of the real one;
  - atari:pong, atari:breakout (a run trained on `wmfast data atari` footage): the emulator itself is
    the real game (ale-py, the recording's frameskip, frame size and max of the last two emulator
    frames); the player's paddle within `tolerance` pixels of the emulator's, and the ball shown
    where the emulator shows one (within 2 x tolerance) and nowhere else, both read with
    wmfast.eval.atari_objects (checked against the console RAM). An Atari game that ends (Breakout
    loses its last life) is scored up to its last frame.
A game's first wrong frame is the first generated frame (1-based) where its agent (maze) or paddle
and ball (pong, Atari) are wrong; once wrong a World rarely comes back, so the share of right frames
and the first wrong frames say how long play holds. Beside each share stands copy-last-frame's
(the last context frame held): what a World that ignores the actions would score.

Action streams: "random" (uniform game actions, each held for 1-7 steps: a player who stops,
presses into walls and turns) and "policy" (the game's own scripted data policy, which the World
was trained on; Atari: the recorder's, every action drawn anew). Game seeds come from (seed, game,
a tag of this harness), so they never replay the episodes a dataset of the same seed holds.

The World protocol used here is the public one: reset(frames [B, C, 3, S, S]), step(game action
ids [B]) -> frames [B, 3, S, S], and attributes C (context frames) and frame_size.
"""
import time

import numpy as np
import torch

from wmfast.data.frames import to_model_frames
from wmfast.data.games import Maze, Pong, make_game
from wmfast.errors import WmfastError
from wmfast.eval.atari_objects import GAMES as ATARI_GAMES

ACTION_STREAMS = ("random", "policy")
HOLD_STEPS = (1, 7)          # random stream: each action held for this many steps (inclusive)
PONG_TOLERANCE = 1.0         # pixels at 32 px
SEED_TAG = 0x10F6            # keeps long-play games apart from dataset episodes of the same seed
ATARI_WARMUP = (30, 90)      # Atari games start after this many recorder steps from reset (drawn per game)


# -- reading objects from frames ------------------------------------------------------------------
def to_255(frames) -> np.ndarray:
    """float [..., 3, S, S] in [-1, 1] -> float64 [..., 3, S, S] in [0, 255] (not rounded)."""
    x = frames.detach().float().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames, np.float32)
    return (np.clip(x, -1, 1).astype(np.float64) + 1) * 127.5


class MazeReader:
    """Which cells of a maze frame hold floor, wall, coin or agent: each cell is given the class whose
    rendering (the game's own drawing, made the way the run's frames were made) it is closest to."""

    CLASSES = ("floor", "wall", "coin", "agent")

    def __init__(self, frame_size: int, render_size: int = 64):
        g, S = Maze.GRID, frame_size
        none, every = np.zeros((g, g), bool), np.ones((g, g), bool)
        coins = Maze.draw_board(render_size, none)
        Maze.draw_items(coins, every, [])
        agents = Maze.draw_board(render_size, none)
        Maze.draw_items(agents, none, [tuple(rc) for rc in np.argwhere(every)])
        boards = [Maze.draw_board(render_size, none), Maze.draw_board(render_size, every), coins, agents]
        refs = to_255(to_model_frames(np.stack(boards), S))                             # [4, 3, S, S]
        # Each pixel belongs to the cell its centre falls in.
        cell_of = np.minimum(((np.arange(S) + 0.5) * g / S).astype(int), g - 1)         # [S]
        self.cell_index = (cell_of[:, None] * g + cell_of[None, :]).ravel()             # [S*S] -> cell
        self.counts = np.bincount(self.cell_index, minlength=g * g)
        self.refs, self.grid = refs, g

    def cells(self, frames) -> np.ndarray:
        """frames [N, 3, S, S] in [-1, 1] -> class ids [N, GRID, GRID] (index into CLASSES)."""
        x = to_255(frames)
        N = x.shape[0]
        err = (x[:, None] - self.refs[None]) ** 2                                       # [N, 4, 3, S, S]
        err = err.sum(2).reshape(N, len(self.CLASSES), -1)                              # [N, 4, S*S]
        per_cell = np.zeros((N, len(self.CLASSES), self.grid * self.grid))
        np.add.at(per_cell, (slice(None), slice(None), self.cell_index), err)
        return per_cell.argmin(1).reshape(N, self.grid, self.grid)

    @staticmethod
    def truth(game: Maze) -> np.ndarray:
        """The game's own cell classes [GRID, GRID]."""
        cells = np.where(game.walls, 1, np.where(game.coins, 2, 0))
        cells[game.agent] = 3
        return cells

    def score(self, frames, games) -> dict:
        """Per game (bool [N]): the agent in the game's cell, exactly one agent, walls and coins as the game's."""
        cells = self.cells(frames)
        truth = np.stack([self.truth(g) for g in games])
        agent = cells == 3
        at_cell = np.array([agent[i][g.agent] for i, g in enumerate(games)])
        one = agent.sum((1, 2)) == 1
        walls = ((cells == 1) == (truth == 1)).all((1, 2))
        coins = ((cells == 2) == (truth == 2)).all((1, 2))
        return {"agent_in_cell": at_cell, "one_agent": one, "correct": at_cell & one, "walls_unchanged": walls,
                "coins_match": coins}


class PongReader:
    """The player's paddle and the balls in a pong frame. Every pixel is read as the static field
    blended with one object colour (player, opponent or ball): for each object the blend share in
    [0, 1] that fits best, and the pixel goes to the object that fits it most closely. A blend with a
    single colour reads blurred or half-covered pixels; fitting one object at a time keeps a yellow
    ball from reading as green plus red paddles. The paddle's centre is the centroid of the player
    share in the left part of the field; a ball is a connected blob where the ball share exceeds one half."""

    def __init__(self, frame_size: int, render_size: int = 64):
        self.S = frame_size
        self.field = to_255(to_model_frames(Pong._field(render_size), frame_size))      # [3, S, S]
        colours = np.array([Pong.PLAYER, Pong.OPPONENT, Pong.BALL_COLOR], np.float64)    # [3 objects, 3 channels]
        self.towards = colours[:, :, None, None] - self.field[None]                      # [3 objects, 3, S, S]
        self.length2 = (self.towards ** 2).sum(1)                                        # [3 objects, S, S]
        self.left = int(np.ceil(0.2 * frame_size))                                       # the player's side
        self.scale = frame_size / 32

    def shares(self, frames) -> np.ndarray:
        """frames [N, 3, S, S] -> shares [N, 3 (player, opponent, ball), S, S] in [0, 1]; each pixel's
        share is non-zero only for the object whose blend with the field fits it best."""
        d = to_255(frames) - self.field[None]                                            # [N, 3, S, S]
        alpha = np.clip(np.einsum("ncij,kcij->nkij", d, self.towards) / self.length2[None], 0, 1)
        residual = ((d[:, None] - alpha[:, :, None] * self.towards[None]) ** 2).sum(2)  # [N, 3, S, S]
        best = residual.argmin(1)[:, None]                                               # [N, 1, S, S]
        return np.where(np.arange(3)[None, :, None, None] == best, alpha, 0.0)

    def objects(self, frames) -> dict:
        """Paddle centre row in pixels (nan: none) [N], ball count [N], centre (x, y) of the largest ball [N, 2]."""
        w = self.shares(frames)
        rows = w[:, 0, :, :self.left].sum(2)                                             # [N, S]
        mass = rows.sum(1)
        centre = np.arange(self.S) + 0.5
        paddle = np.where(mass > 0.5 * Pong.PADDLE_H * Pong.PADDLE_W * self.S ** 2,
                          (rows * centre).sum(1) / np.maximum(mass, 1e-9), np.nan)
        counts, balls = [], []
        for b in w[:, 2]:
            blobs = connected_blobs(b > 0.5)
            counts.append(len(blobs))
            if blobs:
                ys, xs = max(blobs, key=lambda px: b[px].sum())
                weight = b[ys, xs]
                balls.append(((xs + 0.5) @ weight / weight.sum(), (ys + 0.5) @ weight / weight.sum()))
            else:
                balls.append((np.nan, np.nan))
        return {"paddle_y": paddle, "balls": np.array(counts), "ball_xy": np.array(balls)}

    def score(self, frames, real_frames, tolerance: float = PONG_TOLERANCE) -> dict:
        """Per game (bool [N]) against the real frames read the same way, and the errors in pixels."""
        model, real = self.objects(frames), self.objects(real_frames)
        tol = tolerance * self.scale
        paddle_err = np.abs(model["paddle_y"] - real["paddle_y"])
        ball_err = np.linalg.norm(model["ball_xy"] - real["ball_xy"], axis=1)
        paddle_ok = np.nan_to_num(paddle_err, nan=np.inf) <= tol
        one_ball = model["balls"] == 1
        ball_ok = one_ball & (real["balls"] == 1) & (np.nan_to_num(ball_err, nan=np.inf) <= 2 * tol)
        return {"paddle_ok": paddle_ok, "one_ball": one_ball, "ball_ok": ball_ok, "correct": paddle_ok & one_ball,
                "real_one_ball": real["balls"] == 1, "paddle_error_px": paddle_err, "ball_error_px": ball_err}


def connected_blobs(mask: np.ndarray) -> list:
    """8-connected components of a bool [H, W] mask -> one (rows, cols) index array pair per blob."""
    seen = np.zeros_like(mask)
    H, W = mask.shape
    blobs = []
    for r0, c0 in np.argwhere(mask):
        if seen[r0, c0]:
            continue
        stack, pixels = [(r0, c0)], []
        seen[r0, c0] = True
        while stack:
            r, c = stack.pop()
            pixels.append((r, c))
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    rr, cc = r + dr, c + dc
                    if 0 <= rr < H and 0 <= cc < W and mask[rr, cc] and not seen[rr, cc]:
                        seen[rr, cc] = True
                        stack.append((rr, cc))
        rows, cols = np.array(pixels).T
        blobs.append((rows, cols))
    return blobs


class AtariReader:
    """The player's paddle and the ball of an Atari frame (wmfast.eval.atari_objects), read from the
    World's frames and the emulator's (both at the World's frame size)."""

    def __init__(self, game: str, frame_size: int):
        self.game, self.scale = game, frame_size / 32

    def objects(self, frames) -> dict:
        from wmfast.eval.atari_objects import detect_objects
        from wmfast.rollout.world import frames_to_uint8

        return detect_objects(frames_to_uint8(torch.as_tensor(frames).cpu()).numpy(), self.game)

    def score(self, frames, real_frames, tolerance: float = PONG_TOLERANCE) -> dict:
        """Per game (bool [N]): the paddle within tolerance of the emulator's (or absent in both), the
        ball where the emulator shows one and within 2 x tolerance of it, or absent in both."""
        model, real = self.objects(frames), self.objects(real_frames)
        tol = tolerance * self.scale
        paddle_err = np.abs(model["paddle"] - real["paddle"])
        neither = np.isnan(model["paddle"]) & np.isnan(real["paddle"])
        paddle_ok = (np.nan_to_num(paddle_err, nan=np.inf) <= tol) | neither
        ball_err = np.linalg.norm(model["ball_xy"] - real["ball_xy"], axis=1)
        same_presence = model["balls"] == real["balls"]
        ball_ok = same_presence & (~real["balls"] | (np.nan_to_num(ball_err, nan=np.inf) <= 2 * tol))
        return {"paddle_ok": paddle_ok, "ball_presence_ok": same_presence, "ball_ok": ball_ok,
                "real_ball": real["balls"], "correct": paddle_ok & ball_ok,
                "paddle_error_px": paddle_err, "ball_error_px": ball_err}


def atari_name(game: str):
    """'atari:pong' -> 'pong'; anything else -> None."""
    kind, _, name = game.partition(":")
    return name if kind == "atari" and name in ATARI_GAMES else None


def make_reader(game: str, frame_size: int, render_size):
    return AtariReader(atari_name(game), frame_size) if atari_name(game) else READERS[game](frame_size, render_size)


READERS = {"maze": MazeReader, "pong": PongReader}
# The check whose failure ends a game's "held" run, and the per-step checks reported as shares.
CHECKS = {"maze": ("agent_in_cell", "one_agent", "walls_unchanged", "coins_match"),
          "pong": ("paddle_ok", "one_ball", "ball_ok", "real_one_ball"),
          **{f"atari:{g}": ("paddle_ok", "ball_presence_ok", "ball_ok", "real_ball") for g in ATARI_GAMES}}


# -- the replay -------------------------------------------------------------------------------------
def game_seed(seed: int, game: int) -> int:
    return int(np.random.SeedSequence([seed, game, SEED_TAG]).generate_state(1)[0])


class HeldRandomActions:
    """Uniform game actions, each held for HOLD_STEPS[0]..HOLD_STEPS[1] steps, one stream per game."""

    def __init__(self, n_actions: int, games: int, seed: int):
        self.rng = np.random.default_rng(np.random.SeedSequence([seed, SEED_TAG, 1]))
        self.n_actions, self.left, self.current = n_actions, np.zeros(games, int), np.zeros(games, int)

    def __call__(self, games) -> np.ndarray:
        for i in range(len(games)):
            if self.left[i] == 0:
                self.current[i] = self.rng.integers(self.n_actions)
                self.left[i] = self.rng.integers(HOLD_STEPS[0], HOLD_STEPS[1] + 1)
            self.left[i] -= 1
        return self.current.copy()


def policy_actions(games) -> np.ndarray:
    return np.array([g.policy() for g in games])


class AtariGame:
    """An ALE emulator behind the embedded games' interface (step, render, policy, n_actions, over):
    one step is the recording's (the action repeated `frameskip` emulator frames, the observed frame
    the max of the last two), render the frame as the recording stores it (`size`: an int, or None
    for the native screen), policy the recorder's (every action drawn anew). Starts from reset after
    `warmup` policy steps. Once the game is over the emulator keeps its last frame."""

    def __init__(self, rom: str, seed: int, size, frameskip: int = 4, warmup: int = 0):
        from wmfast.data.atari import make_ale

        self.ale = make_ale(rom, seed)
        self.action_set = self.ale.getMinimalActionSet()
        self.n_actions, self.size, self.frameskip = len(self.action_set), size, frameskip
        self.rng = np.random.default_rng(seed)
        self.ale.reset_game()
        self.frame = self.ale.getScreenRGB()
        for _ in range(warmup):
            self.step(self.policy())

    @property
    def over(self) -> bool:
        return bool(self.ale.game_over())

    def step(self, action: int):
        from wmfast.data.atari import ale_step

        if not self.over:
            self.frame = ale_step(self.ale, self.action_set[action], self.frameskip)[1]

    def render(self, size=None) -> np.ndarray:
        from wmfast.data.atari import observed_frame

        return observed_frame(self.frame, self.size)

    def policy(self) -> int:
        return int(self.rng.integers(self.n_actions))


def make_games(name: str, games: int, seed: int, render_size, frameskip: int) -> list:
    """`games` fresh games of the harness's seeds (Atari: each after its own warm-up)."""
    rom = atari_name(name)
    if rom is None:
        return [make_game(name, game_seed(seed, g)) for g in range(games)]
    warmups = np.random.default_rng(np.random.SeedSequence([seed, SEED_TAG, 2])).integers(
        ATARI_WARMUP[0], ATARI_WARMUP[1] + 1, games)
    return [AtariGame(rom, game_seed(seed, g), render_size, frameskip, int(w)) for g, w in enumerate(warmups)]


def start_games(name: str, games: int, context: int, seed: int, render_size, frame_size: int, frameskip: int = 4):
    """`games` fresh games, each played C-1 steps by its own policy -> (games, context frames [G, C, 3, S, S])."""
    played = make_games(name, games, seed, render_size, frameskip)
    frames = []
    for g in played:
        clip = [g.render(render_size)]
        for _ in range(context - 1):
            g.step(g.policy())
            clip.append(g.render(render_size))
        frames.append(np.stack(clip))
    return played, to_model_frames(np.stack(frames), frame_size)


def long_play(world, game: str, games: int = 8, steps: int = 500, actions: str = "random", seed: int = 1,
              render_size=64, keep_video: int = None, progress: bool = False, frameskip: int = 4) -> dict:
    """Drive `world` with game actions for `steps` frames from `games` real starts while the real games
    replay the same actions; read the objects of both at every step.

    game: an embedded game ("maze", "pong") or "atari:pong" / "atari:breakout" (render_size and
    frameskip: the recording's frame size and frameskip).
    Returns {"game", "games", "steps", "actions", "per_step": {check: share of games right at each
    step [steps]}, "share": {check: share of all frames}, "copy_last_share": the same for the last
    context frame held, "first_wrong": [first wrong frame or None per game], "held_frames": frames
    before the first wrong one, "played_frames": frames before each game ended (Atari), "ms_per_frame",
    "video": real | model frames of game keep_video (uint8 [steps, S, 2S+2, 3]) when asked}."""
    if game not in CHECKS:
        raise WmfastError(f"long play knows the games {sorted(CHECKS)}, got {game!r}")
    if actions not in ACTION_STREAMS:
        raise WmfastError(f"actions must be one of {ACTION_STREAMS}, got {actions!r}")
    if games < 1 or steps < 1:
        raise WmfastError(f"long play needs games >= 1 and steps >= 1, got {games} and {steps}")
    S = world.frame_size
    reader = make_reader(game, S, render_size)
    played, context = start_games(game, games, world.C, seed, render_size, S, frameskip)
    choose = HeldRandomActions(played[0].n_actions, games, seed) if actions == "random" else policy_actions
    world.reset(context)
    held = context[:, -1]
    checks = {name: np.zeros((steps, games), bool) for name in CHECKS[game] + ("correct",)}
    copy_last = {name: np.zeros((steps, games), bool) for name in checks}
    playing = np.ones((steps, games), bool)     # False once an Atari game has ended
    errors = {}
    video = []
    bar = range(steps)
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(bar, desc=f"long play ({game}, {actions})", unit="frame")
    elapsed = 0.0
    for t in bar:
        ids = choose(played)
        playing[t] = [not getattr(g, "over", False) for g in played]
        for g, a in zip(played, ids):
            g.step(int(a))
        real = to_model_frames(np.stack([g.render(render_size) for g in played]), S)
        t0 = time.perf_counter()
        frame = world.step(torch.as_tensor(ids, dtype=torch.long))
        elapsed += time.perf_counter() - t0
        frame = frame.detach().float().cpu()
        truth = played if game == "maze" else real
        result, baseline = reader.score(frame, truth), reader.score(held, truth)
        for name in checks:
            checks[name][t], copy_last[name][t] = result[name], baseline[name]
        for name in ("paddle_error_px", "ball_error_px"):
            if name in result:
                errors.setdefault(name, []).append(result[name])
        if keep_video is not None:
            video.append((real[keep_video], frame[keep_video]))
    correct = checks["correct"] | ~playing          # frames after a game ended never count as wrong
    first_wrong = [int(np.argmin(correct[:, i])) + 1 if not correct[:, i].all() else None for i in range(games)]
    played_frames = playing.sum(0)
    report = {"game": game, "games": games, "steps": steps, "actions": actions, "seed": seed,
              "per_step": {k: shares_per_step(v, playing) for k, v in checks.items()},
              "share": {k: float(v[playing].mean()) for k, v in checks.items()},
              "copy_last_share": {k: float(v[playing].mean()) for k, v in copy_last.items()},
              "first_wrong": first_wrong,
              "held_frames": [int(n) if f is None else f - 1 for f, n in zip(first_wrong, played_frames)],
              "played_frames": played_frames.tolist(),
              "ms_per_frame": 1e3 * elapsed / steps}
    for name, values in errors.items():
        v = np.stack(values)
        report[f"median_{name}"] = float(np.nanmedian(v)) if np.isfinite(v).any() else None
    if keep_video is not None:
        report["video"] = side_by_side_frames(video)
    return report


def shares_per_step(right, playing) -> list:
    """bool [steps, games] -> the share of the games still playing that are right, per step (None
    where every game has ended)."""
    n = playing.sum(1)
    return [None if k == 0 else float(v) for k, v in zip(n, (right & playing).sum(1) / np.maximum(n, 1))]


def side_by_side_frames(pairs) -> np.ndarray:
    """[(real [3, S, S], model [3, S, S])] -> uint8 [N, S, 2S + 2, 3] (real | model)."""
    from wmfast.rollout.media import side_by_side, to_uint8

    real = to_uint8(torch.stack([p[0] for p in pairs]))
    model = to_uint8(torch.stack([p[1] for p in pairs]))
    return side_by_side(real, model)


# -- a run, every mode and backend side by side ----------------------------------------------------
DEFAULT_MODES = ("compat:10", "fast:1", "fast:2", "fast:4", "fast:8", "fast:10")


def parse_mode(spec: str) -> dict:
    """'compat:10' / 'fast:4' / 'fast:4:stream' / 'fast:4:window' (MODE[:MASKGIT_STEPS][:CONTEXT]) -> World
    keyword arguments; CONTEXT (fast mode only) is 'stream' (streaming caches) or 'window' (the context
    window recomputed every frame); without it the World's default."""
    mode, steps, context, *rest = spec.split(":") + ["", ""]
    ok = mode in ("compat", "fast") and (not steps or (steps.isdigit() and int(steps) > 0)) and not any(rest) \
        and context in ("", "stream", "window") and not (context and mode == "compat")
    if not ok:
        raise WmfastError(f"bad mode {spec!r}: expected compat[:STEPS] or fast[:STEPS][:stream|window], e.g. fast:4")
    kwargs = {"mode": mode, "steps": int(steps or 10)}
    if context:
        kwargs["stream"] = context == "stream"
    return kwargs


def run_game(run) -> tuple:
    """(game name for long_play, size its frames were rendered or recorded at, frameskip (Atari; else
    None)) of the data a run was trained on."""
    from wmfast.data.load import load_dataset
    from wmfast.run_data import resolve_run_data

    spec = resolve_run_data(run, None)
    if spec.startswith("game:") and spec.split(":")[1] in READERS:
        return spec.split(":")[1], 64, None
    if not spec.startswith("game:"):
        meta = load_dataset(spec, progress=False).meta or {}
        if meta.get("source") == "game" and meta.get("game") in READERS:
            return meta["game"], int(meta.get("size", 64)), None
        if meta.get("source") == "atari" and meta.get("game") in ATARI_GAMES:
            size = meta.get("size")
            return f"atari:{meta['game']}", None if isinstance(size, list) else int(size), int(meta["frameskip"])
    raise WmfastError(f"long play replays the embedded games {sorted(READERS)} and Atari "
                      f"{'/'.join(ATARI_GAMES)} recordings; {run} was trained on {spec}")


def long_play_run(run, modes=DEFAULT_MODES, backends=("eager",), streams=ACTION_STREAMS, games: int = 8,
                  steps: int = 500, seed: int = 1, out=None, device: str = "cpu", progress: bool = True) -> dict:
    """long_play for every (mode, backend, action stream) of a run with an action map; with `out`, writes
    long_play.json, long_play.png (share of games still right at each step) and long_play.gif (real | model
    for the first setting's game that fails first, or game 0)."""
    import os

    from wmfast.loader import load
    from wmfast.measure import machine_info
    from wmfast.rollout.world import World

    game, render_size, frameskip = run_game(run)
    settings = [parse_mode(m) for m in modes]
    model = load(run)
    rows, video = [], None
    for backend in backends:
        for setting, spec in zip(settings, modes):
            world = World(model, device=device, backend=backend, actions="game", **setting)
            for stream in streams:
                first = video is None
                r = long_play(world, game, games, steps, stream, seed, render_size, progress=progress,
                              keep_video=None, frameskip=frameskip or 4)
                if first:   # the same games again for the picture, through the game that failed first
                    worst = min(range(games), key=lambda i: r["held_frames"][i])
                    video = long_play(world, game, games, steps, stream, seed, render_size, keep_video=worst,
                                      frameskip=frameskip or 4)["video"]
                    r["video_game"] = worst
                rows.append({"mode": spec, "backend": backend, "stream": world.stream, **r})
    report = {"run": os.path.basename(os.path.normpath(run)), "game": game, "render_size": render_size,
              "games": games, "steps": steps, "seed": seed, "machine": machine_info(device), "rows": rows}
    if out:
        os.makedirs(out, exist_ok=True)
        from wmfast.measure import write_json
        from wmfast.rollout.media import write_video

        report["gif"] = write_video(video, os.path.join(out, "long_play.gif"), fps=10, scale=3)
        report["plot"] = plot_long_play(rows, os.path.join(out, "long_play.png"))
        write_json(report, os.path.join(out, "long_play.json"))
    return report


def plot_long_play(rows, path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for r in rows:
        ax.plot(np.arange(1, r["steps"] + 1), np.array(r["per_step"]["correct"], float),
                label=f"{r['mode']} {r['backend']} ({r['actions']})")
    ax.set_xlabel("generated frame")
    ax.set_ylabel("share of games right")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title(f"long play: {rows[0]['game']}, {rows[0]['games']} games")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def format_long_play(report: dict) -> str:
    """A table: one row per (mode, backend, actions)."""
    main = CHECKS[report["game"]][:2]
    head = ["mode", "backend", "actions", "correct"] + list(main) + ["copy-last correct", "first wrong frames",
                                                                     "ms/frame"]
    lines = [" | ".join(head)]
    for r in report["rows"]:
        first = ", ".join("-" if f is None else str(f) for f in r["first_wrong"])
        lines.append(" | ".join([r["mode"], r["backend"], r["actions"], f"{100 * r['share']['correct']:.1f}%"]
                                + [f"{100 * r['share'][k]:.1f}%" for k in main]
                                + [f"{100 * r['copy_last_share']['correct']:.1f}%", first, f"{r['ms_per_frame']:.1f}"]))
    return "\n".join(lines)
