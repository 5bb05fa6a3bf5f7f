"""Latent action <-> game control map, stored as `action_map.json` in a run directory.

`wmfast train action-map` measures which latent code each true game action produces on the run's
training episodes and writes the map; `World.load(run, actions="game")`, `wmfast play/rollout --actions UP,LEFT`,
the browser page and policies acting inside a World read it.

    {"action_names": ["NOOP", "UP", ...],          # game action id -> name
     "num_latents": 8,                              # K latent codes of the run's LAM
     "counts": [[...K ints...], ...],               # [G, K] transitions of game action g coded as k
     "game_to_latent": [3, 0, ...],                 # [G] most frequent code per game action
     "latent_to_game": [1, -1, ...],                # [K] most frequent game action per code (-1: unused)
     "data": "game:maze", "transitions": 1234, "changed_only": false,
     "frame_map": {...}}                            # optional: action_map.safetensors holds a FrameActionMap

What a control does can depend on the frame: a move into a wall changes nothing, so the LAM codes it
as NOOP, and a table that always sends RIGHT's usual code makes the world model move the agent into
the wall. The action-map stage therefore also fits a FrameActionMap, p(latent code | frame, game action), on
the training episodes' transitions; the World uses it (on the frame the action applies to) whenever
the run has one.

wmfast.checkpoint saves and loads both (save_action_map / load_action_map); the frame-conditioned
map is the registry's kind "frame_action_map".
"""
import dataclasses

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from wmfast.config import Config
from wmfast.errors import WmfastError

ACTION_MAP = "action_map.json"
FRAME_MAP_WEIGHTS = "action_map.safetensors"


@dataclasses.dataclass
class FrameActionMapConfig(Config):
    num_game_actions: int = 2     # G: the game's action ids
    num_latents: int = 8          # K: the run's latent codes
    width: int = 16               # conv channels


class FrameActionMap(nn.Module):
    """(frame [B, 3, S, S], game action [B]) -> logits over latent codes [B, K].

    Three 3x3 convs (the last dilated) see a 9x9 window around each position; the game action scales
    and shifts their features (FiLM); a max over positions keeps "somewhere the action is blocked / acts"; a
    per-action bias holds what does not depend on the frame."""

    def __init__(self, cfg: FrameActionMapConfig):
        super().__init__()
        self.config = cfg
        width = cfg.width
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=2, dilation=2), nn.ReLU())
        self.film = nn.Embedding(cfg.num_game_actions, 2 * width)
        self.mix = nn.Conv2d(width, width, 3, padding=1)
        self.head = nn.Linear(width, cfg.num_latents)
        self.prior = nn.Embedding(cfg.num_game_actions, cfg.num_latents)

    def forward(self, frames, game_actions):
        h = self.features(frames)                                                   # [B, W, S, S]
        gamma, beta = self.film(game_actions)[:, :, None, None].chunk(2, dim=1)      # [B, W, 1, 1] each
        h = F.relu(self.mix(h * (1 + gamma) + beta)).amax(dim=(2, 3))               # [B, W]
        return self.head(h) + self.prior(game_actions)                              # [B, K]


FRAME_MAP_STEPS = 1500    # optimizer steps of the frame-conditioned map's fit (wmfast train action-map --steps)


