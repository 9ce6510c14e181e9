"""The fused LISTA (custom backward on (K, B·N) matrices) against two oracles: the
plain-autograd reference on (B, K, N) tensors, and finite differences (gradcheck)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attri_ssc.models.sparse_coder import lipschitz_constant, lista, lista_reference


def _problem(seed: int, b: int = 2, c: int = 6, k: int = 10, n: int = 5, threshold_shape: str = "full"):
    rng = np.random.default_rng(seed)
    D = rng.standard_normal((c, k))
    D /= np.linalg.norm(D, axis=0, keepdims=True)
    e = rng.standard_normal((b, c, n))
    shape = {"full": (b, k, n), "atom": (1, k, 1), "location": (b, 1, n)}[threshold_shape]
    alpha = rng.uniform(0.05, 0.6, size=shape)
    t = lambda a: torch.from_numpy(a).requires_grad_(True)  # noqa: E731
    return t(e), t(D), t(alpha)


def _grads(fn, e, D, alpha, n_iter, nonneg, weight):
    L = lipschitz_constant(D)
    z = fn(e, D, alpha, n_iter, L, nonneg)
    (z * weight).sum().backward()
    out = (z.detach().clone(), e.grad.clone(), D.grad.clone(), alpha.grad.clone())
    for p in (e, D, alpha):
        p.grad = None
    return out


@pytest.mark.parametrize("nonneg", [False, True])
@pytest.mark.parametrize("n_iter", [1, 2, 9])
@pytest.mark.parametrize("threshold_shape", ["full", "atom", "location"])
def test_fused_values_and_gradients_match_autograd_reference(nonneg, n_iter, threshold_shape):
    e, D, alpha = _problem(n_iter, threshold_shape=threshold_shape)
    weight = torch.from_numpy(np.random.default_rng(99).standard_normal((2, 10, 5)))
    fused = _grads(lista, e, D, alpha, n_iter, nonneg, weight)
    ref = _grads(lista_reference, e, D, alpha, n_iter, nonneg, weight)
    assert (ref[0] != 0).any() and (ref[0] == 0).any()  # both branches of the threshold occur
    for name, a, b in zip(("z", "grad_e", "grad_D", "grad_alpha"), fused, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize("nonneg", [False, True])
def test_fused_gradcheck(nonneg):
    e, D, alpha = _problem(7, b=2, c=4, k=6, n=3)
    L = float(lipschitz_constant(D)) * 1.2

    def f(e_, D_, a_):
        return lista(e_, D_, a_, 5, L, nonneg)

    # gradcheck compares the custom backward with finite differences (the problem is away
    # from threshold kinks by more than gradcheck's eps for this seed).
    assert torch.autograd.gradcheck(f, (e, D, alpha), eps=1e-7, atol=1e-6)


def test_no_grad_path_equals_grad_path_and_scalar_threshold():
    e, D, _ = _problem(3)
    L = lipschitz_constant(D)
    z_grad = lista(e, D, 0.3, 6, L)
    with torch.no_grad():
        z_nograd = lista(e, D, 0.3, 6, L)
    assert z_grad.requires_grad and not z_nograd.requires_grad
    torch.testing.assert_close(z_grad.detach(), z_nograd, rtol=0, atol=0)
    torch.testing.assert_close(z_nograd, lista_reference(e.detach(), D.detach(), 0.3, 6, L), rtol=1e-12, atol=1e-13)
    assert z_nograd.shape == (2, 10, 5) and z_nograd.is_contiguous()


def test_autocast_runs_iterations_in_float32():
    e, D, alpha = (t.detach().float() for t in _problem(4))
    L = lipschitz_constant(D)
    want = lista(e, D, alpha, 8, L)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = lista(e.bfloat16(), D, alpha, 8, L)
    assert got.dtype == torch.float32
    # bf16 only enters through the rounded input e (8 mantissa bits)
    torch.testing.assert_close(got, want, rtol=0, atol=0.05)


def test_history_uses_reference_and_matches_final_iterate():
    e, D, alpha = (t.detach() for t in _problem(5))
    L = lipschitz_constant(D)
    z, hist = lista(e, D, alpha, 4, L, return_history=True)
    assert len(hist) == 4 and hist[-1] is z
    torch.testing.assert_close(lista(e, D, alpha, 4, L), z, rtol=1e-12, atol=1e-13)
