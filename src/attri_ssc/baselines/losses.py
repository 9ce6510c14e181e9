"""Loss terms of the four baselines (pure functions, no state).

``L = recon + β·KL + γ·AR + α·BCE``, with the terms each variant switches on listed in
:data:`attri_ssc.baselines.config.VARIANT_TERMS`:

* recon: squared error (``'mse'``, Gaussian) or binary cross-entropy (``'bce'``), summed over
  voxels and channels, averaged over the batch (as Attri-VAE).
* KL: ``KL(N(μ, σ²) ‖ N(0, I)) = ½ Σ_j (μ_j² + σ_j² − 1 − log σ_j²)``, summed over latent
  dims, averaged over the batch; weighted by β.
* AR (AR-VAE, Attri-VAE): :func:`attri_ssc.losses.attribute_regularization_loss` between
  latent dims ``0..A−1`` of z and the A attributes (Pati & Lerch 2020, Eq. of the sign
  loss); weighted by γ, tanh scale δ.
* cls (Attri-VAE): binary cross-entropy of the N/P classifier on z; weighted by α.
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from attri_ssc.baselines.attri_vae import VAEOutput
from attri_ssc.baselines.config import BaselineConfig


def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
    """Closed-form ``KL(N(μ, exp(logvar)) ‖ N(0, I))`` summed over dims, mean over batch.

    Args:
        mu, logvar: ``(B, latent_dim)``; ``logvar`` is log σ².
    Returns:
        scalar.
    """
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1).mean()


def _recon_mse(recon: Tensor, x: Tensor) -> Tensor:
    return F.mse_loss(recon, x, reduction="sum") / x.shape[0]


def _recon_bce(recon: Tensor, x: Tensor) -> Tensor:
    return F.binary_cross_entropy(recon, x, reduction="sum") / x.shape[0]


#: Reconstruction losses by ``BaselineConfig.recon_loss``: ``(recon, x) -> scalar``.
RECON_LOSS_FNS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"mse": _recon_mse, "bce": _recon_bce}


def reconstruction_loss(recon: Tensor, x: Tensor, kind: str) -> Tensor:
    """Reconstruction loss summed over ``(C, *S)`` and averaged over ``B``.

    Args:
        recon, x: ``(B, C, *S)``, values in [0, 1].
        kind: ``'mse'`` or ``'bce'``.
    """
    if kind not in RECON_LOSS_FNS:
        raise ValueError(f"kind must be one of {sorted(RECON_LOSS_FNS)}, got kind={kind!r}")
    if recon.shape != x.shape:
        raise ValueError(f"recon and x shapes differ: recon.shape={tuple(recon.shape)}, x.shape={tuple(x.shape)}")
    return RECON_LOSS_FNS[kind](recon, x)


def _ar_term(out: VAEOutput, x: Tensor, attributes: Tensor | None, labels: Tensor | None,
             config: BaselineConfig, gather: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    from attri_ssc.losses import attribute_regularization_loss

    a = config.n_attributes
    if attributes is None or attributes.dim() != 2 or attributes.shape != (out.z.shape[0], a):
        shape = None if attributes is None else tuple(attributes.shape)
        raise ValueError(
            f"variant {config.variant!r} needs attributes of shape (B, {a}) = ({out.z.shape[0]}, {a}), "
            f"got attributes.shape={shape}"
        )
    pred = out.z[:, :a]  # (B, A): latent dims 0..A-1 carry the attributes
    target = attributes.to(pred.dtype)
    if gather is not None:  # all pairs of the global batch when training on several processes
        pred, target = gather(pred), gather(target)
    return config.gamma * attribute_regularization_loss(pred, target, delta=config.delta)


def _cls_term(out: VAEOutput, x: Tensor, attributes: Tensor | None, labels: Tensor | None,
              config: BaselineConfig) -> Tensor:
    if out.logits is None:
        raise ValueError(f"variant {config.variant!r} needs classifier logits, but out.logits is None")
    if labels is None or labels.reshape(-1).shape != out.logits.shape:
        shape = None if labels is None else tuple(labels.shape)
        raise ValueError(f"variant {config.variant!r} needs labels of shape (B,) = {tuple(out.logits.shape)}, "
                         f"got labels.shape={shape}")
    target = labels.reshape(-1).to(out.logits.dtype)
    return config.cls_weight * F.binary_cross_entropy_with_logits(out.logits, target)


_TERM_FNS = {
    "recon": lambda out, x, a, y, cfg: reconstruction_loss(out.recon, x, cfg.recon_loss),
    "kl": lambda out, x, a, y, cfg: cfg.beta * kl_divergence(out.mu, out.logvar),
    "ar": _ar_term,
    "cls": _cls_term,
}


def baseline_loss_terms(out: VAEOutput, x: Tensor, attributes: Tensor | None, labels: Tensor | None,
                        config: BaselineConfig,
                        gather: Callable[[Tensor], Tensor] | None = None) -> dict[str, Tensor]:
    """Weighted loss terms of a baseline; the training loss is their sum.

    Args:
        out: the model's :class:`VAEOutput` for ``x``.
        x: input images ``(B, C, *S)`` in [0, 1].
        attributes: scaled attributes ``(B, A)``; needed by ``ar_vae``/``attri_vae``,
            ignored (may be ``None``) otherwise.
        labels: N/P labels ``(B,)`` (0 normal, 1 pathological); needed by ``attri_vae``,
            ignored (may be ``None``) otherwise.
        config: the model's :class:`BaselineConfig` (variant and weights).
        gather: concatenates a (B, ...) tensor over all processes, differentiably; given, the
            AR term compares every pair of the global batch (several processes).
    Returns:
        ``{'recon': recon, 'kl': β·KL}`` plus ``'ar': γ·AR`` (AR-VAE, Attri-VAE) and
        ``'cls': α·BCE`` (Attri-VAE); each a scalar tensor already weighted.
    """
    return {name: (_ar_term(out, x, attributes, labels, config, gather) if name == "ar"
                   else _TERM_FNS[name](out, x, attributes, labels, config)) for name in config.terms}


def total_loss(terms: Mapping[str, Tensor]) -> Tensor:
    """Sum of the (already weighted) terms returned by :func:`baseline_loss_terms`."""
    if not terms:
        raise ValueError("terms is empty")
    return torch.stack([t.reshape(()) for t in terms.values()]).sum()


__all__ = ["baseline_loss_terms", "total_loss", "kl_divergence", "reconstruction_loss", "RECON_LOSS_FNS"]
