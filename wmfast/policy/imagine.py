"""Training a policy inside a world model: actor-critic on imagined rollouts (DreamerV3 / IRIS).

    wmfast policy imagine --world RUN --run OUT --kind act

Each batch of rollouts:
    B dreams, each started from a real window (C frames) of the world run's training episodes and
    going on for `segments` batches (so the agent also learns the states its own play leads to, far
    from where the data's scripted policy went)
    -> the World (fast mode, game actions through its action map) plays the actor's actions for
       `horizon` steps; the run's reward head (`wmfast train reward`) pays each dreamed transition its
       expected reward and, where the game has episode ends, the chance the episode goes on
    -> lambda-returns bootstrapped from a slow target critic, advantages scaled by the running spread
       (5th to 95th percentile) of the returns, as in DreamerV3
    -> `updates_per_batch` optimizer steps on it: actor: policy gradient on the advantages (the ratio to
       the policy that acted clipped, as in PPO, once the batch is reused) plus an entropy bonus;
       critic: regression to the returns.

The actor is one of the policy kinds (models/policy.py). A chunk policy (chunk, act) is trained as it
is played: it predicts K actions from one frame and all K run open loop, so a decision is a chunk,
its reward the discounted sum over the chunk, and its log-probability the sum over the chunk's actions.
The agent sees no real frame after its start windows and no true action: only the action map's labels
(counted in the report) tie the dream's controls to the game's buttons.

The same trainer runs on the real embedded game (env="game", the upper bound of issue 28: the same
actor-critic with as many real environment steps as the world model's data had frames).
Outputs in RUN: the policy (model.safetensors + config.json: `wmfast policy eval` and `policy dream` read
it), train_state.pt (resume), metrics.jsonl, curves.png and imagine.json.
"""
import copy
import dataclasses
import json
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from wmfast.checkpoint import save_model
from wmfast.config import Config, Range, load_json, save_json
from wmfast.errors import WmfastError
from wmfast.models.policy import PolicyConfig, ConvTokens, build_policy, count_params, flat_mlp, to_input
from wmfast.rollout.world import frames_to_uint8
from wmfast.train.loop import Loop, Stage, cosine, optimizer, rng_state, set_rng_state

ENVS = ("dream", "game")


@dataclasses.dataclass
class ImagineConfig(Config):
    kind: str = dataclasses.field(default="bc", metadata={"rule": ("bc", "chunk", "act")})   # the actor: bc (one action per frame) | chunk | act (K actions per frame)
    chunk: int = dataclasses.field(default=4, metadata={"rule": Range(1)})   # chunk / act: actions per decision, run open loop (bc: 1)
    env: str = dataclasses.field(default="dream", metadata={"rule": ENVS})   # dream: the world model; game: the real embedded game (the upper bound)
    iterations: int = dataclasses.field(default=400, metadata={"rule": Range(1)})   # optimizer steps
    updates_per_batch: int = dataclasses.field(default=4, metadata={"rule": Range(1)})   # steps per batch of rollouts
    segments: int = dataclasses.field(default=8, metadata={"rule": Range(1)})   # batches one dream goes on for
    clip: float = dataclasses.field(default=0.2, metadata={"rule": Range(0, lo_open=True)})  # ratio clip on reuse
    batch_size: int = dataclasses.field(default=64, metadata={"rule": Range(1)})
    horizon: int = dataclasses.field(default=16, metadata={"rule": Range(1)})   # env steps per rollout
    gamma: float = dataclasses.field(default=0.97, metadata={"rule": Range(0, 1)})
    lam: float = dataclasses.field(default=0.95, metadata={"rule": Range(0, 1)})
    entropy: float = dataclasses.field(default=3e-3, metadata={"rule": Range(0)})
    lr: float = dataclasses.field(default=1e-3, metadata={"rule": Range(0, lo_open=True)})
    warmup_steps: int = 20
    target_decay: float = dataclasses.field(default=0.98, metadata={"rule": Range(0, 1)})   # slow critic (EMA)
    norm_decay: float = dataclasses.field(default=0.99, metadata={"rule": Range(0, 1)})     # return spread (EMA)
    maskgit_steps: int = dataclasses.field(default=1, metadata={"rule": Range(1)})   # the World's fast mode, as `serve` plays it
    seed: int = 0
    save_every: int = 64


