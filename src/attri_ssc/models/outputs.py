"""Typed output of the SSC-VAE forward pass."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SSCOutput:
    """What ``SSCVAE.forward`` returns.

    Attributes:
        recon: reconstruction x̂ = G(DZ), ``(B, C_in, *S)``.
        features: encoder features e = E(x), ``(B, C', *s)`` with s = S / 2^(n − 1) for n levels.
        codes: sparse codes Z, ``(B, K, *s)``.
        thresholds: refined thresholds α⁺ (Eq. 6), ``(B, K, *s)``, all >= 0.
        coded: coded features DZ, ``(B, C', *s)``.
        density: fraction of non-zero entries of Z, a detached scalar tensor.
    """

    recon: torch.Tensor
    features: torch.Tensor
    codes: torch.Tensor
    thresholds: torch.Tensor
    coded: torch.Tensor
    density: torch.Tensor


def code_density(codes: torch.Tensor) -> torch.Tensor:
    """Fraction of non-zero entries of ``codes`` (any shape), as a detached 0-d tensor."""
    return (codes.detach() != 0).float().mean()
