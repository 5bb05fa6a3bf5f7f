"""Running and scoring policies: chunk execution with a receding horizon, reach and discrete games.

A chunk policy predicts K actions from frame t. Executing them:
  - receding horizon N (actions_per_inference): run the first N actions of the chunk open loop, then
    predict a new chunk from the frame reached (N = K: fully open loop; N = 1: replan every step);
  - temporal ensembling (ACT): predict every step and average, for the current step, every earlier
    chunk's prediction for it with weights exp(-m * age_rank) (oldest first, m = 0.01 as in ACT).

reach is scored by success rate, steps to reach (successful episodes) and pauses: steps where the
effector hardly moves (< PAUSE_SPEED of its top speed) while near the ball (< NEAR) without having
reached it. Discrete games are scored by playing them (default 1000 steps per episode: points are
rare): pong points won / lost, return and hits (balls the player returned) per 100 steps, maze coins
per 100 steps, against a random policy, the game's scripted policy and the teacher it imitated.
In the embedded pong (v2) the opponent paddle is slower than the steepest return, so returns aimed away
from it win points (the pong teacher); read points won beside points lost, return and hits
(docs/policy-pong/README.md).
"""
import json
import os

import numpy as np
import torch
from tqdm import tqdm

from wmfast.errors import WmfastError

PAUSE_SPEED, NEAR = 0.1, 0.15
ENSEMBLE_M = 0.01
EVAL_STREAM = 2  # reach episode seeds: stream 0 is training data, 1 DAgger, 2 evaluation


# ---------------------------------------------------------------- executing chunks

class ChunkExecutor:
    """Turns predicted chunks into one action per step for n environments.

    horizon N: replan when N actions of the current chunk have run (or the chunk is used up).
    ensemble=True: replan every step and average the predictions for the current step.
    Chunks are [n, K, D] (velocities, or class probabilities for discrete actions).
    """

    def __init__(self, n: int, horizon: int, ensemble: bool = False, m: float = ENSEMBLE_M):
        if horizon < 1:
            raise WmfastError(f"horizon (actions per inference) must be >= 1, got {horizon}")
        self.n, self.horizon, self.ensemble, self.m = n, horizon, ensemble, m
        self.chunks = None                 # [n, K, D] current chunks (receding horizon)
        self.used = np.zeros(n, np.int64)  # actions of the current chunk already run
        self.history = [[] for _ in range(n)]  # ensemble: (step made, chunk [K, D]) per env
        self.t = np.zeros(n, np.int64)

    def needs_plan(self) -> np.ndarray:
        """[n] bool: which environments need a new chunk before this step."""
        if self.ensemble or self.chunks is None:
            return np.ones(self.n, bool)
        return self.used >= min(self.horizon, self.chunks.shape[1])

    def plan(self, idx: np.ndarray, chunks: np.ndarray) -> None:
        """Give environments `idx` new chunks [len(idx), K, D] predicted from their current frames."""
        if self.chunks is None:
            self.chunks = np.zeros((self.n,) + chunks.shape[1:], np.float32)
        self.chunks[idx] = chunks
        self.used[idx] = 0
        if self.ensemble:
            for j, i in enumerate(idx):
                self.history[i].append((int(self.t[i]), chunks[j]))

    def act(self, idx: np.ndarray) -> np.ndarray:
        """The actions [len(idx), D] for this step of environments idx, and advance them one step."""
        out = np.empty((len(idx), self.chunks.shape[2]), np.float32)
        for j, i in enumerate(idx):
            if self.ensemble:
                K = self.chunks.shape[1]
                live = [(t0, c) for t0, c in self.history[i] if self.t[i] - t0 < K]
                self.history[i] = live
                preds = np.stack([c[self.t[i] - t0] for t0, c in live])           # oldest first
                w = np.exp(-self.m * np.arange(len(preds)))
                out[j] = (w[:, None] * preds).sum(0) / w.sum()
            else:
                out[j] = self.chunks[i, self.used[i]]
            self.used[i] += 1
            self.t[i] += 1
        return out


