"""FID: Fréchet distance against scipy, the image pipeline with a tiny random feature
extractor, and the weights-folder path with a randomly initialised InceptionV3.

None of these tests needs the downloaded weights (the real network is checked by the
slow fetch test in test_weights.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from attri_ssc.evaluation.fid import (
    INCEPTION_INPUT_RANGE,
    InceptionV3Features,
    compute_fid,
    feature_statistics,
    fid_from_features,
    frechet_distance,
    preprocess_for_inception,
    slices_2d,
)
from attri_ssc.evaluation.weights import NOT_COMPUTED, WeightsError, write_weights_folder


def _random_spd(rng: np.random.Generator, dim: int, rank: int | None = None) -> np.ndarray:
    a = rng.normal(size=(dim, rank or dim + 3))
    return a @ a.T / a.shape[1]


def _scipy_frechet(mu1, s1, mu2, s2) -> float:
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = np.real(covmean)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.mark.parametrize("dim,seed", [(1, 0), (4, 1), (16, 2), (64, 3)])
def test_frechet_distance_matches_scipy_sqrtm(dim, seed):
    rng = np.random.default_rng(seed)
    mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
    s1, s2 = _random_spd(rng, dim), _random_spd(rng, dim)
    expected = _scipy_frechet(mu1, s1, mu2, s2)
    got = frechet_distance(mu1, s1, mu2, s2)
    assert got == pytest.approx(expected, rel=1e-8, abs=1e-9)
    # torch inputs give the same number
    t = [torch.from_numpy(a) for a in (mu1, s1, mu2, s2)]
    assert frechet_distance(*t) == pytest.approx(got, rel=1e-12)


def test_frechet_distance_closed_form_diagonal_and_singular():
    # Commuting (diagonal) covariances: tr sqrt(S1 S2) = Σ sqrt(a_i b_i), so
    # FD = ‖μ1 − μ2‖² + Σ (sqrt a_i − sqrt b_i)². Zero variances make both singular.
    a = np.array([1.0, 0.0, 9.0])
    b = np.array([0.0, 4.0, 1.0])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    expected = 1.0 + 0.0 + 4.0 + (1 - 0) ** 2 + (0 - 2) ** 2 + (3 - 1) ** 2
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, abs=1e-10)


def test_frechet_distance_identical_is_zero_even_when_rank_deficient():
    rng = np.random.default_rng(4)
    s = _random_spd(rng, 50, rank=5)  # rank 5 of 50, like few samples of many features
    mu = rng.normal(size=50)
    assert abs(frechet_distance(mu, s, mu, s)) < 1e-8


def test_frechet_distance_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shapes"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))


def test_feature_statistics_matches_numpy():
    rng = np.random.default_rng(5)
    feats = rng.normal(size=(10, 4))
    mu, sigma = feature_statistics(torch.from_numpy(feats).float())
    np.testing.assert_allclose(mu, feats.mean(0), atol=1e-6)
    np.testing.assert_allclose(sigma, np.cov(feats, rowvar=False), atol=1e-6)
    with pytest.raises(ValueError, match="N >= 2"):
        feature_statistics(np.zeros((1, 4)))


# --- images → features ---------------------------------------------------------------


class _TinyExtractor:
    """A fixed random conv + pooling: (B, 1, H, W) → (B, 6)."""

    def __init__(self, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.weight = torch.randn(6, 1, 3, 3, generator=gen)
        self.calls = 0

    def __call__(self, slices: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        assert slices.ndim == 4 and slices.shape[1] == 1
        h = torch.nn.functional.conv2d(slices, self.weight).relu()
        return torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)[:, :6].double()


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_shift():
    gen = torch.Generator().manual_seed(1)
    real = torch.rand(12, 1, 16, 16, generator=gen) * 0.5
    extractor = _TinyExtractor()
    assert abs(compute_fid(real, real, extractor=extractor)) < 1e-8
    fids = [compute_fid(real, (real + s).clamp(0, 1), extractor=extractor) for s in (0.05, 0.2, 0.4)]
    assert 0 < fids[0] < fids[1] < fids[2]


def test_fid_equals_frechet_distance_of_extracted_features():
    gen = torch.Generator().manual_seed(2)
    real, fake = torch.rand(7, 1, 12, 12, generator=gen), torch.rand(5, 1, 12, 12, generator=gen)
    ex = _TinyExtractor()
    mu1, s1 = feature_statistics(ex(real))
    mu2, s2 = feature_statistics(ex(fake))
    expected = _scipy_frechet(mu1, s1, mu2, s2)
    scale = np.trace(s1) + np.trace(s2)  # FD is a difference of terms of this size
    # 5 samples of 6 features: the fake covariance is rank-deficient, where scipy's sqrtm of
    # s1·s2 is itself accurate only to about sqrt(machine eps) (scipy 1.17 moved it by 3e-9 of
    # the scale); the second check ties compute_fid to our own Fréchet distance of the same features
    assert compute_fid(real, fake, extractor=ex) == pytest.approx(expected, abs=1e-7 * scale)
    assert compute_fid(real, fake, extractor=ex) == pytest.approx(frechet_distance(mu1, s1, mu2, s2), abs=1e-12 * scale)


@pytest.mark.parametrize("n1,n2,dim", [(5, 8, 20), (30, 3, 6), (40, 50, 6)])
def test_fid_from_features_matches_scipy_in_both_regimes(n1, n2, dim):
    # (5, 8, 20) and (30, 3, 6) take the sample-space (SVD) route, (40, 50, 6) the F×F route.
    rng = np.random.default_rng(n1 + n2 + dim)
    x = rng.normal(size=(n1, dim))
    y = rng.normal(size=(n2, dim)) * 1.5 + 0.3
    mu1, s1 = x.mean(0), np.cov(x, rowvar=False)
    mu2, s2 = y.mean(0), np.cov(y, rowvar=False)
    expected = _scipy_frechet(mu1, s1, mu2, s2)
    assert fid_from_features(x, y) == pytest.approx(expected, rel=1e-6)
    assert fid_from_features(x, y) == pytest.approx(frechet_distance(mu1, s1, mu2, s2), rel=1e-9)
    assert abs(fid_from_features(x, x)) < 1e-9 * np.trace(s1)


def test_fid_3d_uses_every_slice_along_the_last_axis():
    gen = torch.Generator().manual_seed(3)
    real = torch.rand(3, 1, 10, 11, 4, generator=gen)
    fake = torch.rand(2, 1, 10, 11, 4, generator=gen)
    by_hand_r = torch.stack([real[n, :, :, :, d] for n in range(3) for d in range(4)])  # (12, 1, 10, 11)
    by_hand_f = torch.stack([fake[n, :, :, :, d] for n in range(2) for d in range(4)])
    assert torch.equal(slices_2d(real), by_hand_r)
    ex = _TinyExtractor()
    assert compute_fid(real, fake, extractor=ex) == pytest.approx(
        compute_fid(by_hand_r, by_hand_f, extractor=ex), rel=1e-12)


def test_compute_fid_without_weights_reports_not_computed(tmp_path, monkeypatch):
    x = torch.rand(3, 1, 8, 8)
    assert compute_fid(x, x, weights_dir=tmp_path / "none") == NOT_COMPUTED
    monkeypatch.setenv("ATTRI_SSC_WEIGHTS", str(tmp_path / "empty"))
    result = compute_fid(x, x)
    assert isinstance(result, str) and result == "not computed (no weights: run attri-ssc weights fetch)"


def test_compute_fid_validates_inputs():
    ex = _TinyExtractor()
    with pytest.raises(ValueError, match=r"\(N, 1, \*S\)"):
        compute_fid(torch.rand(3, 3, 8, 8), torch.rand(3, 3, 8, 8), extractor=ex)
    with pytest.raises(ValueError, match="differ in dims"):
        compute_fid(torch.rand(3, 1, 8, 8), torch.rand(3, 1, 8, 8, 2), extractor=ex)


def test_preprocess_maps_unit_range_to_tf_inception_range():
    x = torch.tensor([0.0, 1.0, 2.0, -1.0]).view(4, 1, 1, 1).expand(4, 1, 299, 299)
    out = preprocess_for_inception(x)
    assert out.shape == (4, 3, 299, 299)
    lo, hi = INCEPTION_INPUT_RANGE
    assert (lo, hi) == (-1.0, 127 / 128)
    np.testing.assert_allclose(out[:, :, 0, 0].numpy(), [[lo] * 3, [hi] * 3, [hi] * 3, [lo] * 3])
    small = torch.rand(2, 1, 20, 30)
    up = preprocess_for_inception(small)
    assert up.shape == (2, 3, 299, 299)
    assert torch.equal(up[:, 0], up[:, 2])  # grey replicated
    expected = torch.nn.functional.interpolate(small, size=(299, 299), mode="bilinear", align_corners=False)
    torch.testing.assert_close(up[:, :1], expected * (hi - lo) + lo)


# --- the InceptionV3 architecture and the weights-folder path ------------------------------


def _random_inception_tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for key, shape in InceptionV3Features.tensor_shapes().items():
        if key.endswith(".weight"):
            fan_in = shape[1] * shape[2] * shape[3]
            tensors[key] = torch.randn(shape, generator=gen) * (2.0 / fan_in) ** 0.5
        elif key.endswith(".var"):
            tensors[key] = torch.ones(shape)
        else:
            tensors[key] = torch.randn(shape, generator=gen) * 0.1
    return tensors


@pytest.fixture(scope="module")
def inception_tensors() -> dict[str, torch.Tensor]:
    return _random_inception_tensors()


def test_inception_architecture_tensor_names_and_shapes():
    shapes = InceptionV3Features.tensor_shapes()
    assert len(shapes) == 94 * 4  # 94 conv units × (weight, beta, mean, var), as in default_1.pt
    assert shapes["conv.weight"] == (32, 3, 3, 3)
    assert shapes["mixed_4.tower.conv_1.weight"] == (128, 128, 1, 7)
    assert shapes["mixed_10.tower_1_conv_1.weight"] == (384, 448, 3, 3)
    assert shapes["mixed_10.tower_2_conv.var"] == (192,)


def test_inception_from_tensors_rejects_missing_and_misshapen(inception_tensors):
    tensors = inception_tensors
    broken = dict(tensors)
    del broken["mixed_3.conv.beta"]
    with pytest.raises(WeightsError, match="mixed_3.conv.beta"):
        InceptionV3Features.from_tensors(broken)
    broken = dict(tensors)
    broken["conv.weight"] = torch.zeros(32, 3, 5, 5)
    with pytest.raises(WeightsError, match=r"conv.weight has shape \(32, 3, 5, 5\)"):
        InceptionV3Features.from_tensors(broken)


def test_compute_fid_from_a_weights_folder_with_random_inception(tmp_path, inception_tensors):
    # The folder route (safetensors → InceptionV3Features → preprocessing → FID) equals
    # FID of features from a network built directly from the same tensors.
    tensors = inception_tensors
    write_weights_folder(tmp_path, {"fid_inception": tensors})
    gen = torch.Generator().manual_seed(4)
    real = torch.rand(2, 1, 24, 24, generator=gen)
    fake = (real + 0.3 * torch.rand(2, 1, 24, 24, generator=gen)).clamp(0, 1)
    got = compute_fid(real, fake, weights_dir=tmp_path, batch_size=4)
    network = InceptionV3Features.from_tensors(tensors)
    with torch.no_grad():
        f_real = network(preprocess_for_inception(real)).double()
        f_fake = network(preprocess_for_inception(fake)).double()
    assert isinstance(got, float) and got > 0
    assert got == pytest.approx(fid_from_features(f_real, f_fake), rel=1e-6)


def test_sample_quality_fids_equal_compute_fid_with_the_held_out_features_computed_once(tmp_path, inception_tensors):
    from attri_ssc.interpret.sampling import sample_quality

    write_weights_folder(tmp_path, {"fid_inception": inception_tensors})
    gen = torch.Generator().manual_seed(5)
    held, samples, recon = (torch.rand(3, 1, 24, 24, generator=gen) for _ in range(3))
    q = sample_quality(samples, held, recon, weights_dir=str(tmp_path))
    assert q["fid"] == pytest.approx(compute_fid(held, samples, weights_dir=tmp_path), rel=1e-6)
    assert q["reference_recon_fid"] == pytest.approx(compute_fid(held, recon, weights_dir=tmp_path), rel=1e-6)
    # the held-out features are cached beside the weights: one file per image set
    assert len(list((tmp_path / "feature_cache").glob("*.safetensors"))) == 3
