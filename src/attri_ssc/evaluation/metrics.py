"""Reconstruction metrics (paper Section 4, Appendix A.3): PSNR, SSIM, MI and MMD.

Each metric is a pure ``compute_*`` function on image batches ``(B, C, *spatial)``
(``spatial`` of length 2 or 3, intensities nominally in ``[0, data_range]``), plus a thin
aggregator, :class:`ReconstructionMetrics`, that collects per-sample values over an
evaluation set (the MONAI ``compute_ssim_and_cs`` / ``SSIMMetric`` split).

Definitions used (see DESIGN.md "Evaluation"):

- **PSNR** per sample, ``10 log10(data_range² / MSE)`` over all voxels and channels, via
  ``torchmetrics.functional.peak_signal_noise_ratio`` (computed in float64; it agrees
  with scikit-image to ~1e-6 dB, the precision of the float32 ln 10 torchmetrics uses);
  identical images give ``inf`` (as in scikit-image).
- **SSIM** per sample, Wang et al. (2004) with a Gaussian window (σ = 1.5, truncated at
  3.5σ, so an 11-tap window), K1 = 0.01, K2 = 0.03, population (not sample) covariances,
  averaged over the interior where the window fits inside the image. This is exactly
  ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1)``. 2D uses torchmetrics' SSIM map cropped
  to that interior (torchmetrics' own mean includes a reflect-padded border and differs
  from scikit-image by ~1e-3). 3D uses scikit-image per sample: torchmetrics' 3D SSIM
  agrees with it after the same crop but runs a dense 11³ convolution that is 15–30×
  slower on CPU (and ~30× slower again in float64).
- **MI** per sample, between target and prediction intensities: both are clipped to
  ``[0, data_range]`` and quantised into ``bins`` equal-width bins; from the joint
  histogram over the sample's voxels, ``MI = Σ p(a, b) log(p(a, b) / (p(a) p(b)))`` in
  **nats**. ``MI(x, x)`` is the entropy of the quantised image. The paper (A.3) describes
  MI loosely as information about the input preserved by the model; we measure it
  between image and reconstruction, which is model-agnostic.
- **MMD²** between two *sets* (reconstructions and originals, each image flattened to a
  row): Gaussian kernel ``k(x, y) = exp(-‖x − y‖² / (2σ²))`` with σ by the median
  heuristic. The unbiased estimator (default) can be slightly negative when the sets
  come from the same distribution; the biased one (V-statistic) is never negative.
  The paper reports MMD × 10²; :class:`ReconstructionMetrics` does that scaling.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from skimage.metrics import structural_similarity
from torch import Tensor
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

__all__ = [
    "compute_psnr",
    "compute_ssim",
    "compute_mutual_information",
    "compute_mmd",
    "median_heuristic_bandwidth",
    "ReconstructionMetrics",
]

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5  # scikit-image's and torchmetrics' Gaussian window: 2*int(3.5σ+0.5)+1 taps


def _check_pair(pred: Tensor, target: Tensor) -> None:
    """Validate a (pred, target) pair of image batches ``(B, C, *spatial)``."""
    if not isinstance(pred, Tensor) or not isinstance(target, Tensor):
        raise TypeError(
            f"pred and target must be torch tensors, got {type(pred).__name__} and {type(target).__name__}"
        )
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    if pred.ndim not in (4, 5):
        raise ValueError(
            f"expected images (B, C, *spatial) with 2 or 3 spatial dims, got shape {tuple(pred.shape)}"
        )
    if pred.shape[0] < 1 or pred.shape[1] < 1:
        raise ValueError(f"batch and channel sizes must be >= 1, got shape {tuple(pred.shape)}")


def _check_data_range(data_range: float) -> float:
    if not (isinstance(data_range, (int, float)) and math.isfinite(data_range) and data_range > 0):
        raise ValueError(f"data_range must be a positive finite number, got data_range={data_range!r}")
    return float(data_range)


def compute_psnr(pred: Tensor, target: Tensor, data_range: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio of each sample, in dB.

    Args:
        pred: reconstructions, (B, C, *spatial) with 2 or 3 spatial dims.
        target: originals, same shape.
        data_range: the intensity range (1.0 for images in [0, 1]); values are not clipped.
    Returns:
        (B,) float64 PSNR, ``10 log10(data_range² / MSE)`` with the MSE over all channels
        and voxels of a sample; ``inf`` where pred equals target.
    """
    _check_pair(pred, target)
    data_range = _check_data_range(data_range)
    reduce_dims = tuple(range(1, pred.ndim))
    return peak_signal_noise_ratio(
        pred.detach().double(),
        target.detach().double(),
        data_range=data_range,
        reduction="none",
        dim=reduce_dims,
    )