def predictor(model, frame_size: int = None):
    """A policy -> fn(frames uint8 [B, H, W, 3]) -> numpy [B, K, D]: velocities, or class
    probabilities for a discrete policy. Frames of another size are area-resized to the policy's."""
    from wmfast.data.frames import resize_uint8
    from wmfast.models.policy import to_input

    cfg = model.config
    model.eval()

    @torch.no_grad()
    def predict(frames):
        frames = np.asarray(frames)
        if frames.shape[1] != cfg.frame_size:
            frames = resize_uint8(frames, cfg.frame_size)
        out = model(to_input(torch.from_numpy(np.ascontiguousarray(frames)).to(next(model.parameters()).device)))
        if cfg.discrete:
            out = out.softmax(-1)
        return out.float().cpu().numpy()

    return predict


# ---------------------------------------------------------------- reach

def reach_seeds(seed: int, episodes: int, stream: int = EVAL_STREAM):
    from wmfast.data.reach import episode_seed

    return [episode_seed(seed, e, stream) for e in range(episodes)]


def rollout_reach(predict, seeds, horizon: int, ensemble: bool = False, size: int = 128, label_chunk: int = 0,
                  record: int = 0, max_steps: int = None):
    """Play one reach episode per seed, all at once, the policy choosing every action.

    predict: fn(frames uint8 [B, S, S, 3]) -> chunks [B, K, 2]; None: the scripted expert plays.
    label_chunk > 0 (DAgger): also return every visited frame with the expert's chunk from that state.
    record: keep the frames of the first `record` episodes (for GIFs).
    Returns dict(success [n] bool, steps [n], pauses [n], frames: list of [T, S, S, 3] (recorded),
    dagger: (frames [M, S, S, 3], actions [M, K, 2], valid [M, K]) when label_chunk > 0).
    """
    from wmfast.data.reach import Reach

    games = [Reach(s) for s in seeds]
    if max_steps is not None:
        for g in games:
            g.MAX_STEPS = max_steps
    n = len(games)
    ex = ChunkExecutor(n, horizon, ensemble)
    pauses = np.zeros(n, np.int64)
    recorded = [[g.render(size)] for g in games[:record]]
    dagger_frames, dagger_actions, dagger_valid = [], [], []
    while True:
        live = np.array([i for i, g in enumerate(games) if not g.done])
        if len(live) == 0:
            break
        frames = np.stack([games[i].render(size) for i in live])
        if label_chunk:
            for i, f in zip(live, frames):
                a, v = games[i].expert_chunk(label_chunk)
                dagger_frames.append(f)
                dagger_actions.append(a)
                dagger_valid.append(v)
        if predict is None:   # the scripted expert plays (the baseline)
            actions = [games[i].policy() for i in live]
        else:
            need = ex.needs_plan()[live]
            if need.any():
                ex.plan(live[need], predict(frames[need]))
            actions = ex.act(live)
        for i, a in zip(live, actions):
            g = games[i]
            before = g.effector.copy()
            g.step(a)
            moved = np.linalg.norm(g.effector - before) / g.MAX_SPEED
            if not g.reached and moved < PAUSE_SPEED and g.distance < NEAR:
                pauses[i] += 1
            if i < record:
                recorded[i].append(g.render(size))
    out = {"success": np.array([g.reached for g in games]), "steps": np.array([g.t for g in games]),
           "pauses": pauses, "frames": [np.stack(r) for r in recorded]}
    if label_chunk:
        out["dagger"] = (np.stack(dagger_frames), np.stack(dagger_actions), np.stack(dagger_valid))
    return out


def summarize_reach(out: dict, horizon) -> dict:
    ok = out["success"]
    return {"horizon": horizon, "success_rate": float(ok.mean()),
            "steps_to_reach": float(out["steps"][ok].mean()) if ok.any() else None,
            "pauses": float(out["pauses"].mean()), "episodes": int(len(ok))}


# ---------------------------------------------------------------- discrete games

