"""Generating new images: a prior over sparse codes fitted on training codes (beyond the paper).

The model is not variational (DESIGN.md "Generation"), so sampling needs a prior p(Z).
Ours keeps the spatial and cross-atom structure of real code maps and their sparsity:

1. Flatten each training code map Z (K, *s) to a vector, project it on its first
   ``n_components`` principal components (scikit-learn PCA), and fit a Gaussian mixture
   with ``n_mixtures`` full-covariance components to the projections.
2. To sample: draw from the mixture, map back through the PCA, and *sparsify*: zero every
   entry of atom j whose magnitude is below τ_j (hard threshold), with τ_j chosen at fit
   time so that atom j is active at the same fraction of locations as in the training
   codes. Samples therefore have the training code density atom by atom.

Sample quality: the MMD (and FID when the Inception weights were fetched) between decoded
samples and held-out images, next to the same numbers for the reconstructions of those
held-out images (what a perfect prior could at best reach with this decoder).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor


class CodePrior:
    """PCA + Gaussian-mixture prior over code maps, sparsified to the training density.

    Args:
        n_components: principal components kept (>= 1; capped at N − 1 and the code size).
        n_mixtures: Gaussian-mixture components (>= 1; capped at N // 2).
        seed: seeds the mixture fit and the threshold calibration.
        calibration_samples: samples drawn at fit time to set the per-atom thresholds (>= 100).
    """

    def __init__(self, n_components: int = 32, n_mixtures: int = 8, seed: int = 0,
                 calibration_samples: int = 4000) -> None:
        if n_components < 1:
            raise ValueError(f"n_components must be >= 1, got n_components={n_components}")
        if n_mixtures < 1:
            raise ValueError(f"n_mixtures must be >= 1, got n_mixtures={n_mixtures}")
        if calibration_samples < 100:
            raise ValueError(f"calibration_samples must be >= 100, got calibration_samples={calibration_samples}")
        self.n_components = int(n_components)
        self.n_mixtures = int(n_mixtures)
        self.seed = int(seed)
        self.calibration_samples = int(calibration_samples)
        self.code_shape: tuple[int, ...] | None = None
        self.train_density: np.ndarray | None = None  # (K,)
        self.thresholds: np.ndarray | None = None  # (K,)

    def fit(self, codes: Tensor) -> "CodePrior":
        """Fit on training codes (N, K, *s), N >= 2."""
        from sklearn.decomposition import PCA
        from sklearn.mixture import GaussianMixture

        if codes.dim() < 3 or codes.shape[0] < 2:
            raise ValueError(f"codes must be (N >= 2, K, *spatial), got shape {tuple(codes.shape)}")
        self.code_shape = tuple(codes.shape[1:])
        x = codes.detach().double().reshape(codes.shape[0], -1).cpu().numpy()  # (N, K·|s|)
        k = self.code_shape[0]
        self.train_density = (codes.detach() != 0).transpose(0, 1).reshape(k, -1).double().mean(1).cpu().numpy()
        n_comp = max(1, min(self.n_components, x.shape[0] - 1, x.shape[1]))
        self.pca = PCA(n_components=n_comp, random_state=self.seed).fit(x)
        y = self.pca.transform(x)
        n_mix = max(1, min(self.n_mixtures, x.shape[0] // 2))
        self.gmm = GaussianMixture(n_components=n_mix, covariance_type="full", reg_covar=1e-4,
                                   random_state=self.seed).fit(y)
        dense = self._dense(self.calibration_samples, np.random.default_rng(self.seed))  # (M, K, L)
        mags = np.abs(dense).transpose(1, 0, 2).reshape(k, -1)  # (K, M·L)
        self.thresholds = np.array([
            np.inf if self.train_density[j] == 0 else np.quantile(mags[j], 1.0 - self.train_density[j])
            for j in range(k)
        ])
        return self

    def _dense(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n un-sparsified samples, (n, K, L)."""
        self.gmm.random_state = int(rng.integers(0, 2**31 - 1))
        y, _ = self.gmm.sample(n)
        perm = rng.permutation(n)  # GaussianMixture.sample returns samples grouped by component
        x = self.pca.inverse_transform(y[perm])
        return x.reshape(n, self.code_shape[0], -1)

    def sample(self, n: int, seed: int = 0) -> Tensor:
        """n code maps (n, K, *s), float32, sparse at the training density per atom."""
        if self.thresholds is None:
            raise RuntimeError("CodePrior.sample called before fit")
        if n < 1:
            raise ValueError(f"n must be >= 1, got n={n}")
        dense = self._dense(n, np.random.default_rng(seed))
        sparse = np.where(np.abs(dense) > self.thresholds[None, :, None], dense, 0.0)
        return torch.from_numpy(sparse.reshape(n, *self.code_shape).astype(np.float32))

    def state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """The fitted prior as float64 tensors plus JSON-ready settings (no pickle); the inverse
        of :meth:`from_state`, which rebuilds a prior that samples bit-identically."""
        if self.thresholds is None:
            raise RuntimeError("CodePrior.state called before fit")
        arrays = {
            "pca_mean": self.pca.mean_, "pca_components": self.pca.components_,
            "pca_explained_variance": self.pca.explained_variance_,
            "pca_explained_variance_ratio": self.pca.explained_variance_ratio_,
            "gmm_weights": self.gmm.weights_, "gmm_means": self.gmm.means_,
            "gmm_covariances": self.gmm.covariances_, "gmm_precisions_cholesky": self.gmm.precisions_cholesky_,
            "train_density": self.train_density, "thresholds": self.thresholds,
        }
        tensors = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64)) for k, v in arrays.items()}
        meta = {"n_components": self.n_components, "n_mixtures": self.n_mixtures, "seed": self.seed,
                "calibration_samples": self.calibration_samples, "code_shape": list(self.code_shape)}
        return tensors, meta

    @classmethod
    def from_state(cls, tensors: dict[str, Tensor], meta: dict[str, Any]) -> "CodePrior":
        """Rebuild a fitted prior from :meth:`state` (the scikit-learn estimators are refilled with
        the saved parameters, never unpickled)."""
        from sklearn.decomposition import PCA
        from sklearn.mixture import GaussianMixture

        prior = cls(meta["n_components"], meta["n_mixtures"], meta["seed"], meta["calibration_samples"])
        arr = {k: v.double().numpy() for k, v in tensors.items()}
        prior.code_shape = tuple(int(s) for s in meta["code_shape"])
        prior.train_density, prior.thresholds = arr["train_density"], arr["thresholds"]
        pca = PCA(n_components=int(arr["pca_components"].shape[0]), random_state=prior.seed)
        pca.mean_, pca.components_ = arr["pca_mean"], arr["pca_components"]
        pca.explained_variance_ = arr["pca_explained_variance"]
        pca.explained_variance_ratio_ = arr["pca_explained_variance_ratio"]
        pca.n_components_ = int(arr["pca_components"].shape[0])
        pca.n_features_in_ = int(arr["pca_components"].shape[1])
        prior.pca = pca
        gmm = GaussianMixture(n_components=int(arr["gmm_weights"].shape[0]), covariance_type="full",
                              reg_covar=1e-4, random_state=prior.seed)
        gmm.weights_, gmm.means_ = arr["gmm_weights"], arr["gmm_means"]
        gmm.covariances_, gmm.precisions_cholesky_ = arr["gmm_covariances"], arr["gmm_precisions_cholesky"]
        gmm.n_features_in_ = int(arr["gmm_means"].shape[1])
        prior.gmm = gmm
        return prior

    def describe(self) -> dict[str, Any]:
        """JSON-ready description of the fitted prior."""
        return {
            "kind": "pca_gmm_sparsified",
            "n_components": int(self.pca.n_components_) if hasattr(self, "pca") else self.n_components,
            "explained_variance": float(self.pca.explained_variance_ratio_.sum()) if hasattr(self, "pca") else None,
            "n_mixtures": int(self.gmm.n_components) if hasattr(self, "gmm") else self.n_mixtures,
            "train_density": float(self.train_density.mean()) if self.train_density is not None else None,
            "seed": self.seed,
        }