def ssim_window(sigma: float = SSIM_SIGMA) -> int:
    """Taps per axis of the Gaussian SSIM window: ``2*int(3.5σ + 0.5) + 1`` (11 for σ = 1.5).
    Every spatial extent of an image must be at least this for SSIM."""
    return 2 * int(SSIM_TRUNCATE * sigma + 0.5) + 1


def compute_ssim(pred: Tensor, target: Tensor, data_range: float = 1.0, sigma: float = SSIM_SIGMA) -> Tensor:
    """Structural similarity of each sample (Gaussian window, scikit-image convention).

    Matches ``skimage.metrics.structural_similarity(target, pred, data_range=data_range,
    gaussian_weights=True, sigma=sigma, use_sample_covariance=False)`` (per channel,
    averaged over channels): window ``2*int(3.5σ + 0.5) + 1`` taps per axis (11 for
    σ = 1.5), K1 = 0.01, K2 = 0.03, mean over the interior voxels whose window lies in the
    image. 2D runs torchmetrics on the tensor's device and dtype (float16/bfloat16 are
    promoted to float32); 3D runs scikit-image on CPU in float64, one sample at a time.

    Args:
        pred: reconstructions, (B, C, *spatial) with 2 or 3 spatial dims; every spatial
            extent must be at least the window size (11 for σ = 1.5).
        target: originals, same shape.
        data_range: intensity range (1.0 for images in [0, 1]); values are not clipped.
        sigma: Gaussian window standard deviation in voxels, > 0 (default 1.5, Wang et al.).
    Returns:
        (B,) float64 SSIM.
    """
    _check_pair(pred, target)
    data_range = _check_data_range(data_range)
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive finite number, got sigma={sigma!r}")
    window = ssim_window(sigma)
    radius = window // 2
    spatial = tuple(pred.shape[2:])
    if min(spatial) < window:
        raise ValueError(
            f"SSIM with sigma={sigma} uses a {window}-voxel window; every spatial extent must be >= {window}, "
            f"got spatial shape {spatial}"
        )
    spatial_dims = pred.ndim - 2
    if spatial_dims == 2:
        dtype = pred.dtype if pred.dtype in (torch.float32, torch.float64) else torch.float32
        _, ssim_map = structural_similarity_index_measure(
            pred.detach().to(dtype),
            target.detach().to(dtype),
            gaussian_kernel=True,
            sigma=[float(sigma)] * 2,
            kernel_size=[window] * 2,
            data_range=data_range,
            reduction="none",
            return_full_image=True,
        )
        # torchmetrics pads by reflection; keep only voxels whose window lies inside the image
        interior = ssim_map[..., radius:-radius, radius:-radius]  # (B, C, H - 2r, W - 2r)
        return interior.flatten(1).mean(dim=1).double()
    # 3D: scikit-image per sample (see module docstring for why not torchmetrics)
    pred_np = pred.detach().cpu().double().numpy()
    target_np = target.detach().cpu().double().numpy()
    values = []
    for p, t in zip(pred_np, target_np):  # (C, D, H, W) each
        per_channel = [
            structural_similarity(
                t[c], p[c], data_range=data_range, gaussian_weights=True, sigma=sigma,
                use_sample_covariance=False,
            )
            for c in range(p.shape[0])
        ]
        values.append(float(np.mean(per_channel)))
    return torch.tensor(values, dtype=torch.float64, device=pred.device)


