"""Layer factories: the only place where a 2D or 3D layer class is named.

Every block takes ``spatial_dims`` (2 or 3) and builds its layers through these
functions, so one code path serves slices and volumes.
"""

from __future__ import annotations

from torch import nn

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_CONV_T = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_BATCHNORM = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_MAXPOOL = {2: nn.MaxPool2d, 3: nn.MaxPool3d}
_AVGPOOL = {2: nn.AvgPool2d, 3: nn.AvgPool3d}
_ADAPTIVE_AVG = {2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}
_ADAPTIVE_MAX = {2: nn.AdaptiveMaxPool2d, 3: nn.AdaptiveMaxPool3d}


def check_spatial_dims(spatial_dims: int) -> int:
    """Return ``spatial_dims`` if it is 2 or 3, else raise ``ValueError`` naming it."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got spatial_dims={spatial_dims!r}")
    return spatial_dims


def conv(spatial_dims: int, *args, **kwargs) -> nn.Module:
    """``nn.Conv{2,3}d(*args, **kwargs)``."""
    return _CONV[check_spatial_dims(spatial_dims)](*args, **kwargs)


def conv_transpose(spatial_dims: int, *args, **kwargs) -> nn.Module:
    """``nn.ConvTranspose{2,3}d(*args, **kwargs)``."""
    return _CONV_T[check_spatial_dims(spatial_dims)](*args, **kwargs)


def batch_norm(spatial_dims: int, *args, **kwargs) -> nn.Module:
    """``nn.BatchNorm{2,3}d(*args, **kwargs)``."""
    return _BATCHNORM[check_spatial_dims(spatial_dims)](*args, **kwargs)


def max_pool(spatial_dims: int, *args, **kwargs) -> nn.Module:
    """``nn.MaxPool{2,3}d(*args, **kwargs)``."""
    return _MAXPOOL[check_spatial_dims(spatial_dims)](*args, **kwargs)


def avg_pool(spatial_dims: int, *args, **kwargs) -> nn.Module:
    """``nn.AvgPool{2,3}d(*args, **kwargs)``."""
    return _AVGPOOL[check_spatial_dims(spatial_dims)](*args, **kwargs)


def adaptive_avg_pool(spatial_dims: int, output_size=1) -> nn.Module:
    """``nn.AdaptiveAvgPool{2,3}d(output_size)``."""
    return _ADAPTIVE_AVG[check_spatial_dims(spatial_dims)](output_size)


def adaptive_max_pool(spatial_dims: int, output_size=1) -> nn.Module:
    """``nn.AdaptiveMaxPool{2,3}d(output_size)``."""
    return _ADAPTIVE_MAX[check_spatial_dims(spatial_dims)](output_size)
