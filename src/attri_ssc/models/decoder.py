"""SSC-VAE decoder G (paper Table 6): coded features DZ (B, C', *s) -> x̂ (B, C_in, *f·s).

Conv C' -> width, residual, non-local, residual, residual at the lowest resolution, then
one upsampling (transposed conv + conv) per level above it (Table 6: three, f = 8), each
followed by a residual block except at full resolution (as in Table 6), and GroupNorm +
Swish + conv to the image channels.

Widths: each upsampling changes the width (w[l+1] -> w[l]) and the residual block after
it keeps it. Table 6 instead keeps 512 channels through the S/4 upsampling and lets the
next residual block reduce to 128; the widths leaving every resolution are the same,
ours has fewer parameters at S/4.
"""

from __future__ import annotations

import torch
from torch import nn

from attri_ssc.models.config import ModelConfig
from attri_ssc.nn import factories as fac
from attri_ssc.nn.blocks import NonLocalBlock, ResidualBlock, UpsampleBlock


class Decoder(nn.Module):
    """Decoder G. Shapes: ``(B, latent_channels, *s) -> (B, in_channels, *f·s)``,
    ``f = config.down_factor``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d, g = config.spatial_dims, config.norm_groups
        w = config.decoder_widths  # widths per level, S first (Table 6: S, S/2, S/4, S/8)
        self.stem = fac.conv(d, config.latent_channels, w[-1], 3, padding=1)
        layers: list[nn.Module] = [
            ResidualBlock(d, w[-1], w[-1], g),
            NonLocalBlock(d, w[-1], g),
            ResidualBlock(d, w[-1], w[-1], g),
            ResidualBlock(d, w[-1], w[-1], g),
        ]
        for lvl in range(len(w) - 2, -1, -1):
            layers.append(UpsampleBlock(d, w[lvl + 1], w[lvl]))
            if lvl > 0:
                layers.append(ResidualBlock(d, w[lvl], w[lvl], g))
        self.body = nn.Sequential(*layers)
        self.out_norm = nn.GroupNorm(g, w[0])
        self.out_act = nn.SiLU()
        self.out_conv = fac.conv(d, w[0], config.in_channels, 3, padding=1)

    def forward(self, coded: torch.Tensor) -> torch.Tensor:
        h = self.body(self.stem(coded))
        return self.out_conv(self.out_act(self.out_norm(h)))
