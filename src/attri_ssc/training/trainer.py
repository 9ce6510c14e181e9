"""The training loop: one loop that runs the curriculum's stages in order (Section 3.3).

Reads top to bottom: prepare the run folder, build data and model, then for each stage
run its start hook (Stage II: least-squares W₀; Stage III: freeze W's support), make an
optimiser for the stage's trainable groups, and step. Every ``checkpoint_every`` steps
and at each stage end the resumable state is written atomically; ``--resume`` continues
mid-stage with bit-identical results on CPU. Only rank 0 writes files.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import math
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import Tensor, nn
from torch.utils.data import DistributedSampler, default_collate
from tqdm.auto import tqdm

from attri_ssc.config import ExperimentConfig, StageSpec, dump_yaml
from attri_ssc.errors import CheckpointError, ConfigError, DataError, NumericalError, StorageError
from attri_ssc.io_utils import disk_full_message, is_disk_full, write_json, write_text
from attri_ssc.models.mapper import atom_usage, usage_agreement
from attri_ssc.run_lock import LOCK_NAME
from attri_ssc.seeding import set_seed
from attri_ssc.training import distributed as dist_utils
from attri_ssc.training.augment import augment_batch, check_augmentation
from attri_ssc.training.families import FAMILIES, post_step
from attri_ssc.training.tensorboard import GRID_IMAGES, TensorBoardLog, require_tensorboard
from attri_ssc.training.state import (load_model_tensors, model_tensors, optimizer_from_flat,
                                      optimizer_to_flat, restore_rng, rng_state)

RUN_ARTIFACTS = ("config.yaml", "metrics.jsonl", "checkpoints", "model.safetensors", "model.json",
                 "summary.json", "split.json", "skipped_cases.json", "tensorboard", "interpretation.safetensors",
                 "interpretation.json", "atom_bounds.json")
#: Unusable cases left out of a run (``data.skip_bad_cases``), beside ``split.json``.
SKIPPED_CASES_NAME = "skipped_cases.json"
CHECKPOINT_NAME = "checkpoints/last"
log_module = logging.getLogger(__name__)
# Data settings that may change between a checkpoint and its continuation.
IRRELEVANT_TO_RESUME = ("cache_dir", "skip_bad_cases")
FORMAT_VERSION = 1


@dataclass
class Position:
    """Where the curriculum stands: ``stage`` index, steps done in it, steps done overall."""

    stage: int = 0
    step_in_stage: int = 0
    global_step: int = 0


@dataclass
class TrainResult:
    run_dir: Path
    completed: bool
    position: Position
    validation: dict[str, Any]
    wall_time_s: float
    skipped_batches: int = 0  # batches skipped as non-finite (train.skip_nonfinite), whole run
    skipped_cases: dict[str, list[str]] | None = None  # unusable cases left out: id -> problems


# --------------------------------------------------------------------------- run folder


def prepare_run_dir(run_dir: Path, resume: bool, force: bool) -> None:
    """Check the run folder before any work: writable, empty unless resuming or forcing."""
    if resume and force:
        raise ConfigError("--resume and --force exclude each other")
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run folder {run_dir} exists and is not a folder")
    if resume:
        if not (run_dir / f"{CHECKPOINT_NAME}.json").exists():
            raise CheckpointError(f"cannot resume: no checkpoint at {run_dir / CHECKPOINT_NAME}.json")
        return
    if run_dir.exists() and any(p.name != LOCK_NAME for p in run_dir.iterdir()):
        if not force:
            raise ConfigError(
                f"run folder {run_dir} is not empty; pass --resume to continue it or --force to overwrite it")
        for name in RUN_ARTIFACTS:
            target = run_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"run folder {run_dir} is not writable: {exc.strerror or exc}") from exc


class MetricsLog:
    """Append-only JSON-lines log (``metrics.jsonl``); a no-op on ranks other than 0."""

    def __init__(self, path: Path, enabled: bool, keep_until_step: int | None = None,
                 restart_stage: str | None = None) -> None:
        self.path = path
        self.enabled = enabled
        self.skipped_batches = 0  # "skipped_batch" records in the log (exact on rank 0)
        if enabled and keep_until_step is not None and path.exists():
            # Drop records written after the checkpoint we resume from, and the start record
            # of the stage whose start hook runs again (``restart_stage``, resuming at its step 0).
            kept = []
            for line in path.read_text().splitlines():
                try:
                    record = json.loads(line) if line.strip() else None
                except json.JSONDecodeError:  # a line cut short by a crash: dropped
                    continue
                if record is None or record.get("global_step", 0) > keep_until_step or (
                        record.get("kind") == "stage_start" and record.get("stage") == restart_stage
                        and record.get("global_step") == keep_until_step):
                    continue
                kept.append(line)
                self.skipped_batches += record.get("kind") == "skipped_batch"
            write_text(path, "".join(line + "\n" for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        self.skipped_batches += record.get("kind") == "skipped_batch"
        if self.enabled:
            line = (json.dumps(record) + "\n").encode("utf-8")
            with open(self.path, "ab") as fh:
                start = fh.tell()
                try:
                    fh.write(line)
                    fh.flush()
                except OSError as exc:  # never leave half a line: cut back to the last whole record
                    try:
                        fh.truncate(start)
                    except OSError:
                        pass
                    if is_disk_full(exc):
                        raise StorageError(disk_full_message(self.path, exc)) from exc
                    raise


# --------------------------------------------------------------------------- batches


class BatchSchedule:
    """Deterministic batches: epoch ``e`` is a seeded permutation sharded across ranks.

    The batch of global step ``g`` is a pure function of (seed, g, rank), so a resumed run
    sees exactly the batches the uninterrupted run would have seen.
    """

    def __init__(self, dataset, batch_size: int, seed: int, info: dist_utils.DistInfo,
                 augment: str = "none") -> None:
        self.dataset = dataset
        self.seed = seed
        self.rank = info.rank
        self.augment = augment
        self.sampler = DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank,
                                          shuffle=True, seed=seed, drop_last=True)
        self.batch_size = batch_size
        self.per_epoch = self.sampler.num_samples // batch_size
        if self.per_epoch < 1:
            raise ConfigError(
                f"training split has {len(dataset)} samples: too few for batch_size={batch_size} "
                f"on {info.world_size} process(es)")
        self._epoch = -1
        self._indices: list[int] = []

    def batch(self, global_step: int) -> dict[str, Any]:
        epoch, within = divmod(global_step, self.per_epoch)
        if epoch != self._epoch:
            self.sampler.set_epoch(epoch)
            self._indices = list(self.sampler)
            self._epoch = epoch
        chunk = self._indices[within * self.batch_size:(within + 1) * self.batch_size]
        batch = default_collate([self.dataset[i] for i in chunk])
        return augment_batch(batch, self.augment, self.seed, global_step, self.rank)


def to_device(batch: dict[str, Any], device: torch.device, channels_last: bool) -> dict[str, Any]:
    out = {}
    for key, value in batch.items():
        if torch.is_tensor(value):
            value = value.to(device, non_blocking=True)
            if channels_last and key in ("image", "clean") and value.dim() in (4, 5):
                fmt = torch.channels_last if value.dim() == 4 else torch.channels_last_3d
                value = value.contiguous(memory_format=fmt)
        out[key] = value
    return out


# --------------------------------------------------------------------------- stage hooks


@torch.no_grad()
def collect_usage_features(model: nn.Module, dataset, device: torch.device, batch_size: int,
                           info: dist_utils.DistInfo, raw: bool = False) -> tuple[Tensor, Tensor]:
    """K·ũ (or, with ``raw``, the usages u) and scaled attributes over this rank's shard of
    ``dataset``, gathered from all ranks."""
    was_training = model.training
    model.eval()
    indices = list(range(info.rank, len(dataset), info.world_size))
    feats, attrs = [], []
    for start in range(0, len(indices), batch_size):
        batch = default_collate([dataset[i] for i in indices[start:start + batch_size]])
        out = model.backbone(batch["image"].to(device))
        feats.append((atom_usage(out.codes) if raw else model.mapper.features(out.codes)).float())
        attrs.append(batch["attributes"].to(device).float())
    model.train(was_training)
    features = dist_utils.all_gather_rows(torch.cat(feats), info)
    attributes = dist_utils.all_gather_rows(torch.cat(attrs), info)
    return features.cpu(), attributes.cpu()


def start_stage(model: nn.Module, stage: StageSpec, cfg: ExperimentConfig, train_set, device: torch.device,
                info: dist_utils.DistInfo) -> dict[str, Any]:
    """Run a stage's start hook; returns facts for the log."""
    facts: dict[str, Any] = {}
    if cfg.train.family != "attri_ssc":
        return facts
    mapper = model.mapper
    if stage.init_mapper:
        features, attributes = collect_usage_features(model, train_set, device, cfg.train.batch_size, info)
        mapper.fit_least_squares(features.to(device), attributes.to(device), cfg.train.ridge)
        facts["w0_abs_max"] = float(mapper.weight.detach().abs().max())
        facts["w0_fit_r2"] = _r2(features.to(device) @ mapper.weight.detach().t(), attributes.to(device))
    if stage.freeze_support:
        score = None
        if cfg.train.support_rank == "usage_agreement":
            usage, attributes = collect_usage_features(model, train_set, device, cfg.train.batch_size, info, raw=True)
            score = usage_agreement(mapper.weight, usage.to(device), attributes.to(device))
        mapper.freeze_support(cfg.train.top_k if not cfg.train.one_to_one else 1, cfg.train.one_to_one, score,
                              cfg.train.exclusive_support)
        facts["support"] = {str(m): mapper.atoms_of(m) for m in range(mapper.n_attributes)}
    return facts


