"""How well latent actions agree with the true actions (numpy only)."""
import numpy as np

from wmfast.errors import WmfastError


def _as_ids(x, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.dtype.kind not in "iu":
        raise WmfastError(f"{name} must hold integer ids, got {a.dtype}")
    return a.reshape(-1).astype(np.int64)


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def action_agreement(true_ids, latent_ids) -> dict:
    """Agreement of latent action ids with true action ids (any shapes, equal size; -1 = unknown).

    Returns:
      nmi          normalized mutual information, I(T; L) / mean(H(T), H(L)) (sklearn's default
                   "arithmetic" normalization); 1 when the latents determine the true action and back
      purity       accuracy of the best many-to-one map latent -> true (each latent code votes for
                   its most frequent true action)
      mapping      {latent id: true id} of that map
      contingency  counts [n_latent][n_true]: rows latent ids 0..max, columns true ids 0..max
      n            number of (true, latent) pairs used (pairs with a -1 on either side are ignored)
    """
    t, lat = _as_ids(true_ids, "true_ids"), _as_ids(latent_ids, "latent_ids")
    if t.shape != lat.shape:
        raise WmfastError(f"true_ids and latent_ids must have the same number of entries, got {t.size} and {lat.size}")
    keep = (t >= 0) & (lat >= 0)
    t, lat = t[keep], lat[keep]
    if t.size == 0:
        return {"nmi": float("nan"), "purity": float("nan"), "mapping": {}, "contingency": [], "n": 0}
    table = np.zeros((lat.max() + 1, t.max() + 1), np.int64)
    np.add.at(table, (lat, t), 1)
    n = table.sum()
    h_t, h_l = _entropy(table.sum(0)), _entropy(table.sum(1))
    nz = table > 0
    joint = table[nz] / n
    outer = (table.sum(1, keepdims=True) * table.sum(0, keepdims=True))[nz] / (n * n)
    mi = float((joint * np.log(joint / outer)).sum())
    if h_t == 0.0 and h_l == 0.0:
        nmi = 1.0  # both constant: identical partitions
    elif h_t == 0.0 or h_l == 0.0:
        nmi = 0.0
    else:
        nmi = max(0.0, mi / (0.5 * (h_t + h_l)))
    used = table.sum(1) > 0
    mapping = {int(code): int(table[code].argmax()) for code in np.flatnonzero(used)}
    return {"nmi": float(nmi), "purity": float(table.max(1).sum() / n), "mapping": mapping,
            "contingency": table.tolist(), "n": int(n)}
