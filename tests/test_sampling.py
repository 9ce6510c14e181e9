"""The sparse code prior: training density per atom, dead atoms stay dead, seeded; sample metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attri_ssc.evaluation.metrics import compute_mmd
from attri_ssc.interpret.sampling import CodePrior, decode_samples, sample_quality
from attri_ssc.models.ssc_vae import SSCVAE


def _training_codes(n: int = 120, k: int = 6, s: int = 3, seed: int = 0) -> torch.Tensor:
    """Two clusters of sparse code maps; atom 5 is dead; atom j is active at about 0.1·(j+1)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(2, k, s, s, generator=g) * 2.0
    which = torch.randint(0, 2, (n,), generator=g)
    z = centres[which] + 0.3 * torch.randn(n, k, s, s, generator=g)
    density = torch.tensor([0.1 * (j + 1) for j in range(k)]).reshape(1, k, 1, 1)
    z = z * (torch.rand(n, k, s, s, generator=g) < density)
    z[:, 5] = 0.0
    return z


def test_samples_keep_the_training_density_atom_by_atom():
    codes = _training_codes()
    prior = CodePrior(n_components=8, n_mixtures=2, seed=0).fit(codes)
    samples = prior.sample(2000, seed=1)
    assert samples.shape == (2000, 6, 3, 3) and samples.dtype == torch.float32
    train_density = (codes != 0).transpose(0, 1).reshape(6, -1).float().mean(1)
    sample_density = (samples != 0).transpose(0, 1).reshape(6, -1).float().mean(1)
    assert torch.allclose(sample_density, train_density, atol=0.03)
    assert torch.all(samples[:, 5] == 0)  # a dead atom stays dead
    # the mean code map is that of the training codes (within sampling error)
    assert torch.allclose(samples.mean(0), codes.mean(0), atol=0.35)
    d = prior.describe()
    assert d["kind"] == "pca_gmm_sparsified" and d["n_components"] == 8
    assert d["train_density"] == pytest.approx(float((codes != 0).float().mean()))


def test_sampling_is_seeded():
    prior = CodePrior(n_components=4, n_mixtures=2).fit(_training_codes())
    assert torch.equal(prior.sample(10, seed=3), prior.sample(10, seed=3))
    assert not torch.equal(prior.sample(10, seed=3), prior.sample(10, seed=4))
    with pytest.raises(RuntimeError):
        CodePrior().sample(3)
    with pytest.raises(ValueError, match="n_mixtures"):
        CodePrior(n_mixtures=0)


def test_sample_quality_reports_mmd_and_no_fid_without_weights(tmp_path, tiny_config):
    bb = SSCVAE(tiny_config()).eval()
    prior = CodePrior(n_components=4, n_mixtures=2).fit(_training_codes(k=16, s=2))
    samples = decode_samples(bb, prior.sample(6, seed=0))
    assert samples.shape == (6, 1, 16, 16) and samples.min() >= 0 and samples.max() <= 1
    held = torch.rand(5, 1, 16, 16)
    recon = torch.rand(5, 1, 16, 16)
    q = sample_quality(samples, held, recon, weights_dir=str(tmp_path))
    assert q["mmd_x100"] == pytest.approx(100 * compute_mmd(samples, held))
    assert q["reference_recon_mmd_x100"] == pytest.approx(100 * compute_mmd(recon, held))
    assert isinstance(q["fid"], str) and np.isfinite(q["mmd_x100"])
