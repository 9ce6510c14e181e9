"""Baselines: VAE, β-VAE, AR-VAE and Attri-VAE on one dims-generic Attri-VAE backbone.

``BASELINES`` maps each name to its default :class:`BaselineConfig` (2D, 64×64, four
attributes); adapt one with :func:`make_baseline_config`, e.g.
``make_baseline_config('ar_vae', spatial_dims=3, input_size=(80, 80, 80), n_attributes=6)``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from attri_ssc.baselines.attri_vae import AttriVAE, VAEOutput, count_parameters
from attri_ssc.baselines.config import DEFAULT_BETA, VARIANT_TERMS, BaselineConfig
from attri_ssc.baselines.losses import baseline_loss_terms, kl_divergence, total_loss

#: Default configuration of each baseline, by name.
BASELINES: dict[str, BaselineConfig] = {name: BaselineConfig(variant=name) for name in VARIANT_TERMS}


def make_baseline_config(name: str, **overrides: Any) -> BaselineConfig:
    """``BASELINES[name]`` with ``overrides`` applied (validated)."""
    if name not in BASELINES:
        raise ValueError(f"name must be one of {sorted(BASELINES)}, got name={name!r}")
    if "variant" in overrides and overrides["variant"] != name:
        raise ValueError(f"variant override must equal name={name!r}, got variant={overrides['variant']!r}")
    return dataclasses.replace(BASELINES[name], **overrides)


def build_baseline(name: str, **overrides: Any) -> AttriVAE:
    """An :class:`AttriVAE` for ``make_baseline_config(name, **overrides)``."""
    return AttriVAE(make_baseline_config(name, **overrides))


__all__ = [
    "BASELINES",
    "AttriVAE",
    "BaselineConfig",
    "DEFAULT_BETA",
    "VARIANT_TERMS",
    "VAEOutput",
    "baseline_loss_terms",
    "build_baseline",
    "count_parameters",
    "kl_divergence",
    "make_baseline_config",
    "total_loss",
]
