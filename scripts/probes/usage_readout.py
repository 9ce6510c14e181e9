"""Probe: how much of each attribute the atom usages hold, read out by W and by other readers.

Usage: python scripts/probes/usage_readout.py RUN [--data DIR] [--checkpoint after_stage1 ...]

â = W·(K·ũ) reads attributes from the normalised atom usages only (Eqs. 7–8), so a low
held-out ρ(â, a) can come from W (a linear map over top-k atoms) or from the usages
themselves (global pooling keeps how much each atom fires, not where). This probe fits
other readers on the *same* training-split features K·ũ and scores them on the test split:

* ``W (model)``: the run's own â (Stage III: top-k atoms per attribute);
* ``ridge``: linear least squares over all K atoms (ridge 1e-3, no intercept, as Stage II's
  initialisation);
* ``kernel ridge``: RBF kernel ridge over all K atoms, α and γ picked by 4-fold CV on the
  training split (scikit-learn);
* ``boosted trees``: scikit-learn's histogram gradient boosting over all K atoms.

If the nonlinear readers do no better than ridge, the attribute is missing from the usages,
not from W. For reference, image-level readers that bypass the usages: the edit verifier's
model-free judge (an intensity segmentation; cavity, myocardium and wall thickness only) on
the test inputs and on the model's reconstructions. The judge is given one slice thickness
for every image, as a slice shows none (volumes are in-plane areas × the case's slice
thickness, which varies between cases), so it reads what the usage readers could read. The
last row, ``in-plane truth``, ranks the ground-truth in-plane areas (the masks' volumes
divided by their case's slice thickness) against the volumes: about the best a reader of a
single slice can do on the volume attributes, unless thickness leaves a trace in the image. ``--checkpoint NAME`` scores ``RUN/checkpoints/NAME`` instead of the final model
(for example ``after_stage1``: what the unsupervised codes hold before any attribute loss).
For a run that supervises in-plane areas, two more rows score the final â and the true areas
against the slice volumes (area × the case's slice thickness). For an attribute at 0 on many
test slices (the infarct), a line gives the AUC of â for zero against non-zero and the ρ
the model would have were the zero slices' â tied. Prints one Markdown table of held-out
Spearman ρ per reader and attribute.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.kernel_ridge import KernelRidge
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV

from attri_ssc.checkpoint import load_checkpoint
from attri_ssc.commands.interpret import load_run_and_data
from attri_ssc.interpret.judge import measure_batch
from attri_ssc.training.state import load_model_tensors


def usage_features(model, images: torch.Tensor, batch: int = 64) -> np.ndarray:
    """K·ũ of each image: (N, 1, *S) → (N, K), the mapper's own input."""
    with torch.no_grad():
        return torch.cat([model.mapper.features(model.backbone(images[i:i + batch]).codes)
                          for i in range(0, len(images), batch)]).double().numpy()


