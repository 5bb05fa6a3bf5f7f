"""Reward and episode-end head: what the game paid, and whether it ended, on a transition of frames.

    head = RewardHead(RewardConfig(frame_size=32, reward_values=[0.0, 1.0]))
    out = head.predict(frame_t, frame_t1)       # frames [B, 3, S, S] in [-1, 1], the World's frames
    out["reward"], out["probs"], out["terminal"]  # [B] expected reward, [B, R] per reward value, [B] p(end)

It reads pixels, not tokens, so it scores a World's generated frames and the real game's alike. A
reward is an event in a small part of the frame (a coin taken, a ball past a paddle), so the conv
features are max-pooled over positions. Rewards are rare (a maze coin in 6% of steps, a pong point in
under 1%), so the reward stage trains on batches where every reward value is equally likely and stores
the log of the training data's value frequencies (`log_prior`): adding it to the logits undoes the
balancing (Bayes' rule under the shift of class priors), so `probs` are calibrated to the game's rates.
The reward stage (wmfast.train.reward) fits it; RUN/reward/ holds it (the registry's kind "reward").
"""
import dataclasses

import torch
import torch.nn as nn

from wmfast.config import Config
from wmfast.errors import WmfastError


@dataclasses.dataclass
class RewardConfig(Config):
    frame_size: int = 32
    reward_values: list = dataclasses.field(default_factory=lambda: [0.0, 1.0])   # the distinct rewards, ascending
    terminal: bool = False        # also predict the game's end (datasets that record terminals)
    width: int = 32               # conv channels

    def check(self):
        values = self.reward_values
        if (not isinstance(values, list) or len(values) < 2 or
                not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
            raise WmfastError(f"RewardConfig.reward_values must be a list of at least 2 numbers, got {values!r}")
        if sorted(set(values)) != list(values):
            raise WmfastError(f"RewardConfig.reward_values must be distinct and ascending, got {values!r}")
        if self.width < 1:
            raise WmfastError(f"RewardConfig.width must be >= 1, got {self.width}")


class RewardHead(nn.Module):
    """(frame_t, frame_t1) [B, 3, S, S] -> reward logits [B, R] (+ terminal logit [B] when configured)."""

    def __init__(self, cfg: RewardConfig):
        super().__init__()
        self.config = cfg
        w = cfg.width
        # x_t, x_t+1 and their difference: an event is a change, and where it happens matters
        self.features = nn.Sequential(
            nn.Conv2d(9, w, 3, padding=1), nn.ReLU(),
            nn.Conv2d(w, w, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(w, w, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(w, len(cfg.reward_values) + int(cfg.terminal))
        self.register_buffer("values", torch.tensor(cfg.reward_values, dtype=torch.float32))
        self.register_buffer("log_prior", torch.zeros(len(cfg.reward_values)))    # set by the reward stage

    def forward(self, frame_t, frame_t1):
        """-> (reward logits [B, R] of balanced training, terminal logits [B] or None)."""
        x = torch.cat([frame_t, frame_t1, frame_t1 - frame_t], dim=1)              # [B, 9, S, S]
        out = self.head(self.features(x).amax(dim=(2, 3)))                         # [B, R (+1)]
        R = len(self.config.reward_values)
        return out[:, :R], (out[:, R] if self.config.terminal else None)

    @torch.no_grad()
    def predict(self, frame_t, frame_t1) -> dict:
        """Frames [B, 3, S, S] float in [-1, 1] -> {"probs" [B, R] at the game's reward rates,
        "reward" [B] expected reward, "value" [B] most likely reward, "terminal" [B] p(end) or None}."""
        S = self.config.frame_size
        for name, x in (("frame_t", frame_t), ("frame_t1", frame_t1)):
            if not torch.is_tensor(x) or not x.is_floating_point() or x.dim() != 4 or tuple(x.shape[1:]) != (3, S, S):
                raise WmfastError(f"{name} must be a float tensor [B, 3, {S}, {S}] in [-1, 1], got "
                                  f"{tuple(x.shape) if torch.is_tensor(x) else type(x).__name__}")
        if frame_t.shape[0] != frame_t1.shape[0]:
            raise WmfastError(f"frame_t and frame_t1 batch sizes differ: {frame_t.shape[0]} vs {frame_t1.shape[0]}")
        dev = self.values.device
        logits, end = self(frame_t.to(dev, torch.float32), frame_t1.to(dev, torch.float32))
        probs = (logits.float() + self.log_prior).softmax(-1)
        return {"probs": probs, "reward": probs @ self.values, "value": self.values[probs.argmax(-1)],
                "terminal": None if end is None else end.sigmoid()}
