"""Reconstruction metrics against independent oracles (scikit-image, scikit-learn, NumPy loops)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import entropy
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from sklearn.metrics import mutual_info_score

from attri_ssc.evaluation.metrics import (
    ReconstructionMetrics,
    compute_mmd,
    compute_mutual_information,
    compute_psnr,
    compute_ssim,
    median_heuristic_bandwidth,
)

# (batch, channels, *spatial): several batch sizes, 2D and 3D, non-square extents
SHAPES = [
    (1, 1, 16, 16),
    (3, 1, 24, 19),
    (5, 1, 32, 32),
    (1, 1, 12, 14, 13),
    (2, 1, 16, 12, 20),
]


def _pair(shape: tuple[int, ...], seed: int, noise: float = 0.1, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    target = torch.rand(shape, generator=gen, dtype=torch.float64)
    # smooth-ish structure so SSIM is not trivially ~0
    target = 0.5 * target + 0.5 * torch.linspace(0, 1, shape[-1], dtype=torch.float64)
    pred = (target + noise * torch.randn(shape, generator=gen, dtype=torch.float64)).clamp(0, 1)
    return pred.to(dtype), target.to(dtype)


def _sk_ssim(t: np.ndarray, p: np.ndarray, sigma: float = 1.5) -> float:
    return structural_similarity(
        t, p, data_range=1.0, gaussian_weights=True, sigma=sigma, use_sample_covariance=False
    )


@pytest.mark.parametrize("shape", SHAPES)
def test_psnr_matches_skimage(shape):
    pred, target = _pair(shape, seed=len(shape) * 10 + shape[0])
    ours = compute_psnr(pred, target)
    ref = [peak_signal_noise_ratio(target[i].numpy(), pred[i].numpy(), data_range=1.0) for i in range(shape[0])]
    assert ours.shape == (shape[0],)
    # torchmetrics converts dB with a float32 ln(10): relative error ~6e-8, i.e. ~1e-6 dB
    np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=1e-5)


def test_psnr_float32_input_and_identical_images():
    pred, target = _pair((4, 1, 16, 16), seed=3, dtype=torch.float32)
    ref = [peak_signal_noise_ratio(target[i].double().numpy(), pred[i].double().numpy(), data_range=1.0)
           for i in range(4)]
    np.testing.assert_allclose(compute_psnr(pred, target).numpy(), ref, rtol=0, atol=1e-5)
    assert torch.isinf(compute_psnr(target, target)).all()
    # data_range enters as 20 log10(data_range)
    delta = compute_psnr(2 * pred, 2 * target, data_range=2.0) - compute_psnr(pred, target)
    np.testing.assert_allclose(delta.numpy(), 0.0, atol=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
def test_ssim_matches_skimage_float64(shape):
    pred, target = _pair(shape, seed=len(shape) * 100 + shape[0])
    ours = compute_ssim(pred, target)
    ref = [_sk_ssim(target[i, 0].numpy(), pred[i, 0].numpy()) for i in range(shape[0])]
    assert ours.shape == (shape[0],) and ours.dtype == torch.float64
    np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=1e-10)
    assert 0.05 < min(ref) < 0.99  # the case is non-trivial


@pytest.mark.parametrize("shape", [(3, 1, 24, 19), (2, 1, 16, 12, 20)])
def test_ssim_matches_skimage_float32(shape):
    pred, target = _pair(shape, seed=7, dtype=torch.float32)
    ours = compute_ssim(pred, target)
    ref = [_sk_ssim(target[i, 0].double().numpy(), pred[i, 0].double().numpy()) for i in range(shape[0])]
    np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=2e-6)


def test_ssim_other_sigma_and_channels():
    pred, target = _pair((2, 2, 16, 16), seed=11)
    ours = compute_ssim(pred, target, sigma=0.8)  # 7-tap window
    ref = [
        structural_similarity(target[i].numpy(), pred[i].numpy(), data_range=1.0, gaussian_weights=True,
                              sigma=0.8, use_sample_covariance=False, channel_axis=0)
        for i in range(2)
    ]
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-10)
    np.testing.assert_allclose(compute_ssim(target, target).numpy(), 1.0, atol=1e-12)


def test_ssim_rejects_small_images_and_bad_args():
    small = torch.rand(1, 1, 10, 16)
    with pytest.raises(ValueError, match="window"):
        compute_ssim(small, small)
    with pytest.raises(ValueError, match="sigma"):
        compute_ssim(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16), sigma=0.0)
    with pytest.raises(ValueError, match="same shape"):
        compute_ssim(torch.rand(1, 1, 16, 16), torch.rand(2, 1, 16, 16))
    with pytest.raises(ValueError, match="spatial"):
        compute_psnr(torch.rand(2, 16, 16), torch.rand(2, 16, 16))
    with pytest.raises(ValueError, match="data_range"):
        compute_psnr(torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 4), data_range=0)


# ---------------------------------------------------------------- mutual information


def _labels(x: np.ndarray, bins: int) -> np.ndarray:
    """Independent re-statement of the binning: equal-width bins over [0, 1]."""
    edges = np.linspace(0.0, 1.0, bins + 1)[1:-1]
    return np.digitize(np.clip(x, 0.0, 1.0), edges)


@pytest.mark.parametrize("shape,bins", [((3, 1, 16, 16), 32), ((2, 1, 8, 9, 10), 16), ((1, 1, 20, 20), 5)])
def test_mi_matches_sklearn(shape, bins):
    pred, target = _pair(shape, seed=bins, noise=0.2)
    pred[0, 0, 0, 0] = 1.3  # out of range values are clipped into the end bins
    target[-1, 0, 1, 1] = -0.2
    ours = compute_mutual_information(pred, target, bins=bins)
    ref = [
        mutual_info_score(_labels(target[i].numpy().ravel(), bins), _labels(pred[i].numpy().ravel(), bins))
        for i in range(shape[0])
    ]
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-10, atol=1e-12)


def test_mi_of_image_with_itself_is_its_entropy_and_independent_is_small():
    _, target = _pair((2, 1, 32, 32), seed=5)
    mi_self = compute_mutual_information(target, target, bins=16)
    h = [entropy(np.bincount(_labels(target[i].numpy().ravel(), 16), minlength=16)) for i in range(2)]
    np.testing.assert_allclose(mi_self.numpy(), h, rtol=1e-12)
    assert (mi_self <= math.log(16) + 1e-12).all()
    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(1, 1, 64, 64, generator=gen), torch.rand(1, 1, 64, 64, generator=gen)
    mi_indep = compute_mutual_information(a, b, bins=8)
    # plug-in bias of independent variables is about (bins-1)^2 / (2 N) = 49 / 8192 nats
    assert 0 <= float(mi_indep) < 0.02


# ---------------------------------------------------------------- MMD


def _mmd_loops(x: np.ndarray, y: np.ndarray, sigma: float, unbiased: bool) -> float:
    def k(u, v):
        return math.exp(-float(np.sum((u - v) ** 2)) / (2 * sigma**2))

    m, n = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if (i != j or not unbiased))
    syy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if (i != j or not unbiased))
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n))
    dx, dy = (m * (m - 1), n * (n - 1)) if unbiased else (m * m, n * n)
    return sxx / dx + syy / dy - 2 * sxy / (m * n)


def _median_loops(z: np.ndarray) -> float:
    d = [float(np.sqrt(np.sum((z[i] - z[j]) ** 2))) for i in range(len(z)) for j in range(i + 1, len(z))]
    return float(np.median(d))


@pytest.mark.parametrize("unbiased", [True, False])
def test_mmd_matches_numpy_loops(unbiased):
    rng = np.random.default_rng(0)
    x = rng.random((7, 1, 4, 4))
    y = rng.random((9, 1, 4, 4)) * 0.8 + 0.1
    xf, yf = x.reshape(7, -1), y.reshape(9, -1)
    sigma = _median_loops(np.concatenate([xf, yf]))
    assert median_heuristic_bandwidth(torch.from_numpy(np.concatenate([xf, yf]))) == pytest.approx(sigma, rel=1e-10)
    ours = compute_mmd(torch.from_numpy(x), torch.from_numpy(y), unbiased=unbiased)
    assert ours == pytest.approx(_mmd_loops(xf, yf, sigma, unbiased), rel=1e-9, abs=1e-12)
    fixed = compute_mmd(torch.from_numpy(x), torch.from_numpy(y), bandwidth=0.7, unbiased=unbiased)
    assert fixed == pytest.approx(_mmd_loops(xf, yf, 0.7, unbiased), rel=1e-9, abs=1e-12)


def test_mmd_same_distribution_is_zero_within_ci_and_shift_is_positive():
    rng = np.random.default_rng(1)
    reps, m, dim = 60, 24, 10
    unbiased, biased = [], []
    for _ in range(reps):
        x = torch.from_numpy(rng.normal(size=(m, dim)))
        y = torch.from_numpy(rng.normal(size=(m, dim)))
        unbiased.append(compute_mmd(x, y))
        biased.append(compute_mmd(x, y, unbiased=False))
    unbiased, biased = np.array(unbiased), np.array(biased)
    # the U-statistic is unbiased: its mean over repetitions is 0 within a 4-sigma interval
    se = unbiased.std(ddof=1) / math.sqrt(reps)
    assert abs(unbiased.mean()) < 4 * se
    assert (unbiased < 0).any()  # it can go negative, as documented
    assert (biased > 0).all() and biased.mean() > unbiased.mean() + 4 * se
    # identical sets: biased MMD is exactly 0
    x = torch.from_numpy(rng.normal(size=(m, dim)))
    assert compute_mmd(x, x, unbiased=False) == pytest.approx(0.0, abs=1e-12)
    # growing with a mean shift, and well outside the null spread
    shifts = [compute_mmd(torch.from_numpy(rng.normal(size=(m, dim))),
                          torch.from_numpy(rng.normal(size=(m, dim)) + s)) for s in (0.5, 1.0, 2.0)]
    assert shifts[0] > unbiased.mean() + 4 * unbiased.std() and shifts[0] < shifts[1] < shifts[2]


def test_mmd_validation():
    with pytest.raises(ValueError, match="at least 2"):
        compute_mmd(torch.rand(1, 4), torch.rand(3, 4))
    with pytest.raises(ValueError, match="features"):
        compute_mmd(torch.rand(3, 4), torch.rand(3, 5))
    with pytest.raises(ValueError, match="bandwidth"):
        compute_mmd(torch.rand(3, 4), torch.rand(3, 4), bandwidth=-1.0)
    with pytest.raises(ValueError, match="non-finite"):
        compute_mmd(torch.full((3, 4), float("nan")), torch.rand(3, 4))
    same = torch.ones(4, 3)
    assert median_heuristic_bandwidth(same) == 1.0
    assert compute_mmd(same, same) == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------- aggregator


@pytest.mark.parametrize("shape", [(6, 1, 16, 16), (4, 1, 12, 12, 12)])
def test_reconstruction_metrics_aggregates_batches(shape):
    pred, target = _pair(shape, seed=21, noise=0.15)
    agg = ReconstructionMetrics(mi_bins=16)
    agg.update(pred[:2], target[:2])
    agg.update(pred[2:], target[2:])
    out = agg.compute()
    assert out["n_samples"] == shape[0]
    psnr = [peak_signal_noise_ratio(target[i].numpy(), pred[i].numpy(), data_range=1.0) for i in range(shape[0])]
    ssim = [_sk_ssim(target[i, 0].numpy(), pred[i, 0].numpy()) for i in range(shape[0])]
    mi = [mutual_info_score(_labels(target[i].numpy().ravel(), 16), _labels(pred[i].numpy().ravel(), 16))
          for i in range(shape[0])]
    assert out["psnr_mean"] == pytest.approx(np.mean(psnr), rel=1e-6)
    assert out["psnr_std"] == pytest.approx(np.std(psnr), rel=1e-5)
    assert out["ssim_mean"] == pytest.approx(np.mean(ssim), abs=1e-6)
    assert out["ssim_std"] == pytest.approx(np.std(ssim), abs=1e-6)
    assert out["mi_mean"] == pytest.approx(np.mean(mi), rel=1e-9)
    assert out["mi_std"] == pytest.approx(np.std(mi), rel=1e-6, abs=1e-12)
    pf, tf = pred.numpy().reshape(shape[0], -1), target.numpy().reshape(shape[0], -1)
    sigma = _median_loops(np.concatenate([pf, tf]).astype(np.float32).astype(np.float64))
    assert out["mmd_x100"] == pytest.approx(100 * _mmd_loops(pf, tf, sigma, True), rel=1e-4, abs=1e-6)
    agg.reset()
    assert agg.n_samples == 0
    with pytest.raises(ValueError, match="at least 2"):
        agg.compute()


def test_reconstruction_metrics_validation():
    with pytest.raises(ValueError, match="mi_bins"):
        ReconstructionMetrics(mi_bins=1)
    with pytest.raises(ValueError, match="data_range"):
        ReconstructionMetrics(data_range=-1.0)
    agg = ReconstructionMetrics()
    agg.update(torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16))
    with pytest.raises(ValueError, match="per-sample shape"):
        agg.update(torch.rand(2, 1, 16, 20), torch.rand(2, 1, 16, 20))
