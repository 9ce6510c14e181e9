"""Latent-space interpolation (paper Appendix A.4, Eq. 16).

``Z_α = (1 − α) Z_i + α Z_j`` for α evenly spaced in [0, 1], each decoded with the
backbone's decoder ``x̂_α = G(D Z_α)``. The end points are exactly the codes of the two
images, so the first and last frames are their reconstructions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Interpolation:
    """Result of :func:`interpolate`.

    Attributes:
        alphas: (n,) interpolation coefficients, 0 … 1.
        codes: (n, K, *s) interpolated codes Z_α.
        images: (n, 1, *S) decoded images (not clamped).
    """

    alphas: Tensor
    codes: Tensor
    images: Tensor


def interpolation_alphas(steps: int) -> Tensor:
    """``steps`` evenly spaced coefficients from 0 to 1 inclusive; ``steps >= 2``."""
    if not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps must be an integer >= 2, got steps={steps!r}")
    return torch.linspace(0.0, 1.0, steps)


def interpolate_codes(z_a: Tensor, z_b: Tensor, alphas: Tensor) -> Tensor:
    """Eq. 16 for each α.

    Args:
        z_a, z_b: codes (K, *s) (or (1, K, *s)) of the two images, same shape.
        alphas: (n,) coefficients.
    Returns:
        (n, K, *s): ``(1 − α) z_a + α z_b``; α = 0 and α = 1 give z_a and z_b exactly.
    """
    if z_a.shape != z_b.shape:
        raise ValueError(f"z_a and z_b must have the same shape, got {tuple(z_a.shape)} and {tuple(z_b.shape)}")
    if z_a.dim() >= 2 and z_a.shape[0] == 1:
        z_a, z_b = z_a[0], z_b[0]
    a = alphas.to(z_a.dtype).to(z_a.device).reshape(-1, *([1] * z_a.dim()))  # (n, 1, …)
    return (1.0 - a) * z_a.unsqueeze(0) + a * z_b.unsqueeze(0)


@torch.no_grad()
def encode_codes(backbone, x: Tensor) -> Tensor:
    """Sparse codes Z (B, K, *s) of images x (B, 1, *S) with an :class:`SSCVAE` in eval mode."""
    return backbone(x).codes


@torch.no_grad()
def interpolate(backbone, x_a: Tensor, x_b: Tensor, steps: int = 8) -> Interpolation:
    """Encode two images, interpolate their codes (Eq. 16) and decode every step.

    Args:
        backbone: an ``SSCVAE`` (``model.backbone`` of an Attri-SSC-VAE), put in eval mode here.
        x_a, x_b: images (1, *S) or (1, 1, *S).
        steps: number of frames including both end points (>= 2).
    Returns:
        :class:`Interpolation`.
    """
    alphas = interpolation_alphas(steps)
    backbone.eval()
    device = next(backbone.parameters()).device
    xs = torch.stack([_as_single(x_a), _as_single(x_b)]).to(device)  # (2, 1, *S)
    codes = encode_codes(backbone, xs)
    z = interpolate_codes(codes[0], codes[1], alphas)
    images = torch.cat([backbone.decode_codes(z[i:i + 8]) for i in range(0, z.shape[0], 8)])
    return Interpolation(alphas=alphas, codes=z.cpu(), images=images.cpu())


def _as_single(x: Tensor) -> Tensor:
    """(1, *S) from (1, *S) or (1, 1, *S)."""
    if x.dim() >= 3 and x.shape[0] == 1 and x.shape[1] == 1:
        return x[0]
    return x


__all__ = ["Interpolation", "encode_codes", "interpolate", "interpolate_codes", "interpolation_alphas"]
