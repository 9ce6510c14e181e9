"""Diagnosing a run: how much of each attribute its atom usages hold (``attri-ssc diagnose usage``).

â = W·(K·ũ) reads the attributes from the normalised atom usages only (Eqs. 7–8), so a low
held-out ρ(â, a) can come from W (a linear map over top-k atoms) or from the usages
themselves (global pooling keeps how much each atom fires, not where). :func:`usage_readout`
fits other readers on the *same* training-split features K·ũ and scores them on the test
split, with held-out Spearman ρ per reader and attribute:

* ``W (model)``: the run's own â (Stage III: top-k atoms per attribute);
* ``ridge``: linear least squares over all K atoms (ridge 1e-3, no intercept, as Stage II's
  initialisation);
* ``kernel ridge``: RBF kernel ridge over all K atoms, α and γ picked by 4-fold CV on the
  training split (scikit-learn);
* ``boosted trees``: scikit-learn's histogram gradient boosting over all K atoms.

If the nonlinear readers do no better than ridge, the attribute is missing from the usages,
not from W. The ceilings, readers that bypass the usages:

* 2D runs: the model-free judge (an intensity segmentation; cavity, myocardium and wall
  thickness) on the test inputs and on the reconstructions, given one slice thickness for
  every image (a slice shows none), so it reads what the usage readers could read;
* ``in-plane truth``: the ground-truth in-plane quantity (slice volume / the case's slice
  thickness) ranked against the slice volumes, about the best a reader of one slice can do;
* a run that supervises in-plane areas: its â and the true areas against the slice volumes
  (area × the case's slice thickness);
* an attribute at 0 on 20 % or more of the test items (the infarct): the AUC of â for zero
  against non-zero, and the ρ the model would have were the zero items' â tied.

This replaced ``scripts/probes/usage_readout.py`` (docs/experiments-probes.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from scipy.stats import spearmanr

from attri_ssc.checkpoint import load_checkpoint
from attri_ssc.errors import CheckpointError, DataError
from attri_ssc.interpret.judge import measure_batch
from attri_ssc.training.state import load_model_tensors

__all__ = ["PER_THICKNESS", "PER_AREA", "usage_features", "usage_readers", "usage_readout", "usage_markdown"]

#: Attributes that are an in-plane quantity × the case's slice thickness.
PER_THICKNESS = ("lv_volume", "myo_volume", "infarct_volume")
#: The in-plane areas (cm²) those volumes are made of.
PER_AREA = ("lv_area", "myo_area", "infarct_area")
#: Items each split needs: the readers' 4-fold cross-validation (train) and a ρ (test).
MIN_ITEMS = {"train": 4, "test": 3}


def usage_features(model, images: torch.Tensor, batch: int = 64) -> np.ndarray:
    """K·ũ of each image, the mapper's own input: ``(N, 1, *S)`` → ``(N, K)`` float64."""
    with torch.no_grad():
        return torch.cat([model.mapper.features(model.backbone(images[i:i + batch]).codes)
                          for i in range(0, len(images), batch)]).double().cpu().numpy()


def _rho(pred: np.ndarray, truth: np.ndarray) -> float | None:
    if len(pred) < 3 or np.ptp(pred) == 0 or np.ptp(truth) == 0:
        return None  # ρ undefined for a constant, meaningless below 3 items
    return float(spearmanr(pred, truth)[0])


