"""Table 3's correlation analysis against independent oracles (numpy, scipy.stats.pearsonr)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from attri_ssc.interpret.correlations import (atoms_by_attribute, correlation_analysis, correlations_markdown,
                                               pearson, shared_atoms)

NAMES = ("lv_volume", "myo_volume", "wall_thickness")


def _data(n: int = 40, seed: int = 0):
    rng = np.random.default_rng(seed)
    lv = rng.normal(10, 2, n)
    myo = 0.7 * lv + rng.normal(0, 1.5, n)
    wall = rng.normal(6, 1, n)
    truth = np.stack([lv, myo, wall], 1)
    pred = truth + rng.normal(0, 0.8, truth.shape)
    return truth, pred


def _t_test_p(r: float, n: int) -> float:
    t = r * math.sqrt((n - 2) / (1 - r * r))
    return 2 * stats.t.sf(abs(t), n - 2)


def test_pearson_matches_numpy_and_scipy():
    truth, _ = _data()
    r, p = pearson(truth[:, 0], truth[:, 1])
    assert r == pytest.approx(np.corrcoef(truth[:, 0], truth[:, 1])[0, 1], abs=1e-12)
    assert p == pytest.approx(_t_test_p(r, len(truth)), rel=1e-6)
    ref = stats.pearsonr(truth[:, 0], truth[:, 1])
    assert (r, p) == pytest.approx((ref.statistic, ref.pvalue))
    assert pearson(np.ones(5), np.arange(5.0)) == (None, None)
    with pytest.raises(ValueError):
        pearson(np.arange(4.0), np.arange(5.0))


def test_analysis_covers_every_pair_for_truth_and_prediction():
    truth, pred = _data()
    w = np.array([[0.0, 2.0, -1.0, 0.0, 0.5], [0.0, 1.0, 0.0, 3.0, 0.0], [4.0, 0.0, 0.0, 0.0, -0.1]])
    res = correlation_analysis(truth, pred, NAMES, w, case_ids=["a", "b"] * 20)
    assert res["n_items"] == 40 and res["n_cases"] == 2
    assert [(p["a"], p["b"]) for p in res["pairs"]] == [(NAMES[0], NAMES[1]), (NAMES[0], NAMES[2]), (NAMES[1], NAMES[2])]
    for p in res["pairs"]:
        i, j = NAMES.index(p["a"]), NAMES.index(p["b"])
        for data, r_key, p_key in ((truth, "r_sample", "p_sample"), (pred, "r_recon", "p_recon")):
            ref = stats.pearsonr(data[:, i], data[:, j])
            assert p[r_key] == pytest.approx(ref.statistic, abs=1e-12)
            assert p[p_key] == pytest.approx(ref.pvalue, rel=1e-9)
    assert res["pairs"][0]["shared_atoms"] == [1]
    assert res["pairs"][1]["shared_atoms"] == [4]
    assert res["pairs"][2]["shared_atoms"] == []
    assert [e["atom"] for e in res["atoms"]["lv_volume"]] == [1, 2, 4]  # by |W|, zeros left out
    assert res["shared"] == {"1": ["lv_volume", "myo_volume"], "4": ["lv_volume", "wall_thickness"]}
    md = correlations_markdown(res)
    assert f"{res['pairs'][0]['r_sample']:.3f}" in md and "atom 1: lv_volume, myo_volume" in md
    # Pearson r ignores the (affine) scale of â
    scaled = correlation_analysis(truth, 3.0 * pred - 7.0, NAMES, w)
    assert scaled["pairs"][0]["r_recon"] == pytest.approx(res["pairs"][0]["r_recon"], abs=1e-12)


def test_atom_helpers():
    w = np.array([[0.0, -2.0, 1.0], [1.0, 0.0, 0.0]])
    atoms = atoms_by_attribute(w, ("a", "b"))
    assert atoms == {"a": [{"atom": 1, "weight": -2.0}, {"atom": 2, "weight": 1.0}], "b": [{"atom": 0, "weight": 1.0}]}
    assert shared_atoms(atoms) == {}
    with pytest.raises(ValueError):
        atoms_by_attribute(w, ("a",))