@torch.no_grad()
def decode_samples(backbone, codes: Tensor, batch_size: int = 32) -> Tensor:
    """Decode sampled codes (n, K, *s) → images (n, 1, *S) clamped to [0, 1]."""
    backbone.eval()
    device = next(backbone.parameters()).device
    parts = [backbone.decode_codes(codes[i:i + batch_size].to(device)).cpu() for i in range(0, codes.shape[0], batch_size)]
    return torch.cat(parts).clamp(0.0, 1.0)


def sample_quality(samples: Tensor, held_out: Tensor, recon: Tensor | None = None,
                   weights_dir: str | None = None) -> dict[str, Any]:
    """MMD×10² (and FID) of samples against held-out images, with reconstructions as reference.

    Args:
        samples: (n, 1, *S) decoded samples in [0, 1].
        held_out: (m, 1, *S) held-out images.
        recon: (m, 1, *S) reconstructions of ``held_out``, or None.
        weights_dir: folder of fetched Inception weights (FID is "not computed" without).
    """
    from attri_ssc.evaluation.evaluate import inception_features
    from attri_ssc.evaluation.fid import fid_from_features
    from attri_ssc.evaluation.metrics import compute_mmd
    from attri_ssc.evaluation.weights import NOT_COMPUTED

    # The held-out set's Inception features once for both FIDs (and from the cache beside the weights
    # when `evaluate` has computed them for the same split: on the demo, half of this step's time).
    real = inception_features(held_out, weights_dir)

    def fid(fake: Tensor) -> float | str:
        return NOT_COMPUTED if real is None else fid_from_features(real, inception_features(fake, weights_dir))

    out: dict[str, Any] = {
        "n_samples": int(samples.shape[0]),
        "n_held_out": int(held_out.shape[0]),
        "mmd_x100": 100.0 * compute_mmd(samples, held_out),
        "fid": fid(samples),
    }
    if recon is not None:
        out["reference_recon_mmd_x100"] = 100.0 * compute_mmd(recon, held_out)
        out["reference_recon_fid"] = fid(recon)
    return out


__all__ = ["CodePrior", "decode_samples", "sample_quality"]
