"""action_agreement: NMI and many-to-one purity of latent vs true action ids."""
import math

import numpy as np
import pytest
import torch

from wmfast.data import action_agreement
from wmfast.errors import WmfastError


def nmi_by_hand(pairs):
    """Arithmetic-mean NMI from explicit probabilities (an independent, loop-based reference)."""
    n = len(pairs)
    xs, ys = sorted({p[0] for p in pairs}), sorted({p[1] for p in pairs})
    px = {x: sum(p[0] == x for p in pairs) / n for x in xs}
    py = {y: sum(p[1] == y for p in pairs) / n for y in ys}
    mi = 0.0
    for x in xs:
        for y in ys:
            pxy = sum(p == (x, y) for p in pairs) / n
            if pxy:
                mi += pxy * math.log(pxy / (px[x] * py[y]))
    hx = -sum(p * math.log(p) for p in px.values())
    hy = -sum(p * math.log(p) for p in py.values())
    return mi / ((hx + hy) / 2)


def test_permuted_labels_agree_perfectly():
    true = np.array([0, 1, 2, 0, 1, 2, 2])
    latent = np.array([5, 3, 0, 5, 3, 0, 0])
    r = action_agreement(true, latent)
    assert r["nmi"] == pytest.approx(1.0) and r["purity"] == 1.0
    assert r["mapping"] == {0: 2, 3: 1, 5: 0} and r["n"] == 7


def test_against_hand_computed_nmi_and_purity():
    true = [0, 0, 0, 1, 1, 2, 2, 2, 1, 0]
    latent = [1, 1, 0, 0, 0, 2, 2, 1, 0, 1]
    r = action_agreement(np.array(true), torch.tensor(latent))
    assert r["nmi"] == pytest.approx(nmi_by_hand(list(zip(true, latent))), abs=1e-12)
    # latent 0 -> {0, 1, 1, 1}: 3; latent 1 -> {0, 0, 2, 0}: 3; latent 2 -> {2, 2}: 2
    assert r["purity"] == pytest.approx(8 / 10)
    assert r["contingency"] == [[1, 3, 0], [3, 0, 1], [0, 0, 2]]


def test_unknown_entries_are_ignored_and_shapes_flattened():
    true = np.array([[0, -1, 1], [1, 0, -1]])
    latent = np.array([[4, 9, 2], [-1, 4, 7]])
    r = action_agreement(true, latent)
    assert r["n"] == 3 and r["purity"] == 1.0


def test_independent_labels_have_low_nmi():
    rng = np.random.default_rng(0)
    r = action_agreement(rng.integers(0, 4, 20000), rng.integers(0, 8, 20000))
    assert r["nmi"] < 0.01 and r["purity"] < 0.3


def test_many_to_one_is_pure_but_not_perfect_nmi():
    true = np.repeat([0, 1], 50)
    latent = np.repeat([0, 1, 2, 3], 25)
    r = action_agreement(true, latent)
    assert r["purity"] == 1.0 and 0.5 < r["nmi"] < 1.0


def test_bad_inputs():
    with pytest.raises(WmfastError, match="same number of entries"):
        action_agreement(np.zeros(3, int), np.zeros(4, int))
    with pytest.raises(WmfastError, match="integer ids"):
        action_agreement(np.zeros(3), np.zeros(3, int))
    assert action_agreement(np.full(3, -1), np.zeros(3, int))["n"] == 0