# ---------------------------------------------------------------- environments

class DreamEnv:
    """The world model as an environment: start windows from the run's training episodes, frames from
    the World, rewards (and continuation) from the run's reward head."""

    def __init__(self, world_run, maskgit_steps: int = 1, seed: int = 0):
        from wmfast.latent_actions import held_out_episodes
        from wmfast.policy.dream import load_reward_head
        from wmfast.rollout.world import World
        from wmfast.train.reward import load_reward_data

        self.world = World.load(world_run, device="cpu", mode="fast", steps=maskgit_steps, actions="game", seed=seed)
        if self.world.action_map is None:
            raise WmfastError(f"{world_run}: no action_map.json; fit one with `wmfast train action-map --run {world_run}`")
        self.head = load_reward_head(world_run, self.world.frame_size)
        if self.head is None:
            raise WmfastError(f"{world_run}: no reward head to pay the dream's rewards; fit one with "
                              f"`wmfast train reward --run {world_run}`")
        ds, self.data, _ = load_reward_data(os.fspath(world_run), None)
        held, _ = held_out_episodes(ds, os.fspath(world_run))
        C, held = self.world.C, set(held)
        self.frames = ds.frames
        self.starts = np.array([s + i for e, (s, end) in enumerate(ds.episodes) if e not in held
                                for i in range(end - s - C + 1)], np.int64)
        if len(self.starts) == 0:
            raise WmfastError(f"{ds.source}: no training episode has {C} frames to start a dream from")
        self.action_names = list(self.world.action_map.action_names)
        self.frame_size, self.render_size = self.world.frame_size, int(ds.frames.shape[1])
        self.data_frames, self.labels = len(ds.frames), int(self.world.action_map.counts.sum())
        self.game = ds.meta.get("game", "")

    def start(self, n: int, rng) -> np.ndarray:
        """n start windows -> the windows' last frames uint8 [n, S, S, 3] (the agent's first view)."""
        from wmfast.data.frames import to_model_frames

        idx = rng.choice(self.starts, size=n)
        windows = np.stack([self.frames[i:i + self.world.C] for i in idx])                # [n, C, H, W, 3]
        ctx = to_model_frames(windows, self.frame_size)                                   # [n, C, 3, S, S]
        self.world.reset(ctx)
        self.last = ctx[:, -1]
        return frames_to_uint8(self.last).numpy()

    def step(self, actions: np.ndarray):
        """Game action ids [n] -> (frames uint8 [n, S, S, 3], expected reward [n], p(episode goes on) [n])."""
        frame = self.world.step(torch.as_tensor(actions), as_uint8=False)                   # [n, 3, S, S] float
        out = self.head.predict(self.last, frame)
        self.last = frame
        go_on = 1.0 - out["terminal"] if out["terminal"] is not None else torch.ones_like(out["reward"])
        return frames_to_uint8(frame).numpy(), out["reward"].numpy(), go_on.numpy()


