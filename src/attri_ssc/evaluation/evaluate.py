"""``attri-ssc evaluate``: one results JSON per run (Tables 1, 2 and 4's numbers).

Reconstruction metrics (PSNR, SSIM, MI, MMD; FID and LPIPS when their weights were
fetched) against the input and, on phantoms, against the noise-free image; correlation of
each attribute prediction with its ground truth; AR-VAE's disentanglement metrics; code
density. Reports render this JSON; they never touch models.

A metric that needs more samples than the split has (:data:`MIN_SAMPLES`), or larger images
(SSIM's 11-voxel window), is skipped: its value is ``None`` and ``results["skipped"]`` says
why, e.g. ``{"mig": "needs >= 3 test samples, got 2"}``.
"""

from __future__ import annotations

import dataclasses

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from attri_ssc.errors import DataError
from attri_ssc.evaluation.predict import Predictions, predict
from attri_ssc.io_utils import write_json
from attri_ssc.runs import LoadedRun, load_run

RESULTS_NAME = "results.json"

#: Samples (items of the split: slices of a 2D run, volumes of a 3D run) each metric needs.
MIN_SAMPLES: dict[str, int] = {
    "mmd": 2,  # unbiased MMD² needs two samples per set
    "fid": 2,  # a covariance per set
    "spearman": 3,  # with 2 samples every ρ is ±1
    "pearson": 3,
    "ar_loss": 2,  # a pair
    # the disentanglement metrics (binned mutual information, regressions)
    "interpretability": 3, "mig": 3, "sap": 3, "scc": 3, "modularity": 3,
}
DISENTANGLEMENT_METRICS = ("interpretability", "mig", "sap", "scc", "modularity")


def enough_samples(metric: str, n: int, split: str, skipped: dict[str, str]) -> bool:
    """Whether ``n`` samples suffice for ``metric``; if not, record why in ``skipped``."""
    need = MIN_SAMPLES[metric]
    if n >= need:
        return True
    skipped[metric] = f"needs >= {need} {split} samples, got {n}"
    return False


def inception_features(images: Any, weights_dir: str | None) -> Any:
    """FID Inception pool features of every slice, (N_slices, 2048), or None without weights.

    Features of a reference set are cached next to the weights, keyed by the images'
    sha256, so evaluating several runs on one split computes them once.
    """
    import hashlib

    from safetensors.torch import load_file, save_file

    from attri_ssc.evaluation.fid import InceptionFeatureExtractor, load_inception, slices_2d
    from attri_ssc.evaluation.weights import resolve_weights_dir
    from attri_ssc.io_utils import atomic_write

    network = load_inception(weights_dir)
    if network is None:
        return None
    slices = slices_2d(images.float().clamp(0, 1))
    key = hashlib.sha256(slices.contiguous().numpy().tobytes()).hexdigest()[:32]
    cache = resolve_weights_dir(weights_dir) / "feature_cache" / f"{key}.safetensors"
    if cache.exists():
        return load_file(str(cache))["features"]
    features = InceptionFeatureExtractor(network).__call__(slices)
    atomic_write(cache, lambda tmp: save_file({"features": features.contiguous()}, str(tmp)))
    return features


def reconstruction_block(pred: Any, target: Any, weights_dir: str | None, with_fid: bool = True,
                         skipped: dict[str, str] | None = None, split: str = "test") -> dict[str, Any]:
    """PSNR/SSIM/MI/MMD (×10²) and FID/LPIPS between reconstructions and references.

    MMD and FID need :data:`MIN_SAMPLES` samples, SSIM images of at least its window
    along every axis; without that they are ``None`` and ``skipped`` (if given) says why.
    """
    from attri_ssc.evaluation.fid import fid_from_features
    from attri_ssc.evaluation.lpips import compute_lpips
    from attri_ssc.evaluation.metrics import ReconstructionMetrics, ssim_window
    from attri_ssc.evaluation.weights import NOT_COMPUTED

    skipped = {} if skipped is None else skipped
    n = int(pred.shape[0])
    spatial, window = tuple(pred.shape[2:]), ssim_window()
    with_ssim = min(spatial) >= window
    if not with_ssim:
        skipped["ssim"] = f"needs every spatial extent >= {window} voxels (its window), got {spatial}"
    metrics = ReconstructionMetrics(ssim=with_ssim)
    for start in range(0, n, 64):
        metrics.update(pred[start:start + 64], target[start:start + 64])
    block: dict[str, Any] = dict(metrics.compute(mmd=enough_samples("mmd", n, split, skipped)))
    if with_fid:
        if not enough_samples("fid", n, split, skipped):
            block["fid"] = None
        else:
            real = inception_features(target, weights_dir)
            block["fid"] = (NOT_COMPUTED if real is None
                            else fid_from_features(real, inception_features(pred, weights_dir)))
    lp = compute_lpips(pred, target, weights_dir=weights_dir)
    block["lpips"] = lp if isinstance(lp, str) else float(lp.mean())
    return block


