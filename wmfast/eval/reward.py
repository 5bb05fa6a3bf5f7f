"""Scores of a reward / episode-end head (wmfast.models.reward) on a run's held-out episodes.

    report = evaluate_reward("runs/maze")     # after `wmfast train reward`; reads, writes nothing

For each reward value other than the most common one (a coin, a point won, a point lost): precision
and recall of the head's most likely value as an event detector, with the event counts; the mean
absolute error of the expected reward; and calibration: the expected calibration error (ECE, 10
equal-width bins) of p(any reward event), next to the data's event rate. With terminals, the same
precision / recall for the episode end at p >= 0.5.
"""
import numpy as np
import torch

from wmfast.data.frames import to_model_frames

BATCH = 256
BINS = 10


@torch.no_grad()
def predict_transitions(head, frames, t: np.ndarray) -> dict:
    """The head's predictions on transitions t of frames [N, H, W, 3] uint8 (resized to the head's
    frames as the world-model stages resize them), batched."""
    parts = []
    for s in range(0, len(t), BATCH):
        i = t[s:s + BATCH]
        parts.append(head.predict(*(to_model_frames(frames[i + k], head.config.frame_size) for k in (0, 1))))
    return {k: (torch.cat([p[k] for p in parts]).cpu().numpy() if parts and parts[0][k] is not None else None)
            for k in ("probs", "reward", "value", "terminal")}


def detection(pred: np.ndarray, true: np.ndarray) -> dict:
    tp, n_pred, n_true = int((pred & true).sum()), int(pred.sum()), int(true.sum())
    return {"events": n_true, "predicted": n_pred, "precision": tp / n_pred if n_pred else None,
            "recall": tp / n_true if n_true else None}


def expected_calibration_error(p: np.ndarray, hit: np.ndarray, bins: int = BINS) -> float:
    """Mean |p - observed rate| over equal-width probability bins, weighted by the bins' shares."""
    which = np.minimum((p * bins).astype(int), bins - 1)
    return float(sum(abs(p[which == b].mean() - hit[which == b].mean()) * (which == b).mean()
                     for b in range(bins) if (which == b).any()))


def score_reward_head(head, ds, episodes, terminals=None) -> dict:
    """Precision / recall per reward event, reward MAE and calibration on the given episodes."""
    t = ds.transitions(episodes)
    pred = predict_transitions(head, ds.load_into_memory().frames, t)
    values = np.asarray(head.config.reward_values, np.float64)
    true = ds.rewards[t].astype(np.float64)
    # a reward value the training episodes never paid counts as an event no class can detect (-1)
    match = np.isclose(true[:, None], values[None, :])
    true_class = np.where(match.any(1), match.argmax(1), -1)
    pred_class = pred["probs"].argmax(1)
    usual = int(np.argmax(head.log_prior.cpu().numpy()))          # the most common value: "no event"
    events = {f"{v:g}": detection(pred_class == k, true_class == k) for k, v in enumerate(values) if k != usual}
    any_event = true_class != usual
    p_event = 1.0 - pred["probs"][:, usual]
    report = {"episodes": len(episodes), "transitions": len(t), "events": events,
              "reward_mae": float(np.abs(pred["reward"] - true).mean()) if len(t) else None,
              "event_rate": float(any_event.mean()) if len(t) else None,
              "mean_p_event": float(p_event.mean()) if len(t) else None,
              "ece": expected_calibration_error(p_event, any_event) if len(t) else None}
    if pred["terminal"] is not None and terminals is not None:
        report["terminal"] = detection(pred["terminal"] >= 0.5, np.asarray(terminals)[t + 1].astype(bool))
    return report


def evaluate_reward(run, data=None) -> dict:
    """RUN/reward/ scored on the episodes no world-model stage trained on (those the reward stage
    never saw either); data: a dataset spec or Dataset (default: the run's)."""
    import os

    from wmfast.checkpoint import load_model
    from wmfast.latent_actions import held_out_episodes
    from wmfast.train.reward import REWARD_FOLDER, load_reward_data

    run = os.fspath(run)
    head = load_model(os.path.join(run, REWARD_FOLDER), "reward")
    ds, spec, terminals = load_reward_data(run, data)
    return {"data": spec, **score_reward_head(head, ds, held_out_episodes(ds, run)[0], terminals)}