def usage_readers(model, bundle, seed: int = 0) -> dict[str, list[float | None]]:
    """Reader name → held-out Spearman ρ per attribute (in the bundle's attribute order),
    every reader fitted on the training split's usages K·ũ and scored on the test split's."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.kernel_ridge import KernelRidge
    from sklearn.model_selection import GridSearchCV

    f_train, f_test = usage_features(model, bundle.train.images), usage_features(model, bundle.test.images)
    y_train, y_test = bundle.train.attributes.double().numpy(), bundle.test.attributes.double().numpy()
    weight = model.mapper.effective_weight().detach().double().cpu().numpy()
    a_hat = f_test @ weight.T  # the model's â = W·(K ũ), from the same features
    gram = f_train.T @ f_train + 1e-3 * len(f_train) * np.eye(f_train.shape[1])
    linear = f_test @ np.linalg.solve(gram, f_train.T @ y_train)
    out: dict[str, list[float | None]] = {"W (model)": [], "ridge": [], "kernel ridge": [], "boosted trees": []}
    folds = min(4, len(f_train))
    for m in range(y_train.shape[1]):
        kernel = GridSearchCV(KernelRidge(kernel="rbf"), {"alpha": [1e-3, 1e-2, 1e-1, 1.0],
                                                          "gamma": [1e-3, 1e-2, 1e-1]}, cv=folds)
        kernel.fit(f_train, y_train[:, m])
        trees = HistGradientBoostingRegressor(max_iter=300, random_state=seed).fit(f_train, y_train[:, m])
        out["W (model)"].append(_rho(a_hat[:, m], y_test[:, m]))
        out["ridge"].append(_rho(linear[:, m], y_test[:, m]))
        out["kernel ridge"].append(_rho(kernel.predict(f_test), y_test[:, m]))
        out["boosted trees"].append(_rho(trees.predict(f_test), y_test[:, m]))
    return out


def _judge_rho(images: torch.Tensor, bundle, spacing_mm: float) -> list[float | None]:
    """Held-out ρ of the model-free judge on test-split slices ``(N, 1, H, W)``, given one slice
    thickness for all (None: an attribute the judge does not measure)."""
    got = measure_batch(images, spacing_mm, 1.0)
    valid = got["valid"] > 0
    truth = bundle.test.raw_attributes.double().numpy()
    return [_rho(got[n][valid], truth[valid, m]) if n in got else None
            for m, n in enumerate(bundle.attribute_names)]


def _thickness(bundle) -> np.ndarray:
    """The slice thickness (mm) of each test item's case."""
    return np.array([float(bundle.cases[c].spacing[2]) for c in bundle.test.case_ids])


