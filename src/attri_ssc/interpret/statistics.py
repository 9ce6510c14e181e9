"""What editing and sampling need from a run's training split, saved in the run folder.

Editing (Appendix A.5 and our rules) and sampling need statistics of the *training* codes:
the atom bounds (:class:`AtomBounds`), the plain and the conditional (hold-fixed) prototype code
maps (:class:`AttributePrototypes`), the calibration of the mapper's â against the training
truth (:class:`AttributeUnits`), the training range of every attribute in physical units and
the sparse code prior (:class:`CodePrior`). :func:`compute_statistics` derives all of them from
one pass of the encoder over the training split; :func:`save_statistics` writes them as
``RUN/interpretation.safetensors`` + ``RUN/interpretation.json`` (atomic, never pickle), so a run
folder alone suffices to edit and sample (``attri_ssc.load_run(RUN)``). ``attri-ssc train``
writes them when training finishes (through ``attri_ssc.Run.statistics``); for older runs
``attri_ssc.load_run(RUN, data=DIR)`` computes them from the data folder and saves them.

The JSON records a key (the SHA-256 of ``model.safetensors``, a digest of the training items'
ids and the settings); :func:`load_statistics` returns None when the key does not match the
run (retrained weights), so stale statistics are never used.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from attri_ssc.interpret.editing import (AtomBounds, AttributePrototypes, AttributeUnits, bounds_from_codes,
                                          collect_codes, hold_fixed_indices, prototypes_from_codes)
from attri_ssc.interpret.sampling import CodePrior

STATISTICS_NAME = "interpretation"
STATISTICS_VERSION = 1
#: The defaults of ``attri-ssc edit`` / ``sample`` (and what ``train`` saves).
DEFAULT_PERCENTILE = 99.0
DEFAULT_QUANTILE = 0.9
DEFAULT_PRIOR_SEED = 0


@dataclass
class InterpretationStatistics:
    """Training-split statistics of one run (module doc).

    Attributes:
        attribute_names: the run's supervised attributes (|A|), in the mapper's row order.
        bounds: robust per-atom bounds at ``bounds.percentile``.
        prototypes: plain prototypes, high/low (|A|, K, *s), at ``prototypes.quantile``.
        conditional_prototypes: prototypes conditioned on :func:`hold_fixed_indices`.
        units: the mapper's calibrated units (sd, zero, slope; each (|A|,)).
        ranges: name -> (min, max) of the attribute over the training items, physical units.
        prior: the fitted sparse code prior.
        key: what the statistics were computed from (model digest, training items, settings).
    """

    attribute_names: tuple[str, ...]
    bounds: AtomBounds
    prototypes: AttributePrototypes
    conditional_prototypes: AttributePrototypes
    units: AttributeUnits
    ranges: dict[str, tuple[float, float]]
    prior: CodePrior
    key: dict[str, Any]


def calibrate_units(mapper, codes: Tensor, raw_attributes: Tensor) -> AttributeUnits:
    """The ``feedback`` rule's :class:`AttributeUnits`, from the model's reading of the training split.

    The mapper's â is fitted to rank the attributes (L_AR), not to their scale, so each attribute's
    â is calibrated against the training truth by least squares, raw ≈ c·â + d. One training standard
    deviation of the attribute is then sd(raw)/c in â's units, and a physical 0 sits at â = −d/c.
    An attribute whose calibration slope is not positive (the model does not read it) falls back
    to the spread of its â and no physical zero (mapper value ``NaN``: no cap).

    Args:
        mapper: the run's attribute mapper (codes (N, K, *s) -> â (N, |A|)).
        codes: the training images' codes (N, K, *s).
        raw_attributes: (N, |A|) the training items' attributes in physical units.
    """
    with torch.no_grad():
        params = next(iter(mapper.parameters()), None) if isinstance(mapper, torch.nn.Module) else None
        pred = mapper(codes.to(params.device) if params is not None else codes).double().cpu().numpy()
    raw = raw_attributes.double().cpu().numpy()
    sd, zero, slopes = [], [], []
    for m in range(raw.shape[1]):
        spread_hat, spread_raw = float(pred[:, m].std()), float(raw[:, m].std())
        slope, intercept = (np.polyfit(pred[:, m], raw[:, m], 1) if spread_hat > 0 and spread_raw > 0
                            else (0.0, 0.0))
        if slope > 0:
            sd.append(spread_raw / slope)
            zero.append(-intercept / slope)
            slopes.append(float(slope))
        else:
            sd.append(spread_hat if spread_hat > 0 else 1.0)
            zero.append(float("nan"))
            slopes.append(float("nan"))
    return AttributeUnits(sd=torch.tensor(sd, dtype=torch.float32), zero=torch.tensor(zero, dtype=torch.float32),
                          slope=torch.tensor(slopes, dtype=torch.float32))


def _items_digest(ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def _model_digest(run_dir: Path) -> str:
    from attri_ssc.checkpoint import sha256_file

    return sha256_file(run_dir / "model.safetensors")


def statistics_key(run_dir: str | Path, train_ids: Sequence[str], percentile: float = DEFAULT_PERCENTILE,
                   quantile: float = DEFAULT_QUANTILE, prior_seed: int = DEFAULT_PRIOR_SEED) -> dict[str, Any]:
    """What identifies a set of statistics: model weights, training items and settings."""
    return {"version": STATISTICS_VERSION, "model_sha256": _model_digest(Path(run_dir)),
            "train_items": _items_digest(train_ids), "n_items": len(train_ids),
            "percentile": float(percentile), "quantile": float(quantile), "prior_seed": int(prior_seed)}


def compute_statistics(model, attribute_names: Sequence[str], train, key: dict[str, Any],
                       codes: Tensor | None = None) -> InterpretationStatistics:
    """Encode the training split once and derive every statistic from its codes.

    Args:
        model: an ``AttriSSCVAE`` (``.backbone``, ``.mapper``).
        attribute_names: the run's attribute names (|A|).
        train: the training :class:`~attri_ssc.data.datasets.CardiacDataset` (``images`` (N, 1, *S),
            scaled ``attributes`` and ``raw_attributes`` (N, |A|), ``case_ids``).
        key: :func:`statistics_key` (its percentile, quantile and prior seed are used).
        codes: the training codes (N, K, *s) if already computed.
    """
    names = tuple(attribute_names)
    z = collect_codes(model.backbone, train.images) if codes is None else codes
    bounds = bounds_from_codes(z, key["percentile"])
    plain = prototypes_from_codes(z, train.attributes, key["quantile"])
    conditional = prototypes_from_codes(z, train.attributes, key["quantile"], hold_fixed_indices(names))
    units = calibrate_units(model.mapper, z, train.raw_attributes)
    raw = train.raw_attributes.double()
    ranges = {n: (float(raw[:, i].min()), float(raw[:, i].max())) for i, n in enumerate(names)}
    prior = CodePrior(seed=key["prior_seed"]).fit(z)
    return InterpretationStatistics(names, bounds, plain, conditional, units, ranges, prior, dict(key))


def _prototype_tensors(prefix: str, p: AttributePrototypes) -> dict[str, Tensor]:
    return {f"{prefix}.high": p.high, f"{prefix}.low": p.low, f"{prefix}.counts": p.counts}


def _prototype_meta(p: AttributePrototypes) -> dict[str, Any]:
    return {"quantile": p.quantile, "conditioned_on": {str(k): list(v) for k, v in p.conditioned_on.items()}}


def _prototypes_from(prefix: str, tensors: dict[str, Tensor], meta: dict[str, Any]) -> AttributePrototypes:
    return AttributePrototypes(float(meta["quantile"]), tensors[f"{prefix}.high"], tensors[f"{prefix}.low"],
                               tensors[f"{prefix}.counts"],
                               {int(k): tuple(int(o) for o in v) for k, v in meta["conditioned_on"].items()})


def statistics_paths(run_dir: str | Path) -> tuple[Path, Path]:
    """``(RUN/interpretation.safetensors, RUN/interpretation.json)``."""
    prefix = Path(run_dir) / STATISTICS_NAME
    return prefix.with_suffix(".safetensors"), prefix.with_suffix(".json")


def save_statistics(run_dir: str | Path, stats: InterpretationStatistics) -> Path:
    """Write ``RUN/interpretation.{safetensors,json}`` atomically (the checkpoint format); returns the JSON."""
    from attri_ssc.checkpoint import save_checkpoint

    prior_tensors, prior_meta = stats.prior.state()
    tensors = {**_prototype_tensors("prototypes", stats.prototypes),
               **_prototype_tensors("conditional_prototypes", stats.conditional_prototypes),
               "units.sd": stats.units.sd, "units.zero": stats.units.zero, "units.slope": stats.units.slope,
               **{f"prior.{k}": v for k, v in prior_tensors.items()}}
    meta = {"kind": "interpretation_statistics", "key": stats.key, "attribute_names": list(stats.attribute_names),
            "bounds": stats.bounds.to_dict(), "prototypes": _prototype_meta(stats.prototypes),
            "conditional_prototypes": _prototype_meta(stats.conditional_prototypes),
            "ranges": {n: list(r) for n, r in stats.ranges.items()}, "prior": prior_meta}
    return save_checkpoint(Path(run_dir) / STATISTICS_NAME, tensors, meta)


def load_statistics(run_dir: str | Path, expected_key: dict[str, Any] | None = None) -> InterpretationStatistics | None:
    """The saved statistics of ``run_dir``, or None when there are none or they belong to other
    weights (or, with ``expected_key``, to other training items or settings).

    Raises:
        CheckpointError: the files exist but are corrupted (the message names the file).
    """
    from attri_ssc.checkpoint import load_checkpoint
    from attri_ssc.errors import CheckpointError

    run_dir = Path(run_dir)
    _, json_path = statistics_paths(run_dir)
    if not json_path.exists():
        return None
    tensors, meta = load_checkpoint(run_dir / STATISTICS_NAME)
    try:
        key = meta["key"]
        if key.get("version") != STATISTICS_VERSION or key.get("model_sha256") != _model_digest(run_dir):
            return None
        if expected_key is not None and key != expected_key:
            return None
        prior_tensors = {k.removeprefix("prior."): v for k, v in tensors.items() if k.startswith("prior.")}
        return InterpretationStatistics(
            attribute_names=tuple(meta["attribute_names"]),
            bounds=AtomBounds.from_dict(meta["bounds"]),
            prototypes=_prototypes_from("prototypes", tensors, meta["prototypes"]),
            conditional_prototypes=_prototypes_from("conditional_prototypes", tensors, meta["conditional_prototypes"]),
            units=AttributeUnits(sd=tensors["units.sd"], zero=tensors["units.zero"], slope=tensors["units.slope"]),
            ranges={n: (float(r[0]), float(r[1])) for n, r in meta["ranges"].items()},
            prior=CodePrior.from_state(prior_tensors, meta["prior"]),
            key=key,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{json_path}: malformed interpretation statistics ({exc!r}); delete the two "
                              f"{STATISTICS_NAME}.* files and pass data= (or --data) to recompute them") from None


__all__ = ["DEFAULT_PERCENTILE", "DEFAULT_PRIOR_SEED", "DEFAULT_QUANTILE", "InterpretationStatistics",
           "STATISTICS_NAME", "calibrate_units", "compute_statistics", "load_statistics", "save_statistics",
           "statistics_key", "statistics_paths"]
