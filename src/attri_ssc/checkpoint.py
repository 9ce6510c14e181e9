"""Checkpoints: safetensors weights + a JSON sidecar; never pickle.

A checkpoint ``<prefix>`` is two files:

* ``<prefix>.safetensors``: a flat ``{name: tensor}`` mapping;
* ``<prefix>.json``: ``{"format_version", "sha256", "meta": {...}}`` where ``sha256`` is the
  digest of the safetensors file.

Saving never leaves the previous checkpoint unusable, whatever the moment of a crash
(``kill -9``, power loss aside): the new pair is first written completely, each file
atomically (temp file + rename), as ``<prefix>.pending.{safetensors,json}``, the JSON
last, so the pending JSON's presence marks a complete new checkpoint; then both files
are renamed over the old pair. A crash between those two renames leaves the pending
JSON behind, and the next save or load finishes the renames (rolls forward); a crash
before the pending JSON exists leaves the old pair untouched. Loading checks the
JSON, the format version and (by default) the digest before reading any tensor, and
raises :class:`~attri_ssc.errors.CheckpointError` with the file and the problem.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from attri_ssc.errors import CheckpointError
from attri_ssc.io_utils import atomic_write, write_json

FORMAT_VERSION = 1
MODEL_FAMILY = "ssc_vae"


def checkpoint_paths(path_prefix: str | os.PathLike) -> tuple[Path, Path]:
    """``(<prefix>.safetensors, <prefix>.json)``."""
    prefix = str(path_prefix)
    return Path(prefix + ".safetensors"), Path(prefix + ".json")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 digest of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(path_prefix: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write ``tensors`` and JSON-serialisable ``meta`` under ``path_prefix``; returns the JSON path."""
    st_path, json_path = checkpoint_paths(path_prefix)
    bad = [k for k, v in tensors.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"tensors must map str to torch.Tensor; bad entries: {bad[:5]}")
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    pending_st, pending_json = _pending_paths(path_prefix)
    finish_interrupted_save(path_prefix)
    atomic_write(pending_st, lambda tmp: save_file(flat, str(tmp)))
    record = {"format_version": FORMAT_VERSION, "sha256": sha256_file(pending_st), "meta": meta}
    try:
        write_json(pending_json, record)  # serialises before touching the file
    except TypeError as exc:
        pending_st.unlink(missing_ok=True)
        raise ValueError(f"checkpoint meta is not JSON serialisable: {exc}") from exc
    finish_interrupted_save(path_prefix)  # the two renames
    return json_path


def _pending_paths(path_prefix: str | os.PathLike) -> tuple[Path, Path]:
    """``(<prefix>.pending.safetensors, <prefix>.pending.json)``: a save in progress."""
    return checkpoint_paths(str(path_prefix) + ".pending")


def finish_interrupted_save(path_prefix: str | os.PathLike) -> None:
    """Complete or discard a save of ``path_prefix`` that was interrupted; no-op otherwise.

    A pending JSON marks a complete new checkpoint: its weights (still pending, or already
    renamed into place) and then the JSON are renamed over the old pair. Pending weights
    without a pending JSON are a half-finished save and are deleted; the old pair is intact.
    """
    st_path, json_path = checkpoint_paths(path_prefix)
    pending_st, pending_json = _pending_paths(path_prefix)
    if pending_json.is_file():
        if pending_st.is_file():
            os.replace(pending_st, st_path)
        os.replace(pending_json, json_path)
    elif pending_st.is_file():
        pending_st.unlink()


