"""Dimension-agnostic blocks of the SSC-VAE backbone (paper Table 6, Eqs. 4-5).

Every block takes ``spatial_dims`` (2 or 3) and builds its layers through
:mod:`attri_ssc.nn.factories`. Per-location operators (non-local attention) work on the
flattened space ``(B, C, N)`` so one code path serves slices and volumes.
Shapes are written ``(B, C, *spatial)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from attri_ssc.nn import factories as fac


def _check_groups(name: str, channels: int, groups: int) -> None:
    if groups < 1 or channels % groups:
        raise ValueError(
            f"{name} must be divisible by norm_groups={groups}, got {name}={channels}"
        )


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {name}={value!r}")


class ResidualBlock(nn.Module):
    """Residual block "2 x Conv + ReLU" (Table 6), pre-activation with GroupNorm.

    ``y = skip(x) + conv2(relu(gn2(conv1(relu(gn1(x))))))`` with 3^d convs; ``skip`` is a
    1^d conv when the width changes, else the identity.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input width (divisible by ``norm_groups``).
        out_channels: output width (divisible by ``norm_groups``); default ``in_channels``.
        norm_groups: GroupNorm groups.

    Shapes: ``(B, in_channels, *S) -> (B, out_channels, *S)``.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int | None = None,
                 norm_groups: int = 8) -> None:
        super().__init__()
        fac.check_spatial_dims(spatial_dims)
        out_channels = in_channels if out_channels is None else out_channels
        _check_positive("in_channels", in_channels)
        _check_positive("out_channels", out_channels)
        _check_groups("in_channels", in_channels, norm_groups)
        _check_groups("out_channels", out_channels, norm_groups)
        self.norm1 = nn.GroupNorm(norm_groups, in_channels)
        self.conv1 = fac.conv(spatial_dims, in_channels, out_channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(norm_groups, out_channels)
        self.conv2 = fac.conv(spatial_dims, out_channels, out_channels, 3, padding=1)
        self.skip = (
            nn.Identity() if in_channels == out_channels
            else fac.conv(spatial_dims, in_channels, out_channels, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.relu(self.norm1(x)))
        h = self.conv2(F.relu(self.norm2(h)))
        return self.skip(x) + h


class DownsampleBlock(nn.Module):
    """Conv (3^d) + BatchNorm + MaxPool(2) (Table 6): halves every spatial size.

    Shapes: ``(B, in_channels, *S) -> (B, out_channels, *S/2)``.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        fac.check_spatial_dims(spatial_dims)
        _check_positive("in_channels", in_channels)
        _check_positive("out_channels", out_channels)
        self.conv = fac.conv(spatial_dims, in_channels, out_channels, 3, padding=1)
        self.norm = fac.batch_norm(spatial_dims, out_channels)
        self.pool = fac.max_pool(spatial_dims, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.norm(self.conv(x)))


class UpsampleBlock(nn.Module):
    """Transposed conv (kernel 4, stride 2) + conv (3^d) (Table 6): doubles every size.

    Shapes: ``(B, in_channels, *S) -> (B, out_channels, *2S)``.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        fac.check_spatial_dims(spatial_dims)
        _check_positive("in_channels", in_channels)
        _check_positive("out_channels", out_channels)
        self.up = fac.conv_transpose(spatial_dims, in_channels, out_channels, 4, stride=2, padding=1)
        self.conv = fac.conv(spatial_dims, out_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.up(x))


class NonLocalBlock(nn.Module):
    """Non-local (self-attention) block, "4 x Conv + Softmax" (Table 6).

    ``h = GN(x)``; q, k, v = 1^d convs of h; on flattened locations (N = prod(S))
    ``A = softmax_keys(qᵀk / sqrt(C))`` (each row, one query, sums to 1);
    ``y = x + proj(v Aᵀ)``. The softmax runs over keys with 1/sqrt(C) scaling (the
    public SSC-VAE code normalises over queries and omits the scaling). Permuting the
    locations of x permutes those of y identically (GroupNorm statistics and 1^d convs
    do not depend on the order).

    Shapes: ``(B, C, *S) -> (B, C, *S)``.
    """

    def __init__(self, spatial_dims: int, channels: int, norm_groups: int = 8) -> None:
        super().__init__()
        fac.check_spatial_dims(spatial_dims)
        _check_positive("channels", channels)
        _check_groups("channels", channels, norm_groups)
        self.channels = channels
        self.norm = nn.GroupNorm(norm_groups, channels)
        self.q = fac.conv(spatial_dims, channels, channels, 1)
        self.k = fac.conv(spatial_dims, channels, channels, 1)
        self.v = fac.conv(spatial_dims, channels, channels, 1)
        self.proj = fac.conv(spatial_dims, channels, channels, 1)

    def attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention weights ``(B, N, N)`` (row = query, softmax over keys) and values ``(B, C, N)``."""
        h = self.norm(x)
        b, c = h.shape[:2]
        q = self.q(h).reshape(b, c, -1)  # (B, C, N)
        k = self.k(h).reshape(b, c, -1)  # (B, C, N)
        v = self.v(h).reshape(b, c, -1)  # (B, C, N)
        logits = torch.bmm(q.transpose(1, 2), k) / math.sqrt(c)  # (B, N_query, N_key)
        return torch.softmax(logits, dim=-1), v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn, v = self.attention(x)
        out = torch.bmm(v, attn.transpose(1, 2))  # (B, C, N_query)
        return x + self.proj(out.reshape(x.shape))


class ChannelAttention(nn.Module):
    """CBAM channel attention, Eq. 4: ``W_c = σ(MLP(AvgPool(α)) + MLP(MaxPool(α)))``.

    The shared MLP is two 1^d convs C -> C/r -> C with a ReLU between.
    Shapes: ``(B, C, *S) -> (B, C, 1, ...)`` weights in (0, 1).
    """

    def __init__(self, spatial_dims: int, channels: int, reduction: int = 8) -> None:
        super().__init__()
        fac.check_spatial_dims(spatial_dims)
        _check_positive("channels", channels)
        _check_positive("reduction", reduction)
        hidden = max(1, channels // reduction)
        self.avg = fac.adaptive_avg_pool(spatial_dims, 1)
        self.max = fac.adaptive_max_pool(spatial_dims, 1)
        self.mlp = nn.Sequential(
            fac.conv(spatial_dims, channels, hidden, 1),
            nn.ReLU(),
            fac.conv(spatial_dims, hidden, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.mlp(self.avg(x)) + self.mlp(self.max(x)))


class SpatialAttention(nn.Module):
    """CBAM spatial attention, Eq. 5: ``W_s = σ(f([AvgPool_c(α); MaxPool_c(α)]))``.

    Pooling runs over channels; f is a k^d conv 2 -> 1.
    Shapes: ``(B, C, *S) -> (B, 1, *S)`` weights in (0, 1).
    """

    def __init__(self, spatial_dims: int, kernel_size: int = 7) -> None:
        super().__init__()
        fac.check_spatial_dims(spatial_dims)
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got kernel_size={kernel_size!r}")
        self.conv = fac.conv(spatial_dims, 2, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(pooled))


class CBAM(nn.Module):
    """Convolutional block attention on a threshold map (Eqs. 4-6).

    ``α' = W_c(α) ⊙ α``; ``α⁺ = W_s(α') ⊙ α'`` (CBAM's sequential order; Eq. 6). Both
    weights lie in (0, 1), so α >= 0 implies 0 <= α⁺ <= α.

    Shapes: ``(B, C, *S) -> (B, C, *S)``.
    """

    def __init__(self, spatial_dims: int, channels: int, reduction: int = 8, kernel_size: int = 7) -> None:
        super().__init__()
        self.channel = ChannelAttention(spatial_dims, channels, reduction)
        self.spatial = SpatialAttention(spatial_dims, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.channel(x) * x
        return self.spatial(x) * x