def _r2(pred: Tensor, target: Tensor) -> list[float]:
    resid = ((pred - target) ** 2).sum(0)
    total = ((target - target.mean(0)) ** 2).sum(0).clamp_min(1e-12)
    return (1 - resid / total).tolist()


# --------------------------------------------------------------------------- validation


@torch.no_grad()
def validate(model: nn.Module, family, dataset, cfg: ExperimentConfig, stage: StageSpec,
             device: torch.device, attribute_names: tuple[str, ...]) -> dict[str, Any]:
    """Mean loss terms, PSNR, code density and Spearman ρ(prediction, attribute) on a split."""
    if dataset is None or len(dataset) == 0:
        return {}
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    preds, targets, psnrs, densities = [], [], [], []
    n_batches = 0
    for start in range(0, len(dataset), cfg.train.batch_size):
        batch = to_device(default_collate([dataset[i] for i in range(start, min(len(dataset),
                                                                            start + cfg.train.batch_size))]),
                          device, False)
        out = model(batch["image"])
        terms = family.loss_terms(model, out, batch, stage, cfg)
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        n_batches += 1
        recon = family.reconstruction(out).float().clamp(0, 1)
        mse = ((recon - batch["image"]) ** 2).flatten(1).mean(1).clamp_min(1e-12)
        psnrs.append((10 * torch.log10(1.0 / mse)).cpu())
        preds.append(family.attribute_predictions(out)[:, : len(attribute_names)].float().cpu())
        targets.append(batch["raw_attributes"].float().cpu())
        stats_ = family.step_stats(out)
        if "density" in stats_:
            densities.append(float(stats_["density"]))
    model.train(was_training)
    pred = torch.cat(preds).numpy()
    target = torch.cat(targets).numpy()
    result: dict[str, Any] = {f"loss_{k}": v / n_batches for k, v in sums.items()}
    result["psnr"] = float(torch.cat(psnrs).mean())
    if densities:
        result["density"] = float(np.mean(densities))
    result["spearman"] = {name: _spearman(pred[:, i], target[:, i]) for i, name in enumerate(attribute_names)}
    return result