def play_discrete(game_name: str, choose, seeds, steps: int, size: int, record: int = 0, label=None):
    """Play `steps` steps of an embedded discrete game per seed. choose(games, frames) -> action ids.
    label=(teacher, k) (DAgger): also return every visited frame with the teacher's next k actions.
    Returns dict(rewards [n, steps], hits [n, steps] (pong: the player returned the ball), frames
    (recorded), dagger: (frames [M, S, S, 3], actions [M, k], valid [M, k]) with label)."""
    from wmfast.data.games import make_game

    games = [make_game(game_name, s) for s in seeds]
    rewards = np.zeros((len(games), steps), np.float32)
    hits = np.zeros((len(games), steps), bool)
    recorded = [[g.render(size)] for g in games[:record]]
    labelled = ([], [])
    for t in range(steps):
        frames = np.stack([g.render(size) for g in games])
        if label is not None:
            from wmfast.policy.teachers import teacher_chunk

            labelled[0].append(frames)
            labelled[1].extend(teacher_chunk(g, label[0], label[1]) for g in games)
        ids = choose(games, frames)
        for i, (g, a) in enumerate(zip(games, ids)):
            toward_player = getattr(g, "vx", 0.0) < 0
            rewards[i, t] = g.step(int(a))
            hits[i, t] = toward_player and g.vx > 0 and rewards[i, t] == 0   # pong: bounced off our paddle
            if i < record:
                recorded[i].append(g.render(size))
    out = {"rewards": rewards, "hits": hits, "frames": [np.stack(r) for r in recorded]}
    if label is not None:
        actions = np.stack(labelled[1])
        out["dagger"] = (np.concatenate(labelled[0]), actions, np.ones(actions.shape, bool))
    return out


def policy_chooser(predict, n: int, horizon: int, ensemble: bool = False, sample_seed: int = None):
    """Game action ids from a discrete policy: its most likely action, or with sample_seed a draw from its
    probabilities (an actor-critic's policy is stochastic: the greedy one can cycle between two cells)."""
    ex = ChunkExecutor(n, horizon, ensemble)
    idx = np.arange(n)
    rng = np.random.default_rng(sample_seed) if sample_seed is not None else None

    def choose(games, frames):
        need = ex.needs_plan()
        if need.any():
            ex.plan(idx[need], predict(frames[need]))
        probs = ex.act(idx)
        if rng is None:
            return probs.argmax(-1)
        cum = np.cumsum(probs / probs.sum(-1, keepdims=True), -1)
        return np.minimum((cum < rng.random((len(probs), 1))).sum(-1), probs.shape[-1] - 1)

    return choose


def random_chooser(n_actions: int, seed: int):
    rng = np.random.default_rng(seed)
    return lambda games, frames: rng.integers(n_actions, size=len(games))


def scripted_chooser(games, frames):
    return [g.policy() for g in games]


def score_discrete(game_name: str, rewards: np.ndarray, hits: np.ndarray = None) -> dict:
    """Per 100 steps, averaged over episodes. pong: points won, points lost, return (won - lost) and
    hits (balls the player's paddle returned)."""
    steps = rewards.shape[1]
    per100 = 100.0 / steps
    if game_name == "pong":
        won, lost = (rewards > 0).sum(1), (rewards < 0).sum(1)
        out = {"points_won_per_100": float(won.mean() * per100), "points_lost_per_100": float(lost.mean() * per100),
               "return_per_100": float(rewards.sum(1).mean() * per100)}
        if hits is not None:
            out["hits_per_100"] = float(hits.sum(1).mean() * per100)
        return out
    return {"coins_per_100": float(rewards.sum(1).mean() * per100), "return_per_100": float(rewards.sum(1).mean() * per100)}


# ---------------------------------------------------------------- the eval command

def parse_horizons(text, chunk: int):
    try:
        hs = [int(h) for h in str(text).split(",") if h.strip()]
    except ValueError:
        raise WmfastError(f"--horizon must be comma-separated integers, got {text!r}") from None
    if not hs or min(hs) < 1:
        raise WmfastError(f"--horizon needs integers >= 1, got {text!r}")
    return hs


