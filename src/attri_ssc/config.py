"""Experiment configuration: frozen dataclasses, YAML presets and ``--set`` overrides.

An :class:`ExperimentConfig` bundles one config per concern:

* ``model``    – :class:`attri_ssc.models.config.ModelConfig` (Attri-SSC-VAE backbone) or
  :class:`attri_ssc.baselines.config.BaselineConfig` when ``family`` names a baseline;
* ``data``     – :class:`attri_ssc.data.config.DataConfig`;
* ``train``    – :class:`TrainConfig` (batching, mapper, logging, precision);
* ``stages``   – the curriculum as data: a tuple of :class:`StageSpec` (Section 3.3).

YAML is only a serialisation format: presets live in ``attri_ssc/configs/<name>.yaml`` and
map one-to-one onto these dataclasses. ``--set section.key=value`` overrides are parsed
with YAML scalars (``--set train.batch_size=8``, ``--set stages.1.gamma=0``).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from attri_ssc.errors import ConfigError

MODEL_FAMILIES = ("attri_ssc", "vae", "beta_vae", "ar_vae", "attri_vae")
SUPPORT_RANKS = ("weight", "usage_agreement")
#: Training-batch augmentations (training/augment.py).
AUGMENTATIONS = ("none", "flip", "dihedral")
GS_VARIANTS = ("l1", "group")
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class StageSpec:
    """One stage of the curriculum (Section 3.3, Table 7).

    Args:
        name: label used in logs and checkpoints (``stage1`` ...).
        steps: optimiser steps in this stage (>= 0).
        lr: Adam learning rate (> 0).
        lr_final: ``None`` (default, the paper): ``lr`` throughout the stage; otherwise the
            rate falls from ``lr`` to ``lr_final`` (0 <= lr_final <= lr) on a half cosine over
            the stage's steps (every group, the mapper's included, is scaled alike).
        gamma: weight of the attribute-regularisation loss L_AR (Eq. 15), >= 0.
        lambda_row, lambda_col: group-sparsity weights on W (Eq. 12), >= 0.
        mu: drift penalty weight μ‖W − W_stage2‖² (Eq. 15), >= 0.
        init_mapper: at the start of the stage, set W by ridge least squares of the
            training attributes on the normalised usages ũ (Stage II's W₀).
        freeze_support: at the start of the stage, keep only the top-k atoms of each
            row of W (W_stage2); entries outside stay exactly zero (Stage III).
        train_mapper: whether W is optimised in this stage.
        sparsity_ramp: 0 (default, the paper): the sparsity term of L_latent at full weight
            throughout; otherwise its weight grows linearly from 0 (first step) to 1 over the
            stage's first ``sparsity_ramp`` steps, so the codes start dense and tighten.
    """

    name: str
    steps: int
    lr: float = 1e-4
    lr_final: float | None = None
    gamma: float = 0.0
    lambda_row: float = 0.0
    lambda_col: float = 0.0
    mu: float = 0.0
    init_mapper: bool = False
    freeze_support: bool = False
    train_mapper: bool = False
    sparsity_ramp: int = 0

    def sparsity_scale(self, step_in_stage: int) -> float:
        """The sparsity term's weight at 0-based step ``step_in_stage``: ``step / sparsity_ramp``
        while the ramp lasts, 1 after it (and throughout without a ramp)."""
        if self.sparsity_ramp <= 0:
            return 1.0
        return min(max(step_in_stage / self.sparsity_ramp, 0.0), 1.0)

    def lr_scale(self, step_in_stage: int) -> float:
        """The factor applied to every group's learning rate at 0-based step ``step_in_stage``:
        1 throughout without ``lr_final``; else a half cosine from 1 (first step) to
        ``lr_final / lr`` (last step). A one-step stage runs at ``lr``."""
        if self.lr_final is None:
            return 1.0
        progress = min(max(step_in_stage / max(self.steps - 1, 1), 0.0), 1.0)
        final = self.lr_final / self.lr
        return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def validate(self) -> None:
        if self.steps < 0:
            raise ConfigError(f"stage {self.name!r}: steps must be >= 0, got {self.steps}")
        if not self.lr > 0:
            raise ConfigError(f"stage {self.name!r}: lr must be > 0, got {self.lr}")
        if self.lr_final is not None and not 0 <= self.lr_final <= self.lr:
            raise ConfigError(f"stage {self.name!r}: lr_final must be in [0, lr={self.lr}], got {self.lr_final}")
        if not isinstance(self.sparsity_ramp, int) or isinstance(self.sparsity_ramp, bool) or self.sparsity_ramp < 0:
            raise ConfigError(f"stage {self.name!r}: sparsity_ramp must be an integer >= 0, got {self.sparsity_ramp!r}")
        for key in ("gamma", "lambda_row", "lambda_col", "mu"):
            value = getattr(self, key)
            if value < 0:
                raise ConfigError(f"stage {self.name!r}: {key} must be >= 0, got {value}")


def paper_stages(steps: tuple[int, int, int] = (1000, 1000, 1000), literal_eq14: bool = False) -> tuple[StageSpec, ...]:
    """The three stages with Table 7's hyper-parameters.

    ``literal_eq14`` drops γL_AR from Stage II, as Eq. 14 is printed (DESIGN.md: by
    default Stage II includes γL_AR, since L_GS alone only shrinks W).
    """
    return (
        StageSpec("stage1", steps[0], lr=1e-4),
        StageSpec("stage2", steps[1], lr=4e-4, gamma=0.0 if literal_eq14 else 5.0,
                  lambda_row=10.0, lambda_col=10.0, init_mapper=True, train_mapper=True),
        StageSpec("stage3", steps[2], lr=1e-4, gamma=5.0, mu=0.01, freeze_support=True,
                  train_mapper=True),
    )


@dataclass(frozen=True)
class TrainConfig:
    """Training options shared by every model family.

    Args:
        family: ``attri_ssc`` or a baseline name (``vae``, ``beta_vae``, ``ar_vae``, ``attri_vae``).
        batch_size: samples per optimiser step per process (Table 7: 4).
        seed: seeds model init and batch order (the patient split follows ``data.split_seed``).
        delta: tanh sharpness δ of the AR loss (Eq. 10; Table 7: 10).
        top_k: atoms kept per attribute in Stage III (Table 7: 5); <= K.
        support_rank: how Stage III ranks atoms for the top-k support: ``weight`` (|W_m,j|,
            the paper) or ``usage_agreement`` (|W_m,j| times how far the atom's *raw* usage
            u_j rises with the attribute in W's direction, max(0, sign(W_m,j)·r(u_j, a_m)),
            Pearson r over the training set). ũ is normalised, so an atom whose usage never
            changes still tracks any attribute that changes the total usage, through the
            denominator; such an atom predicts the attribute without drawing it.
        gs_variant: ``l1`` (Eq. 12 as printed) or ``group`` (row/column mixed norms).
        gs_normalize: divide the group-sparsity penalty by the number of W entries
            (DESIGN.md "Scale of W").
        one_to_one: Table 4's ablation: each attribute bound to a single atom of its own.
        exclusive_support: Stage III keeps top_k atoms per attribute but shares none between
            attributes (beyond the paper; shared atoms make edits leak). Needs K >= |A|·top_k.
        augment: attribute-preserving augmentation of training batches: ``none`` (the
            paper), ``flip`` (in-plane mirrors) or ``dihedral`` (mirrors and in-plane
            transposes; square slices). Seeded by (seed, step, rank), so resumption is exact.
        ridge: ridge term of Stage II's least-squares initialisation of W.
        mapper_lr: learning rate of W (None: the stage's lr).
        val_every: validate every this many steps (0: at stage ends only).
        log_every: write a JSON-lines step record every this many steps.
        checkpoint_every: write the resumable checkpoint every this many steps.
        stop_after: stop (after checkpointing) once this many global steps are done;
            0 means run to the end. Used to test resumption.
        max_grad_norm: clip gradients to this norm (0: off).
        skip_nonfinite: skip a batch whose loss or gradients are not finite instead of
            stopping with exit code 4.
        precision: ``fp32`` or ``bf16`` (autocast; for GPUs).
        channels_last: use channels-last memory format (for GPUs).
        device: ``auto`` (CUDA if present), ``cpu`` or ``cuda``.
        num_threads: torch intra-op threads (0: torch's default).
        tensorboard: also log to TensorBoard under ``RUN/tensorboard`` (loss terms, code density,
            live atoms, learning rate, validation PSNR, a reconstruction grid); needs the
            ``tensorboard`` extra (``training/tensorboard.py``).
    """

    family: str = "attri_ssc"
    batch_size: int = 4
    seed: int = 0
    delta: float = 10.0
    top_k: int = 5
    support_rank: str = "weight"
    gs_variant: str = "l1"
    gs_normalize: bool = True
    one_to_one: bool = False
    exclusive_support: bool = False
    augment: str = "none"
    ridge: float = 1e-3
    mapper_lr: float | None = None
    val_every: int = 0
    log_every: int = 10
    checkpoint_every: int = 200
    stop_after: int = 0
    max_grad_norm: float = 0.0
    skip_nonfinite: bool = False
    precision: str = "fp32"
    channels_last: bool = False
    device: str = "auto"
    num_threads: int = 0
    tensorboard: bool = False

    def validate(self) -> None:
        if self.family not in MODEL_FAMILIES:
            raise ConfigError(f"train.family must be one of {MODEL_FAMILIES}, got {self.family!r}")
        if self.batch_size < 1:
            raise ConfigError(f"train.batch_size must be >= 1, got {self.batch_size}")
        if self.gs_variant not in GS_VARIANTS:
            raise ConfigError(f"train.gs_variant must be one of {GS_VARIANTS}, got {self.gs_variant!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"train.precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"train.device must be auto, cpu or cuda, got {self.device!r}")
        if self.top_k < 1:
            raise ConfigError(f"train.top_k must be >= 1, got {self.top_k}")
        if self.augment not in AUGMENTATIONS:
            raise ConfigError(f"train.augment must be one of {AUGMENTATIONS}, got {self.augment!r}")
        if self.support_rank not in SUPPORT_RANKS:
            raise ConfigError(f"train.support_rank must be one of {SUPPORT_RANKS}, got {self.support_rank!r}")
        if not self.delta > 0:
            raise ConfigError(f"train.delta must be > 0, got {self.delta}")
        if self.ridge < 0:
            raise ConfigError(f"train.ridge must be >= 0, got {self.ridge}")
        if self.mapper_lr is not None and not self.mapper_lr > 0:
            raise ConfigError(f"train.mapper_lr must be > 0, got {self.mapper_lr}")
        for key in ("val_every", "log_every", "checkpoint_every", "stop_after", "num_threads"):
            if getattr(self, key) < 0:
                raise ConfigError(f"train.{key} must be >= 0, got {getattr(self, key)}")
        if self.log_every == 0 or self.checkpoint_every == 0:
            raise ConfigError("train.log_every and train.checkpoint_every must be >= 1")


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything a run needs; saved as ``config.yaml`` in every run folder."""

    name: str
    model: Any
    data: Any
    train: TrainConfig = field(default_factory=TrainConfig)
    stages: tuple[StageSpec, ...] = field(default_factory=paper_stages)

    def validate(self) -> None:
        self.train.validate()
        if not self.stages:
            raise ConfigError("stages: at least one stage is required")
        for stage in self.stages:
            stage.validate()
        _validate_section(self.model, "model")
        _validate_section(self.data, "data")
        if self.train.family == "attri_ssc":
            n_atoms = self.model.n_atoms
            if self.train.top_k > n_atoms:
                raise ConfigError(f"train.top_k={self.train.top_k} exceeds the number of atoms K={n_atoms}")
            n_attr = len(self.data.attributes)
            if self.train.one_to_one and n_attr > n_atoms:
                raise ConfigError(f"one_to_one needs K >= number of attributes ({n_attr}), got K={n_atoms}")
            if self.train.exclusive_support and not self.train.one_to_one and n_attr * self.train.top_k > n_atoms:
                raise ConfigError(f"train.exclusive_support needs K >= attributes x top_k "
                                  f"({n_attr} x {self.train.top_k}), got K={n_atoms}")
        if self.train.family == "attri_ssc":
            size = self.data.image_size
            expected = (size,) * 2 if self.data.spatial_dims == 2 else (self.data.n_slices, size, size)
            if tuple(self.model.input_shape) != expected:
                raise ConfigError(
                    f"model.input_size={self.model.input_size} does not match the data's image shape {expected} "
                    f"(field_of_view_mm / spacing_mm, and n_slices in 3D)")
        if self.model.spatial_dims != self.data.spatial_dims:
            raise ConfigError(
                f"model.spatial_dims={self.model.spatial_dims} differs from data.spatial_dims={self.data.spatial_dims}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.model.to_dict(),
            "data": self.data.to_dict(),
            "train": dataclasses.asdict(self.train),
            "stages": [dataclasses.asdict(s) for s in self.stages],
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "ExperimentConfig":
        raw = copy.deepcopy(raw)
        unknown = set(raw) - {"name", "model", "data", "train", "stages"}
        if unknown:
            raise ConfigError(f"unknown config sections: {sorted(unknown)}")
        train = _dataclass_from_dict(TrainConfig, raw.get("train") or {}, "train")
        train.validate()
        stages_raw = raw.get("stages")
        if stages_raw is None:
            stages = paper_stages()
        else:
            if not isinstance(stages_raw, list):
                raise ConfigError("stages must be a list of stage specs")
            stages = tuple(_dataclass_from_dict(StageSpec, s, f"stages[{i}]") for i, s in enumerate(stages_raw))
        model = _model_config_from_dict(train.family, raw.get("model") or {})
        data = _data_config_from_dict(raw.get("data") or {})
        cfg = cls(name=str(raw.get("name", "experiment")), model=model, data=data, train=train, stages=stages)
        cfg.validate()
        return cfg


def _validate_section(section: Any, label: str) -> None:
    validate = getattr(section, "validate", None)
    if validate is None:
        return
    try:
        validate()
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(f"{label}: {exc}") from exc


def _dataclass_from_dict(cls: type, raw: dict[str, Any], label: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{label} must be a mapping, got {type(raw).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(raw) - names
    if unknown:
        raise ConfigError(f"{label}: unknown keys {sorted(unknown)} (known: {sorted(names)})")
    hints = typing.get_type_hints(cls)
    raw = {key: _check_type(value, hints[key], f"{label}.{key}") for key, value in raw.items()}
    try:
        return cls(**raw)
    except TypeError as exc:
        raise ConfigError(f"{label}: {exc}") from exc


# A number in scientific notation without a dot ("1e-4"), which YAML 1.1 reads as a string.
_NUMBER_TEXT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _check_type(value: Any, hint: Any, where: str) -> Any:
    """``value`` checked against a field's ``bool``/``int``/``float``/``str`` annotation
    (optionally ``| None``); "1e-4" is taken as the number. Raises :class:`ConfigError`."""
    allowed = typing.get_args(hint) or (hint,)
    if value is None and type(None) in allowed:
        return value
    if float in allowed:
        if isinstance(value, str) and _NUMBER_TEXT.match(value.strip()):
            value = float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return value
        raise ConfigError(f"{where} must be a finite number, got {value!r}")
    if int in allowed:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    if bool in allowed:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if str in allowed and not isinstance(value, str):
        raise ConfigError(f"{where} must be a string, got {value!r}")
    return value


def _model_config_from_dict(family: str, raw: dict[str, Any]) -> Any:
    try:
        if family == "attri_ssc":
            from attri_ssc.models.config import PRESETS, ModelConfig

            raw = dict(raw)
            name = raw.pop("preset", None)
            if name is not None:
                if name not in PRESETS:
                    raise ConfigError(f"model.preset: unknown model preset {name!r}; known: {sorted(PRESETS)}")
                raw = {**PRESETS[name], **raw}
            return ModelConfig.from_dict(raw)
        from attri_ssc.baselines.config import BaselineConfig

        raw = dict(raw)
        raw.setdefault("variant", family)
        return BaselineConfig.from_dict(raw)
    except ConfigError:
        raise
    except (TypeError, ValueError, KeyError) as exc:
        raise ConfigError(f"model: {exc}") from exc


def _data_config_from_dict(raw: dict[str, Any]) -> Any:
    from attri_ssc.data.config import DataConfig

    try:
        return DataConfig.from_dict(raw)
    except ConfigError:
        raise
    except (TypeError, ValueError, KeyError) as exc:
        raise ConfigError(f"data: {exc}") from exc


# --------------------------------------------------------------------------- presets


def preset_names() -> list[str]:
    """Names of the YAML presets shipped with the package."""
    folder = resources.files("attri_ssc") / "configs"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_raw(name_or_path: str | Path) -> dict[str, Any]:
    """Read a preset by name or a YAML file by path into a plain dict."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        text = path.read_text(encoding="utf-8")
        source = str(path)
    else:
        names = preset_names()
        if str(name_or_path) not in names:
            raise ConfigError(f"unknown preset {str(name_or_path)!r}; known presets: {', '.join(names)}")
        text = (resources.files("attri_ssc") / "configs" / f"{name_or_path}.yaml").read_text(encoding="utf-8")
        source = f"preset {name_or_path}"
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping")
    return raw


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides (values parsed as YAML scalars) to a raw dict."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, value_text = item.split("=", 1)
        try:
            value = yaml.safe_load(value_text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {key}: cannot parse value {value_text!r}: {exc}") from exc
        parts = key.strip().split(".")
        node: Any = raw
        for i, part in enumerate(parts[:-1]):
            node = _descend(node, part, ".".join(parts[: i + 1]))
        last = parts[-1]
        if isinstance(node, list):
            node[_list_index(node, last, key)] = value
        else:
            node[last] = value
    return raw


def _descend(node: Any, part: str, where: str) -> Any:
    if isinstance(node, list):
        return node[_list_index(node, part, where)]
    if not isinstance(node, dict):
        raise ConfigError(f"--set {where}: not a section")
    if part == "stages" and part not in node:
        node[part] = [dataclasses.asdict(s) for s in paper_stages()]
    return node.setdefault(part, {})


def _list_index(node: list, part: str, where: str) -> int:
    try:
        index = int(part)
    except ValueError:
        raise ConfigError(f"--set {where}: expected a list index, got {part!r}") from None
    if not 0 <= index < len(node):
        raise ConfigError(f"--set {where}: index {index} out of range (0..{len(node) - 1})")
    return index


def load_config(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Preset name or YAML path, plus overrides, to a validated :class:`ExperimentConfig`."""
    raw = apply_overrides(load_raw(name_or_path), overrides)
    raw.setdefault("name", Path(str(name_or_path)).stem)
    return ExperimentConfig.from_dict(raw)


def dump_yaml(cfg: ExperimentConfig) -> str:
    """The resolved config as YAML text (what ``config.yaml`` in a run folder holds)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
