"""Attribute mapper: least-squares initialisation, support freezing, one-to-one ablation."""

import numpy as np
import pytest
import torch
from scipy import stats

from attri_ssc.models.mapper import AttributeMapper, atom_usage, normalized_usage, select_support, usage_agreement


def test_usage_is_mean_absolute_code_and_normalisation_sums_to_scale():
    torch.manual_seed(0)
    z = torch.randn(3, 5, 4, 4)
    u = atom_usage(z)
    expected = np.abs(z.numpy()).reshape(3, 5, -1).mean(axis=2)
    np.testing.assert_allclose(u.numpy(), expected, rtol=1e-6)
    scaled = normalized_usage(u, 5.0)
    np.testing.assert_allclose(scaled.sum(1).numpy(), 5.0, rtol=1e-5)


def test_least_squares_recovers_planted_weights():
    torch.manual_seed(1)
    n, k, a = 400, 12, 3
    features = torch.rand(n, k) * 2
    w_true = torch.randn(a, k)
    attributes = features @ w_true.t()
    mapper = AttributeMapper(a, k)
    mapper.fit_least_squares(features, attributes, ridge=0.0)
    np.testing.assert_allclose(mapper.weight.detach().numpy(), w_true.numpy(), atol=1e-4)
    # A ridge term keeps a dead atom (all-zero column) well posed: its weight is zero.
    features[:, 3] = 0
    mapper.fit_least_squares(features, features @ w_true.t(), ridge=1e-6)
    assert torch.isfinite(mapper.weight).all()
    assert abs(float(mapper.weight.detach()[:, 3].abs().max())) < 1e-6


def test_freeze_support_keeps_top_k_and_zeroes_the_rest():
    torch.manual_seed(2)
    mapper = AttributeMapper(2, 8)
    with torch.no_grad():
        mapper.weight.copy_(torch.tensor([[0.1, -3.0, 0.2, 2.0, 0.0, -0.5, 0.3, 0.05],
                                          [1.0, 0.0, -4.0, 0.1, 0.2, 0.3, 0.0, 2.5]]))
    mapper.freeze_support(top_k=2)
    assert mapper.atoms_of(0) == [1, 3]
    assert mapper.atoms_of(1) == [2, 7]
    w = mapper.weight.detach()
    assert int((w != 0).sum()) == 4
    assert torch.equal(mapper.reference, w)


def test_one_to_one_support_has_no_shared_atom():
    weight = torch.tensor([[5.0, 1.0, 0.0], [4.0, 3.0, 0.0], [4.5, 0.0, 0.1]])
    mask = select_support(weight, top_k=1, one_to_one=True)
    assert mask.sum(1).tolist() == [1.0, 1.0, 1.0]
    assert mask.sum(0).max() == 1.0
    assert mask[0, 0] == 1 and mask[1, 1] == 1 and mask[2, 2] == 1


def test_usage_agreement_drops_atoms_that_track_the_attribute_only_through_the_normaliser():
    # Atom 0 fires the same everywhere: its K·ũ falls as the total usage grows with the
    # attribute, so least squares gives it a large negative weight although it draws nothing.
    torch.manual_seed(4)
    n = 300
    a = torch.rand(n)
    usage = torch.stack([torch.full((n,), 1.0), 0.2 + a + 0.05 * torch.randn(n), 0.5 - 0.3 * a + 0.05 * torch.randn(n)], dim=1)
    weight = torch.tensor([[-3.0, 1.0, 0.2]])
    score = usage_agreement(weight, usage, a[:, None])
    r = [stats.pearsonr(usage[:, j].numpy(), a.numpy()).statistic if usage[:, j].std() > 0 else 0.0 for j in range(3)]
    expected = [abs(w) * max(0.0, np.sign(w) * rj) for w, rj in zip(weight[0].tolist(), r)]
    assert score[0].tolist() == pytest.approx(expected, abs=1e-5)
    assert score[0, 0] == 0  # constant usage: no agreement
    assert select_support(weight, top_k=1).tolist() == [[1.0, 0.0, 0.0]]
    assert select_support(weight, top_k=1, score=score).tolist() == [[0.0, 1.0, 0.0]]
    # rows with fewer than k positive scores are filled by |W|
    assert select_support(weight, top_k=2, score=score).tolist() == [[1.0, 1.0, 0.0]]
    with pytest.raises(ValueError, match="score"):
        select_support(weight, top_k=1, score=score[:, :2])


def test_exclusive_support_keeps_k_atoms_per_row_and_shares_none():
    torch.manual_seed(6)
    weight = torch.randn(4, 20)
    weight[:, 0] = 10.0 + 0.1 * torch.arange(4)  # every row's strongest atom: only row 3 may keep it
    mask = select_support(weight, top_k=3, exclusive=True)
    assert mask.sum(1).tolist() == [3.0] * 4
    assert mask.sum(0).max() == 1.0
    assert mask[:, 0].tolist() == [0.0, 0.0, 0.0, 1.0]
    # greedy oracle in plain Python
    pairs = sorted(((abs(float(weight[m, j])), m, j) for m in range(4) for j in range(20)), reverse=True)
    taken, rows = set(), {m: [] for m in range(4)}
    for _, m, j in pairs:
        if j not in taken and len(rows[m]) < 3:
            taken.add(j)
            rows[m].append(j)
    for m in range(4):
        assert sorted(torch.nonzero(mask[m]).flatten().tolist()) == sorted(rows[m])
    with pytest.raises(ValueError, match="exclusive"):
        select_support(weight, top_k=6, exclusive=True)