@torch.no_grad()
def log_reconstructions(board: TensorBoardLog, model: nn.Module, family, dataset, device: torch.device,
                        global_step: int) -> None:
    """TensorBoard's grid of the first :data:`GRID_IMAGES` images of ``dataset`` over their reconstructions."""
    if board.writer is None or dataset is None or len(dataset) == 0:
        return
    was_training = model.training
    model.eval()
    images = dataset.images[:GRID_IMAGES].to(device)
    board.reconstructions(global_step, images, family.reconstruction(model(images)).float())
    model.train(was_training)


def _spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    if np.std(x) == 0 or np.std(y) == 0:
        return None
    return float(stats.spearmanr(x, y).statistic)


# --------------------------------------------------------------------------- checkpoints


def save_training_state(run_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None,
                        position: Position, cfg: ExperimentConfig, extra: dict[str, Any],
                        name: str = CHECKPOINT_NAME) -> None:
    from attri_ssc.checkpoint import save_checkpoint

    tensors = model_tensors(model)
    optim_meta: dict[str, Any] | None = None
    if optimizer is not None and position.step_in_stage > 0:
        optim_tensors, optim_meta = optimizer_to_flat(optimizer)
        tensors.update(optim_tensors)
    rng_tensors, rng_meta = rng_state()
    tensors.update(rng_tensors)
    meta = {
        "kind": "training_state",
        "format_version": FORMAT_VERSION,
        "family": cfg.train.family,
        "config": cfg.to_dict(),
        "position": position.__dict__,
        # The stage the position points into (None past the last stage): checked on resume, so
        # that a changed curriculum cannot silently continue a different stage.
        "stage_name": cfg.stages[position.stage].name if position.stage < len(cfg.stages) else None,
        "optimizer": optim_meta,
        "rng": rng_meta,
        **extra,
    }
    save_checkpoint(run_dir / name, tensors, meta)


