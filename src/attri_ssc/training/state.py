"""Resumable training state as safetensors + JSON (never pickle).

The resumable checkpoint ``RUN/checkpoints/last`` holds the unwrapped model state, the
optimiser's per-parameter tensors, the torch RNG state (tensors) and, in its JSON, the
config, curriculum position, optimiser hyper-parameters, NumPy/Python RNG states and the
attribute scaler.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

MODEL_PREFIX = "model."
OPTIM_PREFIX = "optim."


def optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split an optimiser state_dict into tensors and JSON-safe metadata."""
    state = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{OPTIM_PREFIX}{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_flat(optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """Inverse of :func:`optimizer_to_flat` (loads into ``optimizer`` in place)."""
    per_param: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if not name.startswith(OPTIM_PREFIX):
            continue
        index, key = name[len(OPTIM_PREFIX):].split(".", 1)
        per_param.setdefault(int(index), {})[key] = value
    for index, entry in meta.get("scalars", {}).items():
        per_param.setdefault(int(index), {}).update(entry)
    optimizer.load_state_dict({"state": per_param, "param_groups": meta["param_groups"]})


def model_tensors(model: nn.Module) -> dict[str, Tensor]:
    """``model.state_dict()`` with the ``model.`` prefix, detached and contiguous on CPU."""
    return {MODEL_PREFIX + k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def load_model_tensors(model: nn.Module, tensors: dict[str, Tensor]) -> None:
    """Load the ``model.``-prefixed tensors into ``model`` (strict).

    Raises:
        RuntimeError: one line naming the missing, unexpected and mis-shaped keys.
    """
    from attri_ssc.checkpoint import load_state_dict_checked
    from attri_ssc.errors import CheckpointError

    state = {k[len(MODEL_PREFIX):]: v for k, v in tensors.items() if k.startswith(MODEL_PREFIX)}
    try:
        load_state_dict_checked(model, state, source="saved state")
    except CheckpointError as exc:  # callers add the file name
        raise RuntimeError(str(exc)) from None


def rng_state() -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Torch RNG as tensors; NumPy and Python RNGs as JSON-safe values."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    meta = {
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "python": [py_version, list(py_state), py_gauss],
    }
    return tensors, meta


def restore_rng(tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda_states = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)
    kind, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, state, gauss = meta["python"]
    random.setstate((version, tuple(state), gauss))