def evaluate_policy(run_dir, episodes: int = 100, horizons="8,4,2", seed: int = 1000, json_path=None,
                    ensemble: bool = False, out_dir=None, gifs: int = 4, steps: int = 1000, progress: bool = True,
                    baselines: dict = None, sample: bool = False) -> dict:
    """Evaluate a trained policy by playing its game on held-out episodes, once per horizon.

    reach: success rate, steps to reach, pauses per horizon (and temporal ensembling with ensemble=True),
    beside the scripted expert on the same episodes;
    discrete games: score per 100 steps per horizon, with random and scripted baselines, and each policy
    run in `baselines` ({name: run dir}, e.g. BC on the action map's labels, the actor-critic trained on
    the real game) played on the same seeds at its own chunk as horizon. sample: discrete policies draw
    their actions from their probabilities (seeded by `seed`) instead of taking the most likely.
    Writes OUT/eval.json (and json_path), OUT/eval.png and one GIF per horizon; returns the report.
    """
    from wmfast.checkpoint import load_policy
    from wmfast.models.policy import count_params

    if episodes < 1:
        raise WmfastError(f"--episodes must be >= 1, got {episodes}")
    model = load_policy(run_dir)
    cfg = model.config
    hs = parse_horizons(horizons, cfg.chunk)
    out_dir = out_dir or os.path.join(run_dir, "eval")
    os.makedirs(out_dir, exist_ok=True)
    predict = predictor(model)
    torch.manual_seed(seed)
    report = {"policy": cfg.kind, "params": count_params(model), "game": cfg.game, "chunk": cfg.chunk,
              "episodes": episodes, "seed": seed, "sampled": bool(sample), "results": []}
    modes = [(h, False) for h in hs] + ([(1, True)] if ensemble else [])
    bar = tqdm(modes, desc=f"eval {cfg.kind}", unit="horizon", disable=not progress)
    if cfg.game == "reach":
        seeds = reach_seeds(seed, episodes)
        for h, ens in bar:
            out = rollout_reach(predict, seeds, h, ens, cfg.frame_size, record=gifs)
            row = summarize_reach(out, "ensemble" if ens else h)
            row["executed_horizon"] = min(h, cfg.chunk)
            report["results"].append(row)
            _write_gif(out["frames"], os.path.join(out_dir, f"reach_{row['horizon']}.gif"))
        expert = summarize_reach(rollout_reach(None, seeds, 1, size=cfg.frame_size), "expert")
        report["baselines"] = {"expert": {k: v for k, v in expert.items() if k != "horizon"}}
    elif cfg.discrete:
        from wmfast.data.games import GAMES

        if cfg.game not in GAMES:
            raise WmfastError(f"{run_dir}: policy trained on {cfg.game or 'unknown data'!r}; evaluation by playing "
                              f"needs an embedded game ({', '.join(sorted(GAMES))})")
        seeds = [int(s) for s in np.random.SeedSequence([seed, 7]).generate_state(episodes)]
        size = cfg.render_size or cfg.frame_size   # the predictor area-resizes to frame_size
        for h, ens in bar:
            out = play_discrete(cfg.game, policy_chooser(predict, episodes, h, ens, seed if sample else None), seeds,
                                steps, size, record=gifs)
            report["results"].append({"horizon": "ensemble" if ens else h, "executed_horizon": min(h, cfg.chunk),
                                      **score_discrete(cfg.game, out["rewards"], out["hits"])})
            _write_gif(out["frames"][:2], os.path.join(out_dir, f"{cfg.game}_{h if not ens else 'ensemble'}.gif"),
                       max_frames=200)
        # Baselines play the same seeds for the same number of steps (the policy only changes the actions).
        choosers = {"random": random_chooser(len(cfg.action_names) or cfg.num_actions, seed),
                    "scripted": scripted_chooser}
        for name, other in (baselines or {}).items():
            choosers[name] = _baseline_chooser(other, cfg, episodes, seed if sample else None)
        if cfg.teacher:
            from wmfast.policy.teachers import get_teacher

            teacher = get_teacher(cfg.game, cfg.teacher)
            choosers[f"teacher ({cfg.teacher})"] = lambda games, frames: [teacher(g) for g in games]
        report["baselines"] = {}
        for name, choose in choosers.items():
            out = play_discrete(cfg.game, choose, seeds, steps, size)
            report["baselines"][name] = score_discrete(cfg.game, out["rewards"], out["hits"])
        report["steps_per_episode"] = steps
    else:
        raise WmfastError(f"{run_dir}: no embedded game to evaluate a {cfg.game!r} continuous policy on")
    from wmfast.config import save_json

    save_json(report, os.path.join(out_dir, "eval.json"))
    if json_path:
        os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
        save_json(report, json_path)
    plot_eval(report, os.path.join(out_dir, "eval.png"))
    return report


