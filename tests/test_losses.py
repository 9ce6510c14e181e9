"""Loss terms against brute-force NumPy definitions (double loops, literal sums)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attri_ssc.losses import (
    attribute_regularization_loss,
    drift_penalty,
    group_sparsity_loss,
    ssc_loss_terms,
)
from attri_ssc.models.outputs import SSCOutput, code_density


def _fake_output(rng: np.random.Generator, b=2, c=4, k=6, s=(3, 2)) -> SSCOutput:
    z = rng.standard_normal((b, k, *s)) * (rng.random((b, k, *s)) < 0.4)
    t = lambda a: torch.tensor(a, dtype=torch.float64, requires_grad=True)  # noqa: E731
    codes = t(z)
    return SSCOutput(
        recon=t(rng.random((b, 1, 8 * s[0], 8 * s[1]))),
        features=t(rng.standard_normal((b, c, *s))),
        codes=codes,
        thresholds=t(rng.random((b, k, *s))),
        coded=t(rng.standard_normal((b, c, *s))),
        density=code_density(codes),
    )


@pytest.mark.parametrize("mode", ["detached", "learned", "global"])
def test_ssc_loss_terms_match_definitions(tiny_config, mode):
    rng = np.random.default_rng(0)
    cfg = tiny_config(2, alpha_penalty=mode, sparsity_lambda=0.37)
    out = _fake_output(rng)
    x = torch.tensor(rng.random(tuple(out.recon.shape)), dtype=torch.float64)
    terms = ssc_loss_terms(x, out, cfg)
    value = {k: float(v.detach()) for k, v in terms.items()}
    assert set(terms) == {"recon", "latent_fit", "latent_sparsity"}
    assert all(v.dim() == 0 for v in terms.values())

    n = lambda t: t.detach().numpy()  # noqa: E731
    assert value["recon"] == pytest.approx(((n(out.recon) - n(x)) ** 2).mean(), rel=1e-12)
    b, c = out.features.shape[:2]
    locs = int(np.prod(out.features.shape[2:]))
    fit = sum(
        ((n(out.features)[bi, :, i, j] - n(out.coded)[bi, :, i, j]) ** 2).sum()
        for bi in range(b) for i in range(3) for j in range(2)
    ) / (b * locs * c)
    assert value["latent_fit"] == pytest.approx(fit, rel=1e-12)
    weight = 0.37 if mode == "global" else n(out.thresholds)
    sparsity = (weight * np.abs(n(out.codes))).sum() / (b * locs * c)
    assert value["latent_sparsity"] == pytest.approx(sparsity, rel=1e-12)

    # Eqs. 2-3 literally: per-sample sums averaged over the batch.
    summed = ssc_loss_terms(x, out, cfg.replace(loss_reduction="sum", sparsity_weight=2.0))
    summed = {k: v.detach() for k, v in summed.items()}
    assert float(summed["recon"]) == pytest.approx(((n(out.recon) - n(x)) ** 2).sum() / b, rel=1e-12)
    assert float(summed["latent_fit"]) == pytest.approx(fit * locs * c, rel=1e-12)
    assert float(summed["latent_sparsity"]) == pytest.approx(2.0 * sparsity * locs * c, rel=1e-12)

    terms["latent_sparsity"].backward()
    grad_alpha = out.thresholds.grad
    if mode == "learned":  # Eq. 3 literally: the penalty pulls α down
        assert grad_alpha is not None and (grad_alpha >= 0).all() and grad_alpha.abs().sum() > 0
    else:  # detached / global: no gradient into α from the penalty
        assert grad_alpha is None or not grad_alpha.any()
    # the penalty always pushes the codes towards zero
    g = out.codes.grad.numpy()
    zc = n(out.codes)
    assert (np.sign(g[zc != 0]) == np.sign(zc[zc != 0])).all()


def _ar_oracle(pred: np.ndarray, target: np.ndarray, delta: float) -> np.ndarray:
    b, a = pred.shape
    out = np.zeros(a)
    for m in range(a):
        total = 0.0
        for p in range(b):
            for q in range(b):
                total += abs(np.tanh(delta * (pred[p, m] - pred[q, m])) - np.sign(target[p, m] - target[q, m]))
        out[m] = total / (b * b)
    return out


@pytest.mark.parametrize("delta", [10.0, 0.7])
def test_attribute_regularization_matches_double_loop(delta):
    rng = np.random.default_rng(1)
    pred = rng.standard_normal((7, 3)) * 0.3
    target = rng.integers(0, 4, size=(7, 3)).astype(float)  # ties -> sign 0 pairs
    ref = _ar_oracle(pred, target, delta)
    p, t = torch.tensor(pred), torch.tensor(target)
    per = attribute_regularization_loss(p, t, delta=delta, per_attribute=True)
    assert per.shape == (3,)
    np.testing.assert_allclose(per.numpy(), ref, rtol=1e-12)
    assert float(attribute_regularization_loss(p, t, delta=delta)) == pytest.approx(ref.sum(), rel=1e-12)


def test_attribute_regularization_prefers_correct_order_and_only_grads_pred():
    target = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    good = attribute_regularization_loss(target * 5.0, target)
    bad = attribute_regularization_loss(-target * 5.0, target)
    assert float(good) < 0.01
    # reversed order: each of the 12 off-diagonal pairs costs |∓1 − ±1| ≈ 2, the diagonal 0
    assert float(bad) == pytest.approx(2.0 * 12 / 16, abs=1e-6)
    pred = torch.zeros(4, 1, requires_grad=True)
    tgt = target.clone().requires_grad_(True)
    attribute_regularization_loss(pred, tgt).backward()
    assert pred.grad.abs().sum() > 0
    assert tgt.grad is None or not tgt.grad.any()
    with pytest.raises(ValueError, match="pred"):
        attribute_regularization_loss(torch.zeros(4, 2), torch.zeros(4, 3))


def test_group_sparsity_l1_is_eq12_literally():
    rng = np.random.default_rng(2)
    W = rng.standard_normal((3, 10))
    rows = sum(np.abs(W[m, :]).sum() for m in range(3))
    cols = sum(np.abs(W[:, j]).sum() for j in range(10))
    got = group_sparsity_loss(torch.tensor(W), 2.0, 5.0, variant="l1")
    assert float(got) == pytest.approx(2.0 * rows + 5.0 * cols, rel=1e-12)
    assert float(got) == pytest.approx(7.0 * np.abs(W).sum(), rel=1e-12)  # the printed Eq. 12 collapses to (λr + λc)‖W‖₁
    got_n = group_sparsity_loss(torch.tensor(W), 2.0, 5.0, variant="l1", normalize=True)
    assert float(got_n) == pytest.approx((2.0 * rows + 5.0 * cols) / 30, rel=1e-12)


def test_group_sparsity_group_is_mixed_norm():
    rng = np.random.default_rng(3)
    W = rng.standard_normal((4, 9))
    W[:, 2] = 0.0  # a dead atom column: finite (sub)gradient
    rows = sum(np.sqrt((W[m, :] ** 2).sum()) for m in range(4))
    cols = sum(np.sqrt((W[:, j] ** 2).sum()) for j in range(9))
    Wt = torch.tensor(W, requires_grad=True)
    got = group_sparsity_loss(Wt, 1.5, 0.5, variant="group")
    assert float(got.detach()) == pytest.approx(1.5 * rows + 0.5 * cols, rel=1e-12)
    got.backward()
    assert torch.isfinite(Wt.grad).all()
    got_n = group_sparsity_loss(torch.tensor(W), 1.5, 0.5, variant="group", normalize=True)
    assert float(got_n) == pytest.approx((1.5 * rows + 0.5 * cols) / 36, rel=1e-12)
    with pytest.raises(ValueError, match="variant"):
        group_sparsity_loss(Wt, 1.0, 1.0, variant="l2")


def test_drift_penalty_is_squared_frobenius():
    rng = np.random.default_rng(4)
    W, W0 = rng.standard_normal((3, 8)), rng.standard_normal((3, 8))
    W_ref = torch.tensor(W0, requires_grad=True)
    Wt = torch.tensor(W, requires_grad=True)
    got = drift_penalty(Wt, W_ref, 0.01)
    assert float(got.detach()) == pytest.approx(0.01 * np.linalg.norm(W - W0, "fro") ** 2, rel=1e-12)
    got.backward()
    np.testing.assert_allclose(Wt.grad.numpy(), 0.02 * (W - W0), rtol=1e-12)
    assert W_ref.grad is None
