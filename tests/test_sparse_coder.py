"""Attentive LISTA against independent oracles: scikit-learn's lasso, KKT conditions,
a plain NumPy ISTA, the spectral norm from NumPy, and the lasso objective."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.decomposition import sparse_encode

from attri_ssc.models.sparse_coder import (
    AttentiveLISTA,
    Dictionary,
    ThresholdNet,
    lipschitz_constant,
    lista,
    soft_threshold,
)
from attri_ssc.models.ssc_vae import SSCVAE


def _unit_dictionary(rng: np.random.Generator, c: int, k: int) -> np.ndarray:
    D = rng.standard_normal((c, k))
    return D / np.linalg.norm(D, axis=0, keepdims=True)


def _lasso_objective(e: np.ndarray, D: np.ndarray, z: np.ndarray, lam) -> np.ndarray:
    """Per-location ½‖e − Dz‖² + Σ λ|z|; e (C', N), z (K, N) -> (N,)."""
    return 0.5 * ((e - D @ z) ** 2).sum(0) + (lam * np.abs(z)).sum(0)


@pytest.mark.parametrize("nonneg", [False, True])
def test_lista_converges_to_sklearn_lasso_and_kkt(nonneg):
    # A well-conditioned overcomplete problem: 2000 ISTA steps reach ~1e-11 of the optimum
    # here (nearly degenerate supports can need far more; ISTA's rate is problem-dependent).
    rng = np.random.default_rng(0)
    c, k, n, lam = 16, 24, 8, 0.5
    D = _unit_dictionary(rng, c, k)
    e = rng.standard_normal((c, n))
    L = np.linalg.norm(D, 2) ** 2 * 1.001
    z = lista(torch.from_numpy(e)[None], torch.from_numpy(D), lam, 2000, float(L), nonneg=nonneg)
    z = z[0].numpy()  # (K, N)

    # sparse_encode('lasso_cd') runs Lasso(alpha=regularization / n_features), whose
    # objective (1/(2 n_features))‖x − Dz‖² + alpha‖z‖₁ is ½‖x − Dz‖² + regularization‖z‖₁
    # divided by n_features: same minimiser as ours with regularization = λ.
    ref = sparse_encode(e.T, D.T, alpha=lam, algorithm="lasso_cd", max_iter=100_000, positive=nonneg).T
    assert np.abs(z - ref).max() <= 1e-6
    assert (z != 0).any() and (z == 0).any()  # a non-trivial sparse solution

    # KKT: g = Dᵀ(e − Dz); active: g = λ sign(z) (nonneg: g = λ); inactive: |g| <= λ (g <= λ).
    g = D.T @ (e - D @ z)
    active = z != 0
    expected = lam * (np.ones_like(z) if nonneg else np.sign(z))
    assert np.abs(g[active] - expected[active]).max() <= 1e-6
    inactive_g = g[~active] if nonneg else np.abs(g[~active])
    assert inactive_g.max() <= lam + 1e-6
    if nonneg:
        assert z.min() >= 0.0


def test_lista_equals_numpy_ista_for_t_steps():
    rng = np.random.default_rng(2)
    b, c, k, n, t = 2, 6, 10, 5, 7
    D = _unit_dictionary(rng, c, k)
    e = rng.standard_normal((b, c, n))
    alpha = rng.uniform(0.0, 0.5, size=(b, k, n))  # one threshold per atom and location
    L = 1.3 * np.linalg.norm(D, 2) ** 2
    z = lista(torch.from_numpy(e), torch.from_numpy(D), torch.from_numpy(alpha), t, L).numpy()

    ref = np.zeros((b, k, n))
    for bi in range(b):
        for i in range(n):
            zi = np.zeros(k)
            for _ in range(t):
                v = zi + D.T @ (e[bi, :, i] - D @ zi) / L
                zi = np.sign(v) * np.maximum(np.abs(v) - alpha[bi, :, i] / L, 0.0)
            ref[bi, :, i] = zi
    np.testing.assert_allclose(z, ref, rtol=0, atol=1e-12)


def test_lista_objective_never_increases():
    rng = np.random.default_rng(3)
    c, k, n = 16, 48, 10
    D = _unit_dictionary(rng, c, k)
    e = rng.standard_normal((c, n))
    lam = rng.uniform(0.05, 0.4, size=(k, n))
    L = float(lipschitz_constant(torch.from_numpy(D)))
    _, hist = lista(torch.from_numpy(e)[None], torch.from_numpy(D), torch.from_numpy(lam), 300, L,
                    return_history=True)
    assert len(hist) == 300
    objs = [_lasso_objective(e, D, np.zeros((k, n)), lam)]
    objs += [_lasso_objective(e, D, h[0].numpy(), lam) for h in hist]
    objs = np.stack(objs)  # (T + 1, N)
    steps = np.diff(objs, axis=0)
    assert steps.max() <= 1e-12 * np.abs(objs).max()
    assert (objs[-1] < objs[0] - 1e-3).all()  # and it does descend


@pytest.mark.parametrize("shape", [(8, 16), (16, 8), (32, 64), (5, 5)])
def test_lipschitz_bounds_spectral_norm_of_random_dictionary(shape):
    rng = np.random.default_rng(4)
    D = rng.standard_normal(shape)
    sigma2 = np.linalg.norm(D, 2) ** 2
    for dtype in (torch.float32, torch.float64):
        L = float(lipschitz_constant(torch.from_numpy(D).to(dtype), margin=1.001))
        assert L >= sigma2
        assert L <= 1.002 * sigma2  # spectral, not Frobenius (which is K/σ² ≈ 2-10x larger here)
    assert np.linalg.norm(D, "fro") ** 2 > 1.5 * sigma2  # the Frobenius step would differ


def test_lipschitz_and_unit_atoms_after_training_steps(tiny_config):
    model = SSCVAE(tiny_config(2))
    opt = torch.optim.Adam(model.parameters(), lr=5e-2)  # large steps move D a lot
    x = torch.rand(4, 1, 16, 16)
    d0 = model.dictionary().detach().clone()
    for _ in range(5):
        out = model(x)
        loss = (out.recon - x).square().mean() + (out.coded - out.features).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.post_step()
    D = model.dictionary().detach().double().numpy()
    assert np.abs(D - d0.double().numpy()).max() > 1e-2  # D was trained
    np.testing.assert_allclose(np.linalg.norm(D, axis=0), 1.0, atol=1e-6)
    stored = model.sparse_coder.dictionary.weight.detach().double().numpy()
    np.testing.assert_allclose(np.linalg.norm(stored, axis=0), 1.0, atol=1e-6)
    assert float(model.lipschitz()) >= np.linalg.norm(D, 2) ** 2


def test_dictionary_init_is_random_unit_vectors():
    D = Dictionary(16, 64)().detach().numpy()
    np.testing.assert_allclose(np.linalg.norm(D, axis=0), 1.0, atol=1e-6)
    cos = np.abs(D.T @ D) - np.eye(64)
    assert cos.max() < 0.95  # no duplicate or antipodal atoms (a 1-D DCT with K = 2C' has them)
    assert np.linalg.matrix_rank(D) == 16


@pytest.mark.parametrize("param", ["softplus", "square"])
def test_thresholds_nonnegative_for_adversarial_inputs(tiny_config, param):
    cfg = tiny_config(3, threshold_param=param)
    net = ThresholdNet(cfg)
    with torch.no_grad():  # push every pre-activation as negative as possible
        for name, p in net.named_parameters():
            if name.endswith("bias"):
                p.fill_(-1e3)
            else:
                p.mul_(50.0)
    for scale in (1e-6, 1.0, 1e4):
        e = scale * torch.randn(2, cfg.latent_channels, 2, 2, 2)
        alpha = net(e)
        assert alpha.shape == (2, cfg.n_atoms, 2, 2, 2)
        assert torch.isfinite(alpha).all()
        assert alpha.min() >= 0.0


def test_raising_thresholds_lowers_density():
    rng = np.random.default_rng(5)
    D = torch.from_numpy(_unit_dictionary(rng, 16, 32))
    e = torch.from_numpy(rng.standard_normal((4, 16, 50)))
    base = torch.from_numpy(rng.uniform(0.5, 1.5, size=(4, 32, 50)))
    L = lipschitz_constant(D)
    for nonneg in (False, True):
        dens = [float((lista(e, D, s * base, 16, L, nonneg) != 0).double().mean())
                for s in (0.0, 0.1, 0.3, 1.0, 3.0)]
        assert all(a > b for a, b in zip(dens, dens[1:])), dens
        assert dens[-1] < 0.05


def test_model_thresholds_raise_lowers_density(tiny_config):
    """Same through the attentive module: scaling α⁺ up lowers the model's code density."""
    coder = AttentiveLISTA(tiny_config(2, n_atoms=32))
    e = torch.randn(4, 8, 4, 4)
    net = coder.thresholds
    orig = net.forward
    densities = []
    for s in (0.5, 2.0, 8.0):
        net.forward = lambda x, s=s: s * orig(x)  # noqa: B023
        z, alpha = coder(e)
        densities.append(float((z != 0).float().mean()))
    assert densities[0] > densities[1] > densities[2]


def test_sparse_code_n_iter_override_one_step_is_thresholded_correlation(tiny_config):
    coder = AttentiveLISTA(tiny_config(2)).double()
    e = torch.randn(2, 8, 2, 2, dtype=torch.float64)
    z1, alpha = coder(e, n_iter=1)
    D = coder.dictionary().detach()
    L = float(np.linalg.norm(D.numpy(), 2) ** 2 * coder.margin)
    dte = torch.einsum("ck,bchw->bkhw", D, e)
    expected = torch.sign(dte) * torch.clamp(dte.abs() - alpha, min=0) / L
    torch.testing.assert_close(z1, expected, rtol=1e-10, atol=1e-12)
    zt, _ = coder(e)  # default T = 4 differs from one step
    assert not torch.allclose(zt, z1)


def test_soft_threshold_gradcheck():
    torch.manual_seed(0)
    v = torch.randn(40, dtype=torch.float64)
    theta = torch.rand(40, dtype=torch.float64) * 0.5
    # keep |v| − θ (and v − θ) away from the kinks so finite differences are valid
    v = torch.where((v.abs() - theta).abs() < 0.05, v + 0.2 * torch.sign(v), v)
    v = torch.where((v - theta).abs() < 0.05, v + 0.2, v)
    v.requires_grad_(True)
    theta.requires_grad_(True)
    for nonneg in (False, True):
        assert torch.autograd.gradcheck(lambda a, b: soft_threshold(a, b, nonneg), (v, theta))
    np.testing.assert_allclose(
        soft_threshold(torch.tensor([-2.0, -0.5, 0.5, 2.0]), 1.0).numpy(), [-1.0, 0.0, 0.0, 1.0]
    )
    np.testing.assert_allclose(
        soft_threshold(torch.tensor([-2.0, -0.5, 0.5, 2.0]), 1.0, nonneg=True).numpy(), [0.0, 0.0, 0.0, 1.0]
    )


def test_lista_rejects_zero_iterations():
    with pytest.raises(ValueError, match="n_iter"):
        lista(torch.zeros(1, 2, 3), torch.eye(2), 0.1, 0, 1.0)


def test_unused_atoms_receive_no_gradient():
    """An atom whose codes are zero at every iterate gets exactly zero gradient."""
    rng = np.random.default_rng(6)
    dictionary = Dictionary(8, 12).double()
    e = torch.from_numpy(rng.standard_normal((2, 8, 5)))
    lam = torch.full((1, 12, 1), 0.1, dtype=torch.float64)
    lam[0, 3] = 1e6  # atom 3 can never switch on
    D = dictionary()
    z = lista(e, D, lam, 10, lipschitz_constant(D))
    assert not z[:, 3].any() and z.abs().sum() > 0
    loss = (e - torch.matmul(D, z)).square().sum() + z.abs().sum()
    loss.backward()
    grad = dictionary.weight.grad
    assert not grad[:, 3].any()
    assert grad.abs().sum() > 0
