"""Attri-SSC-VAE: the SSC-VAE backbone plus the attribute mapper W (Fig. 1)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from attri_ssc.models.config import ModelConfig
from attri_ssc.models.mapper import AttributeMapper
from attri_ssc.models.outputs import SSCOutput
from attri_ssc.models.ssc_vae import SSCVAE


@dataclass
class AttriSSCOutput:
    """Backbone output plus the attribute proxies â = W·(K ũ), ``(B, |A|)``."""

    ssc: SSCOutput
    attributes: Tensor


class AttriSSCVAE(nn.Module):
    """SSC-VAE (encoder, attentive LISTA, decoder) with an attribute mapper.

    Args:
        config: backbone architecture.
        n_attributes: number of supervised attributes |A| (>= 1).
    """

    def __init__(self, config: ModelConfig, n_attributes: int) -> None:
        super().__init__()
        self.config = config
        self.backbone = SSCVAE(config)
        self.mapper = AttributeMapper(n_attributes, config.n_atoms)

    def forward(self, x: Tensor, n_iter: int | None = None) -> AttriSSCOutput:
        """x (B, 1, *S) → reconstruction, codes and â."""
        out = self.backbone(x, n_iter=n_iter)
        return AttriSSCOutput(ssc=out, attributes=self.mapper(out.codes))

    def post_step(self) -> None:
        """After each optimiser step: keep atoms unit-norm, W outside its support at zero."""
        self.backbone.post_step()
        self.mapper.weight.data.mul_(self.mapper.support)