def save_final_model(run_dir: Path, model: nn.Module, cfg: ExperimentConfig, extra: dict[str, Any]) -> None:
    """``RUN/model.{safetensors,json}``: the trained weights and everything needed to use them."""
    from attri_ssc.checkpoint import save_checkpoint

    meta = {"kind": "model", "format_version": FORMAT_VERSION, "family": cfg.train.family,
            "config": cfg.to_dict(), **extra}
    save_checkpoint(run_dir / "model", model_tensors(model), meta)


def weights_digest(model: nn.Module) -> str:
    """sha256 of every tensor of ``model.state_dict()`` in key order (to compare ranks)."""
    digest = hashlib.sha256()
    for key, value in model.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------- main entry


def resolve_device(cfg: ExperimentConfig) -> torch.device:
    if cfg.train.device == "cuda" or (cfg.train.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("train.device=cuda but no CUDA device is available")
        return torch.device("cuda")
    return torch.device("cpu")


def _check_stage_position(position: Position, meta: dict[str, Any], cfg: ExperimentConfig, source: Path) -> None:
    """The checkpoint's stage index must name the same stage in ``cfg`` (CheckpointError)."""
    n = len(cfg.stages)
    if position.stage > n or (position.stage == n and position.step_in_stage):
        raise CheckpointError(f"{source}.json is at stage index {position.stage} (step {position.step_in_stage}), "
                              f"but the config has {n} stage(s)")
    if position.stage < n and position.step_in_stage > cfg.stages[position.stage].steps:
        raise CheckpointError(f"{source}.json is at step {position.step_in_stage} of stage "
                              f"{cfg.stages[position.stage].name!r}, which has {cfg.stages[position.stage].steps} "
                              "steps in the config")
    saved = meta.get("stage_name", "-")
    if saved == "-":  # checkpoints written before the stage name was recorded
        return
    now = cfg.stages[position.stage].name if position.stage < n else None
    if saved != now:
        raise CheckpointError(f"{source}.json is at {'the start' if position.step_in_stage == 0 else 'step ' + str(position.step_in_stage)} "
                              f"of stage {saved!r} (index {position.stage}), but the config's stage "
                              f"{position.stage} is {now!r}; resume with the checkpoint's stages")


def _build_bundle(data_dir: str | Path, cfg: ExperimentConfig, saved_split: dict | None):
    """The data bundle, on the checkpoint's split when there is one (errors name the mismatch)."""
    from attri_ssc.data.datasets import build_datasets

    try:
        return build_datasets(data_dir, cfg.data, split=saved_split)
    except DataError as exc:
        if saved_split is None:
            raise
        raise CheckpointError(f"the checkpoint's patient split does not fit the data folder: {exc}") from None


def _resolved_data(data: Any, data_dir: str | Path) -> Any:
    """The data config with its layout and label map filled in (what the run records);
    attributes the cohort's labels cannot give are a :class:`ConfigError` here, before the
    run folder is made."""
    from attri_ssc.data.config import DataConfig
    from attri_ssc.data.datasets import check_structures
    from attri_ssc.data.layouts import resolve_data_config

    if not isinstance(data, DataConfig):
        return data
    data = resolve_data_config(data, data_dir)
    check_structures(data)
    return data


def train(cfg: ExperimentConfig, data_dir: str | Path, run_dir: str | Path, resume: bool = False,
          force: bool = False, progress: bool = True, init_from: str | Path | None = None) -> TrainResult:
    """Hold the run folder's writer lock (:func:`attri_ssc.run_lock.run_lock`; rank 0 under
    torchrun) and train: see :func:`_train`. A second writer on ``run_dir`` gets
    :class:`~attri_ssc.errors.RunLockedError` before anything is read or written."""
    from attri_ssc.run_lock import run_lock

    cfg.validate()  # preflight errors create no run folder (the lock would)
    if cfg.train.tensorboard:
        require_tensorboard()
    # The data layout and label map are resolved (and scar attributes on a cohort without
    # scar refused) before the run folder exists.
    cfg = dataclasses.replace(cfg, data=_resolved_data(cfg.data, data_dir))
    with run_lock(run_dir, create=not resume):
        return _train(cfg, data_dir, run_dir, resume, force, progress, init_from)


def _train(cfg: ExperimentConfig, data_dir: str | Path, run_dir: str | Path, resume: bool = False,
           force: bool = False, progress: bool = True, init_from: str | Path | None = None) -> TrainResult:
    """Train ``cfg`` on the data folder ``data_dir`` (EMIDEC, ACDC or manifest layout; the
    layout and label map used are recorded in the run's config) into ``run_dir``.

    With ``resume``, training continues from the run's checkpoint; ``cfg`` must have the
    checkpoint's model and data settings (training options such as ``stop_after`` may differ).
    ``init_from`` starts a new run from a stage-boundary checkpoint of another run
    (``OTHER/checkpoints/after_stage2``): stages before it are taken as done, so variants
    that differ only in later stages (Table 4's one-to-one mapping) share the earlier ones.
    """
    from attri_ssc.checkpoint import load_checkpoint

    started = time.perf_counter()
    run_dir = Path(run_dir)
    cfg.validate()
    cfg = dataclasses.replace(cfg, data=_resolved_data(cfg.data, data_dir))
    if cfg.train.tensorboard:
        require_tensorboard()  # before the run folder gets its first file
    device = resolve_device(cfg)
    info = dist_utils.init_distributed(device.type)
    if info.is_main:
        prepare_run_dir(run_dir, resume, force)
    dist_utils.barrier(info)

    position = Position()
    ckpt_tensors: dict[str, Tensor] = {}
    ckpt_meta: dict[str, Any] = {}
    if resume and init_from is not None:
        raise ConfigError("--resume and --init-from exclude each other")
    if resume or init_from is not None:
        ckpt_tensors, ckpt_meta = load_checkpoint(run_dir / CHECKPOINT_NAME if resume else Path(init_from))
        if init_from is not None and ckpt_meta["position"]["step_in_stage"] != 0:
            raise CheckpointError(f"{init_from} is not a stage-boundary checkpoint")
        saved = dict(ckpt_meta["config"])
        try:  # a checkpoint from before layouts and label maps: compare with what it implied
            saved["data"] = _resolved_data(type(cfg.data).from_dict(saved["data"]), data_dir).to_dict()
        except (ConfigError, DataError, AttributeError):
            pass
        for section in ("model", "data"):
            now = getattr(cfg, section).to_dict()
            diff = sorted(k for k in set(now) | set(saved[section])
                          if k not in IRRELEVANT_TO_RESUME and now.get(k) != saved[section].get(k))
            if diff:
                raise CheckpointError(f"cannot continue from the checkpoint: {section} settings differ from "
                                      f"the checkpoint's: {diff}")
        position = Position(**ckpt_meta["position"])
        _check_stage_position(position, ckpt_meta, cfg, run_dir / CHECKPOINT_NAME if resume else Path(init_from))
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)

    # Data: rank 0 fills the preprocessing cache first. A new run draws its patient split with
    # data.split_seed (runs that differ only in train.seed share it); a resumed or forked run
    # keeps the split of its checkpoint (before data.split_seed was honoured, train.seed drew it).
    saved_split = ckpt_meta.get("split") or None
    if info.is_main:
        bundle = _build_bundle(data_dir, cfg, saved_split)
    dist_utils.barrier(info)
    if not info.is_main:
        bundle = _build_bundle(data_dir, cfg, saved_split)
    names = tuple(bundle.attribute_names)

    family = FAMILIES[cfg.train.family]
    set_seed(cfg.train.seed)
    model = family.build(cfg, len(names)).to(device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last if cfg.model.spatial_dims == 2
                         else torch.channels_last_3d)
    if ckpt_tensors:
        try:
            load_model_tensors(model, ckpt_tensors)
        except RuntimeError as exc:
            raise CheckpointError(f"checkpoint does not match the model: {exc}") from exc
        restore_rng(ckpt_tensors, ckpt_meta["rng"])
        if resume and info.is_main and position.step_in_stage == 0 and 0 < position.stage:
            # Killed between the two boundary saves: the stage's own boundary checkpoint is missing.
            previous = f"checkpoints/after_{cfg.stages[position.stage - 1].name}"
            if not (run_dir / f"{previous}.json").exists():
                from attri_ssc.checkpoint import save_checkpoint

                save_checkpoint(run_dir / previous, ckpt_tensors, ckpt_meta)

    # Checked before the run folder gets its first file (a too-small split is a ConfigError).
    if len(bundle.train):
        try:
            check_augmentation(cfg.train.augment, tuple(bundle.train[0]["image"].shape[1:]))
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
    schedule = BatchSchedule(bundle.train, cfg.train.batch_size, cfg.train.seed, info, cfg.train.augment)
    run_extra = {"attribute_names": list(names), "scaler": bundle.scaler.to_dict(), "split": bundle.split,
                 "data_dir": str(data_dir), "init_from": str(init_from) if init_from is not None else None,
                 "layout": bundle.layout, "groups": bundle.groups}
    if info.is_main:
        write_text(run_dir / "config.yaml", dump_yaml(cfg))
        write_json(run_dir / "split.json", bundle.split)
        write_json(run_dir / SKIPPED_CASES_NAME, {"data_dir": str(data_dir), "skipped": bundle.skipped})
    if bundle.skipped and info.is_main:
        log_module.warning("skipped %d unusable case(s): %s (problems listed in %s)", len(bundle.skipped),
                           ", ".join(c or "(folder)" for c in bundle.skipped), run_dir / SKIPPED_CASES_NAME)
    restart_stage = (cfg.stages[position.stage].name
                     if resume and position.step_in_stage == 0 and position.stage < len(cfg.stages) else None)
    log = MetricsLog(run_dir / "metrics.jsonl", info.is_main, keep_until_step=position.global_step if resume else None,
                     restart_stage=restart_stage)
    board = TensorBoardLog(run_dir, cfg.train.tensorboard and info.is_main,
                           purge_step=position.global_step + 1 if resume else None)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if cfg.train.precision == "bf16"
                else nullcontext())
    last_val: dict[str, Any] = {}
    model.train()

    for stage_index in range(position.stage, len(cfg.stages)):
        stage = cfg.stages[stage_index]
        resuming_mid_stage = resume and stage_index == ckpt_meta["position"]["stage"] and position.step_in_stage > 0
        if not resuming_mid_stage:
            position = Position(stage_index, 0, position.global_step)
            facts = start_stage(model, stage, cfg, bundle.train, device, info)
            log.write({"kind": "stage_start", "stage": stage.name, "global_step": position.global_step, **facts})
        groups = family.trainable_groups(model, stage, cfg)
        # Fused Adam: one kernel over all parameters. On the shared 2-core machine torch's CPU
        # default (a per-tensor loop) was never faster, and up to 40x slower when OpenMP
        # spins (paper 2D, 56.5M parameters: 2.6 s vs 0.06 s per step; docs/performance.md).
        optimizer = torch.optim.Adam(groups, fused=device.type in ("cpu", "cuda"))
        base_lrs = [g["lr"] for g in optimizer.param_groups]
        if resuming_mid_stage and ckpt_meta.get("optimizer"):
            optimizer_from_flat(optimizer, ckpt_tensors, ckpt_meta["optimizer"])
        wrapped: nn.Module = model
        if info.enabled:
            wrapped = nn.parallel.DistributedDataParallel(
                model, device_ids=[info.local_rank] if device.type == "cuda" else None)
        params = [p for g in groups for p in g["params"]]
        gather = functools.partial(dist_utils.all_gather_with_grad, info=info) if info.enabled else None
        bar = tqdm(total=stage.steps, initial=position.step_in_stage, desc=f"{cfg.train.family} {stage.name}",
                   disable=not (progress and info.is_main), dynamic_ncols=True, leave=True)
        while position.step_in_stage < stage.steps:
            batch = to_device(schedule.batch(position.global_step), device, cfg.train.channels_last)
            with autocast:
                out = wrapped(batch["image"])
                terms = family.loss_terms(model, out, batch, stage, cfg, gather=gather)
                if "latent_sparsity" in terms and stage.sparsity_ramp:
                    terms["latent_sparsity"] = terms["latent_sparsity"] * stage.sparsity_scale(position.step_in_stage)
            total = sum(terms.values())
            scale = stage.lr_scale(position.step_in_stage)
            for group, base in zip(optimizer.param_groups, base_lrs):
                group["lr"] = base * scale
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            family.after_backward(model)
            grad_norm = torch.nn.utils.clip_grad_norm_(
                params, cfg.train.max_grad_norm if cfg.train.max_grad_norm > 0 else math.inf)
            finite = torch.isfinite(total.detach()) & torch.isfinite(grad_norm)
            if info.enabled:
                flag = finite.to(torch.int32)
                torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
                finite = flag.bool()
            if not bool(finite):
                bad = [k for k, v in terms.items() if not torch.isfinite(v.detach()).all()] or ["gradients"]
                # Steps count from 1, as "step"/"global_step" in metrics.jsonl and checkpoints do.
                where = (f"stage {stage.name!r} step {position.step_in_stage + 1} of {stage.steps} "
                         f"(global step {position.global_step + 1})")
                if not cfg.train.skip_nonfinite:
                    last = run_dir / f"{CHECKPOINT_NAME}.json"
                    kept = (f"the last good checkpoint is {run_dir / CHECKPOINT_NAME}.safetensors (resume "
                            f"with --resume, possibly with a smaller learning rate)" if last.exists()
                            else "no checkpoint was written yet")
                    raise NumericalError(
                        f"non-finite {', '.join(bad)} at {where}; {kept}; or set train.skip_nonfinite=true "
                        f"to skip such batches")
                log.write({"kind": "skipped_batch", "stage": stage.name, "step": position.step_in_stage + 1,
                           "global_step": position.global_step + 1, "nonfinite": bad})
                optimizer.zero_grad(set_to_none=True)
            else:
                optimizer.step()
                post_step(model)
            position.step_in_stage += 1
            position.global_step += 1
            bar.update(1)

            if position.global_step % cfg.train.log_every == 0 or position.step_in_stage == stage.steps:
                record = {k: float(v.detach()) for k, v in terms.items()}
                record["total"] = float(total.detach())
                record.update({k: float(v) for k, v in family.step_stats(out).items()})
                record["lr"] = optimizer.param_groups[0]["lr"]
                for group in optimizer.param_groups[1:]:
                    record[f"lr_{group.get('name', 'group')}"] = group["lr"]
                record["grad_norm"] = float(grad_norm)
                bar.set_postfix({k: f"{v:.3g}" for k, v in record.items() if not k.startswith("lr")}, refresh=False)
                log.write({"kind": "step", "stage": stage.name, "step": position.step_in_stage,
                           "global_step": position.global_step, **record})
                board.step(position.global_step, record)
            if cfg.train.val_every and position.global_step % cfg.train.val_every == 0 and info.is_main:
                last_val = validate(model, family, bundle.val, cfg, stage, device, names)
                log.write({"kind": "val", "stage": stage.name, "global_step": position.global_step, **last_val})
                board.validation(position.global_step, last_val)
            stopping = cfg.train.stop_after and position.global_step >= cfg.train.stop_after
            if info.is_main and (position.global_step % cfg.train.checkpoint_every == 0 or stopping):
                if position.step_in_stage < stage.steps:
                    save_training_state(run_dir, model, optimizer, position, cfg, run_extra)
            if stopping and position.step_in_stage < stage.steps:
                board.close()
                bar.close()
                dist_utils.barrier(info)
                dist_utils.cleanup(info)
                return TrainResult(run_dir, False, position, last_val, time.perf_counter() - started,
                                  log.skipped_batches, bundle.skipped)
        bar.close()
        dist_utils.broadcast_buffers(model, info)
        if info.is_main:
            last_val = validate(model, family, bundle.val, cfg, stage, device, names)
            log.write({"kind": "val", "stage": stage.name, "global_step": position.global_step, **last_val})
            board.validation(position.global_step, last_val)
            log_reconstructions(board, model, family, bundle.val if len(bundle.val) else bundle.train,
                                device, position.global_step)
            boundary = Position(stage_index + 1, 0, position.global_step)
            save_training_state(run_dir, model, None, boundary, cfg, run_extra)
            save_training_state(run_dir, model, None, boundary, cfg, run_extra, name=f"checkpoints/after_{stage.name}")
        dist_utils.barrier(info)
        position = Position(stage_index + 1, 0, position.global_step)
        if cfg.train.stop_after and position.global_step >= cfg.train.stop_after and stage_index + 1 < len(cfg.stages):
            board.close()
            dist_utils.cleanup(info)
            return TrainResult(run_dir, False, position, last_val, time.perf_counter() - started,
                                  log.skipped_batches, bundle.skipped)

    board.close()
    wall = time.perf_counter() - started
    digests = dist_utils.all_gather_rows(
        torch.tensor(list(bytes.fromhex(weights_digest(model))), dtype=torch.uint8, device=device)[None], info)
    if info.is_main:
        save_final_model(run_dir, model, cfg, run_extra)
        write_json(run_dir / "summary.json", {
            "family": cfg.train.family, "global_steps": position.global_step,
            "wall_time_s_this_process": wall,
            "world_size": info.world_size, "rank_weight_sha256": [bytes(d.tolist()).hex() for d in digests.cpu()],
            "skipped_batches": log.skipped_batches, "validation": last_val})
    dist_utils.cleanup(info)
    return TrainResult(run_dir, True, position, last_val, wall, log.skipped_batches, bundle.skipped)
