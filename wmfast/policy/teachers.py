"""Teachers for discrete games: noise-free scripted players that see only what a frame shows.

The games' own `policy()` is a data-collection policy (pong: track the ball 60% of the time, press a
random button otherwise, in sticky runs), so a policy imitating it imitates the noise too. A teacher
here is a deterministic function of the current state that a one-frame policy can, in principle,
reproduce exactly:

    pong tracker (`--teacher tracker`): an aiming tracker. It holds its paddle 0.9 half-paddles off
                  the ball's centre, shifted toward the opponent's height, so the ball meets the paddle's
                  far end and leaves at a steep angle (vertical speed 0.035 x 0.9) away from the
                  opponent, which (speed 0.02) cannot follow: it wins points. Only the ball's and both
                  paddles' heights decide, all visible in one frame (the ball's velocity is not).
    pong centre (`--teacher centre`): the plain tracker, toward the ball's centre. It never misses,
                  but its returns are flat and the opponent returns nearly all of them.
Both move UP / DOWN toward their target and NOOP within a dead band of half a paddle step, so they
do not jitter around it.

`teacher_episodes` records teacher episodes (frames, action ids) the way `play_episode` records the
scripted policy's, with the game seeded per episode; `teacher_chunk` labels any state with the
teacher's next k actions (played on a copy of the game), which is what DAgger needs.
"""
import copy

import numpy as np
from tqdm import tqdm

from wmfast.errors import WmfastError


PONG_AIM = 0.9   # ball centre - paddle centre, in half-paddles (docs/policy-pong/points_study.py)


def pong_toward(game, target: float) -> int:
    """NOOP / UP / DOWN moving the paddle centre toward `target` (row coordinates grow downward)."""
    gap = target - game.player_y
    if abs(gap) < game.PLAYER_SPEED / 2:
        return 0
    return 1 if gap < 0 else 2


def pong_tracker(game, aim: float = PONG_AIM) -> int:
    """The aiming tracker: hold the paddle centre `aim` half-paddles from the ball's centre toward the
    opponent's height, so the ball meets the paddle's far end. The return's vertical speed is 0.035 x
    the offset, signed away from the paddle centre: the ball heads away from the opponent. In
    docs/policy-pong/points_study.py (48 games of 1000 steps) aim 0.9 wins 0.92 points per 100 steps
    and loses none, the centre tracker wins 0.02 (the opponent reaches its flat returns), aim 1.0
    loses a few and 1.1 often misses. The side follows the opponent's height relative to the ball
    (0.92 points); by the opponent's half of the field it wins 0.73."""
    ball = game.by + game.BALL / 2
    away = 1.0 if game.opponent_y < ball else -1.0          # opponent above the ball: send it down
    return pong_toward(game, ball - away * aim * game.PADDLE_H / 2)


def pong_centre_tracker(game) -> int:
    """The plain tracker: toward the ball's centre (returns flat shots the opponent reaches)."""
    return pong_toward(game, game.by + game.BALL / 2)


TEACHERS = {("pong", "tracker"): pong_tracker, ("pong", "centre"): pong_centre_tracker}


def get_teacher(game: str, name: str):
    if (game, name) not in TEACHERS:
        known = ", ".join(f"{g}:{n}" for g, n in sorted(TEACHERS))
        raise WmfastError(f"no teacher {name!r} for game {game!r}; teachers: {known}")
    return TEACHERS[(game, name)]


def teacher_chunk(game, teacher, k: int) -> np.ndarray:
    """The teacher's next k action ids [k] from the game's current state (the game is not changed)."""
    g = copy.deepcopy(game)
    out = np.empty(k, np.int64)
    for i in range(k):
        out[i] = teacher(g)
        g.step(int(out[i]))
    return out


def play_teacher_episode(game_name: str, teacher, steps: int, size: int, seed: int):
    """-> frames [steps+1, S, S, 3] uint8, actions [steps+1] int64 (-1 on the last frame: nothing follows)."""
    from wmfast.data.games import make_game

    game = make_game(game_name, seed)
    frames = np.empty((steps + 1, size, size, 3), np.uint8)
    actions = np.full(steps + 1, -1, np.int64)
    frames[0] = game.render(size)
    for t in range(steps):
        actions[t] = teacher(game)
        game.step(int(actions[t]))
        frames[t + 1] = game.render(size)
    return frames, actions


def teacher_episodes(game_name: str, teacher_name: str, n_samples: int, steps: int = 200, size: int = 64,
                     seed: int = 0, progress: bool = True):
    """Teacher episodes of `steps` steps until they hold n_samples (frame, action) pairs -> [(frames, actions)]."""
    from wmfast.data.reach import episode_seed

    teacher = get_teacher(game_name, teacher_name)
    if steps < 1 or n_samples < 1:
        raise WmfastError(f"need steps >= 1 and samples >= 1, got {steps} and {n_samples}")
    out, total, e = [], 0, 0
    with tqdm(total=n_samples, desc=f"{game_name} {teacher_name}", unit="sample", disable=not progress) as bar:
        while total < n_samples:
            out.append(play_teacher_episode(game_name, teacher, steps, size, episode_seed(seed, e, 0)))
            total += steps
            bar.update(steps)
            e += 1
    return out
