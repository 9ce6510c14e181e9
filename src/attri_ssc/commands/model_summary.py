"""``attri-ssc model-summary``: parameter count, latent shape and forward time of a preset.

Example: ``attri-ssc model-summary --preset paper --spatial-dims 3 --size 80``.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch

from attri_ssc.errors import ConfigError
from attri_ssc.models.config import PRESETS, preset
from attri_ssc.models.ssc_vae import SSCVAE


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "model-summary",
        help="print a model preset's parameter count, latent shape and forward time",
        description="Build an SSC-VAE preset and report its size and one timed forward pass.",
    )
    p.add_argument("--preset", default="small", choices=sorted(PRESETS), help="model preset (default: small)")
    p.add_argument("--spatial-dims", type=int, choices=(2, 3), default=None,
                   help="2 or 3 (default: the preset's)")
    p.add_argument("--size", type=int, default=None,
                   help="input side length, a multiple of 8 (default: the preset's)")
    p.add_argument("--batch", type=int, default=1, help="batch size of the timed forward (default: 1)")
    p.add_argument("--device", default="cpu", help="torch device for the timed forward (default: cpu)")
    p.add_argument("--no-forward", action="store_true", help="skip the timed forward pass")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


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


def run(args: argparse.Namespace) -> int:
    s = summarize(args.preset, args.spatial_dims, args.size, args.batch, args.device, not args.no_forward)
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    print(f"preset            {s['preset']} ({s['spatial_dims']}D)")
    print(f"input             {tuple(s['input_shape'])}")
    print(f"parameters        {s['parameters']:,}")
    for name, n in s["parameters_by_component"].items():
        print(f"  {name:<15} {n:,}")
    print(f"features e        {tuple(s['features_shape'])}")
    print(f"codes Z           {tuple(s['codes_shape'])}  (T = {s['n_iter']} LISTA iterations)")
    if "forward_seconds" in s:
        print(f"forward time      {s['forward_seconds']:.3f} s  (eval, no grad, {s['device']}, "
              f"{s['threads']} threads, first call)")
        print(f"code density      {s['code_density_at_init']:.3f}  (untrained)")
    return 0


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
