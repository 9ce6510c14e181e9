"""A model preset's size and speed: parameter counts, latent shapes, one timed forward pass
(``attri-ssc model-summary``)."""

from __future__ import annotations

import time
from typing import Any

import torch

from attri_ssc.errors import ConfigError
from attri_ssc.models.config import preset
from attri_ssc.models.ssc_vae import SSCVAE

__all__ = ["summarize"]


def summarize(preset_name: str, spatial_dims: int | None = None, size: int | None = None,
              batch: int = 1, device: str = "cpu", forward: bool = True) -> dict[str, Any]:
    """Summary dict: parameter counts (total and per component), latent shapes, forward time."""
    overrides: dict[str, Any] = {}
    if spatial_dims is not None:
        overrides["spatial_dims"] = spatial_dims
    if size is not None:
        overrides["input_size"] = size
    try:
        config = preset(preset_name, **overrides)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    torch.manual_seed(0)
    model = SSCVAE(config)
    groups = {name: sum(p.numel() for p in params) for name, params in model.parameter_groups().items()}
    summary: dict[str, Any] = {
        "preset": preset_name,
        "spatial_dims": config.spatial_dims,
        "input_shape": [batch, config.in_channels, *config.input_shape],
        "parameters": sum(p.numel() for p in model.parameters()),
        "parameters_by_component": groups,
        "features_shape": [batch, config.latent_channels, *config.latent_shape],
        "codes_shape": [batch, config.n_atoms, *config.latent_shape],
        "n_iter": config.n_iter,
    }
    if forward:
        if batch < 1:
            raise ConfigError(f"--batch must be >= 1, got {batch}")
        try:
            dev = torch.device(device)
            model = model.to(dev).eval()
            x = torch.rand(batch, config.in_channels, *config.input_shape, device=dev)
        except (RuntimeError, AssertionError) as exc:
            raise ConfigError(f"cannot use device {device!r}: {exc}") from exc
        with torch.no_grad():
            _sync(dev)
            t0 = time.perf_counter()
            out = model(x)
            _sync(dev)
            summary["forward_seconds"] = time.perf_counter() - t0
        summary["device"] = str(dev)
        summary["threads"] = torch.get_num_threads()
        summary["code_density_at_init"] = float(out.density)
        assert list(out.codes.shape) == summary["codes_shape"]
    return summary


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
