"""Attentive LISTA: structured sparse codes Z of the encoder features e (paper Eqs. 3-6).

For every location i (flattened, N = prod(s)) the codes approximately solve the weighted
lasso ``min_z ½‖e_i − D z‖² + Σ_k α⁺_{k,i} |z_k|`` by T unrolled ISTA steps

    Z⁰ = 0,   Zᵗ⁺¹ = soft(Zᵗ + (1/L) Dᵀ(e − D Zᵗ), α⁺/L),

with L >= σ_max(D)² (the spectral norm squared, *not* the Frobenius norm that the public
SSC-VAE code uses, which makes the step ~100x too small). D (C' x K) has unit-norm atoms:
the forward pass normalises the stored columns, and ``project_`` renormalises the stored
parameter after each optimiser step. α⁺ comes from a threshold network (conv C' -> K, two
residual blocks, a non-negative parameterisation, CBAM channel and spatial attention),
so α⁺ >= 0 by construction. Codes are signed by default; ``nonneg=True`` uses the
one-sided threshold ``max(v − θ, 0)``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from attri_ssc.models.config import ModelConfig
from attri_ssc.nn import factories as fac
from attri_ssc.nn.blocks import CBAM, ResidualBlock


def soft_threshold(v: torch.Tensor, theta: torch.Tensor | float, nonneg: bool = False) -> torch.Tensor:
    """Proximal map of ``θ‖·‖₁``: ``sign(v) max(|v| − θ, 0)``; ``max(v − θ, 0)`` if ``nonneg``.

    ``theta`` (>= 0) broadcasts against ``v``.
    """
    if nonneg:
        return F.relu(v - theta)
    return torch.sign(v) * F.relu(v.abs() - theta)


def lipschitz_constant(D: torch.Tensor, margin: float = 1.001) -> torch.Tensor:
    """``margin * σ_max(D)²``, the Lipschitz constant of ``z ↦ Dᵀ(Dz − e)``, detached.

    Exact: the largest eigenvalue of the smaller Gram matrix (DDᵀ or DᵀD) in float64.
    ``D``: ``(C', K)``. Returns a 0-d tensor in ``D``'s dtype.
    """
    with torch.no_grad():
        d64 = D.detach().to(torch.float64)
        gram = d64 @ d64.T if d64.shape[0] <= d64.shape[1] else d64.T @ d64
        top = torch.linalg.eigvalsh(gram)[-1].clamp_min(0.0)
        return (top * margin).to(D.dtype)


def lista(
    e_flat: torch.Tensor,
    D: torch.Tensor,
    thresholds: torch.Tensor | float,
    n_iter: int,
    L: torch.Tensor | float,
    nonneg: bool = False,
    return_history: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
    """Unrolled ISTA from Z = 0 on flattened locations.

    Args:
        e_flat: features ``(B, C', N)``.
        D: dictionary ``(C', K)``.
        thresholds: lasso weights α (>= 0) broadcastable to ``(B, K, N)``; the step
            thresholds at α/L.
        n_iter: number of iterations T (>= 1).
        L: step constant, must be >= σ_max(D)² for convergence.
        nonneg: one-sided threshold (non-negative codes).
        return_history: also return the list of the T iterates Z¹..Z^T.

    Returns:
        Z ``(B, K, N)`` (and the history if asked).
    """
    if n_iter < 1:
        raise ValueError(f"n_iter must be >= 1, got n_iter={n_iter!r}")
    gram = D.T @ D  # (K, K), once per call
    dte = torch.matmul(D.T, e_flat)  # (B, K, N)
    inv_l = 1.0 / L
    theta = thresholds * inv_l
    z = soft_threshold(dte * inv_l, theta, nonneg)  # first step from Z = 0
    history = [z]
    for _ in range(n_iter - 1):
        z = soft_threshold(z + (dte - torch.matmul(gram, z)) * inv_l, theta, nonneg)
        if return_history:
            history.append(z)
    if return_history:
        return z, history
    return z


class Dictionary(nn.Module):
    """Dictionary D ``(C', K)`` with unit-norm atoms (columns).

    Initialised from i.i.d. Gaussian columns normalised to unit length (well conditioned,
    no duplicate atoms; not a 1-D DCT). ``forward()`` returns the column-normalised
    weight, so atoms are unit-norm whatever the optimiser does; ``project_()``
    renormalises the stored weight in place (call after optimiser steps) so its scale
    stays fixed and Adam's step sizes keep their meaning.
    """

    def __init__(self, latent_channels: int, n_atoms: int) -> None:
        super().__init__()
        if latent_channels < 1:
            raise ValueError(f"latent_channels must be >= 1, got latent_channels={latent_channels}")
        if n_atoms < 1:
            raise ValueError(f"n_atoms must be >= 1, got n_atoms={n_atoms}")
        w = torch.randn(latent_channels, n_atoms)
        self.weight = nn.Parameter(w / w.norm(dim=0, keepdim=True))

    def forward(self) -> torch.Tensor:
        return self.weight / self.weight.norm(dim=0, keepdim=True).clamp_min(1e-12)

    @torch.no_grad()
    def project_(self) -> None:
        self.weight.div_(self.weight.norm(dim=0, keepdim=True).clamp_min(1e-12))


class ThresholdNet(nn.Module):
    """Threshold map α⁺ from e (Table 6 "AttentiveLISTA"; Eqs. 4-6).

    conv 3^d C' -> K, two residual blocks, α = softplus(·) (or square), α⁺ = CBAM(α).
    Shapes: ``(B, C', *s) -> (B, K, *s)``, all entries >= 0.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d, k = config.spatial_dims, config.n_atoms
        self.conv = fac.conv(d, config.latent_channels, k, 3, padding=1)
        self.res1 = ResidualBlock(d, k, k, config.norm_groups)
        self.res2 = ResidualBlock(d, k, k, config.norm_groups)
        self.param = config.threshold_param
        self.cbam = CBAM(d, k, config.cbam_reduction, config.cbam_kernel)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        raw = self.res2(self.res1(self.conv(e)))
        alpha = F.softplus(raw) if self.param == "softplus" else raw.square()
        return self.cbam(alpha)


class AttentiveLISTA(nn.Module):
    """Dictionary + threshold network + unrolled LISTA.

    ``forward(e, n_iter=None) -> (Z, α⁺)`` with e ``(B, C', *s)``, Z and α⁺ ``(B, K, *s)``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_iter = config.n_iter
        self.nonneg = config.nonneg_codes
        self.margin = config.lipschitz_margin
        self.dictionary = Dictionary(config.latent_channels, config.n_atoms)
        self.thresholds = ThresholdNet(config)

    def lipschitz(self) -> torch.Tensor:
        """L = margin · σ_max(D)² for the current (normalised) dictionary, detached."""
        return lipschitz_constant(self.dictionary(), self.margin)

    def forward(self, e: torch.Tensor, n_iter: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        n_iter = self.n_iter if n_iter is None else int(n_iter)
        alpha = self.thresholds(e)  # (B, K, *s)
        D = self.dictionary()  # (C', K)
        L = lipschitz_constant(D, self.margin)
        b, c = e.shape[:2]
        z = lista(e.reshape(b, c, -1), D, alpha.reshape(b, alpha.shape[1], -1), n_iter, L, self.nonneg)
        return z.reshape(alpha.shape), alpha
