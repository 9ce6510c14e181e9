"""AR-VAE disentanglement metrics: hand-computed cases, oracles (sklearn, scipy), planted latents."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.linear_model import LinearRegression
from sklearn.metrics import mutual_info_score

from attri_ssc.evaluation.disentanglement import (
    attribute_entropies,
    compute_all,
    discretize,
    interpretability,
    mig,
    modularity,
    mutual_information_matrix,
    sap,
    scc,
)

LN2 = math.log(2.0)


@pytest.fixture(scope="module")
def binary_case():
    """Two independent balanced binary attributes (each of the 4 combinations 25 times).

    Latents: z0 = a0, z1 = a1, z2 = a0 (a duplicate), z3 = 2 a0 + a1 (entangled).
    Because the empirical joint is exactly a product, every MI is exactly ln 2 or 0:
        MI (rows z0..z3, cols a0, a1) = [[ln2, 0], [0, ln2], [ln2, 0], [ln2, ln2]].
    """
    combos = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
    attrs = np.repeat(combos, 25, axis=0)  # (100, 2)
    a0, a1 = attrs[:, 0], attrs[:, 1]
    latents = np.stack([a0, a1, a0, 2 * a0 + a1], axis=1)  # (100, 4)
    return latents, attrs


def test_binary_case_mi_and_entropy_by_hand(binary_case):
    latents, attrs = binary_case
    expected = np.array([[LN2, 0], [0, LN2], [LN2, 0], [LN2, LN2]])
    np.testing.assert_allclose(mutual_information_matrix(latents, attrs), expected, atol=1e-12)
    np.testing.assert_allclose(attribute_entropies(attrs), [LN2, LN2], atol=1e-12)


def test_binary_case_metrics_by_hand(binary_case):
    latents, attrs = binary_case
    # MIG over z0..z2: a0's best two are ln2, ln2 (gap 0); a1's are ln2, 0 (gap 1) -> 0.5
    assert mig(latents[:, :3], attrs) == pytest.approx(0.5, abs=1e-12)
    # with z3 added, a1 also has two dims at ln2 -> 0
    assert mig(latents, attrs) == pytest.approx(0.0, abs=1e-12)
    # modularity per dim: z0, z1, z2 depend on one attribute (1); z3 on both equally (0)
    assert modularity(latents, attrs) == pytest.approx(0.75, abs=1e-12)
    # SAP: squared correlations. var(a) = 1/4, var(z3) = 5/4, cov(z3, a0) = 1/2, cov(z3, a1) = 1/4
    # -> R²(z3, a0) = 0.8, R²(z3, a1) = 0.2. a0: [1, 0, 1, 0.8] gap 0; a1: [0, 1, 0, 0.2] gap 0.8
    assert sap(latents, attrs) == pytest.approx(0.4, abs=1e-12)
    # interpretability: argmax MI picks z0 (first of the ties) for a0 and z1 for a1, R² = 1
    assert interpretability(latents, attrs) == pytest.approx(1.0, abs=1e-12)
    # assigned to the entangled z3 for both: R² = 0.8 and 0.2
    assert interpretability(latents, attrs, attribute_dims=[3, 3]) == pytest.approx(0.5, abs=1e-12)
    assert scc(latents, attrs) == pytest.approx(1.0, abs=1e-12)


def test_modularity_three_attributes_by_hand():
    """Three independent balanced binary attributes; z0 = a0, z1 = 2 a0 + a1.

    MI rows: z0 = [ln2, 0, 0] -> modularity 1; z1 = [ln2, ln2, 0] ->
    1 - (2 ln²2 - ln²2) / (ln²2 (3 - 1)) = 0.5. Mean 0.75.
    """
    combos = np.array([[i >> 2 & 1, i >> 1 & 1, i & 1] for i in range(8)], dtype=float)
    attrs = np.repeat(combos, 10, axis=0)  # (80, 3)
    latents = np.stack([attrs[:, 0], 2 * attrs[:, 0] + attrs[:, 1]], axis=1)
    np.testing.assert_allclose(mutual_information_matrix(latents, attrs), [[LN2, 0, 0], [LN2, LN2, 0]], atol=1e-12)
    assert modularity(latents, attrs) == pytest.approx(0.75, abs=1e-12)


def test_discretize_rules():
    # few distinct values: used as they are
    np.testing.assert_array_equal(discretize([5.0, -1.0, 5.0, 2.0], bins=3), [2, 0, 2, 1])
    # many values: equal-frequency bins
    labels = discretize(np.arange(100.0)[::-1], bins=4)
    np.testing.assert_array_equal(np.bincount(labels), [25, 25, 25, 25])
    assert labels[0] == 3 and labels[-1] == 0
    # a sparse code (70 % zeros) keeps its zeros in one bin and splits the rest
    rng = np.random.default_rng(0)
    code = np.where(rng.random(1000) < 0.7, 0.0, rng.exponential(size=1000))
    labels = discretize(code, bins=10)
    assert len(np.unique(labels[code == 0])) == 1 and len(np.unique(labels)) > 3
    assert not np.isin(labels[code > 0], labels[code == 0]).any()  # zeros get a bin of their own
    # ties at a cut point go to the lower bin: cuts here are [0, 2.33]
    np.testing.assert_array_equal(discretize([0.0] * 6 + [1, 2, 3, 4, 5, 6], bins=3), [0] * 6 + [1, 1, 2, 2, 2, 2])
    with pytest.raises(ValueError, match="bins"):
        discretize([1.0, 2.0], bins=1)


def test_mi_is_invariant_to_monotone_rescaling_and_matches_sklearn():
    rng = np.random.default_rng(1)
    attrs = rng.random((400, 2))
    latents = np.stack([attrs[:, 0] + 0.1 * rng.normal(size=400), rng.normal(size=400)], axis=1)
    mi = mutual_information_matrix(latents, attrs, bins=8)
    warped = np.stack([np.exp(3 * latents[:, 0]), latents[:, 1] ** 3], axis=1)
    np.testing.assert_allclose(mutual_information_matrix(warped, attrs, bins=8), mi, atol=1e-12)
    # the same labels through sklearn directly
    ref = mutual_info_score(discretize(attrs[:, 0], 8), discretize(latents[:, 0], 8))
    assert mi[0, 0] == pytest.approx(ref, abs=1e-12)
    assert mi[0, 0] > 0.5 and mi[1, 0] < 0.1


# ---------------------------------------------------------------- oracles on random data


@pytest.fixture(scope="module")
def random_case():
    rng = np.random.default_rng(2)
    n, d, a = 60, 5, 3
    attrs = rng.normal(size=(n, a))
    mix = rng.normal(size=(a, d))
    latents = attrs @ mix + rng.normal(size=(n, d))
    latents[:, 4] = 3.0  # a dead dimension
    return latents, attrs


def test_sap_matches_sklearn_regressions(random_case):
    latents, attrs = random_case
    r2 = np.zeros((latents.shape[1], attrs.shape[1]))
    for d in range(latents.shape[1]):
        for j in range(attrs.shape[1]):
            x = latents[:, d : d + 1]
            r2[d, j] = LinearRegression().fit(x, attrs[:, j]).score(x, attrs[:, j])
    top = np.sort(r2, axis=0)
    assert sap(latents, attrs) == pytest.approx(np.mean(top[-1] - top[-2]), abs=1e-10)


def test_scc_matches_scipy_on_assigned_and_best_dims(random_case):
    latents, attrs = random_case
    dims = [2, 0, 1]
    rhos = [abs(spearmanr(latents[:, d], attrs[:, j])[0]) for j, d in enumerate(dims)]
    assert scc(latents, attrs, attribute_dims=dims, alpha=None) == pytest.approx(np.mean(rhos), abs=1e-12)
    # best dimension, with AR-VAE's p <= 0.05 rule; the dead dimension contributes 0
    best = []
    for j in range(attrs.shape[1]):
        vals = []
        for d in range(4):
            rho, p = spearmanr(latents[:, d], attrs[:, j])
            vals.append(abs(rho) if p <= 0.05 else 0.0)
        best.append(max(vals))
    assert scc(latents, attrs) == pytest.approx(np.mean(best), abs=1e-12)
    # weak correlations: the p <= alpha rule zeroes some, and the result still matches scipy
    rng = np.random.default_rng(6)
    weak_z, weak_a = rng.normal(size=(30, 4)), rng.normal(size=(30, 2))
    weak_z[:, 0] += 0.5 * weak_a[:, 0]
    kept, thresholded = [], []
    for j in range(2):
        pairs = [spearmanr(weak_z[:, d], weak_a[:, j]) for d in range(4)]
        kept.append(max(abs(r[0]) for r in pairs))
        thresholded.append(max(abs(r[0]) if r[1] <= 0.05 else 0.0 for r in pairs))
    assert thresholded != kept  # the case exercises the rule
    assert scc(weak_z, weak_a) == pytest.approx(np.mean(thresholded), abs=1e-12)
    assert scc(weak_z, weak_a, alpha=None) == pytest.approx(np.mean(kept), abs=1e-12)
    # one latent and one attribute: scipy's scalar return is handled
    rho = abs(spearmanr(latents[:, 0], attrs[:, 0])[0])
    assert scc(latents[:, :1], attrs[:, :1], alpha=None) == pytest.approx(rho, abs=1e-12)


def test_interpretability_matches_sklearn(random_case):
    latents, attrs = random_case
    mi = mutual_information_matrix(latents, attrs)
    scores = []
    for j in range(attrs.shape[1]):
        d = int(np.argmax(mi[:, j]))
        x = latents[:, d : d + 1]
        scores.append(LinearRegression().fit(x, attrs[:, j]).score(x, attrs[:, j]))
    assert interpretability(latents, attrs) == pytest.approx(np.mean(scores), abs=1e-12)
    # assigned to the dead dimension: R² = 0
    assert interpretability(latents, attrs, attribute_dims=[4, 4, 4]) == 0.0


def test_compute_all_agrees_with_individual_functions(random_case):
    latents, attrs = random_case
    out = compute_all(torch.from_numpy(latents), torch.from_numpy(attrs), attribute_dims=[0, 1, 2])
    assert out["interpretability"] == pytest.approx(interpretability(latents, attrs, attribute_dims=[0, 1, 2]))
    assert out["scc"] == pytest.approx(scc(latents, attrs, attribute_dims=[0, 1, 2]))
    assert out["mig"] == pytest.approx(mig(latents, attrs))
    assert out["sap"] == pytest.approx(sap(latents, attrs))
    assert out["modularity"] == pytest.approx(modularity(latents, attrs))
    assert out["interpretability_dims"] == [0, 1, 2] and out["scc_dims"] == [0, 1, 2]
    assert len(out["mig_per_attribute"]) == 3 and out["n_latents"] == 5
    single = compute_all(latents[:, :1], attrs[:, :1])
    assert single["mig"] is None and single["sap"] is None and single["modularity"] is None
    assert single["scc"] == pytest.approx(scc(latents[:, :1], attrs[:, :1]))


def test_compute_all_skips_constant_attributes(random_case):
    latents, attrs = random_case
    with_constant = np.insert(attrs, 1, 7.0, axis=1)  # (N, 4), column 1 constant
    out = compute_all(latents, with_constant, attribute_dims=[0, 4, 1, 2])
    ref = compute_all(latents, attrs, attribute_dims=[0, 1, 2])
    assert out["constant_attributes"] == [1] and ref["constant_attributes"] == []
    for name in ("interpretability", "mig", "sap", "scc", "modularity"):
        assert out[name] == pytest.approx(ref[name], abs=1e-12)
        per = out[f"{name}_per_attribute"] if name != "modularity" else None
        if per is not None:
            assert per[1] is None
            assert per[:1] + per[2:] == pytest.approx(ref[f"{name}_per_attribute"], abs=1e-12)
    assert out["scc_dims"] == [0, None, 1, 2]
    none = compute_all(latents, np.ones((len(latents), 2)))
    assert none["mig"] is None and none["interpretability"] is None and none["constant_attributes"] == [0, 1]


# ---------------------------------------------------------------- planted and random latents


@pytest.fixture(scope="module")
def planted():
    rng = np.random.default_rng(3)
    n, a = 1000, 3
    attrs = rng.random((n, a))
    latents = np.hstack([attrs + 0.01 * rng.normal(size=(n, a)), rng.normal(size=(n, 2))])  # (n, 5)
    return latents, attrs, rng


def test_planted_latents_score_near_maximum(planted):
    latents, attrs, _ = planted
    out = compute_all(latents, attrs)
    assert out["interpretability_dims"] == [0, 1, 2] and out["scc_dims"] == [0, 1, 2]
    assert out["interpretability"] > 0.99
    assert out["sap"] > 0.98
    assert out["scc"] > 0.99
    # binned MI loses a little where noise moves a sample across a bin edge
    assert out["mig"] > 0.8
    # modularity of the planted dimensions (noise dimensions score arbitrarily)
    assert modularity(latents[:, :3], attrs) > 0.99


def test_random_and_scrambled_latents_score_near_zero(planted):
    latents, attrs, rng = planted
    for z in (rng.normal(size=latents.shape), latents[rng.permutation(len(latents))]):
        assert interpretability(z, attrs) < 0.02
        assert mig(z, attrs) < 0.03
        assert sap(z, attrs) < 0.02
        assert scc(z, attrs) < 0.15  # a max over dims of |ρ| that passed p <= 0.05 by chance


def test_entangled_latents_have_low_modularity(planted):
    latents, attrs, rng = planted
    entangled = np.stack([attrs.sum(axis=1) + 0.01 * rng.normal(size=len(attrs)) for _ in range(3)], axis=1)
    assert modularity(entangled, attrs) < 0.5 < 0.99 < modularity(latents[:, :3], attrs)
    assert mig(entangled, attrs) < 0.02


def test_validation_errors():
    z, a = np.random.default_rng(4).normal(size=(10, 3)), np.random.default_rng(5).normal(size=(10, 2))
    with pytest.raises(ValueError, match="same N"):
        sap(z, a[:9])
    with pytest.raises(ValueError, match="2-D"):
        sap(z[:, 0], a)
    with pytest.raises(ValueError, match="non-finite"):
        sap(np.full((10, 3), np.nan), a)
    with pytest.raises(ValueError, match="constant"):
        mig(z, np.ones((10, 2)))
    with pytest.raises(ValueError, match="attribute_dims"):
        scc(z, a, attribute_dims=[0, 3])
    with pytest.raises(ValueError, match="attribute_dims"):
        interpretability(z, a, attribute_dims=[0])
    with pytest.raises(ValueError, match="alpha"):
        scc(z, a, alpha=0.0)
    with pytest.raises(ValueError, match="at least 2 latent"):
        mig(z[:, :1], a)
    with pytest.raises(ValueError, match="at least 2 attributes"):
        modularity(z, a[:, :1])
    with pytest.raises(ValueError, match="same N"):
        compute_all(z, np.ones((9, 2)))
    with pytest.raises(ValueError, match="at least 3 samples"):
        sap(z[:2], a[:2])