def usage_readout(run, bundle, checkpoints: Sequence[str] = ("final",)) -> dict[str, Any]:
    """Held-out ρ of every reader, per checkpoint, plus the model-free ceilings.

    Args:
        run: a :class:`~attri_ssc.runs.LoadedRun` (its model's weights are replaced by each
            checkpoint in turn and left at the last one).
        bundle: the run's data (:func:`~attri_ssc.runs.load_run_and_data`).
        checkpoints: ``"final"`` (``RUN/model``) or names under ``RUN/checkpoints/``
            (e.g. ``after_stage1``: what the codes hold before any attribute loss).

    Returns:
        ``{"attributes", "n_train", "n_test", "n_atoms", "thickness_mm": [min, max],
        "rows": [{"model", "reader", "rho": [...]}], "zero_heavy": [...]}``; ρ is ``None``
        where a reader does not measure an attribute or a ranking is constant.

    Raises:
        DataError: fewer training or test items than :data:`MIN_ITEMS`.
        CheckpointError: a checkpoint that does not exist or does not fit the run.
    """
    names = list(bundle.attribute_names)
    for split, need in MIN_ITEMS.items():
        n = len(getattr(bundle, split))
        if n < need:
            raise DataError(f"the usage readout needs >= {need} {split} items, got {n}")
    thickness = _thickness(bundle)
    truth = bundle.test.raw_attributes.double().numpy()
    judged = run.config.data.spatial_dims == 2
    spacing = float(run.config.data.spacing_mm)
    rows: list[dict[str, Any]] = []
    zero_heavy: list[dict[str, Any]] = []

    def row(model: str, reader: str, rho: list[float | None]) -> None:
        rows.append({"model": model, "reader": reader, "rho": rho})

    a_hat, label = None, "final"
    for label in checkpoints:
        prefix = run.run_dir / "model" if label == "final" else run.run_dir / "checkpoints" / label
        if not Path(f"{prefix}.json").exists():
            raise CheckpointError(f"{prefix}.json: no such checkpoint (names are 'final' or folders under "
                                  f"{run.run_dir / 'checkpoints'})")
        tensors, _ = load_checkpoint(prefix)
        load_model_tensors(run.model, tensors)
        run.model.eval()
        for reader, values in usage_readers(run.model, bundle).items():
            if not (label == "after_stage1" and reader == "W (model)"):  # W is not fitted before Stage II
                row(label, reader, values)
        if judged:
            ds = bundle.test
            with torch.no_grad():
                recon = torch.cat([run.model.backbone(ds.images[i:i + 64]).recon.clamp(0, 1)
                                   for i in range(0, len(ds), 64)])
            row(label, "judge on reconstructions, one thickness", _judge_rho(recon, bundle, spacing))
    if judged:
        row("–", "judge on inputs, one thickness", _judge_rho(bundle.test.images, bundle, spacing))
    ceiling = [_rho(truth[:, m] / thickness, truth[:, m]) if n in PER_THICKNESS else None
               for m, n in enumerate(names)]
    if any(v is not None for v in ceiling):
        row("–", "in-plane truth (volume / slice thickness)", ceiling)
    if label != "after_stage1":  # W is fitted from Stage II on
        with torch.no_grad():
            a_hat = torch.cat([run.model(bundle.test.images[i:i + 64]).attributes
                               for i in range(0, len(bundle.test), 64)]).double().cpu().numpy()
        if any(n in PER_AREA for n in names):
            volume = truth * (thickness[:, None] / 10.0)  # cm² × mm / 10 = mL
            row(label, "W (model) against the slice volumes (area × slice thickness)",
                [_rho(a_hat[:, m], volume[:, m]) if n in PER_AREA else None for m, n in enumerate(names)])
            row("–", "in-plane truth against the slice volumes",
                [_rho(truth[:, m], volume[:, m]) if n in PER_AREA else None for m, n in enumerate(names)])
        for m, n in enumerate(names):
            zero = truth[:, m] == 0
            if 0.2 <= zero.mean() < 1.0:
                from sklearn.metrics import roc_auc_score

                tied = a_hat[:, m].copy()
                tied[zero] = a_hat[:, m].min() - 1.0
                zero_heavy.append({"attribute": n, "model": label, "n_zero": int(zero.sum()), "n": len(zero),
                                   "auc_zero_vs_nonzero": float(roc_auc_score(~zero, a_hat[:, m])),
                                   "rho_zeros_tied": _rho(tied, truth[:, m])})
    return {"attributes": names, "n_train": len(bundle.train), "n_test": len(bundle.test),
            "n_atoms": int(run.model.mapper.n_atoms), "spatial_dims": run.config.data.spatial_dims,
            "thickness_mm": [float(thickness.min()), float(thickness.max())], "rows": rows,
            "zero_heavy": zero_heavy}


def usage_markdown(result: dict[str, Any]) -> str:
    """The readout as one Markdown table (held-out ρ), with a header line and the zero-heavy lines."""
    names = result["attributes"]
    lo, hi = result["thickness_mm"]
    lines = [f"held-out Spearman ρ on {result['n_test']} test items (slice thickness {lo:g}–{hi:g} mm), "
             f"readers fitted on {result['n_train']} training items ({result['n_atoms']} atoms)", "",
             "| model | reader | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for r in result["rows"]:
        lines.append(f"| {r['model']} | {r['reader']} | "
                     + " | ".join("–" if v is None else f"{v:.3f}" for v in r["rho"]) + " |")
    for z in result["zero_heavy"]:
        tied = "–" if z["rho_zeros_tied"] is None else f"{z['rho_zeros_tied']:.3f}"
        lines += ["", f"{z['attribute']} ({z['model']}): {z['n_zero']} of {z['n']} test items at 0; AUC of â "
                      f"for 0 vs > 0 {z['auc_zero_vs_nonzero']:.3f}; ρ with the zero items' â tied {tied}"]
    return "\n".join(lines)