class GameEnv:
    """The real embedded game as an environment (same interface): each start is a new game advanced a
    random number of steps by its scripted policy, rendered like the world model's data."""

    def __init__(self, game: str, frame_size: int, render_size: int, max_warmup: int = 20):
        from wmfast.data.games import GAMES

        if game not in GAMES:
            raise WmfastError(f"env=game needs an embedded game ({', '.join(sorted(GAMES))}), got {game!r}")
        self.game, self.frame_size, self.render_size, self.max_warmup = game, frame_size, render_size, max_warmup
        self.action_names = list(GAMES[game].action_names)

    def _render(self) -> np.ndarray:
        from wmfast.data.frames import resize_uint8

        return resize_uint8(np.stack([g.render(self.render_size) for g in self.games]), self.frame_size)

    def start(self, n: int, rng) -> np.ndarray:
        from wmfast.data.games import make_game

        self.games = [make_game(self.game, int(s)) for s in rng.integers(1 << 30, size=n)]
        for g in self.games:
            for _ in range(int(rng.integers(self.max_warmup + 1))):
                g.step(g.policy())
        return self._render()

    def step(self, actions: np.ndarray):
        rewards = np.array([g.step(int(a)) for g, a in zip(self.games, actions)], np.float32)
        return self._render(), rewards, np.ones(len(self.games), np.float32)


# ---------------------------------------------------------------- the actor-critic

class ActorCritic(nn.Module):
    """The actor (a policy of any kind), a critic (CNN + MLP -> the value of a frame) and its slow copy."""

    def __init__(self, pcfg: PolicyConfig):
        super().__init__()
        self.actor = build_policy(pcfg)
        self.critic = nn.Sequential(ConvTokens(pcfg.channels), flat_mlp(pcfg, 1))
        self.target = copy.deepcopy(self.critic).requires_grad_(False)

    @torch.no_grad()
    def update_target(self, decay: float):
        for t, p in zip(self.target.parameters(), self.critic.parameters()):
            t.lerp_(p, 1.0 - decay)


def lambda_returns(rewards, discounts, values, lam: float):
    """rewards, discounts [D, B] and bootstrap values [D+1, B] -> lambda-returns [D, B]:
    R_d = r_d + disc_d * ((1 - lam) * V_{d+1} + lam * R_{d+1}), R_D = V_D."""
    out, nxt = [], values[-1]
    for d in range(rewards.shape[0] - 1, -1, -1):
        nxt = rewards[d] + discounts[d] * ((1 - lam) * values[d + 1] + lam * nxt)
        out.append(nxt)
    return torch.stack(out[::-1])