def compute_mutual_information(pred: Tensor, target: Tensor, bins: int = 32, data_range: float = 1.0) -> Tensor:
    """Mutual information between each target image and its reconstruction, in nats.

    Both images are clipped to ``[0, data_range]`` and quantised into ``bins`` equal-width
    bins (bin ``min(floor(v / data_range * bins), bins - 1)``). With ``p(a, b)`` the joint
    histogram over the sample's voxels (and channels) normalised to sum 1,
    ``MI = Σ_{a,b} p(a, b) log(p(a, b) / (p(a) p(b)))`` (natural log, so nats; divide by
    ln 2 for bits). ``MI(x, x)`` equals the entropy of the quantised ``x``; MI is at most
    ``log(bins)``. This equals ``sklearn.metrics.mutual_info_score`` on the bin labels.

    Args:
        pred: reconstructions, (B, C, *spatial).
        target: originals, same shape.
        bins: number of intensity bins, >= 2.
        data_range: intensity range mapped onto the bins.
    Returns:
        (B,) float64 MI in nats.
    """
    _check_pair(pred, target)
    data_range = _check_data_range(data_range)
    if not isinstance(bins, int) or bins < 2:
        raise ValueError(f"bins must be an integer >= 2, got bins={bins!r}")
    batch = pred.shape[0]
    labels_p = _quantise(pred.detach().flatten(1), bins, data_range)  # (B, P)
    labels_t = _quantise(target.detach().flatten(1), bins, data_range)  # (B, P)
    n_vox = labels_p.shape[1]
    # one bincount for the whole batch: sample b's joint cell (a, c) -> b*bins² + a*bins + c
    offsets = torch.arange(batch, device=labels_p.device).unsqueeze(1) * bins * bins
    cells = (offsets + labels_t * bins + labels_p).flatten()
    joint = torch.bincount(cells, minlength=batch * bins * bins).reshape(batch, bins, bins)
    joint = joint.double() / n_vox  # p(a, b), (B, bins_target, bins_pred)
    p_t = joint.sum(dim=2, keepdim=True)  # (B, bins, 1)
    p_p = joint.sum(dim=1, keepdim=True)  # (B, 1, bins)
    occupied = joint > 0  # where joint > 0 both marginals are > 0 too
    safe = torch.where(occupied, joint, 1.0)
    log_ratio = torch.log(safe) - torch.log(torch.where(occupied, p_t * p_p, 1.0))
    terms = torch.where(occupied, joint * log_ratio, 0.0)
    return terms.sum(dim=(1, 2)).clamp_min(0.0)  # clamp: rounding can give -1e-17


def _quantise(values: Tensor, bins: int, data_range: float) -> Tensor:
    """Equal-width bin labels in ``[0, bins)`` for values clipped to ``[0, data_range]``."""
    scaled = values.double().clamp(0.0, data_range) / data_range * bins
    return scaled.floor().long().clamp(0, bins - 1)


def _as_rows(samples: Tensor, name: str) -> Tensor:
    """(N, ...) tensor -> (N, F) float64 rows."""
    if not isinstance(samples, Tensor):
        samples = torch.as_tensor(np.asarray(samples))
    if samples.ndim < 1 or samples.shape[0] < 2:
        raise ValueError(f"{name} must hold at least 2 samples along dim 0, got shape {tuple(samples.shape)}")
    rows = samples.detach().reshape(samples.shape[0], -1).double().cpu()
    if not torch.isfinite(rows).all():
        raise ValueError(f"{name} contains non-finite values")
    return rows


def _pairwise_sq_dists(a: Tensor, b: Tensor) -> Tensor:
    """Squared Euclidean distances between rows, (M, F), (N, F) -> (M, N), float64."""
    return torch.cdist(a, b, p=2.0).pow(2)