def attribute_block(pred: np.ndarray, truth: np.ndarray, names: tuple[str, ...],
                    skipped: dict[str, str] | None = None, split: str = "test") -> dict[str, Any]:
    """Spearman and Pearson (with p-values) of each prediction against its ground truth
    (``None`` for every attribute, and a line in ``skipped``, below :data:`MIN_SAMPLES`)."""
    skipped = {} if skipped is None else skipped
    out: dict[str, Any] = {}
    enough = [enough_samples(m, len(pred), split, skipped) for m in ("spearman", "pearson")]
    if not all(enough):
        return {name: {"spearman": None, "pearson": None, "note": skipped["spearman"]} for name in names}
    for i, name in enumerate(names):
        x, y = pred[:, i], truth[:, i]
        if np.std(x) == 0 or np.std(y) == 0:
            out[name] = {"spearman": None, "pearson": None, "note": "constant prediction or attribute"}
            continue
        s = stats.spearmanr(x, y)
        p = stats.pearsonr(x, y)
        out[name] = {"spearman": float(s.statistic), "spearman_p": float(s.pvalue),
                     "pearson": float(p.statistic), "pearson_p": float(p.pvalue)}
    return out


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    return value


def evaluate_predictions(run: LoadedRun, preds: Predictions, weights_dir: str | None = None,
                         split: str = "test") -> dict[str, Any]:
    """All metrics of a run from its predictions on one split (``split`` names it in the
    ``skipped`` lines)."""
    from attri_ssc.evaluation.disentanglement import compute_all
    from attri_ssc.losses import attribute_regularization_loss

    names = run.attribute_names
    truth = preds.raw_attributes.numpy()
    n = int(preds.images.shape[0])
    skipped: dict[str, str] = {}
    results: dict[str, Any] = {
        "family": run.family,
        "n_samples": n,
        "reconstruction": reconstruction_block(preds.recon, preds.images, weights_dir, skipped=skipped, split=split),
    }
    if preds.clean is not None:
        # FID is a distance between image sets; it is reported against the inputs only.
        results["reconstruction_vs_clean"] = reconstruction_block(preds.recon, preds.clean, weights_dir,
                                                                  with_fid=False, skipped=skipped, split=split)
    results["attributes"] = attribute_block(preds.attributes.numpy(), truth, names, skipped, split)
    # L_AR (Eq. 11) over all pairs of the split; sign(Δa) does not depend on the scaling.
    results["ar_loss"] = (float(attribute_regularization_loss(preds.attributes, preds.raw_attributes,
                                                              delta=run.config.train.delta))
                          if enough_samples("ar_loss", n, split, skipped) else None)
    if run.family == "attri_ssc":
        attribute_dims = None
        latents = preds.latents.numpy()
    elif run.family in ("ar_vae", "attri_vae"):
        attribute_dims = list(range(len(names)))
        latents = preds.latents.numpy()
    else:
        attribute_dims = None
        latents = preds.latents.numpy()
    enough = all([enough_samples(m, n, split, skipped) for m in DISENTANGLEMENT_METRICS])
    results["disentanglement"] = (compute_all(latents, truth, attribute_dims=attribute_dims) if enough
                                  else dict.fromkeys(DISENTANGLEMENT_METRICS))
    if run.family == "attri_ssc":
        results["attribute_proxy_disentanglement"] = (
            compute_all(preds.attributes.numpy(), truth, attribute_dims=list(range(len(names)))) if enough
            else dict.fromkeys(DISENTANGLEMENT_METRICS))
        results["code_density"] = preds.density
        results["code_statistics"] = preds.code_statistics
        mapper = run.model.mapper
        results["atoms"] = {name: mapper.atoms_of(i) for i, name in enumerate(names)}
    results["skipped"] = skipped
    return _finite_or_none(results)


def evaluate_run(run_dir: str | Path, data_dir: str | Path | None = None, split: str = "test",
                 weights_dir: str | None = None, progress: bool = True, layout: str | None = None) -> dict[str, Any]:
    """Evaluate ``run_dir`` on ``split`` and write ``RUN/results.json``; returns the results.

    The data folder is read in the layout the run recorded (``layout`` overrides it)."""
    from attri_ssc.data.datasets import build_datasets

    started = time.perf_counter()
    run = load_run(run_dir)
    data_dir = Path(data_dir or run.data_dir)
    # the split the run was trained on (its split.json), not one drawn again
    data_cfg = run.config.data if layout is None else dataclasses.replace(run.config.data, layout=layout)
    bundle = build_datasets(data_dir, data_cfg, split=run.split or None)
    dataset = getattr(bundle, split, None)
    if dataset is None or len(dataset) < 1:
        raise DataError(f"split {split!r} of {data_dir} is empty: nothing to evaluate")
    preds = predict(run, dataset, progress=progress)
    results = evaluate_predictions(run, preds, weights_dir, split)
    groups: dict[str, int] = {}
    for cid in dataset.case_ids:  # items per group (EMIDEC N/P, ACDC pathology group, manifest group)
        groups[bundle.groups.get(cid, "")] = groups.get(bundle.groups.get(cid, ""), 0) + 1
    results.update({"run": str(run_dir), "data_dir": str(data_dir), "split": split, "layout": bundle.layout,
                    "items_per_group": dict(sorted(groups.items())),
                    "attribute_names": list(run.attribute_names), "config_name": run.config.name,
                    "seed": run.config.train.seed, "eval_time_s": time.perf_counter() - started})
    write_json(Path(run_dir) / RESULTS_NAME, results)
    return results