def _baseline_chooser(run_dir, cfg, episodes: int, sample_seed: int = None):
    """Another policy run of the same game and actions as a baseline: it plays at its own chunk as horizon
    and sees frames made its own way (render size, then area-resized to its frame size)."""
    from wmfast.checkpoint import load_policy
    from wmfast.data.frames import resize_uint8

    other = load_policy(run_dir)
    oc = other.config
    if oc.game != cfg.game or tuple(oc.action_names) != tuple(cfg.action_names):
        raise WmfastError(f"baseline {run_dir} plays {oc.game!r} with {list(oc.action_names)}, not {cfg.game!r} with "
                          f"{list(cfg.action_names)}")
    choose = policy_chooser(predictor(other), episodes, oc.chunk, sample_seed=sample_seed)
    size = oc.render_size or oc.frame_size
    return lambda games, frames: choose(games, resize_uint8(np.stack([g.render(size) for g in games]), oc.frame_size))


def _write_gif(videos, path, fps: int = 10, max_frames: int = None):
    """Episodes side by side (shorter ones hold their last frame); the first max_frames frames."""
    if not videos:
        return None
    from wmfast.rollout.media import side_by_side, write_video

    videos = [v[:max_frames] for v in videos]
    T = max(len(v) for v in videos)
    padded = [np.concatenate([v, np.repeat(v[-1:], T - len(v), 0)]) for v in videos]
    scale = max(1, 128 // videos[0].shape[1])
    return write_video(side_by_side(*padded), path, fps=fps, scale=scale)


def format_table(report: dict) -> str:
    rows = report["results"]
    keys = [k for k in rows[0] if k not in ("horizon",)]
    lines = [f"policy {report['policy']} ({report['params']:,} params) on {report['game']}, {report['episodes']} episodes",
             "| horizon | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    fmt = lambda v: "-" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))  # noqa: E731
    for r in rows:
        lines.append(f"| {r['horizon']} | " + " | ".join(fmt(r[k]) for k in keys) + " |")
    for name, b in report.get("baselines", {}).items():
        lines.append(f"| {name} | " + " | ".join(fmt(b.get(k)) if k in b else "" for k in keys) + " |")
    return "\n".join(lines)


def plot_eval(report: dict, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["results"]
    labels = [str(r["horizon"]) for r in rows]
    keys = [k for k in rows[0] if k not in ("horizon", "executed_horizon", "episodes")]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.8), squeeze=False)
    for ax, k in zip(axes.flat, keys):
        vals = [r[k] if r[k] is not None else 0.0 for r in rows]
        names = labels[:]
        for bname, b in report.get("baselines", {}).items():
            if k in b:
                names.append(bname)
                vals.append(b[k] if b[k] is not None else 0.0)
        ax.bar(names, vals, color="tab:blue")
        ax.set_title(k, fontsize=9)
        ax.set_xlabel("actions per inference", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"{report['policy']} on {report['game']}", fontsize=10)
    fig.subplots_adjust(wspace=0.4, bottom=0.2, top=0.82)
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def write_json(obj, path):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
