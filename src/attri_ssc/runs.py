"""Load a finished run folder (``RUN/model.{safetensors,json}``) and its data for evaluation and editing."""

from __future__ import annotations

import dataclasses

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


# ---------------------------------------------------------------------------- a run with its data
def load_run_and_data(run_dir: str | Path, data_dir: str | Path | None, device: str | torch.device = "cpu",
                      family: str | None = "attri_ssc", layout: str | None = None):
    """``(LoadedRun, DataBundle)``: the run and its data, split as the run was trained.

    Args:
        run_dir: the run folder.
        data_dir: the data folder; ``None`` means the one the run recorded.
        device: where the model goes.
        family: the model family the caller needs (``None``: any).
        layout: read the data folder in this layout (``None``: the layout the run recorded,
            or detected for runs saved before layouts were recorded).

    Raises:
        ConfigError: the run is of another family.
        DataError: the data folder does not exist.
    """
    from attri_ssc.data.datasets import build_datasets
    from attri_ssc.errors import DataError

    run = load_run(run_dir, device=device)
    if family is not None and run.family != family:
        raise ConfigError(f"{run_dir} is a {run.family!r} run; interpretation needs an {family} run")
    folder = Path(data_dir) if data_dir is not None else Path(run.data_dir or "")
    if not str(folder) or not folder.exists():
        raise DataError(f"data folder not found: {folder or '(none recorded)'}; pass --data")
    data_cfg = run.config.data if layout is None else dataclasses.replace(run.config.data, layout=layout)
    bundle = build_datasets(folder, data_cfg, split=run.split or None)  # the run's own split
    return run, bundle


def split_dataset(bundle, name: str):
    """The ``train``/``val``/``test`` dataset of ``bundle``; DataError if it is empty."""
    from attri_ssc.errors import DataError

    ds = {"train": bundle.train, "val": bundle.val, "test": bundle.test}[name]
    if len(ds) == 0:
        raise DataError(f"the {name} split is empty")
    return ds


def resolve_item(bundle, spec: str) -> tuple[Any, int]:
    """``(dataset, index)`` of ``CASE`` or ``CASE:SLICE`` in any split.

    Without a slice: the middle item of the case (2D: the middle slice with myocardium;
    3D: the case's volume). ConfigError names the valid cases or slices.
    """
    case, _, slice_txt = spec.partition(":")
    datasets = [bundle.train, bundle.val, bundle.test]
    for ds in datasets:
        idx = [i for i, c in enumerate(ds.case_ids) if c == case]
        if not idx:
            continue
        idx.sort(key=lambda i: ds.slice_indices[i])
        if not slice_txt:
            return ds, idx[len(idx) // 2]
        valid = [ds.slice_indices[i] for i in idx]
        try:
            want = int(slice_txt)
        except ValueError:
            raise ConfigError(f"bad slice {slice_txt!r} in {spec!r}; valid slices of {case}: {valid}") from None
        if want not in valid:
            raise ConfigError(f"case {case} has no item for slice {want}; valid slices (with myocardium): {valid}")
        return ds, idx[valid.index(want)]
    known = sorted({c for ds in datasets for c in ds.case_ids})
    raise ConfigError(f"unknown case {case!r}; valid cases: {', '.join(known)}")


def item_label(ds, i: int) -> str:
    """``CASE:SLICE`` of a 2D item, ``CASE`` of a volume."""
    s = ds.slice_indices[i]
    return ds.case_ids[i] + (f":{s}" if s >= 0 else "")


def attribute_index(run: LoadedRun, name: str) -> int:
    """Position of attribute ``name`` among the run's supervised attributes (ConfigError if absent)."""
    names = list(run.attribute_names)
    if name not in names:
        raise ConfigError(f"unknown attribute {name!r}; this run supervises: {', '.join(names)}")
    return names.index(name)
