"""Load a finished run folder (``RUN/model.{safetensors,json}``) for evaluation and editing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attri_ssc.config import ExperimentConfig
from attri_ssc.errors import CheckpointError, ConfigError


@dataclass
class LoadedRun:
    """A trained model with its config, attribute names, scaler and split."""

    run_dir: Path
    model: nn.Module
    config: ExperimentConfig
    attribute_names: tuple[str, ...]
    scaler: dict[str, Any]
    split: dict[str, list[str]]
    data_dir: str
    meta: dict[str, Any]

    @property
    def family(self) -> str:
        return self.config.train.family


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> LoadedRun:
    """Rebuild the model of ``run_dir`` from its safetensors + JSON (never unpickles)."""
    from attri_ssc.checkpoint import load_checkpoint
    from attri_ssc.training.families import FAMILIES
    from attri_ssc.training.state import load_model_tensors

    run_dir = Path(run_dir)
    if not (run_dir / "model.json").exists():
        raise CheckpointError(f"{run_dir} has no trained model (model.json); has training finished?")
    tensors, meta = load_checkpoint(run_dir / "model")
    try:
        cfg = ExperimentConfig.from_dict(meta["config"])
        names = tuple(meta["attribute_names"])
    except KeyError as exc:
        raise CheckpointError(f"{run_dir / 'model.json'}: missing field {exc}") from exc
    except ConfigError as exc:  # the saved config itself is invalid: a checkpoint problem
        raise CheckpointError(f"{run_dir / 'model.json'}: invalid config: {exc}") from exc
    model = FAMILIES[cfg.train.family].build(cfg, len(names))
    try:
        load_model_tensors(model, tensors)
    except RuntimeError as exc:
        raise CheckpointError(f"{run_dir / 'model.safetensors'} does not match its config: {exc}") from exc
    model.to(device).eval()
    return LoadedRun(run_dir, model, cfg, names, meta.get("scaler", {}), meta.get("split", {}),
                     meta.get("data_dir", ""), meta)