def median_heuristic_bandwidth(pooled: Tensor) -> float:
    """Median heuristic: σ = median Euclidean distance over distinct pairs of rows.

    Args:
        pooled: (N, F) rows (the union of both samples).
    Returns:
        σ > 0. If more than half of the pairs coincide (median 0), the median of the
        non-zero distances is used; if every row is identical, 1.0 (MMD is then 0 for any σ).
    """
    rows = _as_rows(pooled, "pooled")
    n = rows.shape[0]
    iu = torch.triu_indices(n, n, offset=1)
    dists = torch.cdist(rows, rows)[iu[0], iu[1]]  # (N (N - 1) / 2,)
    median = float(np.median(dists.numpy()))
    if median > 0:
        return median
    positive = dists[dists > 0].numpy()
    return float(np.median(positive)) if positive.size else 1.0


def compute_mmd(x: Tensor, y: Tensor, bandwidth: float | None = None, unbiased: bool = True) -> float:
    """Squared maximum mean discrepancy between two sets, Gaussian kernel.

    ``k(u, v) = exp(-‖u − v‖² / (2σ²))`` on flattened samples. With ``m = len(x)``,
    ``n = len(y)``:

    - unbiased (U-statistic, default): ``1/(m(m−1)) Σ_{i≠j} k(x_i, x_j)
      + 1/(n(n−1)) Σ_{i≠j} k(y_i, y_j) − 2/(mn) Σ_{i,j} k(x_i, y_j)``; its expectation is
      exactly MMD², so it is about 0 (and may be negative) for two samples of one
      distribution;
    - biased (V-statistic): the same with the diagonals included and ``1/m²``, ``1/n²``;
      never negative, biased upwards by ``O(1/m + 1/n)``.

    Args:
        x: (M, ...) first set (e.g. reconstructions), M >= 2; each sample is flattened.
        y: (N, ...) second set (e.g. originals), N >= 2, same per-sample size as ``x``.
        bandwidth: σ > 0; ``None`` uses :func:`median_heuristic_bandwidth` on the pooled set.
        unbiased: choose the estimator (see above).
    Returns:
        MMD² as a Python float (not scaled; the paper's "MMD × 10²" is the caller's).
    """
    xr = _as_rows(x, "x")
    yr = _as_rows(y, "y")
    if xr.shape[1] != yr.shape[1]:
        raise ValueError(f"x and y samples must have the same size, got {xr.shape[1]} and {yr.shape[1]} features")
    if bandwidth is None:
        bandwidth = median_heuristic_bandwidth(torch.cat([xr, yr]))
    elif not (isinstance(bandwidth, (int, float)) and math.isfinite(bandwidth) and bandwidth > 0):
        raise ValueError(f"bandwidth must be a positive finite number or None, got bandwidth={bandwidth!r}")
    gamma = 1.0 / (2.0 * float(bandwidth) ** 2)
    k_xx = torch.exp(-gamma * _pairwise_sq_dists(xr, xr))  # (M, M)
    k_yy = torch.exp(-gamma * _pairwise_sq_dists(yr, yr))  # (N, N)
    k_xy = torch.exp(-gamma * _pairwise_sq_dists(xr, yr))  # (M, N)
    m, n = xr.shape[0], yr.shape[0]
    if unbiased:
        # the diagonal of k(u, u) is exactly 1 for a Gaussian kernel
        term_x = (k_xx.sum() - torch.diagonal(k_xx).sum()) / (m * (m - 1))
        term_y = (k_yy.sum() - torch.diagonal(k_yy).sum()) / (n * (n - 1))
    else:
        term_x = k_xx.sum() / (m * m)
        term_y = k_yy.sum() / (n * n)
    return float(term_x + term_y - 2.0 * k_xy.mean())


