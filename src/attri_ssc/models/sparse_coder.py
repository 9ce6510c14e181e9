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

    Each step is ``Zᵗ⁺¹ = soft(S Zᵗ + b, θ)`` with ``S = I − DᵀD/L``, ``b = Dᵀe/L`` and
    ``θ = α/L``, which is ``Zᵗ + (1/L) Dᵀ(e − D Zᵗ)`` regrouped so that S and b are computed
    once per call and each iteration is one GEMM with the bias fused in. The iterations run
    on all locations of the batch at once, as ``(K, B·N)`` matrices, in a custom autograd
    function (:class:`_ListaIterations`) whose backward replays the saved iterates; its
    gradients equal those of :func:`lista_reference` (plain autograd).

    Under autocast the iterations run in float32 (they are a small share of the model's
    FLOPs, and repeated thresholding in bf16 drifts).

    Args:
        e_flat: features ``(B, C', N)``.
        D: dictionary ``(C', K)``.
        thresholds: lasso weights α (>= 0) broadcastable to ``(B, K, N)``; the step
            thresholds at α/L.
        n_iter: number of iterations T (>= 1).
        L: step constant, must be >= σ_max(D)² for convergence (treated as a constant:
            no gradient flows into it).
        nonneg: one-sided threshold (non-negative codes).
        return_history: also return the list of the T iterates Z¹..Z^T (runs
            :func:`lista_reference`).

    Returns:
        Z ``(B, K, N)`` (and the history if asked).
    """
    if n_iter < 1:
        raise ValueError(f"n_iter must be >= 1, got n_iter={n_iter!r}")
    if return_history:
        return lista_reference(e_flat, D, thresholds, n_iter, L, nonneg, return_history=True)
    device_type = e_flat.device.type
    if torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type):
        with torch.autocast(device_type, enabled=False):
            return lista(_to_float32(e_flat), _to_float32(D), _to_float32(thresholds), n_iter,
                         _to_float32(L), nonneg)
    b_, c, n = e_flat.shape
    k = D.shape[1]
    inv_l = 1.0 / L.detach() if torch.is_tensor(L) else 1.0 / L
    # e as (C', B·N): every location of the batch is one column (one copy of e).
    e_cols = e_flat.transpose(0, 1).reshape(c, b_ * n)
    bias = torch.mm(D.T, e_cols) * inv_l  # b = Dᵀe / L, (K, B·N)
    step = torch.eye(k, dtype=D.dtype, device=D.device) - torch.mm(D.T, D) * inv_l  # S = I − DᵀD/L
    theta = torch.as_tensor(thresholds, dtype=bias.dtype, device=bias.device) * inv_l
    theta = theta.expand(b_, k, n).transpose(0, 1).reshape(k, b_ * n)  # θ = α/L as (K, B·N)
    if torch.is_grad_enabled() and (step.requires_grad or bias.requires_grad or theta.requires_grad):
        z, _ = _ListaIterations.apply(step, bias, theta, n_iter, nonneg)
    else:
        z = _lista_iterations_nograd(step, bias, theta, n_iter, nonneg)
    return z.reshape(k, b_, n).transpose(0, 1).contiguous()  # (B, K, N)


def lista_reference(
    e_flat: torch.Tensor,
    D: torch.Tensor,
    thresholds: torch.Tensor | float,
    n_iter: int,
    L: torch.Tensor | float,
    nonneg: bool = False,
    return_history: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
    """:func:`lista` written with plain autograd ops on ``(B, K, N)`` tensors.

    The oracle of the fused implementation (same arguments and result up to rounding),
    and the path for ``return_history``. Slower and keeps more intermediates for the
    backward pass.
    """
    if n_iter < 1:
        raise ValueError(f"n_iter must be >= 1, got n_iter={n_iter!r}")
    if torch.is_tensor(L):
        L = L.detach()
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


def _to_float32(x):
    return x.float() if torch.is_tensor(x) and x.is_floating_point() else x


def _soft_threshold_(v: torch.Tensor, theta: torch.Tensor, neg_theta: torch.Tensor | None,
                     buf: torch.Tensor, nonneg: bool) -> torch.Tensor:
    """In-place soft threshold of ``v`` (values identical to :func:`soft_threshold`).

    Signed: ``v − clamp(v, −θ, θ)`` (= sign(v)·max(|v| − θ, 0) exactly in IEEE arithmetic);
    non-negative: ``max(v − θ, 0)``. ``buf`` is scratch space shaped like ``v``.
    """
    if nonneg:
        return v.sub_(theta).clamp_min_(0.0)
    torch.clamp(v, min=neg_theta, max=theta, out=buf)
    return v.sub_(buf)


def _lista_iterations_nograd(step: torch.Tensor, bias: torch.Tensor, theta: torch.Tensor, n_iter: int,
                             nonneg: bool) -> torch.Tensor:
    """Forward-only iterations on ``(K, M)`` matrices with two ping-pong buffers."""
    with torch.no_grad():
        neg_theta = None if nonneg else theta.neg()
        buf = torch.empty_like(bias)
        z = _soft_threshold_(bias.clone(), theta, neg_theta, buf, nonneg)
        nxt = torch.empty_like(bias)
        for _ in range(n_iter - 1):
            torch.addmm(bias, step, z, out=nxt)  # S Z + b
            z, nxt = _soft_threshold_(nxt, theta, neg_theta, buf, nonneg), z
        return z


class _ListaIterations(torch.autograd.Function):
    """``Z¹ = soft(b, θ)``, ``Zᵗ⁺¹ = soft(S Zᵗ + b, θ)`` on ``(K, M)`` matrices, T steps.

    Forward saves the iterates Z¹..Zᵀ (one preallocated ``(T, K, M)`` block, no other
    per-iteration allocation). Backward, with gᵗ the gradient reaching Zᵗ:

        gvᵗ = gᵗ ⊙ [Zᵗ ≠ 0]          (the threshold passes v where |v| > θ, i.e. Zᵗ ≠ 0)
        ∂b += gvᵗ,   ∂θ −= sign(Zᵗ) ⊙ gvᵗ,   ∂S += gvᵗ Zᵗ⁻¹ᵀ,   gᵗ⁻¹ = Sᵀ gvᵗ.

    The masks come from the saved iterates (Zᵗ = 0 exactly where the threshold clipped),
    so nothing else is stored. Not twice differentiable and no forward-mode AD or vmap
    (use :func:`lista_reference` for those).
    """

    @staticmethod
    def forward(step: torch.Tensor, bias: torch.Tensor, theta: torch.Tensor, n_iter: int,
                nonneg: bool) -> torch.Tensor:
        k, m = bias.shape
        hist = bias.new_empty((n_iter, k, m))
        buf = torch.empty_like(bias)
        neg_theta = None if nonneg else theta.neg()
        hist[0].copy_(bias)
        _soft_threshold_(hist[0], theta, neg_theta, buf, nonneg)
        for t in range(1, n_iter):
            torch.addmm(bias, step, hist[t - 1], out=hist[t])  # S Zᵗ + b
            _soft_threshold_(hist[t], theta, neg_theta, buf, nonneg)
        return hist[-1].clone(), hist

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        step, _, _, _, _ = inputs
        _, hist = output
        ctx.save_for_backward(step, hist)
        ctx.mark_non_differentiable(hist)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_z: torch.Tensor, _grad_hist: torch.Tensor | None):
        step, hist = ctx.saved_tensors
        need_step, need_bias, need_theta = ctx.needs_input_grad[:3]
        n_iter = hist.shape[0]
        g = grad_z.contiguous().clone()  # gradient reaching Zᵗ, updated in place
        grad_bias = torch.zeros_like(g)
        grad_theta = torch.zeros_like(g) if need_theta else None
        grad_step = torch.zeros_like(step) if need_step else None
        sign = torch.empty_like(g)
        spare = torch.empty_like(g)
        step_t = step.T
        for t in range(n_iter - 1, -1, -1):
            z_t = hist[t]
            torch.sign(z_t, out=sign)
            g.mul_(sign)  # = sign(Zᵗ) ⊙ gᵗ: zero where the threshold clipped
            if need_theta:
                grad_theta.sub_(g)
            g.mul_(sign)  # gvᵗ = gᵗ ⊙ [Zᵗ ≠ 0]
            grad_bias.add_(g)
            if t > 0:
                if need_step:
                    grad_step.addmm_(g, hist[t - 1].T)
                torch.mm(step_t, g, out=spare)  # gᵗ⁻¹ = Sᵀ gvᵗ
                g, spare = spare, g
        return grad_step, grad_bias if need_bias else None, grad_theta, None, None


def debias_on_support(e_flat: torch.Tensor, D: torch.Tensor, z: torch.Tensor, n_steps: int,
                      L: torch.Tensor | float, nonneg: bool = False) -> torch.Tensor:
    """``n_steps`` gradient steps on ``½‖e − DZ‖²`` restricted to the support of ``z``.

    ``Z ← Z + M ⊙ Dᵀ(e − DZ)/L`` with ``M = [z ≠ 0]`` fixed: the soft threshold leaves every
    active code shrunk by θ = α/L (its L1 bias), and the decoder sees DZ. At a fixed point
    of ISTA one step gives back exactly the pre-threshold values of the active entries
    (Z + sign(Z)·θ); further steps approach the least-squares codes on the support.
    The support, hence the density, is unchanged (with ``nonneg`` the codes are clamped
    at 0 after each step, which can only shrink it). Plain autograd (a few small ops).

    Shapes: ``e_flat (B, C', N)``, ``D (C', K)``, ``z (B, K, N)`` -> ``(B, K, N)``.
    """
    if n_steps <= 0:
        return z
    inv_l = 1.0 / L.detach() if torch.is_tensor(L) else 1.0 / L
    mask = (z != 0).to(z.dtype)
    for _ in range(n_steps):
        residual = e_flat - torch.matmul(D, z)  # (B, C', N)
        z = z + mask * torch.matmul(D.T, residual) * inv_l
        if nonneg:
            z = z.clamp_min(0.0)
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
    With ``config.threshold_channels = H`` the conv and blocks run on H channels and a
    1^d conv maps H -> K before the non-negative map.
    Shapes: ``(B, C', *s) -> (B, K, *s)``, all entries >= 0.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d, k = config.spatial_dims, config.n_atoms
        width = k if config.threshold_channels is None else config.threshold_channels
        self.conv = fac.conv(d, config.latent_channels, width, 3, padding=1)
        self.res1 = ResidualBlock(d, width, width, config.norm_groups)
        self.res2 = ResidualBlock(d, width, width, config.norm_groups)
        # Only with a width of its own (checkpoints of the Table 6 layout have no such layer).
        self.head = None if config.threshold_channels is None else fac.conv(d, width, k, 1)
        self.param = config.threshold_param
        self.cbam = CBAM(d, k, config.cbam_reduction, config.cbam_kernel)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        raw = self.res2(self.res1(self.conv(e)))
        if self.head is not None:
            raw = self.head(raw)
        alpha = F.softplus(raw) if self.param == "softplus" else raw.square()
        return self.cbam(alpha)


class AttentiveLISTA(nn.Module):
    """Dictionary + threshold network + unrolled LISTA (+ optional debiasing on the support).

    ``forward(e, n_iter=None) -> (Z, α⁺)`` with e ``(B, C', *s)``, Z and α⁺ ``(B, K, *s)``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_iter = config.n_iter
        self.nonneg = config.nonneg_codes
        self.margin = config.lipschitz_margin
        self.debias_steps = config.debias_steps
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
        e_flat = e.reshape(b, c, -1)
        z = lista(e_flat, D, alpha.reshape(b, alpha.shape[1], -1), n_iter, L, self.nonneg)
        z = debias_on_support(e_flat, D, z, self.debias_steps, L, self.nonneg)
        return z.reshape(alpha.shape), alpha
