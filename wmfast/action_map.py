"""Latent action <-> game control map, stored as `action_map.json` in a run directory.

`wmfast eval` measures which latent code each true game action produces on held-out episodes
and writes the map; `World.load(run, actions="game")`, `wmfast play/rollout --actions UP,LEFT`,
the browser page and policies acting inside a World read it.

    {"action_names": ["NOOP", "UP", ...],          # game action id -> name
     "num_latents": 8,                              # K latent codes of the run's LAM
     "counts": [[...K ints...], ...],               # [G, K] transitions of game action g coded as k
     "game_to_latent": [3, 0, ...],                 # [G] most frequent code per game action
     "latent_to_game": [1, -1, ...],                # [K] most frequent game action per code (-1: unused)
     "data": "game:maze", "transitions": 1234, "changed_only": false}
"""
import os

import numpy as np
import torch

from wmfast.config import load_json, save_json
from wmfast.errors import WmfastError

ACTION_MAP = "action_map.json"


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
        return {"action_names": self.action_names, "num_latents": self.num_latents, "counts": self.counts.tolist(),
                "game_to_latent": self.game_to_latent, "latent_to_game": self.latent_to_game, "data": self.data,
                "transitions": int(self.counts.sum()), "changed_only": self.changed_only}

    def save(self, run_dir) -> str:
        path = os.path.join(run_dir, ACTION_MAP)
        save_json(self.to_dict(), path)
        return path

    @classmethod
    def load(cls, run_dir) -> "ActionMap":
        path = os.path.join(run_dir, ACTION_MAP) if os.path.isdir(run_dir) else run_dir
        if not os.path.isfile(path):
            raise WmfastError(f"{run_dir} has no {ACTION_MAP}; run `wmfast eval --run {run_dir} --data SPEC` "
                              f"to measure which latent code each game action produces")
        d = load_json(path)
        if not isinstance(d, dict) or "counts" not in d:
            raise WmfastError(f"{path}: not an action map (no 'counts' table)")
        return cls(d["counts"], d.get("action_names"), d.get("data", ""), bool(d.get("changed_only", False)))

    def to_latent(self, game_actions) -> torch.Tensor:
        """Game action ids (tensor/list, any shape) -> latent code ids (int64, same shape)."""
        ids = torch.as_tensor(game_actions)
        if ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise WmfastError(f"game actions must be integer ids, got dtype {ids.dtype}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.num_game_actions):
            raise WmfastError(f"game action out of range: got {ids.min().item()}..{ids.max().item()}, "
                              f"this game has {self.num_game_actions} actions {self.action_names}")
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