def load_checkpoint(path_prefix: str | os.PathLike, verify: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Returns ``(tensors, meta)``. Raises ``CheckpointError`` if either file is missing, the
    JSON is unparsable or of another format version, the digest does not match
    (``verify=True``), or the safetensors file cannot be read.
    """
    st_path, json_path = checkpoint_paths(path_prefix)
    if _pending_paths(path_prefix)[1].is_file():
        try:
            finish_interrupted_save(path_prefix)
        except OSError as exc:
            raise CheckpointError(
                f"cannot complete the interrupted save of {json_path}: {exc.strerror or exc}") from exc
    if not json_path.is_file():
        hint = " (the weights exist: the save was interrupted)" if st_path.is_file() else ""
        raise CheckpointError(f"checkpoint metadata {json_path} not found{hint}")
    if not st_path.is_file():
        raise CheckpointError(f"checkpoint weights {st_path} not found (metadata {json_path} exists)")
    try:
        with open(json_path, encoding="utf-8") as fh:
            record = json.load(fh)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot parse checkpoint metadata {json_path}: {exc}") from exc
    if not isinstance(record, dict) or not {"format_version", "sha256", "meta"} <= set(record):
        raise CheckpointError(
            f"checkpoint metadata {json_path} lacks format_version/sha256/meta; not an attri-ssc checkpoint"
        )
    if record["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {json_path} has format_version={record['format_version']!r}, "
            f"this attri-ssc reads {FORMAT_VERSION}"
        )
    if verify:
        digest = sha256_file(st_path)
        if digest != record["sha256"]:
            raise CheckpointError(
                f"checksum mismatch for {st_path}: expected sha256 {record['sha256']}, got {digest} "
                "(truncated or modified file)"
            )
    try:
        tensors = load_file(str(st_path))
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"cannot read checkpoint weights {st_path}: {exc}") from exc
    return tensors, record["meta"]


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip DistributedDataParallel / DataParallel (``.module``) and torch.compile (``_orig_mod``) wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        else:
            return model


def save_model(model: nn.Module, path_prefix: str | os.PathLike, extra_meta: dict[str, Any] | None = None) -> Path:
    """Save an :class:`SSCVAE`'s state_dict with its config under ``meta['model_config']``."""
    model = unwrap_model(model)
    meta: dict[str, Any] = dict(extra_meta or {})
    meta["model_family"] = MODEL_FAMILY
    meta["model_config"] = model.config.to_dict()
    return save_checkpoint(path_prefix, dict(model.state_dict()), meta)


def load_state_dict_checked(model: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """``model.load_state_dict(state)`` after checking keys and shapes.

    Raises ``CheckpointError`` naming missing, unexpected and mis-shaped keys.
    """
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    misshaped = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if tuple(state[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or misshaped:
        parts = []
        if missing:
            parts.append(f"missing keys {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_short(unexpected)}")
        if misshaped:
            parts.append(f"mis-shaped keys {_short(misshaped)}")
        raise CheckpointError(f"{source} does not match the model: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def load_model(path_prefix: str | os.PathLike, verify: bool = True) -> "SSCVAE":  # noqa: F821
    """Rebuild the :class:`SSCVAE` saved by :func:`save_model` (architecture from the checkpoint)."""
    from attri_ssc.models.config import ModelConfig
    from attri_ssc.models.ssc_vae import SSCVAE

    return load_family_model(path_prefix, MODEL_FAMILY, ModelConfig, SSCVAE, verify)


def load_family_model(path_prefix: str | os.PathLike, family: str, config_cls: type, model_cls: type,
                      verify: bool = True) -> nn.Module:
    """Rebuild a ``model_cls(config_cls.from_dict(meta['model_config']))`` saved with
    ``meta['model_family'] == family``; weights checked and loaded strictly; eval mode."""
    tensors, meta = load_checkpoint(path_prefix, verify=verify)
    source = str(checkpoint_paths(path_prefix)[1])
    found = meta.get("model_family") if isinstance(meta, dict) else None
    if found != family:
        raise CheckpointError(f"{source} holds model_family={found!r}, expected {family!r}")
    try:
        config = config_cls.from_dict(meta["model_config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{source}: invalid model_config: {exc}") from exc
    model = model_cls(config)
    load_state_dict_checked(model, tensors, source)
    return model.eval()


def _short(items: list[str], n: int = 8) -> str:
    return ", ".join(items[:n]) + (f", ... ({len(items) - n} more)" if len(items) > n else "")


# ---------------------------------------------------------------------- baselines
#: ``meta['model_family']`` of a baseline checkpoint (the SSC-VAE's is :data:`MODEL_FAMILY`).
BASELINE_FAMILY = "baseline"


def save_baseline(model: nn.Module, prefix: str | os.PathLike, extra_meta: dict[str, Any] | None = None) -> Path:
    """Save an :class:`~attri_ssc.baselines.AttriVAE` under ``prefix`` (``.safetensors`` +
    ``.json``), without pickle.

    The state dict includes the BatchNorm running statistics; the config goes to
    ``meta['model_config']``. Wrappers (DDP, torch.compile) are stripped. Returns the
    JSON path.
    """
    from attri_ssc.baselines.attri_vae import AttriVAE

    model = unwrap_model(model)
    if not isinstance(model, AttriVAE):
        raise ValueError(f"model must be an AttriVAE, got model={type(model).__name__}")
    meta: dict[str, Any] = dict(extra_meta or {})
    meta["model_family"] = BASELINE_FAMILY
    meta["model_config"] = model.config.to_dict()
    return save_checkpoint(prefix, dict(model.state_dict()), meta)


def load_baseline(prefix: str | os.PathLike, verify: bool = True) -> "AttriVAE":  # noqa: F821
    """Rebuild the :class:`~attri_ssc.baselines.AttriVAE` saved by :func:`save_baseline`
    (architecture from the checkpoint's config, weights checked and loaded strictly), on
    CPU in eval mode.

    Raises:
        CheckpointError: missing/corrupt files, not a baseline checkpoint, or weights that do
            not fit its config.
    """
    from attri_ssc.baselines.attri_vae import AttriVAE
    from attri_ssc.baselines.config import BaselineConfig

    return load_family_model(prefix, BASELINE_FAMILY, BaselineConfig, AttriVAE, verify)
