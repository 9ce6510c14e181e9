"""SSC-VAE encoder E (paper Table 6): x (B, C_in, *S) -> e (B, C', *S/f), f = 2^(levels-1).

Conv stem, a residual block per level, a downsampling (conv + BatchNorm + MaxPool) between
levels (Table 6: four levels, three downsamplings, f = 8),
residual + non-local + residual at the lowest resolution, GroupNorm + Swish + conv to C',
then a non-affine normalisation of e (``latent_norm='batch'``): without it the encoder can
shrink e, and with it Z, to dodge the L1 term (DESIGN.md "Pitfalls").
"""

from __future__ import annotations

import torch
from torch import nn

from attri_ssc.models.config import ModelConfig
from attri_ssc.nn import factories as fac
from attri_ssc.nn.blocks import DownsampleBlock, NonLocalBlock, ResidualBlock


class Encoder(nn.Module):
    """Encoder E. Shapes: ``(B, in_channels, *S) -> (B, latent_channels, *S/f)`` with
    ``f = config.down_factor`` (8 for Table 6)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d, g = config.spatial_dims, config.norm_groups
        c = config.channels
        self.down_factor = config.down_factor
        self.stem = fac.conv(d, config.in_channels, c[0], 3, padding=1)
        layers: list[nn.Module] = [ResidualBlock(d, c[0], c[0], g)]
        for lvl in range(1, len(c)):
            layers.append(DownsampleBlock(d, c[lvl - 1], c[lvl]))
            layers.append(ResidualBlock(d, c[lvl], c[lvl], g))
        layers += [NonLocalBlock(d, c[-1], g), ResidualBlock(d, c[-1], c[-1], g)]
        self.body = nn.Sequential(*layers)
        self.out_norm = nn.GroupNorm(g, c[-1])
        self.out_act = nn.SiLU()
        self.out_conv = fac.conv(d, c[-1], config.latent_channels, 3, padding=1)
        self.latent_norm: nn.Module = (
            fac.batch_norm(d, config.latent_channels, affine=False)
            if config.latent_norm == "batch" else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_shape(x, self.down_factor)
        h = self.body(self.stem(x))
        return self.latent_norm(self.out_conv(self.out_act(self.out_norm(h))))


def check_input_shape(x: torch.Tensor, factor: int = 8) -> None:
    """Raise ``ValueError`` unless every spatial size of ``x`` is a positive multiple of
    ``factor`` (the encoder's total downsampling)."""
    spatial = tuple(x.shape[2:])
    if any(s % factor or s == 0 for s in spatial):
        raise ValueError(
            f"input spatial size must be divisible by {factor} (the encoder's downsampling), "
            f"got x.shape={tuple(x.shape)}"
        )
