"""The action-map stage: fit a trained run's game action -> latent code map on its training episodes.

    info = train_action_map("runs/maze")        # after tokenizer, actions and dynamics; writes RUN/action_map.*

`World(run, actions="game")`, `wmfast serve` and `wmfast eval`'s game-action rollout read what it
writes. The LAM labels every transition of the episodes no stage held out; the table keeps, for each
game action, the counts of the codes it produced where the frame changed (what the action DOES; an
action that never changes the frame, like NOOP, keeps its counts over all transitions), and the
frame-conditioned map learns p(code | frame, game action) on the same transitions, so a move into a
wall gets the code of standing still. The held-out episodes stay unseen for the evaluator.
"""
import os

import numpy as np
import torch
import torch.nn.functional as F

from wmfast.checkpoint import save_action_map
from wmfast.models.action_map import FRAME_MAP_STEPS, FrameActionMap, FrameActionMapConfig
from wmfast.errors import WmfastError
from wmfast.latent_actions import build_action_map, episode_codes, held_out_episodes, lam_window
from wmfast.train.loop import Loop, Stage, optimizer


class FrameMapStage(Stage):
    """Cross-entropy of the map's code distribution on batches drawn with the given sample weights."""
    name = "frame-conditioned action map"

    def __init__(self, net, frames, game_actions, codes, weights, batch_size: int, generator):
        self.model, self.frames, self.game_actions, self.codes = net, frames, game_actions, codes
        self.weights, self.batch_size, self.generator = weights, batch_size, generator

    def batch(self, step):
        return [torch.multinomial(self.weights, self.batch_size, replacement=True, generator=self.generator)]

    def loss(self, i):
        return F.cross_entropy(self.model(self.frames[i], self.game_actions[i]), self.codes[i]), {}, float(len(i))


def fit_frame_action_map(frames, game_actions, codes, num_game_actions: int, num_latents: int,
                         steps: int = FRAME_MAP_STEPS, batch_size: int = 64, lr: float = 5e-3, seed: int = 0,
                         progress: bool = False, changed=None) -> FrameActionMap:
    """Cross-entropy fit of p(code | frame, game action) on transitions: frames [N, 3, S, S] (the frame
    each action was taken in), game_actions [N], codes [N] (the LAM's code of that transition).

    changed [N] bool (the frame changed across the transition), when given, balances the batches: each
    (game action, changed) group is drawn equally often. A player's data rarely shows a move that does
    nothing (into a wall: 2% of maze transitions), yet that is where a map that ignores the frame sends
    the agent through the wall; unbalanced, 15% of blocked RIGHT presses got RIGHT's code."""
    keep = torch.as_tensor(game_actions) >= 0
    frames, game_actions, codes = frames[keep].float(), torch.as_tensor(game_actions)[keep].long(), \
        torch.as_tensor(codes)[keep].long()
    if len(codes) == 0:
        raise WmfastError("no transition with a known game action to fit the frame-conditioned action map on")
    group = game_actions * 2 + (torch.as_tensor(changed)[keep].long() if changed is not None else 0)
    weights = 1.0 / torch.bincount(group).float()[group]                          # every group equally likely
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):   # a seeded init that leaves the caller's RNG alone
        torch.manual_seed(seed)
        net = FrameActionMap(FrameActionMapConfig(num_game_actions=num_game_actions, num_latents=num_latents))
    stage = FrameMapStage(net, frames, game_actions, codes, weights, batch_size, g)
    Loop(stage, optimizer(net, lr, kind="adam")).run(steps, progress=progress, desc="frame-conditioned action map")
    return net.eval()


def few_label_transitions(run, ds, episodes):
    """bool per transition of `episodes` (in episode_codes' order): labelled in the run's few-label LAM
    training (ActionsTrainConfig.label_fraction), or None when the LAM was trained on frames alone."""
    from wmfast.data import labelled_frames
    from wmfast.train.trainer import saved_train_config

    train = saved_train_config(run, "actions")
    if train is None or not getattr(train, "label_fraction", 0):
        return None
    train_eps, _ = ds.split(train.val_fraction, seed=train.seed)
    mask = labelled_frames(ds, train.label_fraction, train.seed, train_eps)
    return np.concatenate([mask[ds.episodes[e][0]:ds.episodes[e][1] - 1] for e in episodes
                           if ds.episodes[e][1] - ds.episodes[e][0] >= 2])


def train_action_map(run, data=None, steps: int = FRAME_MAP_STEPS, seed: int = 0, progress: bool = True) -> dict:
    """Fit and save RUN/action_map.json (+ the frame-conditioned map's weights); -> what was fitted.
    data: a dataset spec or Dataset (default: the data the run was trained on)."""
    from wmfast.data import load_dataset
    from wmfast.loader import load
    from wmfast.run_data import resolve_run_data

    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise WmfastError(f"action map: --steps must be an integer >= 1, got {steps!r}")
    run = os.fspath(run)
    model = load(run)
    model.require("tokenizer", "actions")
    for m in model.modules():
        m.eval()
    if data is None or isinstance(data, (str, os.PathLike)):
        data = resolve_run_data(run, data)
    ds = load_dataset(data, progress=progress) if isinstance(data, (str, os.PathLike)) else data
    spec = os.fspath(data) if isinstance(data, (str, os.PathLike)) else ds.source
    if ds.actions is None or not ds.n_actions:
        raise WmfastError(f"{ds.source}: no true game actions, so there is nothing to map latent codes to")
    held, _ = held_out_episodes(ds, run)
    train_eps = sorted(set(range(len(ds.episodes))) - set(held))
    if not train_eps:
        raise WmfastError(f"{ds.source}: every episode is held out; the action map needs training episodes")
    fit = episode_codes(model, ds, train_eps, lam_window(run, model), progress, keep_frames=True)
    labelled = few_label_transitions(run, ds, train_eps)
    if labelled is not None:   # a few-label run knows only its labelled transitions' actions
        fit["true"] = np.where(labelled, fit["true"], -1)
    known = fit["true"] >= 0
    if not known.any():
        raise WmfastError(f"{ds.source}: the training episodes have no known game action")
    K = model.lam.num_actions
    action_map = build_action_map(fit["true"], fit["codes"], fit["changed"], ds.n_actions, K, ds.action_names,
                                  data=spec)
    action_map.frame_map = fit_frame_action_map(fit["frames"], fit["true"], fit["codes"], ds.n_actions, K,
                                                steps=steps, seed=seed, progress=progress, changed=fit["changed"])
    action_map.frame_map_info = {"fit_episodes": len(train_eps), "fit_transitions": int(known.sum()),
                                 "fit_steps": steps, "seed": seed, "few_label": labelled is not None}
    path = save_action_map(action_map, run)
    codes = torch.as_tensor(fit["codes"])[torch.as_tensor(known)]
    true = torch.as_tensor(fit["true"])[torch.as_tensor(known)]
    return {"action_map_file": path, "game_to_latent": action_map.game_to_latent, **action_map.frame_map_info,
            "table_train_agreement": float((action_map.to_latent(true) == codes).float().mean()),
            "changed_fraction": float(np.mean(fit["changed"]))}