class ActionMap:
    def __init__(self, counts, action_names=None, data: str = "", changed_only: bool = False):
        counts = np.asarray(counts, dtype=np.int64)
        if counts.ndim != 2 or counts.shape[0] < 1 or counts.shape[1] < 1:
            raise WmfastError(f"action map counts must be a [game actions, latent codes] table, got shape {counts.shape}")
        self.counts = counts
        self.num_game_actions, self.num_latents = G, K = counts.shape
        self.action_names = list(action_names) if action_names else [str(g) for g in range(G)]
        if len(self.action_names) != G:
            raise WmfastError(f"action map: {len(self.action_names)} action names for {G} game actions")
        self.data, self.changed_only = data, changed_only
        self.game_to_latent = counts.argmax(1).tolist()
        self.frame_map = None          # a FrameActionMap, when the run has one
        self.frame_map_info = {}
        self.latent_to_game = [int(counts[:, k].argmax()) if counts[:, k].sum() > 0 else -1 for k in range(K)]

    @classmethod
    def from_pairs(cls, true_actions, latent_codes, num_game_actions: int, num_latents: int, **kwargs):
        """Build the table from paired true game actions and inferred latent codes (any shape;
        entries with a negative true action are skipped)."""
        t = np.asarray(true_actions).ravel()
        z = np.asarray(latent_codes).ravel()
        keep = t >= 0
        counts = np.zeros((num_game_actions, num_latents), dtype=np.int64)
        np.add.at(counts, (t[keep], z[keep]), 1)
        return cls(counts, **kwargs)

    def to_dict(self) -> dict:
        d = {"action_names": self.action_names, "num_latents": self.num_latents, "counts": self.counts.tolist(),
             "game_to_latent": self.game_to_latent, "latent_to_game": self.latent_to_game, "data": self.data,
             "transitions": int(self.counts.sum()), "changed_only": self.changed_only}
        if self.frame_map is not None:
            d["frame_map"] = {"weights": FRAME_MAP_WEIGHTS, "width": self.frame_map.config.width, **self.frame_map_info}
        return d

    @classmethod
    def from_dict(cls, d: dict, source: str = ACTION_MAP) -> "ActionMap":
        """action_map.json's fields -> the table (the frame-conditioned map is loaded beside it)."""
        if not isinstance(d, dict) or "counts" not in d:
            raise WmfastError(f"{source}: not an action map (no 'counts' table)")
        return cls(d["counts"], d.get("action_names"), d.get("data", ""), bool(d.get("changed_only", False)))

    def to_latent(self, game_actions, frames=None) -> torch.Tensor:
        """Game action ids (tensor/list, any shape) -> latent code ids (int64, same shape). With a
        frame-conditioned map and frames [B, 3, S, S] (the frames the actions [B] are taken in), the
        code comes from the frame as well: e.g. NOOP's code for a move into a wall."""
        ids = torch.as_tensor(game_actions)
        if ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise WmfastError(f"game actions must be integer ids, got dtype {ids.dtype}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.num_game_actions):
            raise WmfastError(f"game action out of range: got {ids.min().item()}..{ids.max().item()}, "
                              f"this game has {self.num_game_actions} actions {self.action_names}")
        if self.frame_map is not None and frames is not None:
            if ids.dim() != 1 or frames.dim() != 4 or frames.shape[0] != ids.shape[0]:
                raise WmfastError(f"frame-conditioned action map: actions must be [B] with frames [B, 3, S, S], got "
                                  f"{tuple(ids.shape)} and {tuple(frames.shape)}")
            net = self.frame_map.to(frames.device)
            with torch.no_grad():
                return net(frames.float(), ids.to(frames.device).long()).argmax(dim=1)
        table = torch.tensor(self.game_to_latent, dtype=torch.long, device=ids.device)
        return table[ids.long()]

    def parse(self, text: str) -> list:
        """'UP,UP,LEFT' or '1,1,3' (names, case-insensitive, or game action ids) -> game action ids."""
        names = {n.upper(): i for i, n in enumerate(self.action_names)}
        out = []
        for tok in text.split(","):
            tok = tok.strip()
            if not tok:
                raise WmfastError(f"empty action in {text!r}")
            if tok.upper() in names:
                out.append(names[tok.upper()])
            elif tok.lstrip("-").isdigit() and 0 <= int(tok) < self.num_game_actions:
                out.append(int(tok))
            else:
                raise WmfastError(f"unknown game action {tok!r} (choose from {self.action_names} "
                                  f"or ids 0..{self.num_game_actions - 1})")
        return out
