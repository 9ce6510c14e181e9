"""Blocks against NumPy/SciPy oracles (non-local attention, CBAM Eqs. 4-5), invariants
(attention rows sum to 1, permutation equivariance), shapes in 2D and 3D, and raises."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.special import expit, softmax

from attri_ssc.nn.blocks import (
    CBAM,
    ChannelAttention,
    DownsampleBlock,
    NonLocalBlock,
    ResidualBlock,
    SpatialAttention,
    UpsampleBlock,
)


def _w1x1(conv: torch.nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """A 1^d conv as (matrix (out, in), bias (out,)) in float64."""
    w = conv.weight.detach().double().numpy()
    return w.reshape(w.shape[0], w.shape[1]), conv.bias.detach().double().numpy()


def _group_norm(x: np.ndarray, groups: int, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    """GroupNorm of x (C, N) in NumPy."""
    c = x.shape[0]
    xg = x.reshape(groups, -1)
    xg = (xg - xg.mean(1, keepdims=True)) / np.sqrt(xg.var(1, keepdims=True) + eps)
    return xg.reshape(c, -1) * gamma[:, None] + beta[:, None]


@pytest.mark.parametrize("spatial", [(4, 6), (3, 4, 2)])
def test_nonlocal_matches_numpy_oracle_and_rows_sum_to_one(spatial):
    d, c = len(spatial), 8
    block = NonLocalBlock(d, c, norm_groups=4).double()
    with torch.no_grad():  # non-trivial affine GroupNorm parameters
        block.norm.weight.uniform_(0.5, 1.5)
        block.norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, c, *spatial, dtype=torch.float64)
    attn, _ = block.attention(x)
    y = block(x).detach().numpy()
    attn = attn.detach().numpy()
    n = int(np.prod(spatial))
    assert attn.shape == (2, n, n)
    np.testing.assert_allclose(attn.sum(-1), 1.0, atol=1e-12)  # each query's row sums to 1

    wq, bq = _w1x1(block.q)
    wk, bk = _w1x1(block.k)
    wv, bv = _w1x1(block.v)
    wp, bp = _w1x1(block.proj)
    gamma = block.norm.weight.detach().double().numpy()
    beta = block.norm.bias.detach().double().numpy()
    for b in range(2):
        xb = x[b].numpy().reshape(c, n)
        h = _group_norm(xb, 4, gamma, beta, block.norm.eps)
        q, k, v = wq @ h + bq[:, None], wk @ h + bk[:, None], wv @ h + bv[:, None]
        a = softmax(q.T @ k / np.sqrt(c), axis=1)  # rows: queries; softmax over keys
        np.testing.assert_allclose(attn[b], a, atol=1e-12)
        out = xb + wp @ (v @ a.T) + bp[:, None]
        np.testing.assert_allclose(y[b].reshape(c, n), out, atol=1e-10)


@pytest.mark.parametrize("spatial", [(4, 4), (2, 3, 4)])
def test_nonlocal_is_equivariant_to_permuting_locations(spatial):
    d, c = len(spatial), 8
    block = NonLocalBlock(d, c, norm_groups=2).double().eval()
    x = torch.randn(3, c, *spatial, dtype=torch.float64)
    n = int(np.prod(spatial))
    perm = torch.randperm(n)

    def permute(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(3, c, n)[:, :, perm].reshape(t.shape)

    torch.testing.assert_close(block(permute(x)), permute(block(x)), rtol=1e-10, atol=1e-10)


def test_channel_attention_matches_eq4():
    ca = ChannelAttention(2, channels=8, reduction=2).double()
    x = torch.randn(2, 8, 5, 3, dtype=torch.float64)
    w = ca(x).detach().numpy()
    assert w.shape == (2, 8, 1, 1)
    w1, b1 = _w1x1(ca.mlp[0])
    w2, b2 = _w1x1(ca.mlp[2])

    def mlp(v: np.ndarray) -> np.ndarray:
        return w2 @ np.maximum(w1 @ v + b1, 0) + b2

    for b in range(2):
        xb = x[b].numpy().reshape(8, -1)
        ref = expit(mlp(xb.mean(1)) + mlp(xb.max(1)))
        np.testing.assert_allclose(w[b, :, 0, 0], ref, atol=1e-12)


@pytest.mark.parametrize("spatial", [(6, 5), (4, 3, 5)])
def test_spatial_attention_matches_eq5(spatial):
    d = len(spatial)
    sa = SpatialAttention(d, kernel_size=3).double()
    x = torch.randn(2, 6, *spatial, dtype=torch.float64)
    w = sa(x).detach().numpy()
    assert w.shape == (2, 1, *spatial)
    kernel = sa.conv.weight.detach().double().numpy()[0]  # (2, k, k[, k])
    bias = float(sa.conv.bias.detach())
    for b in range(2):
        xb = x[b].numpy()
        pooled = [xb.mean(0), xb.max(0)]
        f = sum(ndimage.correlate(pooled[i], kernel[i], mode="constant", cval=0.0) for i in range(2))
        np.testing.assert_allclose(w[b, 0], expit(f + bias), atol=1e-12)


def test_cbam_composes_eq6_and_keeps_nonnegative_maps_nonnegative():
    cbam = CBAM(3, channels=8, reduction=4, kernel_size=3).double()
    alpha = torch.rand(2, 8, 3, 3, 3, dtype=torch.float64) * 5
    out = cbam(alpha)
    wc = cbam.channel(alpha)
    expected = cbam.spatial(wc * alpha) * (wc * alpha)
    torch.testing.assert_close(out, expected)
    assert (out >= 0).all() and (out <= alpha).all()


@pytest.mark.parametrize("d", [2, 3])
def test_block_shapes(d):
    s = (8,) * d
    x = torch.randn(2, 8, *s)
    assert ResidualBlock(d, 8, 16, norm_groups=4)(x).shape == (2, 16, *s)
    assert DownsampleBlock(d, 8, 12)(x).shape == (2, 12, *(4,) * d)
    assert UpsampleBlock(d, 8, 4)(x).shape == (2, 4, *(16,) * d)
    assert NonLocalBlock(d, 8, norm_groups=4)(x).shape == x.shape
    assert CBAM(d, 8, 2, 3)(x).shape == x.shape


def test_residual_block_is_identity_plus_residual():
    """With the second conv zeroed the block is exactly its skip path."""
    block = ResidualBlock(2, 8, 8, norm_groups=4)
    torch.nn.init.zeros_(block.conv2.weight)
    torch.nn.init.zeros_(block.conv2.bias)
    x = torch.randn(2, 8, 5, 5)
    torch.testing.assert_close(block(x), x)


def test_downsample_block_pools_batchnormed_conv():
    block = DownsampleBlock(2, 2, 3).eval()
    with torch.no_grad():
        block.norm.running_mean.uniform_(-1, 1)
        block.norm.running_var.uniform_(0.5, 2)
    x = torch.randn(1, 2, 6, 6)
    h = block.conv(x).detach().numpy()[0]
    m = block.norm.running_mean.numpy()[:, None, None]
    v = block.norm.running_var.numpy()[:, None, None]
    h = (h - m) / np.sqrt(v + block.norm.eps)
    ref = h.reshape(3, 3, 2, 3, 2).max(axis=(2, 4))  # 2x2 max pooling
    np.testing.assert_allclose(block(x).detach().numpy()[0], ref, atol=1e-5)


@pytest.mark.parametrize(
    "factory, arg, value",
    [
        (lambda: ResidualBlock(2, 10, 10, norm_groups=4), "in_channels", "10"),
        (lambda: ResidualBlock(2, 8, 6, norm_groups=4), "out_channels", "6"),
        (lambda: NonLocalBlock(2, 6, norm_groups=4), "channels", "6"),
        (lambda: ResidualBlock(4, 8), "spatial_dims", "4"),
        (lambda: DownsampleBlock(1, 8, 8), "spatial_dims", "1"),
        (lambda: UpsampleBlock(2, 0, 8), "in_channels", "0"),
        (lambda: SpatialAttention(2, kernel_size=4), "kernel_size", "4"),
        (lambda: ChannelAttention(3, 8, reduction=0), "reduction", "0"),
    ],
)
def test_blocks_reject_bad_arguments(factory, arg, value):
    with pytest.raises(ValueError, match=arg) as info:
        factory()
    assert value in str(info.value)
