"""Attribute mapper W (Section 3.2, Eqs. 7–8) and the Stage II/III support logic.

Usage ``u = GAP|Z|`` (Eq. 7) summarises each atom's activation; ``ũ = u / ‖u‖₁`` makes it
scale invariant; ``â = W ũ`` (Eq. 8). Because ũ entries are about 1/K, we feed ``K·ũ``
(entries about 1) so that W has entries of order one and Adam's step size means the same
for W as for the network (DESIGN.md "Scale of W"); ``usage_scale`` records the factor.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def atom_usage(codes: Tensor) -> Tensor:
    """Eq. 7: mean absolute code of each atom over all locations.

    Args:
        codes: Z, (B, K, *spatial).
    Returns:
        u, (B, K), non-negative.
    """
    return codes.abs().flatten(2).mean(dim=2)


def normalized_usage(usage: Tensor, scale: float, eps: float = 1e-8) -> Tensor:
    """``scale · u / (‖u‖₁ + eps)``: (B, K) → (B, K), rows summing to ``scale`` (or 0)."""
    return scale * usage / (usage.sum(dim=1, keepdim=True) + eps)


class AttributeMapper(nn.Module):
    """Linear mapper â = (W ⊙ support) · (K ũ), with a frozen-support mask for Stage III.

    Args:
        n_attributes: |A| >= 1, rows of W.
        n_atoms: K >= 1, columns of W.

    Buffers: ``support`` (|A|, K) in {0, 1} (all ones until Stage III), ``reference``
    (|A|, K), the W_stage2 that the drift penalty (Eq. 15) pulls towards.
    """

    def __init__(self, n_attributes: int, n_atoms: int) -> None:
        super().__init__()
        if n_attributes < 1:
            raise ValueError(f"n_attributes must be >= 1, got n_attributes={n_attributes}")
        if n_atoms < 1:
            raise ValueError(f"n_atoms must be >= 1, got n_atoms={n_atoms}")
        self.n_attributes = n_attributes
        self.n_atoms = n_atoms
        self.usage_scale = float(n_atoms)
        self.weight = nn.Parameter(torch.zeros(n_attributes, n_atoms))
        self.register_buffer("support", torch.ones(n_attributes, n_atoms))
        self.register_buffer("reference", torch.zeros(n_attributes, n_atoms))

    def effective_weight(self) -> Tensor:
        """W restricted to its support, (|A|, K)."""
        return self.weight * self.support

    def features(self, codes: Tensor) -> Tensor:
        """K·ũ for codes (B, K, *spatial) → (B, K)."""
        return normalized_usage(atom_usage(codes), self.usage_scale)

    def forward(self, codes: Tensor) -> Tensor:
        """â for codes Z (B, K, *spatial) → (B, |A|)."""
        return self.features(codes) @ self.effective_weight().t()

    @torch.no_grad()
    def fit_least_squares(self, features: Tensor, attributes: Tensor, ridge: float) -> None:
        """Stage II's W₀: ridge least squares of attributes on K·ũ, no intercept.

        ũ sums to a constant, so an intercept would make the system singular; the ridge
        term keeps dead atoms (zero columns) well posed (DESIGN.md "Least squares").

        Args:
            features: K·ũ over the training set, (N, K).
            attributes: scaled attributes, (N, |A|).
            ridge: λ >= 0 added to the Gram matrix's diagonal (scaled by N).
        """
        u = features.double()
        a = attributes.double()
        gram = u.t() @ u + ridge * u.shape[0] * torch.eye(u.shape[1], dtype=u.dtype, device=u.device)
        solution = torch.linalg.solve(gram, u.t() @ a)  # (K, |A|)
        self.weight.copy_(solution.t().to(self.weight.dtype))
        self.support.fill_(1.0)

    @torch.no_grad()
    def freeze_support(self, top_k: int, one_to_one: bool = False, score: Tensor | None = None,
                       exclusive: bool = False) -> None:
        """Stage III: keep the top-k atoms per attribute by |W|; zero the rest; store W_stage2.

        With ``one_to_one`` (Table 4's ablation) each attribute keeps a single atom and no
        atom is shared: attributes pick greedily in order of their strongest weight.
        ``score`` (|A|, K) ranks atoms instead of |W|; ``exclusive`` forbids shared atoms (see
        :func:`select_support`).
        """
        self.support.copy_(select_support(self.weight, top_k, one_to_one, score, exclusive))
        self.weight.mul_(self.support)
        self.reference.copy_(self.weight)

    def mask_gradient(self) -> None:
        """Zero W's gradient outside the support so frozen entries never move."""
        if self.weight.grad is not None:
            self.weight.grad.mul_(self.support)

    def atoms_of(self, attribute: int) -> list[int]:
        """Indices of the atoms in an attribute's support, strongest first."""
        w = self.effective_weight()[attribute].abs()
        order = torch.argsort(w, descending=True)
        return [int(j) for j in order if self.support[attribute, j] > 0 and w[j] > 0]


def usage_agreement(weight: Tensor, usage: Tensor, attributes: Tensor) -> Tensor:
    """``|W_m,j| · max(0, sign(W_m,j) · r(u_j, a_m))``, (|A|, K): W's weight where the atom's raw
    usage rises with the attribute in the direction W claims, zero where it does not.

    Args:
        weight: W (|A|, K).
        usage: raw usages u (N, K) over the training set (not normalised).
        attributes: (N, |A|).
    """
    u = usage.double() - usage.double().mean(0)
    a = attributes.double() - attributes.double().mean(0)
    cov = a.t() @ u  # (|A|, K)
    norm = a.norm(dim=0)[:, None] * u.norm(dim=0)[None, :]
    r = torch.where(norm > 0, cov / norm.clamp_min(1e-300), torch.zeros_like(cov))
    w = weight.detach().double()
    return (w.abs() * torch.clamp(torch.sign(w) * r, min=0.0)).to(weight.dtype)


def select_support(weight: Tensor, top_k: int, one_to_one: bool = False, score: Tensor | None = None,
                   exclusive: bool = False) -> Tensor:
    """0/1 mask (|A|, K) keeping the top-k entries per row (or one unshared atom per row).

    Entries are ranked by |W|, or by ``score`` (|A|, K) when given (ties, e.g. rows with
    fewer than k positive scores, are broken by |W|). With ``exclusive`` no atom is shared:
    (attribute, atom) pairs are taken greedily from the strongest down, skipping atoms
    already taken and rows already holding k atoms.
    """
    n_attr, n_atoms = weight.shape
    if not 1 <= top_k <= n_atoms:
        raise ValueError(f"top_k must be in [1, {n_atoms}], got top_k={top_k}")
    magnitude = weight.detach().abs()
    if score is not None:
        if score.shape != weight.shape:
            raise ValueError(f"score must have W's shape {tuple(weight.shape)}, got {tuple(score.shape)}")
        # rank by score first, |W| second: the |W| term is at most 1e-6 of the smallest positive
        # score, so it only orders the zero (and nearly tied) scores
        mag = magnitude / magnitude.max().clamp_min(1e-30)
        positive = score[score > 0]
        tiny = 1e-6 * (float(positive.min()) if positive.numel() else 1.0)
        magnitude = score.detach().to(magnitude) + tiny * mag
    mask = torch.zeros_like(magnitude)
    if exclusive and not one_to_one:
        if n_attr * top_k > n_atoms:
            raise ValueError(f"exclusive supports need K >= |A|·top_k, got K={n_atoms}, |A|={n_attr}, top_k={top_k}")
        taken_atoms: set[int] = set()
        for flat in torch.argsort(magnitude.flatten(), descending=True, stable=True).tolist():
            m, j = divmod(flat, n_atoms)
            if j not in taken_atoms and mask[m].sum() < top_k:
                taken_atoms.add(j)
                mask[m, j] = 1.0
        return mask
    if not one_to_one:
        idx = torch.topk(magnitude, top_k, dim=1).indices
        mask.scatter_(1, idx, 1.0)
        return mask
    if n_attr > n_atoms:
        raise ValueError(f"one_to_one needs K >= |A|, got K={n_atoms}, |A|={n_attr}")
    taken: set[int] = set()
    order = torch.argsort(magnitude.max(dim=1).values, descending=True)
    for m in order.tolist():
        for j in torch.argsort(magnitude[m], descending=True).tolist():
            if j not in taken:
                taken.add(j)
                mask[m, j] = 1.0
                break
    return mask