class ReconstructionMetrics:
    """Collects PSNR, SSIM and MI per sample and the set-level MMD over an evaluation set.

    Call :meth:`update` once per batch, then :meth:`compute`. Images are kept (flattened,
    float32, on CPU) for the MMD, so memory grows as ``2 · N · C · prod(spatial) · 4`` bytes.

    Args:
        data_range: intensity range of the images (1.0 for [0, 1]).
        mi_bins: intensity bins for :func:`compute_mutual_information`, >= 2.
        ssim_sigma: Gaussian window σ for :func:`compute_ssim`.
        mmd_unbiased: estimator for :func:`compute_mmd` (bandwidth by the median heuristic).
        ssim: compute SSIM (``False``: ``ssim_mean``/``ssim_std`` are ``None``, e.g. for images
            smaller than :func:`ssim_window` along some axis).
    """

    def __init__(
        self,
        data_range: float = 1.0,
        mi_bins: int = 32,
        ssim_sigma: float = SSIM_SIGMA,
        mmd_unbiased: bool = True,
        ssim: bool = True,
    ) -> None:
        self.data_range = _check_data_range(data_range)
        self.with_ssim = bool(ssim)
        if not isinstance(mi_bins, int) or mi_bins < 2:
            raise ValueError(f"mi_bins must be an integer >= 2, got mi_bins={mi_bins!r}")
        if not (isinstance(ssim_sigma, (int, float)) and math.isfinite(ssim_sigma) and ssim_sigma > 0):
            raise ValueError(f"ssim_sigma must be a positive finite number, got ssim_sigma={ssim_sigma!r}")
        self.mi_bins = mi_bins
        self.ssim_sigma = float(ssim_sigma)
        self.mmd_unbiased = bool(mmd_unbiased)
        self.reset()

    def reset(self) -> None:
        """Forget everything seen so far."""
        self._psnr: list[Tensor] = []
        self._ssim: list[Tensor] = []
        self._mi: list[Tensor] = []
        self._pred_rows: list[Tensor] = []
        self._target_rows: list[Tensor] = []
        self._sample_shape: tuple[int, ...] | None = None

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch: pred and target (B, C, *spatial), same shape for every call."""
        _check_pair(pred, target)
        if self._sample_shape is None:
            self._sample_shape = tuple(pred.shape[1:])
        elif tuple(pred.shape[1:]) != self._sample_shape:
            raise ValueError(
                f"every batch must have per-sample shape {self._sample_shape}, got {tuple(pred.shape[1:])}"
            )
        self._psnr.append(compute_psnr(pred, target, self.data_range).cpu())
        if self.with_ssim:
            self._ssim.append(compute_ssim(pred, target, self.data_range, self.ssim_sigma).cpu())
        self._mi.append(compute_mutual_information(pred, target, self.mi_bins, self.data_range).cpu())
        self._pred_rows.append(pred.detach().flatten(1).float().cpu())  # (B, C·prod(spatial))
        self._target_rows.append(target.detach().flatten(1).float().cpu())

    @property
    def n_samples(self) -> int:
        """Number of samples seen since the last reset."""
        return sum(t.shape[0] for t in self._psnr)

    def compute(self, mmd: bool = True) -> dict[str, float | int]:
        """Summary over all samples seen.

        Args:
            mmd: compute the MMD, which needs at least 2 samples (``False``: ``mmd_x100`` is
                ``None`` and 1 sample is enough).

        Returns:
            ``{"psnr_mean", "psnr_std", "ssim_mean", "ssim_std", "mi_mean", "mi_std",
            "mmd_x100", "n_samples"}``: means and population standard deviations (ddof 0)
            over samples; PSNR in dB, MI in nats, ``mmd_x100`` = 100 · MMD² between the set
            of predictions and the set of targets.
        """
        n = self.n_samples
        if n < (2 if mmd else 1):
            raise ValueError(f"ReconstructionMetrics.compute needs at least {2 if mmd else 1} samples"
                             f"{' for the MMD' if mmd else ''}, got {n}")
        out: dict[str, float | int] = {}
        for name, chunks in (("psnr", self._psnr), ("ssim", self._ssim), ("mi", self._mi)):
            if not chunks:  # SSIM turned off
                out[f"{name}_mean"] = out[f"{name}_std"] = None
                continue
            values = torch.cat(chunks).double()
            out[f"{name}_mean"] = float(values.mean())
            out[f"{name}_std"] = float(values.std(correction=0))
        out["mmd_x100"] = (100.0 * compute_mmd(torch.cat(self._pred_rows), torch.cat(self._target_rows),
                                                unbiased=self.mmd_unbiased) if mmd else None)
        out["n_samples"] = n
        return out