def _rho(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(spearmanr(pred, truth)[0])


def readouts(model, bundle) -> dict[str, list[float]]:
    """Reader name → held-out Spearman ρ per attribute (in the bundle's attribute order)."""
    f_train, f_test = usage_features(model, bundle.train.images), usage_features(model, bundle.test.images)
    y_train, y_test = bundle.train.attributes.double().numpy(), bundle.test.attributes.double().numpy()
    weight = model.mapper.effective_weight().detach().double().numpy()
    a_hat = f_test @ weight.T  # the model's â = W·(K ũ), from the same features
    gram = f_train.T @ f_train + 1e-3 * len(f_train) * np.eye(f_train.shape[1])
    linear = f_test @ np.linalg.solve(gram, f_train.T @ y_train)
    out: dict[str, list[float]] = {"W (model)": [], "ridge": [], "kernel ridge": [], "boosted trees": []}
    for m in range(y_train.shape[1]):
        kernel = GridSearchCV(KernelRidge(kernel="rbf"), {"alpha": [1e-3, 1e-2, 1e-1, 1.0],
                                                          "gamma": [1e-3, 1e-2, 1e-1]}, cv=4)
        kernel.fit(f_train, y_train[:, m])
        trees = HistGradientBoostingRegressor(max_iter=300, random_state=0).fit(f_train, y_train[:, m])
        out["W (model)"].append(_rho(a_hat[:, m], y_test[:, m]))
        out["ridge"].append(_rho(linear[:, m], y_test[:, m]))
        out["kernel ridge"].append(_rho(kernel.predict(f_test), y_test[:, m]))
        out["boosted trees"].append(_rho(trees.predict(f_test), y_test[:, m]))
    return out


#: Attributes that are an in-plane quantity × the case's slice thickness.
PER_THICKNESS = ("lv_volume", "myo_volume", "infarct_volume")
#: The in-plane areas (cm²) those volumes are made of.
PER_AREA = ("lv_area", "myo_area", "infarct_area")


def judge_rho(images: torch.Tensor, bundle, spacing_mm: float) -> list[float | None]:
    """Held-out ρ of the model-free judge on test-split ``images`` (N, 1, H, W), given one slice
    thickness for all (None: an attribute the judge does not measure)."""
    got = measure_batch(images, spacing_mm, 1.0)
    valid = got["valid"] > 0
    truth = bundle.test.raw_attributes.double().numpy()
    return [_rho(got[n][valid], truth[valid, m]) if n in got else None for m, n in enumerate(bundle.attribute_names)]


def in_plane_ceiling(bundle) -> list[float | None]:
    """ρ of the ground-truth in-plane quantity (volume / the case's slice thickness) against the
    volume, per attribute (None: not a per-thickness attribute)."""
    truth = bundle.test.raw_attributes.double().numpy()
    thickness = np.array([float(bundle.cases[c].spacing[2]) for c in bundle.test.case_ids])
    return [_rho(truth[:, m] / thickness, truth[:, m]) if n in PER_THICKNESS else None
            for m, n in enumerate(bundle.attribute_names)]


def _row(model_label: str, reader: str, values: list[float | None]) -> str:
    return f"| {model_label} | {reader} | " + " | ".join("–" if v is None else f"{v:.3f}" for v in values) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--data", type=Path, default=None, help="data folder (default: the run's)")
    parser.add_argument("--checkpoint", action="append", default=[],
                        help="score RUN/checkpoints/NAME (repeatable; 'final' is RUN/model, the default)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    run, bundle = load_run_and_data(args.run, args.data)
    names = list(bundle.attribute_names)
    thickness = [float(bundle.cases[c].spacing[2]) for c in bundle.test.case_ids]
    judged = run.config.data.spatial_dims == 2
    spacing = float(run.config.data.spacing_mm)
    print(f"held-out Spearman ρ on {len(bundle.test)} test items (slice thickness {min(thickness):g}–"
          f"{max(thickness):g} mm), readers fitted on {len(bundle.train)} training items "
          f"({run.model.mapper.n_atoms} atoms)\n")
    print("| model | reader | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for label in args.checkpoint or ["final"]:
        tensors, _ = load_checkpoint(args.run / "model" if label == "final" else args.run / "checkpoints" / label)
        load_model_tensors(run.model, tensors)
        run.model.eval()
        for reader, values in readouts(run.model, bundle).items():
            if not (label == "after_stage1" and reader == "W (model)"):  # W is not fitted before Stage II
                print(_row(label, reader, values))
        if judged:
            ds = bundle.test
            with torch.no_grad():
                recon = torch.cat([run.model.backbone(ds.images[i:i + 64]).recon.clamp(0, 1)
                                   for i in range(0, len(ds), 64)])
            print(_row(label, "judge on reconstructions, one thickness", judge_rho(recon, bundle, spacing)))
    # readers of the data alone (no model)
    if judged:
        print(_row("–", "judge on inputs, one thickness", judge_rho(bundle.test.images, bundle, spacing)))
    ceiling = in_plane_ceiling(bundle)
    if any(v is not None for v in ceiling):
        print(_row("–", "in-plane truth (volume / slice thickness)", ceiling))
    # the last model scored above (W is fitted from Stage II on)
    with torch.no_grad():
        a_hat = torch.cat([run.model(bundle.test.images[i:i + 64]).attributes
                           for i in range(0, len(bundle.test), 64)]).double().numpy()
    truth = bundle.test.raw_attributes.double().numpy()
    if any(n in PER_AREA for n in names) and label != "after_stage1":
        # a run that supervises areas, against the slice volumes
        volume = truth * (np.asarray(thickness)[:, None] / 10.0)  # cm² × mm / 10 = mL
        print(_row(label, "W (model) against the slice volumes (area × slice thickness)",
                   [_rho(a_hat[:, m], volume[:, m]) if n in PER_AREA else None for m, n in enumerate(names)]))
        print(_row("–", "in-plane truth against the slice volumes",
                   [_rho(truth[:, m], volume[:, m]) if n in PER_AREA else None for m, n in enumerate(names)]))
    for m, n in enumerate(names):
        zero = truth[:, m] == 0
        if 0.2 <= zero.mean() < 1.0 and label != "after_stage1":
            # an attribute tied at 0 on many slices (the infarct): how well â separates the zeros,
            # and its ρ were those slices' â tied too
            tied = a_hat[:, m].copy()
            tied[zero] = a_hat[:, m].min() - 1.0
            print(f"\n{n} ({label}): {zero.sum()} of {len(zero)} test slices at 0; AUC of â for 0 vs > 0 "
                  f"{roc_auc_score(~zero, a_hat[:, m]):.3f}; ρ with the zero slices' â tied {_rho(tied, truth[:, m]):.3f}")

if __name__ == "__main__":
    main()