class ImagineStage(Stage):
    """One optimizer step per call; a new batch of rollouts every `updates_per_batch` steps. The steps
    that reuse a batch clip the policy's change (PPO's ratio clip), so a rollout, the costly part (the
    World makes every frame), teaches several updates."""
    name = "imagine"

    def __init__(self, model: ActorCritic, env, cfg: ImagineConfig, log=None, save=None):
        self.model, self.env, self.cfg, self.log, self._save = model, env, cfg, log, save
        self.K = model.actor.config.chunk
        self.decisions = max(1, cfg.horizon // self.K)
        self.rng = np.random.default_rng(cfg.seed)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.spread = torch.tensor(1.0)   # running 95th - 5th percentile of the returns (DreamerV3)
        self.rollout, self.frames_per_s = None, 0.0
        self.last, self.segments_left = None, 0   # where the dream stands; batches before new start windows

    def batch(self, step):
        if step % self.cfg.updates_per_batch == 0 or self.rollout is None:
            self.rollout = self.imagine()
        return [self.rollout]

    @torch.no_grad()
    def imagine(self) -> dict:
        """A batch of rollouts and what the updates need from them: frames [D+1, B, S, S, 3] uint8, the
        actions [D, B, K] and their log-probabilities then [D, B], lambda-returns and advantages [D, B],
        the rewards paid per step [D*K, B]."""
        cfg, K, B = self.cfg, self.K, self.cfg.batch_size
        t0 = time.perf_counter()
        if self.segments_left == 0 or self.last is None:
            self.last, self.segments_left = self.env.start(B, self.rng), cfg.segments
        self.segments_left -= 1
        obs = [self.last]
        actions, logps, rewards, discounts, paid = [], [], [], [], []
        self.model.eval()
        for _ in range(self.decisions):
            logp = self.model.actor(to_input(torch.from_numpy(obs[-1]))).log_softmax(-1)         # [B, K, A]
            a = torch.multinomial(logp.exp().flatten(0, 1), 1, generator=self.gen).view(B, K)
            r_sum, disc = np.zeros(B, np.float32), np.ones(B, np.float32)
            for j in range(K):
                frame, r, go_on = self.env.step(a[:, j].numpy())
                r_sum += disc * r
                paid.append(r)
                disc = disc * cfg.gamma * go_on
            obs.append(frame)
            actions.append(a)
            logps.append(logp.gather(-1, a[..., None])[..., 0].sum(-1))
            rewards.append(r_sum)
            discounts.append(disc)
        self.last = obs[-1]
        obs = torch.from_numpy(np.stack(obs))
        D = len(actions)
        value = self.model.target(to_input(obs.flatten(0, 1))).view(D + 1, B)
        returns = lambda_returns(torch.from_numpy(np.stack(rewards)), torch.from_numpy(np.stack(discounts)), value,
                                 cfg.lam)
        lo, hi = torch.quantile(returns.flatten(), torch.tensor([0.05, 0.95]))
        self.spread = cfg.norm_decay * self.spread + (1 - cfg.norm_decay) * (hi - lo)
        self.model.train()
        self.frames_per_s = B * D * K / (time.perf_counter() - t0)
        return {"obs": obs, "actions": torch.stack(actions), "logp": torch.stack(logps), "returns": returns,
                "advantage": (returns - value[:-1]) / self.spread.clamp(min=1.0), "paid": torch.from_numpy(np.stack(paid))}

    def loss(self, r):
        D, B = r["actions"].shape[:2]
        x = to_input(r["obs"][:-1].flatten(0, 1))                                             # [D*B, 3, S, S]
        logp = self.model.actor(x).view(D, B, self.K, -1).log_softmax(-1)
        chosen = logp.gather(-1, r["actions"][..., None])[..., 0].sum(-1)                     # [D, B]
        ratio = (chosen - r["logp"]).exp()
        adv, clip = r["advantage"], self.cfg.clip
        surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv)
        entropy = -(logp.exp() * logp).sum(-1).mean(-1)                                       # [D, B] per action
        actor_loss = -surrogate.mean() - self.cfg.entropy * entropy.mean()
        critic_loss = 0.5 * F.mse_loss(self.model.critic(x).view(D, B), r["returns"])
        metrics = {"reward_per_100": float(r["paid"].mean() * 100), "return": float(r["returns"].mean()),
                   "entropy": float(entropy.mean().detach()), "critic_loss": float(critic_loss.detach()),
                   "spread": float(self.spread)}
        return actor_loss + critic_loss, metrics, float(B)

    def after_step(self, step, result):
        self.model.update_target(self.cfg.target_decay)
        m = result.metrics
        if self.log is not None:
            self.log({"step": step, "loss": result.loss, "lr": result.lr, "frames_per_s": self.frames_per_s,
                      **{k: float(v) for k, v in m.items()}})
        return {"reward/100": f"{m['reward_per_100']:.2f}", "H": f"{m['entropy']:.2f}",
                "frames/s": f"{self.frames_per_s:.0f}"}

    def state(self):
        return {"rng": rng_state(self.rng), "sampler": self.gen.get_state(), "spread": self.spread,
                "rollout": self.rollout}   # a batch still being reused goes on being reused after a resume

    def load_state(self, state):
        # The environment's own state (the World's caches) is not saved: a resumed run starts a new dream,
        # so it matches an uninterrupted one when saved at the end of a dream (save_every: a multiple of
        # updates_per_batch * segments, as by default).
        set_rng_state(self.rng, state["rng"])
        self.gen.set_state(state["sampler"])
        self.spread, self.rollout = state["spread"], state["rollout"]

    def save(self, step):
        if self._save is not None:
            self._save(step)


# ---------------------------------------------------------------- the command

def make_env(cfg: ImagineConfig, world_run):
    """(env, facts about it) for cfg.env; the game env renders like the world run's data."""
    dream = DreamEnv(world_run, cfg.maskgit_steps, cfg.seed)
    if cfg.env == "dream":
        return dream, dream
    return GameEnv(dream.game, dream.frame_size, dream.render_size), dream


