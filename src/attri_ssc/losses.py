"""Loss terms as pure functions (paper Eqs. 1-3, 9-12, 15).

Nothing here holds state: each function takes tensors (and a config) and returns scalar
tensors, so each curriculum stage can weight the terms as it likes.

Normalisation of L_latent (Eq. 3): with B samples, N latent locations and C' feature
channels,

    latent_fit      = (1 / (B N C')) Σ_{b,i} ‖e_{b,i} − D z_{b,i}‖²          (mean squared error)
    latent_sparsity = (1 / (B N C')) Σ_{b,i,k} w_{b,k,i} |Z_{b,k,i}|

so ``latent_fit + latent_sparsity`` is Eq. 3 divided by the number of entries of e, where
the weight w is, by ``config.alpha_penalty``:

* ``detached`` (default): stop-grad(α⁺). The penalty pushes codes (through the encoder,
  the dictionary and the thresholds) towards sparsity, but cannot reach its minimum by
  driving α⁺ to zero, which in Eq. 3 read literally switches sparsity off.
* ``learned``: α⁺ with its gradient (Eq. 3 literally).
* ``global``: the constant ``config.sparsity_lambda``.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from attri_ssc.models.config import ModelConfig
from attri_ssc.models.outputs import SSCOutput


def ssc_loss_terms(x: torch.Tensor, out: SSCOutput, config: ModelConfig) -> dict[str, torch.Tensor]:
    """Terms of L_SSC (Eqs. 1-3).

    Args:
        x: input images ``(B, C_in, *S)``.
        out: the model's output for ``x``.
        config: selects the α-penalty (see module docstring).

    Returns:
        ``{'recon': MSE(x̂, x), 'latent_fit': MSE(DZ, e), 'latent_sparsity': ...}``,
        scalar tensors; L_SSC is their sum.
    """
    if config.loss_reduction == "sum":  # Eqs. 2-3 literally: per-sample squared norms
        batch = x.shape[0]
        recon = (out.recon - x).square().sum() / batch
        latent_fit = (out.coded - out.features).square().sum() / batch
    else:
        recon = F.mse_loss(out.recon, x)
        latent_fit = F.mse_loss(out.coded, out.features)
    return {
        "recon": recon,
        "latent_fit": latent_fit,
        "latent_sparsity": latent_sparsity(out, config),
    }


def latent_sparsity(out: SSCOutput, config: ModelConfig) -> torch.Tensor:
    """``sparsity_weight`` · Σ w |Z| / (B N C') with w chosen by ``config.alpha_penalty`` (module docstring)."""
    abs_codes = out.codes.abs()
    # mean: divide by B * C' * N (like latent_fit); sum: by B only (Eq. 3 per sample).
    n_entries = out.features.numel() if config.loss_reduction == "mean" else out.features.shape[0]
    mode = config.alpha_penalty
    if mode == "detached":
        total = (out.thresholds.detach() * abs_codes).sum()
    elif mode == "learned":
        total = (out.thresholds * abs_codes).sum()
    elif mode == "global":
        total = config.sparsity_lambda * abs_codes.sum()
    else:  # pragma: no cover - ModelConfig validates
        raise ValueError(f"unknown alpha_penalty={mode!r}")
    return config.sparsity_weight * total / n_entries


def attribute_regularization_loss(
    pred: torch.Tensor, target: torch.Tensor, delta: float = 10.0, per_attribute: bool = False
) -> torch.Tensor:
    """Attribute regularisation (Eqs. 9-11, as in AR-VAE / Attri-VAE).

    For each attribute m, the mean over all B² ordered pairs (p, q) of the batch,
    diagonal included, of ``|tanh(δ (â_pm − â_qm)) − sign(a_pm − a_qm)|``; summed over
    attributes (Eq. 11).

    Args:
        pred: attribute proxies â ``(B, A)``.
        target: attributes a ``(B, A)``.
        delta: δ, sharpness of the tanh (Table 7: 10).
        per_attribute: return the ``(A,)`` vector of per-attribute losses instead of the sum.
    """
    if pred.shape != target.shape or pred.dim() != 2:
        raise ValueError(
            f"pred and target must both be (B, A), got pred.shape={tuple(pred.shape)}, "
            f"target.shape={tuple(target.shape)}"
        )
    d_pred = pred[:, None, :] - pred[None, :, :]  # (B, B, A): â_p − â_q
    d_true = target[:, None, :] - target[None, :, :]  # (B, B, A)
    per = (torch.tanh(delta * d_pred) - torch.sign(d_true)).abs().mean(dim=(0, 1))  # (A,)
    return per if per_attribute else per.sum()


def group_sparsity_loss(
    W: torch.Tensor,
    lam_row: float,
    lam_col: float,
    variant: str = "l1",
    normalize: bool = False,
) -> torch.Tensor:
    """Sparsity penalty on the attribute mapper W ``(A, K)`` (Eq. 12).

    * ``l1``: Eq. 12 as printed, ``λ_row Σ_m ‖W_m,:‖₁ + λ_col Σ_n ‖W_:,n‖₁``
      (= (λ_row + λ_col) ‖W‖₁).
    * ``group``: the mixed norm the text describes,
      ``λ_row Σ_m ‖W_m,:‖₂ + λ_col Σ_n ‖W_:,n‖₂`` (row and column groups).

    ``normalize=True`` divides the whole penalty by the number of entries A·K (so its
    size does not grow with K; DESIGN.md "Scale of W").
    """
    if W.dim() != 2:
        raise ValueError(f"W must be (A, K), got W.shape={tuple(W.shape)}")
    if variant == "l1":
        a = W.abs()
        rows, cols = a.sum(), a.sum()
    elif variant == "group":
        rows = torch.linalg.vector_norm(W, dim=1).sum()
        cols = torch.linalg.vector_norm(W, dim=0).sum()
    else:
        raise ValueError(f"variant must be 'l1' or 'group', got variant={variant!r}")
    loss = lam_row * rows + lam_col * cols
    return loss / W.numel() if normalize else loss


def drift_penalty(W: torch.Tensor, W_ref: torch.Tensor, mu: float) -> torch.Tensor:
    """μ ‖W − W_ref‖²_F (Eq. 15); ``W_ref`` (the Stage II mapper) gets no gradient."""
    if W.shape != W_ref.shape:
        raise ValueError(f"W and W_ref must match, got {tuple(W.shape)} and {tuple(W_ref.shape)}")
    return mu * (W - W_ref.detach()).square().sum()
