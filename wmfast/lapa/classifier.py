"""Latent -> real controls: a small classifier from LAPA codes to the true ALE actions.

    report = train_classifier("runs/breakout")     # trains on the train split's labelled pairs
    m = wmfast.load("runs/breakout"); m.lapa.to_game_actions(codes)   # -> action ids [B]

Each grid cell's code is embedded (a learned 16-dim vector per code), the cells are concatenated
and an MLP predicts the action taken at t. Trained on the train split (optionally a labelled
fraction of it), the best epoch picked on val, scored on test next to the majority-class
baseline (the most frequent train action, always predicted). Saved as classifier.safetensors +
classifier.json in the run's lapa/ folder.
"""
import os

import numpy as np
import torch
import torch.nn.functional as F

from wmfast.checkpoint import lapa_folder, load_lapa, save_classifier
from wmfast.config import load_json
from wmfast.errors import WmfastError
from wmfast.models.lapa import CodeClassifier, CodeClassifierConfig
from wmfast.train.loop import Loop, Stage, optimizer



class ClassifierStage(Stage):
    """Cross-entropy over shuffled epochs of (codes, action) pairs; after each epoch the val accuracy
    (train accuracy without a val split) picks the best weights."""
    name = "lapa classifier"

    def __init__(self, clf, x, y, xv, yv, batch_size: int):
        self.model, self.x, self.y, self.xv, self.yv, self.batch_size = clf, x, y, xv, yv, batch_size
        self.best, self.best_state, self.perm = -1.0, None, None

    def steps_per_epoch(self) -> int:
        return -(-len(self.y) // self.batch_size)

    def batch(self, step):
        i = step % self.steps_per_epoch()
        if i == 0:
            self.perm = torch.randperm(len(self.y))
        return [self.perm[i * self.batch_size:(i + 1) * self.batch_size]]

    def loss(self, b):
        return F.cross_entropy(self.model(self.x[b]), self.y[b]), {}, float(len(b))

    def after_step(self, step, result):
        if step % self.steps_per_epoch():
            return None
        self.model.eval()
        xs, ys = (self.xv, self.yv) if len(self.yv) else (self.x, self.y)
        acc = float((self.model.predict(xs) == ys).float().mean())
        if acc > self.best:
            self.best, self.best_state = acc, {k: v.clone() for k, v in self.model.state_dict().items()}
        self.model.train()
        return None


@torch.no_grad()
def codes_for(model, pairs, idx, device="cpu", batch_size: int = 64):
    model.eval()
    out = [model.encode(*pairs.batch(idx[s:s + batch_size], device)).cpu() for s in range(0, len(idx), batch_size)]
    return torch.cat(out) if out else torch.zeros((0, *model.config.code_shape), dtype=torch.long)


def train_classifier(run, data=None, labelled_fraction: float = 1.0, epochs: int = 60, lr: float = 3e-3,
                     seed: int = 0, device="cpu", batch_size: int = 256) -> dict:
    """Train the code -> action classifier on the run's train split and score it on test."""
    from wmfast.data import load_dataset
    from wmfast.lapa.data import PairData, load_split

    if not 0 < labelled_fraction <= 1:
        raise WmfastError(f"labelled_fraction must be in (0, 1], got {labelled_fraction}")
    folder = lapa_folder(run)
    model = load_lapa(folder, device)
    if data is None:
        data = load_json(os.path.join(folder, "split.json"))["source"]
    ds = load_dataset(data) if isinstance(data, (str, os.PathLike)) else data
    if ds.actions is None or ds.n_actions < 1:
        raise WmfastError(f"{ds.source}: no true actions to train the code -> action classifier on")
    pairs = PairData(ds, load_split(folder, ds), model.config.height, model.config.width)
    rng = np.random.default_rng(seed)
    sets = {}
    for split in ("train", "val", "test"):
        idx = pairs.indices(split)
        idx = idx[pairs.actions(idx) >= 0]
        if split == "train" and labelled_fraction < 1:
            idx = np.sort(rng.choice(idx, max(1, int(labelled_fraction * len(idx))), replace=False))
        sets[split] = (codes_for(model, pairs, idx, device), torch.from_numpy(pairs.actions(idx)))
    (x, y), (xv, yv), (xt, yt) = sets["train"], sets["val"], sets["test"]
    if len(y) == 0 or len(yt) == 0:
        raise WmfastError("the train or test split has no labelled pairs")

    torch.manual_seed(seed)
    cells = int(np.prod(model.config.code_shape)) if model.config.code_shape else 1
    clf = CodeClassifier(CodeClassifierConfig(model.num_codes, cells, ds.n_actions, action_names=list(ds.action_names or [])))
    stage = ClassifierStage(clf, x, y, xv, yv, batch_size)
    Loop(stage, optimizer(clf, lr, 1e-4, kind="adam")).run(epochs * stage.steps_per_epoch(), progress=False)
    best, best_state = stage.best, stage.best_state
    clf.load_state_dict(best_state)
    clf.eval()
    majority = int(torch.bincount(y, minlength=ds.n_actions).argmax())
    pred = clf.predict(xt)
    per_action = {ds.action_names[a]: float((pred[yt == a] == a).float().mean()) for a in range(ds.n_actions)
                  if (yt == a).any()}
    report = {"train_pairs": len(y), "test_pairs": len(yt), "labelled_fraction": labelled_fraction,
              "test_accuracy": float((pred == yt).float().mean()),
              "majority_action": ds.action_names[majority],
              "majority_baseline_accuracy": float((yt == majority).float().mean()),
              "val_accuracy": best, "per_action_recall": per_action}
    report["beats_majority"] = report["test_accuracy"] > report["majority_baseline_accuracy"]
    save_classifier(clf, folder, report)
    return report