def imagine(run_dir, world_run, cfg: ImagineConfig = None, resume: bool = False, progress: bool = True) -> dict:
    """Train an actor-critic policy in `world_run`'s dream (or its real game) into run_dir; -> the summary."""
    cfg = cfg or ImagineConfig()
    if not os.path.isdir(os.fspath(world_run)):
        raise WmfastError(f"world run not found: {world_run}")
    env, facts = make_env(cfg, world_run)
    pcfg = PolicyConfig(kind=cfg.kind, frame_size=facts.frame_size, render_size=facts.render_size,
                        chunk=1 if cfg.kind == "bc" else cfg.chunk, action_space="discrete",
                        num_actions=len(facts.action_names), action_names=tuple(facts.action_names), game=facts.game)
    about = {"world": os.path.abspath(os.fspath(world_run)), "world_data_frames": facts.data_frames,
             "action_map_labels": facts.labels}
    return fit_actor_critic(run_dir, env, pcfg, cfg, resume, progress, about)


def fit_actor_critic(run_dir, env, pcfg: PolicyConfig, cfg: ImagineConfig, resume: bool = False,
                     progress: bool = True, about: dict = None) -> dict:
    """The actor-critic on any environment with start(n, rng) and step(actions) (DreamEnv's interface);
    the actor is built from pcfg. Writes run_dir; -> the summary (also imagine.json)."""
    run_dir = os.fspath(run_dir)
    state_path = os.path.join(run_dir, "train_state.pt")
    config_path = os.path.join(run_dir, "imagine_config.json")
    if resume:
        if not os.path.isfile(state_path):
            raise WmfastError(f"{run_dir}: nothing to resume (no train_state.pt)")
        saved = ImagineConfig.from_dict(load_json(config_path), config_path)
        if dataclasses.replace(saved, iterations=cfg.iterations) != cfg:
            raise WmfastError(f"{run_dir}: resume with the settings it was started with (only --iterations may "
                              f"change): {config_path}")
    torch.manual_seed(cfg.seed)
    model = ActorCritic(pcfg)
    os.makedirs(run_dir, exist_ok=True)
    metrics_path = os.path.join(run_dir, "metrics.jsonl")

    def log(row):
        with open(metrics_path, "a") as f:
            f.write(json.dumps(row) + "\n")

    def save(step):
        save_model(model.actor, run_dir, {"step": step})

    stage = ImagineStage(model, env, cfg, log, save)
    loop = Loop(stage, optimizer(model, cfg.lr), lr=cosine(cfg.lr, cfg.warmup_steps, cfg.iterations),
                grad_clip=10.0, state_path=state_path)
    start = 0
    if resume:
        from wmfast.train.loop import truncate_metrics

        start = loop.resume()
        truncate_metrics(metrics_path, start)
    else:
        open(metrics_path, "w").close()
        save_json(cfg.to_dict(), config_path)
    t0 = time.time()
    step = loop.run(cfg.iterations, start, save_every=cfg.save_every, progress=progress, desc=f"imagine {cfg.kind}",
                    interrupted=lambda s: f"stopped at iteration {s}; continue with --resume")
    loop.save(step)
    summary = {"kind": pcfg.kind, "env": cfg.env, **(about or {}), "params": count_params(model.actor),
               "iterations": step, "env_steps": -(-step // cfg.updates_per_batch) * cfg.batch_size * stage.decisions
               * pcfg.chunk,
               "seconds": time.time() - t0, "threads": torch.get_num_threads(), "config": cfg.to_dict()}
    save_json(summary, os.path.join(run_dir, "imagine.json"))
    from wmfast.train.metrics import plot_curves

    plot_curves(metrics_path, os.path.join(run_dir, "curves.png"), title=f"{pcfg.kind} actor-critic ({cfg.env})")
    return summary
