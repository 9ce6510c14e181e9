"""Latent interpolation (A.4, Eq. 16): exact end points, linear path, decoded end frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attri_ssc.interpret.interpolation import interpolate, interpolate_codes, interpolation_alphas
from attri_ssc.models.ssc_vae import SSCVAE


def test_interpolated_codes_follow_eq16_with_exact_end_points():
    g = torch.Generator().manual_seed(1)
    za, zb = torch.randn(5, 2, 2, generator=g), torch.randn(5, 2, 2, generator=g)
    alphas = interpolation_alphas(5)
    z = interpolate_codes(za, zb, alphas)
    assert z.shape == (5, 5, 2, 2)
    assert torch.equal(z[0], za) and torch.equal(z[-1], zb)
    oracle = np.stack([(1 - a) * za.numpy() + a * zb.numpy() for a in (0.0, 0.25, 0.5, 0.75, 1.0)])
    assert np.allclose(z.numpy(), oracle, atol=1e-7)
    # batched (1, K, *s) inputs give the same path
    assert torch.equal(interpolate_codes(za[None], zb[None], alphas), z)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="steps"):
        interpolation_alphas(1)
    with pytest.raises(ValueError, match="same shape"):
        interpolate_codes(torch.zeros(4, 2, 2), torch.zeros(5, 2, 2), interpolation_alphas(3))


def test_end_frames_decode_to_the_two_reconstructions(tiny_config):
    torch.manual_seed(0)
    bb = SSCVAE(tiny_config()).eval()
    xa, xb = torch.rand(1, 16, 16), torch.rand(1, 16, 16)
    result = interpolate(bb, xa, xb, steps=6)
    assert result.images.shape == (6, 1, 16, 16) and result.codes.shape == (6, 16, 2, 2)
    with torch.no_grad():
        ra, rb = bb(xa[None]).recon, bb(xb[None]).recon
    assert torch.allclose(result.images[0], ra[0], atol=1e-5)
    assert torch.allclose(result.images[-1], rb[0], atol=1e-5)
    # an inner frame decodes its own interpolated code
    with torch.no_grad():
        mid = bb.decode_codes(result.codes[2:3])
    assert torch.allclose(result.images[2], mid[0], atol=1e-5)
    assert not torch.allclose(result.images[2], ra[0], atol=1e-3)
